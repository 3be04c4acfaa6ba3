"""The ``'fast'`` LVIS backend: faster-coco-eval's LVIS mode, made exact.

faster-coco-eval (PyPI ``faster-coco-eval``) evaluates in C++ and has an
LVIS mode (``COCOeval_faster(..., lvis_style=True)``: federated negatives,
not-exhaustive categories, frequency groups). It reproduces the official
lvis-api numbers only after two steps that mirror lvis-api's
``LVISResults``, which this module applies first:

1. keep the ``max_dets`` (300) highest-scoring detections **per image**
   (faster-coco-eval's ``maxDets`` caps each image *and category*);
2. drop a detection unless its category is a positive or a negative
   (``neg_category_ids``) category of its image. lvis-api drops these
   detections too; doing it up front also avoids faster-coco-eval's segm
   crash (``unordered_map::at``) on images whose detections are all dropped,
   and saves its work on them.

Both steps keep the detections' original order, so ties in score are
broken as in lvis-api. The ground truth is indexed once per annotation
object and reused by later evaluations (bbox then segm, every epoch).
"""
import gc
import weakref
from contextlib import contextmanager
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from .lvis_api import (LVIS_RECALL_ITEMS, LVISEvalResult,
                       load_results, metrics_without_detections, per_class_ap,
                       validate_results)

# faster-coco-eval's stats_as_dict key -> lvis-api key ({} = max_dets)
FASTER_TO_LVIS_KEYS = {
    'AP_all': 'AP',
    'AP_50': 'AP50',
    'AP_75': 'AP75',
    'AP_small': 'APs',
    'AP_medium': 'APm',
    'AP_large': 'APl',
    'APr': 'APr',
    'APc': 'APc',
    'APf': 'APf',
    'AR_all': LVIS_RECALL_ITEMS[0],
    'AR_small': LVIS_RECALL_ITEMS[1],
    'AR_medium': LVIS_RECALL_ITEMS[2],
    'AR_large': LVIS_RECALL_ITEMS[3],
}


def _quiet(*args, **kwargs) -> None:
    """faster-coco-eval's progress messages are not wanted in our logs."""


@contextmanager
def gc_paused():
    """Pause Python's cyclic garbage collector.

    The evaluation allocates millions of small containers (one per image x
    category pair), which triggers full collections over the whole heap
    again and again; pausing them saves about a third of the time. Nothing
    here creates reference cycles that need collecting meanwhile.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def import_faster_coco_eval():
    """Return ``(COCO, COCOeval_faster)``."""
    try:
        from faster_coco_eval import COCO, COCOeval_faster
    except ImportError as e:
        raise ImportError("backend='fast' needs faster-coco-eval: pip install "
                          'faster-coco-eval==1.8.0') from e
    return COCO, COCOeval_faster


def top_detections_per_image(img: np.ndarray, score: np.ndarray,
                             max_dets: int) -> np.ndarray:
    """Indices (ascending) of the ``max_dets`` best detections of each image.

    As lvis-api's ``LVISResults``: a stable sort by descending score inside
    each image, so among equal scores the earlier detection is kept.
    """
    if max_dets < 0 or img.size == 0:
        return np.arange(img.size)
    order = np.lexsort((np.arange(img.size), -score, img))
    sorted_img = img[order]
    first = np.searchsorted(sorted_img, sorted_img, side='left')
    rank = np.arange(img.size) - first
    return np.sort(order[rank < max_dets])


def federated_pairs(gt_dataset: dict) -> np.ndarray:
    """Sorted codes ``image_id * K + category_id`` of the (image, category)
    pairs lvis-api evaluates, ``K = max category id + 1``.

    A pair is evaluated when the category is positive (a ground-truth
    instance in the image) or negative (in the image's
    ``neg_category_ids``); nothing is known about the others (federated
    annotation), so lvis-api drops their detections.
    """
    num_cats = federated_code_base(gt_dataset)
    pairs = [
        int(im['id']) * num_cats + int(c) for im in gt_dataset['images']
        for c in im.get('neg_category_ids', [])
    ]
    pairs.extend(
        int(a['image_id']) * num_cats + int(a['category_id'])
        for a in gt_dataset['annotations'])
    return np.unique(np.asarray(pairs, dtype=np.int64))


def federated_code_base(gt_dataset: dict) -> int:
    return int(max(c['id'] for c in gt_dataset['categories'])) + 1


class _IndexedGroundTruth:
    """faster-coco-eval's index of one annotation set, built once."""

    def __init__(self, gt_dataset: dict) -> None:
        COCO, _ = import_faster_coco_eval()
        # shallow copies: faster-coco-eval writes 'ignore' / 'rle' into the
        # annotation dicts, which must not leak into the caller's object.
        # lvis-api never treats a ground truth as a crowd.
        annotations = [dict(a, iscrowd=0) for a in gt_dataset['annotations']]
        self.coco = COCO(dict(gt_dataset, annotations=annotations),
                         print_function=_quiet)
        self.img_ids = sorted(self.coco.getImgIds())
        self.cat_ids = sorted(self.coco.getCatIds())
        self.dataset = gt_dataset
        self.code_base = federated_code_base(gt_dataset)
        self.known_pairs = federated_pairs(gt_dataset)

    def keep_mask(self, img: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """True where lvis-api keeps the detection (see
        :func:`federated_pairs`)."""
        return np.isin(img * self.code_base + cat, self.known_pairs)


# one index per annotation object (an lvis.LVIS, a dict) while it lives
_INDEX_CACHE: 'weakref.WeakKeyDictionary' = weakref.WeakKeyDictionary()
_PATH_CACHE: Dict[str, _IndexedGroundTruth] = {}


def _gt_dataset(lvis_gt) -> dict:
    dataset = getattr(lvis_gt, 'dataset', lvis_gt)
    if not isinstance(dataset, dict) or 'annotations' not in dataset:
        raise TypeError('lvis_gt must be an lvis.LVIS object, an LVIS '
                        'annotation dict or the path of an annotation file, '
                        f'got {type(lvis_gt).__name__}')
    return dataset


def indexed_ground_truth(lvis_gt) -> _IndexedGroundTruth:
    """The (cached) faster-coco-eval index of ``lvis_gt``."""
    if isinstance(lvis_gt, str):
        if lvis_gt not in _PATH_CACHE:
            from mmdet_longtail.datasets.class_stats import load_lvis_json
            _PATH_CACHE.clear()  # keep one file's index at most
            _PATH_CACHE[lvis_gt] = _IndexedGroundTruth(
                load_lvis_json(lvis_gt))
        return _PATH_CACHE[lvis_gt]
    dataset = _gt_dataset(lvis_gt)
    key = lvis_gt
    try:
        cached = _INDEX_CACHE.get(key)
    except TypeError:  # a plain dict cannot be weakly referenced
        return _IndexedGroundTruth(dataset)
    if cached is None or cached.dataset is not dataset:
        cached = _IndexedGroundTruth(dataset)
        _INDEX_CACHE[key] = cached
    return cached


def _detections_api(gt: _IndexedGroundTruth, dets: List[dict],
                    iou_type: str):
    """faster-coco-eval's result object for already-filtered detections.

    ``area`` follows lvis-api's ``LVISResults``: the box area when a result
    has a box (mmdet's segm results do), else the mask area.
    """
    COCO, _ = import_faster_coco_eval()
    from faster_coco_eval.core import mask as mask_utils
    annotations = []
    for i, det in enumerate(dets):
        ann = dict(det, id=i + 1, iscrowd=0)
        if 'bbox' in det:
            ann['area'] = det['bbox'][2] * det['bbox'][3]
        else:
            ann['area'] = float(mask_utils.area(det['segmentation']))
            ann['bbox'] = list(mask_utils.toBbox(det['segmentation']))
        annotations.append(ann)
    res = COCO(print_function=_quiet)
    res.dataset = dict(
        images=gt.coco.dataset['images'],
        categories=gt.coco.dataset['categories'],
        annotations=annotations)
    res.createIndex()
    return res


def evaluate_lvis_fast(lvis_gt,
                       results: Union[str, List[dict]],
                       iou_type: str = 'bbox',
                       img_ids: Optional[Sequence[int]] = None,
                       max_dets: int = 300,
                       source: str = 'results') -> LVISEvalResult:
    """Evaluate detections with faster-coco-eval, as lvis-api would.

    Same arguments and result as :func:`evaluate_lvis`.

    Args:
        lvis_gt: an ``lvis.LVIS`` instance, an LVIS annotation dict or the
            path of an annotation file.
        results: detections in LVIS/COCO result format (list or json path).
            The list is not modified.
        iou_type: ``'bbox'`` or ``'segm'``.
        img_ids: evaluate only these images (default: all).
        max_dets: detections kept per image (LVIS: 300).
        source: name used in error messages.
    """
    _, COCOeval_faster = import_faster_coco_eval()
    gt = indexed_ground_truth(lvis_gt)
    results, source = load_results(results, source)
    img, cat, score = validate_results(gt.img_ids, gt.cat_ids, results,
                                       iou_type, source)
    if img_ids is not None:
        img_ids = sorted(set(int(i) for i in img_ids))
    keep = top_detections_per_image(img, score, max_dets)
    keep = keep[gt.keep_mask(img[keep], cat[keep])]
    if keep.size == 0:
        metrics, per_class, cat_ids = metrics_without_detections(
            gt.dataset, img_ids, max_dets)
        return LVISEvalResult(iou_type, metrics, per_class, cat_ids)

    with gc_paused():
        dets = _detections_api(gt, [results[i] for i in keep], iou_type)
        evaluator = COCOeval_faster(
            gt.coco, dets, iou_type, lvis_style=True, print_function=_quiet)
        evaluator.params.maxDets = [max_dets]
        if img_ids is not None:
            evaluator.params.imgIds = img_ids
        evaluator.run()
    stats = evaluator.stats_as_dict
    metrics = {
        lvis_key.format(max_dets): float(stats[key])
        for key, lvis_key in FASTER_TO_LVIS_KEYS.items()
    }
    return LVISEvalResult(iou_type, metrics,
                          per_class_ap(evaluator.eval['precision']),
                          list(evaluator.params.catIds))
