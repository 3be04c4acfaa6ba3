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
broken as in lvis-api. Fixed AP (``max_dets_per_cat``, ``fixed_pool_ap.py``)
adds a per-category cap before step 1, as ``evaluate_lvis`` does before
building ``LVISResults``. faster-coco-eval then evaluates and accumulates a
chunk of categories at a time, each on the images where they are positive
or negative (the only images where lvis-api evaluates them), and the
summary numbers are lvis-api's definitions over the merged precision /
recall arrays. The ground truth is indexed once per annotation object and
reused by later evaluations (bbox then segm, every epoch).

``benchmarks/bench_lvis_eval.py`` measures it against lvis-api;
``tests/test_evaluation/test_fast_lvis_eval.py`` checks the numbers.
"""
import gc
import weakref
from contextlib import contextmanager
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from .lvis_api import (FREQUENCY_LETTERS, LVIS_RECALL_ITEMS, LVISEvalResult,
                       gt_dataset_of, load_results,
                       metrics_without_detections, per_class_ap,
                       top_detections_per_category, top_k_per_group,
                       validate_results)

# categories evaluated together (see _evaluate_by_category_chunks); 16 was
# the fastest of 8..2000 on the LVIS-shaped benchmark workload
CATEGORY_CHUNK = 16


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
    return top_k_per_group(img, score, max_dets)


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
        self.pair_img = self.known_pairs // self.code_base
        self.pair_cat = self.known_pairs % self.code_base
        self.frequencies = np.array(
            [c['frequency'] for c in self.coco.loadCats(self.cat_ids)])
        self.gt_img = np.array([a['image_id'] for a in annotations],
                               dtype=np.int64)
        self.gt_cat = np.array([a['category_id'] for a in annotations],
                               dtype=np.int64)

    def keep_mask(self, img: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """True where lvis-api keeps the detection (see
        :func:`federated_pairs`)."""
        return np.isin(img * self.code_base + cat, self.known_pairs)


# one index per annotation object (an lvis.LVIS, a dict) while it lives
_INDEX_CACHE: 'weakref.WeakKeyDictionary' = weakref.WeakKeyDictionary()
_PATH_CACHE: Dict[str, _IndexedGroundTruth] = {}


def indexed_ground_truth(lvis_gt) -> _IndexedGroundTruth:
    """The (cached) faster-coco-eval index of ``lvis_gt``."""
    if isinstance(lvis_gt, str):
        if lvis_gt not in _PATH_CACHE:
            from mmdet_longtail.datasets.class_stats import load_lvis_json
            _PATH_CACHE.clear()  # keep one file's index at most
            _PATH_CACHE[lvis_gt] = _IndexedGroundTruth(
                load_lvis_json(lvis_gt))
        return _PATH_CACHE[lvis_gt]
    dataset = gt_dataset_of(lvis_gt)
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


def _evaluate_by_category_chunks(gt: _IndexedGroundTruth, dets, iou_type: str,
                                 img_ids: np.ndarray, cats: np.ndarray,
                                 max_dets: int,
                                 dets_count: int,
                                 progress: Optional[Callable[[int, int],
                                                             None]] = None):
    """faster-coco-eval's LVIS evaluate + accumulate, a chunk of categories
    at a time, each on the images where its categories are evaluated.

    faster-coco-eval loops over every image x category pair, but a category
    is only evaluated on the images where it is positive or negative (its
    other detections are dropped and it has no ground truth elsewhere): a
    few dozen of LVIS's 20k val images. Evaluating ``CATEGORY_CHUNK``
    categories on the union of their images gives the same per-category
    precision and recall with a fraction of the pairs.

    Args:
        img_ids: the evaluated images.
        cats: the categories with ground truth in those images; the others
            are undefined (-1) in lvis-api.

    Returns:
        precision (T, R, K, A), recall (T, K, A) over all K categories, -1
        where undefined, as lvis-api's ``eval['precision' / 'recall']``, and
        the IoU thresholds (T,).
    """
    _, COCOeval_faster = import_faster_coco_eval()
    evaluated = np.isin(gt.pair_img, img_ids)
    pair_img, pair_cat = gt.pair_img[evaluated], gt.pair_cat[evaluated]
    column = {c: k for k, c in enumerate(gt.cat_ids)}
    num_cats = len(gt.cat_ids)
    precision = recall = iou_thrs = None
    chunks = np.array_split(cats, -(-cats.size // CATEGORY_CHUNK))
    for done, chunk in enumerate(chunks, 1):
        evaluator = COCOeval_faster(
            gt.coco, dets, iou_type, lvis_style=True, print_function=_quiet)
        params = evaluator.params
        params.catIds = chunk.tolist()
        params.imgIds = np.unique(pair_img[np.isin(pair_cat,
                                                   chunk)]).tolist()
        # faster-coco-eval caps each image x category pair; without a
        # per-image cap, no pair has more than all the detections
        params.maxDets = [max_dets if max_dets >= 0 else max(1, dets_count)]
        evaluator.evaluate()
        evaluator.accumulate()
        if precision is None:
            iou_thrs = np.asarray(params.iouThrs)
            precision = -np.ones((len(iou_thrs), len(params.recThrs),
                                  num_cats, len(params.areaRng)))
            recall = -np.ones((len(iou_thrs), num_cats, len(params.areaRng)))
        columns = [column[c] for c in chunk.tolist()]
        precision[:, :, columns] = evaluator.eval['precision'][..., -1]
        recall[:, columns] = evaluator.eval['recall'][..., -1]
        if progress is not None:
            progress(done, len(chunks))
    return precision, recall, iou_thrs


def summarize_lvis(precision: np.ndarray, recall: np.ndarray,
                   iou_thrs: np.ndarray, frequencies: np.ndarray,
                   max_dets: int) -> Dict[str, float]:
    """lvis-api's summary numbers from precision / recall arrays.

    Each number is the mean of the defined (> -1) entries of a slice:
    all IoU thresholds (or 0.5 / 0.75), all recall thresholds, the
    categories (all, or one frequency group), one area range (all / small /
    medium / large); -1 when nothing is defined.
    """

    def mean_defined(values: np.ndarray) -> float:
        values = values[values > -1]
        return float(np.mean(values)) if values.size else -1.0

    # exact comparison, as lvis-api (0.5 and 0.75 are exact in linspace)
    t50 = iou_thrs == 0.5
    t75 = iou_thrs == 0.75
    metrics = {
        'AP': mean_defined(precision[..., 0]),
        'AP50': mean_defined(precision[t50][..., 0]),
        'AP75': mean_defined(precision[t75][..., 0]),
        'APs': mean_defined(precision[..., 1]),
        'APm': mean_defined(precision[..., 2]),
        'APl': mean_defined(precision[..., 3]),
    }
    for letter in FREQUENCY_LETTERS:
        metrics[f'AP{letter}'] = mean_defined(
            precision[:, :, frequencies == letter, 0])
    for area, key in enumerate(LVIS_RECALL_ITEMS):
        metrics[key.format(max_dets)] = mean_defined(recall[..., area])
    return metrics


def evaluate_lvis_fast(lvis_gt,
                       results: Union[str, List[dict]],
                       iou_type: str = 'bbox',
                       img_ids: Optional[Sequence[int]] = None,
                       max_dets: int = 300,
                       source: str = 'results',
                       progress: Optional[Callable[[int, int], None]] = None,
                       max_dets_per_cat: int = -1) -> LVISEvalResult:
    """Evaluate detections with faster-coco-eval, as lvis-api would.

    Same arguments and result as :func:`evaluate_lvis`.

    Args:
        lvis_gt: an ``lvis.LVIS`` instance, an LVIS annotation dict or the
            path of an annotation file.
        results: detections in LVIS/COCO result format (list or json path).
            The list is not modified.
        iou_type: ``'bbox'`` or ``'segm'``.
        img_ids: evaluate only these images (default: all).
        max_dets: detections kept per image (LVIS: 300); -1: no cap.
        source: name used in error messages.
        progress: called with (done, total) as the evaluation advances.
        max_dets_per_cat: keep only the top detections of each category
            over the evaluated images first (fixed AP: 10,000); -1: no cap.
    """
    gt = indexed_ground_truth(lvis_gt)
    results, source = load_results(results, source)
    img, cat, score = validate_results(gt.img_ids, gt.cat_ids, results,
                                       iou_type, source)
    if img_ids is not None:
        img_ids = sorted(set(int(i) for i in img_ids))
    eval_imgs = np.asarray(gt.img_ids if img_ids is None else img_ids,
                           dtype=np.int64)
    # as evaluate_lvis: the per-category cap first, then LVISResults's
    # per-image cap, then lvis-api's federated filter
    keep = np.arange(img.size)
    if max_dets_per_cat >= 0:
        keep = top_detections_per_category(img, cat, score, max_dets_per_cat,
                                           img_ids)
    keep = keep[top_detections_per_image(img[keep], score[keep], max_dets)]
    keep = keep[gt.keep_mask(img[keep], cat[keep])]
    cats = np.unique(gt.gt_cat[np.isin(gt.gt_img, eval_imgs)])
    if keep.size == 0 or cats.size == 0:
        metrics, per_class, cat_ids = metrics_without_detections(
            gt.dataset, img_ids, max_dets)
        return LVISEvalResult(iou_type, metrics, per_class, cat_ids)

    with gc_paused():
        dets = _detections_api(gt, [results[i] for i in keep], iou_type)
        precision, recall, iou_thrs = _evaluate_by_category_chunks(
            gt, dets, iou_type, eval_imgs, cats, max_dets, keep.size,
            progress)
    metrics = summarize_lvis(precision, recall, iou_thrs, gt.frequencies,
                             max_dets)
    return LVISEvalResult(iou_type, metrics, per_class_ap(precision),
                          list(gt.cat_ids))
