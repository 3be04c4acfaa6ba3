"""The 'fast' backend (faster-coco-eval) gives lvis-api's numbers.

Parity on the synthetic set and on a generated LVIS-shaped set, bbox and
segm, with images above the 300-detection cap and images whose detections
are all dropped by the federated rule; plus the two pre-steps checked
against lvis-api's own ``LVISResults`` / ``LVISEval._prepare``.
"""
import json
import math
import os.path as osp

import numpy as np
import pytest

from mmdet_longtail.evaluation.fast_lvis_eval import (
    evaluate_lvis_fast, federated_pairs, top_detections_per_image)
from mmdet_longtail.evaluation.lvis_api import (LVIS_METRIC_ITEMS,
                                                evaluate_lvis, import_lvis)
from synthetic_detections import make_detections, make_lvis_eval_gt

PARITY_TOL = 1e-9


def check_workload(gt: dict, dets: list, max_dets: int) -> None:
    """The generated detections exercise both pre-steps."""
    per_image = np.bincount([d['image_id'] for d in dets])
    assert per_image.max() > max_dets
    known = {(a['image_id'], a['category_id']) for a in gt['annotations']}
    known |= {(im['id'], c) for im in gt['images']
              for c in im['neg_category_ids']}
    kept_per_image = {}
    for d in dets:
        kept = (d['image_id'], d['category_id']) in known
        kept_per_image[d['image_id']] = kept_per_image.get(
            d['image_id'], False) or kept
    assert not all(kept_per_image.values()), 'no all-dropped image'


def assert_same_numbers(lvis_gt, dets, iou_type, **kwargs) -> None:
    official = evaluate_lvis(lvis_gt, dets, iou_type, **kwargs)
    fast = evaluate_lvis_fast(lvis_gt, dets, iou_type, **kwargs)
    assert set(fast.metrics) == set(official.metrics)
    for key in official.metrics:
        assert fast.metrics[key] == pytest.approx(
            official.metrics[key], abs=PARITY_TOL), key
    assert fast.cat_ids == official.cat_ids
    np.testing.assert_allclose(
        fast.per_class_ap, official.per_class_ap, atol=PARITY_TOL)
    # the numbers are not degenerate
    assert 0.05 < official.metrics['AP'] < 0.95


@pytest.fixture(scope='module')
def synthetic_val(synthetic_root):
    LVIS, _, _ = import_lvis()
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
    return LVIS(path), gt, dets


@pytest.mark.parametrize('iou_type', ['bbox', 'segm'])
def test_parity_on_the_synthetic_set(synthetic_val, iou_type):
    lvis_gt, gt, dets = synthetic_val
    check_workload(gt, dets[iou_type], max_dets=100)
    assert_same_numbers(lvis_gt, dets[iou_type], iou_type, max_dets=100)


@pytest.mark.parametrize('iou_type', ['bbox', 'segm'])
def test_parity_on_an_lvis_shaped_set(tmp_path, iou_type):
    """300 detections per image (350 on some), 200 categories; and a
    subset of the images."""
    gt = make_lvis_eval_gt(num_images=24, num_classes=200, seed=5)
    path = str(tmp_path / 'gt.json')
    with open(path, 'w') as f:
        json.dump(gt, f)
    LVIS, _, _ = import_lvis()
    lvis_gt = LVIS(path)
    dets = make_detections(
        gt, over_cap_fraction=0.3, all_dropped_fraction=0.15,
        with_masks=iou_type == 'segm', seed=6)[iou_type]
    check_workload(gt, dets, max_dets=300)
    assert_same_numbers(lvis_gt, dets, iou_type)
    assert_same_numbers(lvis_gt, dets, iou_type, img_ids=range(1, 13))


def test_top_detections_per_image_matches_lvis_results(synthetic_val):
    """Same kept detections as LVISResults, ties in score included."""
    _, LVISEval, LVISResults = import_lvis()
    lvis_gt, _, dets = synthetic_val
    dets = [dict(d) for d in dets['bbox']]
    for d in dets:  # many equal scores, so ties straddle the cap
        d['score'] = round(d['score'], 1)
    for i, d in enumerate(dets):
        d['order'] = i
    img = np.array([d['image_id'] for d in dets])
    score = np.array([d['score'] for d in dets])
    ours = top_detections_per_image(img, score, 100)
    official = LVISResults(lvis_gt, [dict(d) for d in dets], max_dets=100)
    assert sorted(ours.tolist()) == sorted(
        a['order'] for a in official.dataset['annotations'])
    assert len(ours) < len(dets)


def test_federated_pairs_match_lvis_eval(synthetic_val):
    """A detection is kept exactly when lvis-api's _prepare keeps it."""
    _, LVISEval, LVISResults = import_lvis()
    lvis_gt, gt, dets = synthetic_val
    lvis_eval = LVISEval(lvis_gt, LVISResults(lvis_gt, dets['bbox'], -1),
                         'bbox')
    lvis_eval._prepare()
    official = {(d['image_id'], d['category_id'], d['score'])
                for ds in lvis_eval._dts.values() for d in ds}
    base = max(c['id'] for c in gt['categories']) + 1
    pairs = set(federated_pairs(gt).tolist())
    ours = {(d['image_id'], d['category_id'], d['score'])
            for d in dets['bbox']
            if d['image_id'] * base + d['category_id'] in pairs}
    assert ours == official


def test_gt_object_is_not_modified_and_reused(synthetic_root,
                                             synthetic_val):
    # a fresh object: lvis-api's segm evaluation rewrites the polygons of
    # its ground truth object as RLE
    LVIS, _, _ = import_lvis()
    lvis_gt = LVIS(osp.join(synthetic_root, 'annotations',
                            'lvis_v1_val.json'))
    dets = synthetic_val[2]
    before = json.dumps(lvis_gt.dataset['annotations'][:5])
    first = evaluate_lvis_fast(lvis_gt, dets['segm'], 'segm', max_dets=100)
    assert json.dumps(lvis_gt.dataset['annotations'][:5]) == before
    again = evaluate_lvis_fast(lvis_gt, dets['segm'], 'segm', max_dets=100)
    assert again.metrics == first.metrics
    assert set(first.metrics) >= set(LVIS_METRIC_ITEMS)
    assert not any(math.isnan(v) for v in first.metrics.values())
