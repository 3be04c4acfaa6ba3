"""Fixed AP and pooled AP for LVIS (Dave et al., "Evaluating
Large-Vocabulary Object Detectors: The Devil is in the Details", 2021,
https://arxiv.org/abs/2102.01066; the LVIS challenge's metric since 2021).

**AP-fixed.** LVIS's standard AP keeps the 300 highest-scoring detections
of each *image*; a detector that ranks frequent classes first pushes its
rare-class detections out of that budget, and AP then moves with how the
scores are calibrated across classes. Fixed AP removes the per-image cap and
instead keeps the top 10,000 detections of each *category* over the whole
evaluated set; AP, APr, APc and APf are otherwise lvis-api's (federated
negatives, not-exhaustive categories, 101 recall thresholds, IoU 0.50:0.95).
Both backends compute it through their own evaluation with the caps set
(:func:`~.lvis_api.top_detections_per_category`, then
``max_dets=-1``), so they give the same numbers.

**AP-pool.** One precision-recall curve over all categories together. As
published (the authors' pooled evaluation): detections are matched to
ground truth per image and category exactly as for AP, with the same
federated filter and not-exhaustive ignores, and with the fixed-AP
detections (top 10,000 per category, no per-image cap); then the
non-ignored detections of *all* categories are ranked together by score,
recall counts all ground-truth instances of all categories, and the
precision is interpolated and read at lvis-api's 101 recall thresholds and
averaged over the 10 IoU thresholds (area range 'all'). Categories without
ground truth in the evaluated images still contribute their false positives
on images where they are negative. Equal scores are ranked by image id,
then category id, then file order.

Implementation of AP-pool, the same for both backends and through their
public entry points only: every evaluated (image, category) pair (the
category is positive or negative in the image) becomes an image of its own
with one category, so per-pair matching and ignores are unchanged while
the single category's curve pools all of them.
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .lvis_api import (LVISEvalResult, gt_dataset_of, load_results,
                       top_detections_per_category, validate_results)

# Dave et al.: detections kept per category over the whole dataset
FIXED_AP_DETS_PER_CAT = 10000
# the numbers reported for fixed AP (keys get the suffix '_fixed')
FIXED_AP_ITEMS = ('AP', 'APr', 'APc', 'APf')
POOLED_CATEGORY_ID = 1

Backend = Union[str, Callable[..., LVISEvalResult]]


def _backend(backend: Backend) -> Callable[..., LVISEvalResult]:
    if callable(backend):
        return backend
    from .metrics.longtail_lvis_metric import LVIS_EVAL_BACKENDS
    if backend not in LVIS_EVAL_BACKENDS:
        raise ValueError(f'unknown LVIS backend {backend!r}; choose from '
                         f'{sorted(LVIS_EVAL_BACKENDS)}')
    return LVIS_EVAL_BACKENDS[backend]


def _check_dets_per_cat(dets_per_cat: int) -> None:
    if not isinstance(dets_per_cat, (int, np.integer)) or dets_per_cat < 1:
        raise ValueError(f'dets_per_cat must be a positive integer, got '
                         f'{dets_per_cat!r}')


def evaluate_ap_fixed(lvis_gt,
                      results: Union[str, List[dict]],
                      iou_type: str = 'bbox',
                      img_ids: Optional[Sequence[int]] = None,
                      backend: Backend = 'lvis',
                      dets_per_cat: int = FIXED_AP_DETS_PER_CAT,
                      source: str = 'results',
                      progress: Optional[Callable[[int, int], None]] = None
                      ) -> LVISEvalResult:
    """Fixed AP (Dave et al. 2021): no per-image cap, the top
    ``dets_per_cat`` detections of each category over the evaluated images.

    Args:
        lvis_gt: an ``lvis.LVIS``, an LVIS annotation dict or a file path.
        results: detections in LVIS result format (list or json path).
        iou_type: ``'bbox'`` or ``'segm'``.
        img_ids: evaluate only these images (default: all).
        backend: ``'lvis'``, ``'fast'`` or an evaluation function with the
            signature of :func:`~.lvis_api.evaluate_lvis`.
        dets_per_cat: detections kept per category (10,000 as published).
        source: name used in error messages.
        progress: as for the backends.

    Returns:
        lvis-api's numbers of that evaluation; ``metrics['AP' / 'APr' /
        'APc' / 'APf']`` are AP-fixed and its frequency groups. The recall
        keys are named ``AR@-1`` (no per-image cap), as lvis-api names them.
    """
    _check_dets_per_cat(dets_per_cat)
    return _backend(backend)(
        lvis_gt,
        results,
        iou_type=iou_type,
        img_ids=img_ids,
        max_dets=-1,
        source=source,
        progress=progress,
        max_dets_per_cat=int(dets_per_cat))


def pool_categories(gt_dataset: dict, results: Sequence[dict],
                    img_ids: Optional[Sequence[int]] = None
                    ) -> Tuple[dict, List[dict]]:
    """Ground truth and detections in which each evaluated (image,
    category) pair is an image of its own with the single category
    :data:`POOLED_CATEGORY_ID` (see the module docstring).

    Pairs are the categories positive (with ground truth) or negative
    (``neg_category_ids``) in an evaluated image, numbered 1, 2, ... in
    (image id, category id) order; a detection of any other pair is
    dropped, as lvis-api's federated filter does. A pair's image is
    negative / not exhaustive for the pooled category exactly when the
    original image is for the original category.
    """
    wanted = None if img_ids is None else {int(i) for i in img_ids}
    images = {
        int(im['id']): im
        for im in gt_dataset['images'] if wanted is None or im['id'] in wanted
    }
    positive: Dict[int, set] = {i: set() for i in images}
    for ann in gt_dataset['annotations']:
        if ann['image_id'] in positive:
            positive[ann['image_id']].add(int(ann['category_id']))
    pair_ids: Dict[Tuple[int, int], int] = {}
    pooled_images = []
    for img_id in sorted(images):
        im = images[img_id]
        negative = {int(c) for c in im.get('neg_category_ids', [])}
        not_exhaustive = {
            int(c)
            for c in im.get('not_exhaustive_category_ids', [])
        }
        for cat_id in sorted(positive[img_id] | negative):
            pair_ids[img_id, cat_id] = len(pair_ids) + 1
            pooled_images.append(
                dict(
                    id=len(pair_ids),
                    height=im.get('height'),
                    width=im.get('width'),
                    neg_category_ids=[POOLED_CATEGORY_ID]
                    if cat_id in negative else [],
                    not_exhaustive_category_ids=[POOLED_CATEGORY_ID]
                    if cat_id in not_exhaustive else []))
    annotations = [
        dict(
            ann,
            image_id=pair_ids[ann['image_id'], int(ann['category_id'])],
            category_id=POOLED_CATEGORY_ID)
        for ann in gt_dataset['annotations'] if ann['image_id'] in images
    ]
    pooled_gt = dict(
        images=pooled_images,
        annotations=annotations,
        categories=[
            dict(
                id=POOLED_CATEGORY_ID,
                name='all categories',
                frequency='f',
                image_count=len(pooled_images),
                instance_count=len(annotations))
        ])
    pooled_dets = []
    for det in results:
        pair = pair_ids.get((int(det['image_id']), int(det['category_id'])))
        if pair is not None:
            pooled_dets.append(
                dict(det, image_id=pair, category_id=POOLED_CATEGORY_ID))
    return pooled_gt, pooled_dets


def evaluate_ap_pool(lvis_gt,
                     results: Union[str, List[dict]],
                     iou_type: str = 'bbox',
                     img_ids: Optional[Sequence[int]] = None,
                     backend: Backend = 'lvis',
                     dets_per_cat: int = FIXED_AP_DETS_PER_CAT,
                     source: str = 'results') -> float:
    """Pooled AP (Dave et al. 2021): one precision-recall curve over all
    categories, on the fixed-AP detections (see the module docstring).

    Same arguments as :func:`evaluate_ap_fixed`. Returns -1 when the
    evaluated images have no ground truth (lvis-api's "undefined").
    """
    _check_dets_per_cat(dets_per_cat)
    evaluate = _backend(backend)
    dataset = gt_dataset_of(lvis_gt)
    results, source = load_results(results, source)
    img, cat, score = validate_results(
        [im['id'] for im in dataset['images']],
        [c['id'] for c in dataset['categories']], results, iou_type, source)
    keep = top_detections_per_category(img, cat, score, int(dets_per_cat),
                                       img_ids)
    pooled_gt, pooled_dets = pool_categories(dataset,
                                             [results[i] for i in keep],
                                             img_ids)
    if not pooled_gt['annotations']:
        return -1.0
    outcome = evaluate(
        pooled_gt, pooled_dets, iou_type=iou_type, max_dets=-1, source=source)
    return float(outcome.metrics['AP'])
