"""The official LVIS evaluation on numpy 2 gives the hand-computed numbers.

``lvis==0.5.3`` crashes on numpy >= 1.24 (``np.float``); ``lvis_api.py``
gives ``lvis.eval`` a numpy proxy. The tiny case and its hand computation
are in ``lvis_hand_case.py``. Both backends ('lvis' = official lvis-api,
'fast' = faster-coco-eval) and the registered metric must give exactly those
numbers (up to lvis-api's eps in the precision, see there).
"""
import json
import math

import numpy as np
import pytest
import torch

from lvis_hand_case import (DETECTIONS, EXPECTED, EXPECTED_IMAGE_1,
                            EXPECTED_PER_CLASS, hand_gt, hand_results)
from mmdet_longtail.evaluation import LongTailLVISMetric, evaluate_lvis
from mmdet_longtail.evaluation.lvis_api import import_lvis
from mmdet_longtail.evaluation.metrics import LVIS_EVAL_BACKENDS

TOL = 1e-12
BACKENDS = ('lvis', 'fast')


@pytest.fixture
def gt_file(tmp_path) -> str:
    path = tmp_path / 'lvis_hand_val.json'
    path.write_text(json.dumps(hand_gt()))
    return str(path)


def assert_metrics(metrics: dict, expected: dict, prefix: str = '') -> None:
    for key, value in expected.items():
        assert metrics[prefix + key] == pytest.approx(float(value), abs=TOL), \
            key


def test_lvis_0_5_3_needs_the_numpy_fix(gt_file, monkeypatch):
    """Without the proxy, lvis 0.5.3 dies on np.float (numpy >= 1.24)."""
    import lvis.eval
    LVIS, LVISEval, LVISResults = import_lvis()
    gt = LVIS(gt_file)
    monkeypatch.setattr(lvis.eval, 'np', np)
    lvis_eval = LVISEval(gt, LVISResults(gt, hand_results()), 'bbox')
    with pytest.raises(AttributeError, match='float'):
        lvis_eval.run()


@pytest.mark.parametrize('backend', BACKENDS)
def test_hand_computed_numbers(gt_file, backend):
    outcome = LVIS_EVAL_BACKENDS[backend](gt_file, hand_results(), 'bbox')
    assert_metrics(outcome.metrics, EXPECTED)
    assert outcome.cat_ids == [1, 2, 3, 4]
    for ap, expected in zip(outcome.per_class_ap, EXPECTED_PER_CLASS):
        if expected is None:
            assert math.isnan(ap)
        else:
            assert ap == pytest.approx(float(expected), abs=TOL)


def test_official_evaluator_gives_the_same_numbers(gt_file):
    """evaluate_lvis is the official LVISEval, run directly here."""
    LVIS, LVISEval, LVISResults = import_lvis()
    gt = LVIS(gt_file)
    lvis_eval = LVISEval(gt, LVISResults(gt, hand_results()), 'bbox')
    lvis_eval.run()
    ours = evaluate_lvis(gt, hand_results(), 'bbox').metrics
    for key, value in lvis_eval.get_results().items():
        assert ours[key] == float(value), key


@pytest.mark.parametrize('backend', BACKENDS)
def test_image_subset_is_honoured(gt_file, backend):
    evaluate = LVIS_EVAL_BACKENDS[backend]
    subset = evaluate(gt_file, hand_results(), 'bbox', img_ids=[1])
    assert_metrics(subset.metrics, EXPECTED_IMAGE_1)
    # only image 1's detections: the same numbers
    only_1 = [d for d in hand_results() if d['image_id'] == 1]
    assert subset.metrics == evaluate(gt_file, only_1, 'bbox',
                                      img_ids=[1]).metrics
    # mmdet's LVISMetric evaluates all images (params.imgIds is ignored):
    # image 2's ground truth then counts as missed
    everything = evaluate(gt_file, only_1, 'bbox')
    assert everything.metrics['APc'] == 0.0
    assert everything.metrics['AP'] < subset.metrics['AP']


@pytest.mark.parametrize('backend', BACKENDS)
def test_no_detection_and_input_left_untouched(gt_file, backend):
    evaluate = LVIS_EVAL_BACKENDS[backend]
    empty = evaluate(gt_file, [], 'bbox')
    # every group has ground truth (0), no large ground truth (-1)
    assert empty.metrics['AP'] == 0.0 and empty.metrics['APl'] == -1.0
    assert np.isnan(empty.per_class_ap[3])
    results = hand_results()
    before = json.dumps(results)
    evaluate(gt_file, results, 'bbox')
    assert json.dumps(results) == before


def test_global_numpy_is_not_modified(gt_file):
    import lvis.eval
    evaluate_lvis(gt_file, hand_results(), 'bbox')
    assert 'float' not in vars(np)
    with pytest.raises(AttributeError):
        np.float  # noqa: B018
    assert lvis.eval.np is not np
    assert lvis.eval.np.float is float
    assert lvis.eval.np.cumsum is np.cumsum


def hand_data_samples(image_ids=(1, 2)) -> list:
    """The hand-made detections as mmdet data samples (labels = cat - 1)."""
    samples = []
    for img_id in image_ids:
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
def test_metric_process_evaluate(gt_file, backend):
    metric = LongTailLVISMetric(
        ann_file=gt_file, metric='bbox', backend=backend, classwise=True)
    metric.dataset_meta = dict(classes=('cat1', 'cat2', 'cat3', 'cat4'))
    metric.process({}, hand_data_samples())
    metrics = metric.evaluate(size=2)
    assert_metrics(metrics, EXPECTED, prefix='lvis/bbox_')
    per_class = metric.last_per_class_ap['bbox']
    assert per_class[2] == pytest.approx(84 / 101, abs=TOL)

    # a run on image 1 only evaluates image 1
    metric.process({}, hand_data_samples(image_ids=(1, )))
    assert_metrics(metric.evaluate(size=1), EXPECTED_IMAGE_1, 'lvis/bbox_')


def test_metric_rejects_bad_settings(gt_file, tmp_path):
    with pytest.raises(ValueError, match='unknown backend'):
        LongTailLVISMetric(ann_file=gt_file, backend='nope')
    with pytest.raises(FileNotFoundError, match='missing.json'):
        LongTailLVISMetric(ann_file=str(tmp_path / 'missing.json'))
    with pytest.raises(ValueError, match='metric_items'):
        LongTailLVISMetric(ann_file=gt_file, metric_items=['APx'])


@pytest.mark.parametrize('backend', BACKENDS)
def test_unknown_ids_give_a_clear_error(gt_file, backend):
    evaluate = LVIS_EVAL_BACKENDS[backend]
    bad_image = hand_results() + [
        dict(image_id=99, category_id=1, bbox=[0, 0, 1, 1], score=0.5)
    ]
    with pytest.raises(ValueError, match=r'result #9 has image_id=99'):
        evaluate(gt_file, bad_image, 'bbox')
    bad_cat = [dict(image_id=1, category_id=7, bbox=[0, 0, 1, 1], score=1.)]
    with pytest.raises(ValueError, match='category_id=7, which is not a '
                       'category'):
        evaluate(gt_file, bad_cat, 'bbox')
    no_segm = hand_results()
    with pytest.raises(ValueError, match="no 'segmentation' field"):
        evaluate(gt_file, no_segm, 'segm')
