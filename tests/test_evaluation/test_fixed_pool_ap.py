"""Fixed AP and pooled AP (Dave et al. 2021) give the hand-computed numbers
with both backends, bbox and segm; the backends agree on the synthetic set;
the metric reports them only when asked; bad result files give clear errors.

The hand case and its derivation are in ``ap_fixed_hand_case.py``.
"""
import json

import numpy as np
import pytest
import torch

from ap_fixed_hand_case import (CAPPED_DEFAULT, CAPPED_SMALL, DETECTIONS,
                                FILLERS, FIXED_DEFAULT, FIXED_SMALL,
                                POOL_DEFAULT, POOL_SMALL, SMALL_DETS_PER_CAT,
                                SMALL_MAX_DETS, fixed_gt, fixed_results,
                                fixed_segm_results)
from mmdet_longtail.evaluation import LongTailLVISMetric
from mmdet_longtail.evaluation.fixed_pool_ap import (FIXED_AP_DETS_PER_CAT,
                                                     evaluate_ap_fixed,
                                                     evaluate_ap_pool,
                                                     pool_categories)
from mmdet_longtail.evaluation.lvis_api import (import_lvis,
                                                top_detections_per_category)
from mmdet_longtail.evaluation.metrics import LVIS_EVAL_BACKENDS
from synthetic_detections import make_detections

TOL = 1e-12
PARITY_TOL = 1e-9
BACKENDS = ('lvis', 'fast')
RESULTS = {'bbox': fixed_results, 'segm': fixed_segm_results}


@pytest.fixture
def gt_file(tmp_path) -> str:
    path = tmp_path / 'lvis_fixed_val.json'
    path.write_text(json.dumps(fixed_gt()))
    return str(path)


def assert_numbers(metrics: dict, expected: dict, suffix: str = '',
                   prefix: str = '') -> None:
    for key, value in expected.items():
        assert metrics[prefix + key + suffix] == pytest.approx(
            float(value), abs=TOL), key


@pytest.mark.parametrize('iou_type', ['bbox', 'segm'])
@pytest.mark.parametrize('backend', BACKENDS)
def test_small_caps_by_hand(gt_file, backend, iou_type):
    """Per-image cap 2 hides the rare detection; 2 per category does not."""
    evaluate = LVIS_EVAL_BACKENDS[backend]
    dets = RESULTS[iou_type]()
    capped = evaluate(gt_file, dets, iou_type, max_dets=SMALL_MAX_DETS)
    assert_numbers(capped.metrics, CAPPED_SMALL)
    fixed = evaluate_ap_fixed(gt_file, dets, iou_type, backend=backend,
                              dets_per_cat=SMALL_DETS_PER_CAT)
    assert_numbers(fixed.metrics, FIXED_SMALL)
    pool = evaluate_ap_pool(gt_file, dets, iou_type, backend=backend,
                            dets_per_cat=SMALL_DETS_PER_CAT)
    assert pool == pytest.approx(float(POOL_SMALL), abs=TOL)


@pytest.mark.parametrize('iou_type', ['bbox', 'segm'])
@pytest.mark.parametrize('backend', BACKENDS)
def test_lvis_defaults_by_hand(gt_file, backend, iou_type):
    """300 dropped detections fill image 1's cap of 300; fixed AP (10,000
    per category, no per-image cap) still sees the image's real ones."""
    dets = RESULTS[iou_type](FILLERS)
    capped = LVIS_EVAL_BACKENDS[backend](gt_file, dets, iou_type)
    assert_numbers(capped.metrics, CAPPED_DEFAULT)
    fixed = evaluate_ap_fixed(gt_file, dets, iou_type, backend=backend)
    assert_numbers(fixed.metrics, FIXED_DEFAULT)
    assert evaluate_ap_pool(gt_file, dets, iou_type,
                            backend=backend) == pytest.approx(
                                float(POOL_DEFAULT), abs=TOL)
    assert FIXED_AP_DETS_PER_CAT == 10000


def test_lvis_backend_is_the_official_evaluator(gt_file):
    """Fixed AP with the 'lvis' backend is lvis-api's own result for the
    per-category top-k and LVISResults(max_dets=-1), run directly."""
    LVIS, LVISEval, LVISResults = import_lvis()
    gt = LVIS(gt_file)
    dets = fixed_results(FILLERS)
    by_cat = {}
    for det in dets:
        by_cat.setdefault(det['category_id'], []).append(det)
    top = [
        d for cat_dets in by_cat.values() for d in sorted(
            cat_dets, key=lambda d: d['score'], reverse=True)[:10000]
    ]
    lvis_eval = LVISEval(gt, LVISResults(gt, top, max_dets=-1), 'bbox')
    lvis_eval.params.max_dets = -1  # only names the recall keys
    lvis_eval.run()
    ours = evaluate_ap_fixed(gt, dets, 'bbox', backend='lvis').metrics
    for key, value in lvis_eval.get_results().items():
        assert ours[key] == float(value), key


def test_top_detections_per_category():
    """Stable per-category top-k on the evaluated images; detections that
    the federated rule drops later still count."""
    img = np.array([1, 1, 2, 2, 2, 3, 1])
    cat = np.array([5, 5, 5, 6, 5, 5, 6])
    score = np.array([.5, .9, .5, .1, .7, .99, .2])
    # cat 5: .99 (#5) .9 (#1) .7 (#4) .5 (#0) .5 (#2); cat 6: .2 (#6) .1
    assert top_detections_per_category(img, cat, score, 2).tolist() == \
        [1, 3, 5, 6]
    # tie at .5: the earlier detection (#0) is kept
    assert top_detections_per_category(img, cat, score, 4).tolist() == \
        [0, 1, 3, 4, 5, 6]
    # image 3 not evaluated: #5 does not take a place of cat 5
    assert top_detections_per_category(img, cat, score, 2,
                                       img_ids=[1, 2]).tolist() == [1, 3, 4, 6]
    assert top_detections_per_category(img, cat, score, -1).tolist() == \
        list(range(7))


def test_pooled_pairs(gt_file):
    """One image per evaluated (image, category) pair, in (image, category)
    order; detections of other pairs are dropped."""
    pooled_gt, pooled_dets = pool_categories(fixed_gt(), fixed_results(3))
    pairs = [(1, 1), (1, 2), (2, 1), (2, 2), (3, 2), (3, 3)]
    assert [im['id'] for im in pooled_gt['images']] == [1, 2, 3, 4, 5, 6]
    assert [im['neg_category_ids'] for im in pooled_gt['images']] == \
        [[], [], [1], [], [1], []]
    assert sorted(a['image_id'] for a in pooled_gt['annotations']) == \
        [1, 2, 2, 4, 6, 6]
    # the 3 fillers (cat 4 in img 1) are dropped, the 7 others kept
    assert [(d['image_id'], d['score']) for d in pooled_dets] == [
        (pairs.index((img, cat)) + 1, score)
        for img, cat, _, score in DETECTIONS
    ]
    assert {d['category_id'] for d in pooled_dets} == {1}
    subset_gt, subset_dets = pool_categories(fixed_gt(), fixed_results(),
                                             img_ids=[2])
    assert len(subset_gt['images']) == 2 and len(subset_dets) == 2


@pytest.fixture(scope='module')
def synthetic_dets(synthetic_root):
    import os.path as osp
    path = osp.join(synthetic_root, 'annotations', 'lvis_v1_val.json')
    with open(path) as f:
        gt = json.load(f)
    dets = make_detections(
        gt,
        dets_per_image=120,
        max_dets=100,
        over_cap_fraction=0.3,
        all_dropped_fraction=0.2,
        with_masks=True,
        seed=3)
    return path, dets


@pytest.mark.parametrize('iou_type', ['bbox', 'segm'])
def test_backends_agree_on_the_synthetic_set(synthetic_dets, iou_type):
    path, dets = synthetic_dets
    dets = dets[iou_type]
    counts = np.bincount([d['category_id'] for d in dets])
    # a cap that bites for most categories, and the published one
    small = int(np.median(counts[counts > 0]))
    for dets_per_cat in (small, FIXED_AP_DETS_PER_CAT):
        fixed = {
            b: evaluate_ap_fixed(path, dets, iou_type, backend=b,
                                 dets_per_cat=dets_per_cat)
            for b in BACKENDS
        }
        for key, value in fixed['lvis'].metrics.items():
            assert fixed['fast'].metrics[key] == pytest.approx(
                value, abs=PARITY_TOL), key
        np.testing.assert_allclose(fixed['fast'].per_class_ap,
                                   fixed['lvis'].per_class_ap,
                                   atol=PARITY_TOL)
        assert 0.05 < fixed['lvis'].metrics['AP'] < 0.95
        pools = [
            evaluate_ap_pool(path, dets, iou_type, backend=b,
                             dets_per_cat=dets_per_cat) for b in BACKENDS
        ]
        assert pools[1] == pytest.approx(pools[0], abs=PARITY_TOL)
        assert 0.01 < pools[0] < 0.99
    # the small cap changes the numbers: it is applied
    assert evaluate_ap_fixed(path, dets, iou_type, backend='fast',
                             dets_per_cat=small).metrics['AP'] != \
        fixed['fast'].metrics['AP']


def hand_data_samples() -> list:
    """The hand-made detections as mmdet data samples (labels = cat - 1)."""
    samples = []
    for img_id in (1, 2, 3):
        dets = [d for d in DETECTIONS if d[0] == img_id]
        boxes = torch.tensor([[x, y, x + w, y + h]
                              for _, _, (x, y, w, h), _ in dets])
        samples.append(
            dict(
                img_id=img_id,
                ori_shape=(100, 100),
                pred_instances=dict(
                    bboxes=boxes,
                    scores=torch.tensor([d[3] for d in dets]),
                    labels=torch.tensor([d[1] - 1 for d in dets]))))
    return samples


@pytest.mark.parametrize('backend', BACKENDS)
def test_metric_reports_fixed_and_pooled_ap(gt_file, backend):
    classes = dict(classes=('cat1', 'cat2', 'cat3', 'cat4'))
    plain = LongTailLVISMetric(
        ann_file=gt_file, metric='bbox', backend=backend,
        max_dets=SMALL_MAX_DETS)
    plain.dataset_meta = classes
    plain.process({}, hand_data_samples())
    numbers = plain.evaluate(size=3)
    # default output unchanged: no fixed / pooled keys
    assert not [k for k in numbers if 'fixed' in k or 'pool' in k]
    assert_numbers(numbers, CAPPED_SMALL, prefix='lvis/bbox_')

    metric = LongTailLVISMetric(
        ann_file=gt_file, metric='bbox', backend=backend,
        max_dets=SMALL_MAX_DETS, ap_fixed=True, ap_pool=True,
        dets_per_cat=SMALL_DETS_PER_CAT)
    metric.dataset_meta = classes
    metric.process({}, hand_data_samples())
    numbers = metric.evaluate(size=3)
    assert_numbers(numbers, CAPPED_SMALL, prefix='lvis/bbox_')
    assert_numbers(numbers, FIXED_SMALL, suffix='_fixed', prefix='lvis/bbox_')
    assert numbers['lvis/bbox_AP_pool'] == pytest.approx(
        float(POOL_SMALL), abs=TOL)
    assert [k for k in numbers if 'fixed' in k or 'pool' in k] == [
        'lvis/bbox_AP_fixed', 'lvis/bbox_APr_fixed', 'lvis/bbox_APc_fixed',
        'lvis/bbox_APf_fixed', 'lvis/bbox_AP_pool'
    ]


def test_bad_settings(gt_file):
    with pytest.raises(ValueError, match='dets_per_cat must be a positive'):
        LongTailLVISMetric(ann_file=gt_file, ap_fixed=True, dets_per_cat=0)
    with pytest.raises(ValueError, match='dets_per_cat must be a positive'):
        evaluate_ap_fixed(gt_file, fixed_results(), dets_per_cat=-1)
    with pytest.raises(ValueError, match="unknown LVIS backend 'nope'"):
        evaluate_ap_pool(gt_file, fixed_results(), backend='nope')


@pytest.mark.parametrize('evaluate', [evaluate_ap_fixed, evaluate_ap_pool])
@pytest.mark.parametrize('backend', BACKENDS)
def test_bad_result_files_give_clear_errors(gt_file, tmp_path, backend,
                                            evaluate):
    path = str(tmp_path / 'bad.bbox.json')

    def check(results, message):
        with open(path, 'w') as f:
            json.dump(results, f)
        with pytest.raises(ValueError) as info:
            evaluate(gt_file, path, 'bbox', backend=backend)
        assert str(info.value) == f'{path}: {message}'

    good = fixed_results()
    check(good + [dict(image_id=9, category_id=1, bbox=[0, 0, 1, 1],
                       score=.5)],
          'result #7 has image_id=9, which is not an image of the '
          'annotation file (1 such results)')
    check(good[:2] + [dict(good[2], score='0.3')],
          "result #2 has score='0.3', expected a number")
    check([dict(good[0], category_id=2.5)],
          'result #0 has category_id=2.5, expected an integer id')
    check([dict(image_id=1, category_id=1, bbox=[0, 0, 1, 1])],
          "result #0 has no 'score' field")
    check([dict(good[0], score=None)],
          'result #0 has score=None, expected a number')
    with open(path, 'w') as f:
        json.dump(dict(annotations=good), f)
    with pytest.raises(ValueError, match=f'{path}: LVIS results must be a '
                       'list of detections, got dict'):
        evaluate(gt_file, path, 'bbox', backend=backend)
    with pytest.raises(ValueError, match="no 'segmentation' field"):
        evaluate(gt_file, good, 'segm', backend=backend)


def dumped_predictions(path: str, with_masks: bool = True) -> None:
    """The hand detections as ``tools/test.py --out`` (mmdet's
    DumpDetResults) writes them: CPU tensors, RLE masks with bytes."""
    import pickle

    from pycocotools import mask as mask_utils
    samples = hand_data_samples()
    for sample in samples:
        pred = sample['pred_instances']
        if with_masks:
            rles = []
            for x1, y1, x2, y2 in pred['bboxes'].tolist():
                polygon = [[x1, y1, x2, y1, x2, y2, x1, y2]]
                rles.append(mask_utils.frPyObjects(polygon, 100, 100)[0])
            pred['masks'] = rles
    with open(path, 'wb') as f:
        pickle.dump(samples, f)


def test_offline_tool_reads_test_out_pickles(gt_file, tmp_path, capsys):
    """A --out pickle gives the numbers of the equivalent json files."""
    import os.path as osp
    import sys
    sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.dirname(
        osp.abspath(__file__)))), 'tools'))
    import lvis_eval
    from mmdet_longtail.evaluation.result_files import load_predictions
    pkl = str(tmp_path / 'preds.pkl')
    dumped_predictions(pkl)
    lists = load_predictions(pkl, [1, 2, 3, 4])

    def rounded(dets):  # the tensors hold float32 scores
        return [dict(d, score=round(d['score'], 6)) for d in dets]

    assert rounded(lists['bbox']) == fixed_results()
    assert rounded(lists['segm']) == fixed_segm_results()
    out = str(tmp_path / 'numbers.json')
    options = ['--ann', gt_file, '--max-dets', str(SMALL_MAX_DETS),
               '--ap-fixed', '--ap-pool', '--dets-per-cat',
               str(SMALL_DETS_PER_CAT), '--backend', 'fast', '--out', out]
    assert lvis_eval.main([pkl, *options]) == 0
    with open(out) as f:
        numbers = json.load(f)
    for kind in ('bbox', 'segm'):
        assert_numbers(numbers, CAPPED_SMALL, prefix=f'lvis/{kind}_')
        assert_numbers(numbers, FIXED_SMALL, '_fixed', f'lvis/{kind}_')
        assert numbers[f'lvis/{kind}_AP_pool'] == pytest.approx(
            float(POOL_SMALL), abs=TOL)

    # bad pickles: errors name the file, the sample and the field
    import pickle
    samples = hand_data_samples()
    samples[1]['pred_instances']['labels'][0] = 4
    with open(pkl, 'wb') as f:
        pickle.dump(samples, f)
    assert lvis_eval.main([pkl, *options]) == 1
    assert f'{pkl}: sample #1 (img_id=2) has label=4, outside the 4 ' \
        'categories of the annotation file' in capsys.readouterr().err
    del samples[1]['pred_instances']['scores']
    with open(pkl, 'wb') as f:
        pickle.dump(samples, f)
    assert lvis_eval.main([pkl, *options]) == 1
    assert f"{pkl}: sample #1 (img_id=2) has no 'pred_instances.scores' " \
        'field' in capsys.readouterr().err
    with open(pkl, 'wb') as f:
        pickle.dump({'not': 'a list'}, f)
    assert lvis_eval.main([pkl, *options]) == 1
    assert f'{pkl}: expected a list of data samples' in \
        capsys.readouterr().err
