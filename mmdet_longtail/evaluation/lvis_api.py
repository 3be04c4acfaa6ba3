"""The official LVIS evaluation (PyPI ``lvis==0.5.3``) on current numpy.

``lvis==0.5.3`` is the last release of lvis-api. Its ``LVISEval.accumulate``
casts with ``np.float``, which numpy 1.24 removed, so the evaluation crashes
after a whole training run. The upstream fix replaced the alias by the
builtin ``float``, but it was never released. Here, ``lvis.eval`` gets a
numpy proxy that adds back the removed alias, with the same meaning. numpy
itself is left untouched, and the official code computes every number, so
the results are the official evaluator's.

:func:`evaluate_lvis` is the ``'lvis'`` backend of the metric, the offline
evaluation tool and the analysis tools; ``fast_lvis_eval.py`` holds the
``'fast'`` backend with the same signature and result type. The helpers
shared by both backends (result checks, per-class AP, the numbers of an
empty result list) live here.
"""
import json
import logging
import os
import tempfile
import types
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

# numpy 1.24 removed these aliases; lvis 0.5.3 uses np.float only, the rest
# are kept for forks of lvis-api that may use them.
_REMOVED_NUMPY_ALIASES = dict(float=float, int=int, bool=bool, object=object)

LVIS_METRIC_ITEMS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'APr', 'APc',
                     'APf')
# lvis-api's recall keys (max_dets is part of the name)
LVIS_RECALL_ITEMS = ('AR@{}', 'ARs@{}', 'ARm@{}', 'ARl@{}')
IOU_TYPES = ('bbox', 'segm')
# lvis-api's area ranges (all, small, medium, large) and frequency letters
AREA_RANGES = ((0.0, 1e5**2), (0.0, 32.0**2), (32.0**2, 96.0**2),
               (96.0**2, 1e5**2))
FREQUENCY_LETTERS = ('r', 'c', 'f')


class _NumpyWithRemovedAliases(types.ModuleType):
    """numpy, plus the aliases that numpy 1.24 removed."""

    def __init__(self) -> None:
        super().__init__('numpy')
        for name, value in _REMOVED_NUMPY_ALIASES.items():
            # vars(): hasattr(np, 'object') warns on numpy 2
            if name not in vars(np):
                setattr(self, name, value)

    def __getattr__(self, name: str):
        return getattr(np, name)


def patch_lvis_numpy() -> None:
    """Make ``lvis.eval`` run on numpy >= 1.24 (idempotent)."""
    import lvis.eval as lvis_eval_module
    if not isinstance(lvis_eval_module.np, _NumpyWithRemovedAliases):
        lvis_eval_module.np = _NumpyWithRemovedAliases()


def import_lvis():
    """Return ``(LVIS, LVISEval, LVISResults)`` ready to use."""
    try:
        from lvis import LVIS, LVISEval, LVISResults
    except ImportError as e:
        raise ImportError('the official LVIS evaluation needs the `lvis` '
                          'package: pip install lvis==0.5.3') from e
    patch_lvis_numpy()
    return LVIS, LVISEval, LVISResults


@contextmanager
def quiet_lvis_logging():
    """Hide lvis-api's per-call warnings ("Assuming user provided the
    results in correct format")."""
    logger = logging.getLogger('lvis.results')
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@dataclass
class LVISEvalResult:
    """Numbers of one LVIS evaluation (full precision).

    Attributes:
        iou_type (str): ``'bbox'`` or ``'segm'``.
        metrics (dict): ``AP``, ``AP50``, ``AP75``, ``APs/m/l``,
            ``APr/c/f`` and the recalls ``AR@300``, ``ARs@300``, ... -1 where
            lvis-api gives -1 (no ground truth in that group or range).
        per_class_ap (np.ndarray): AP of each category, NaN where it is
            undefined (no ground truth in the evaluated images), ordered as
            ``cat_ids``.
        cat_ids (list[int]): ascending category ids.
    """
    iou_type: str
    metrics: Dict[str, float]
    per_class_ap: np.ndarray = field(default_factory=lambda: np.zeros(0))
    cat_ids: List[int] = field(default_factory=list)


def load_results(results: Union[str, List[dict]],
                 source: str) -> Tuple[List[dict], str]:
    """Detections as a list, and the name used in error messages."""
    if isinstance(results, str):
        source = results
        try:
            with open(results) as f:
                results = json.load(f)
        except FileNotFoundError as e:
            raise FileNotFoundError(f'results file not found: {source}') \
                from e
        except json.JSONDecodeError as e:
            raise ValueError(f'{source} is not valid JSON: {e}') from e
    if not isinstance(results, list):
        raise ValueError(f'{source}: LVIS results must be a list of '
                         f'detections, got {type(results).__name__}')
    return results, source


def results_arrays(results: Sequence[dict], source: str
                   ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``image_id``, ``category_id`` and ``score`` of every detection.

    Raises a ``ValueError`` naming ``source``, the result's index, the field
    and the value when a field is missing, an id is not an integer or a
    score is not a finite number.
    """
    try:
        # ids read as floats first, so that 1.5 is reported, not truncated
        ids = [
            np.fromiter((r[name] for r in results), np.float64, len(results))
            for name in ('image_id', 'category_id')
        ]
        score = np.fromiter((r['score'] for r in results), np.float64,
                            len(results))
        # numpy reads numbers written as text ('0.5'); lvis-api does not
        text = next((i for i, r in enumerate(results)
                     if isinstance(r['score'], str)
                     or isinstance(r['image_id'], str)
                     or isinstance(r['category_id'], str)), None)
        if text is not None:
            raise TypeError(f'result #{text} holds text')
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        _raise_first_bad_result(results, source, e)
    for values, name in zip(ids, ('image_id', 'category_id')):
        bad = np.flatnonzero(~np.isfinite(values) | (values != np.round(
            values)))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f'{source}: result #{i} has {name}='
                             f'{results[i][name]!r}, expected an integer id')
    if not np.isfinite(score).all():
        i = int(np.flatnonzero(~np.isfinite(score))[0])
        value = results[i]['score']
        expected = 'a finite number' if isinstance(
            value, (int, float, np.number)) else 'a number'  # None: nan
        raise ValueError(f'{source}: result #{i} has score={value!r}, '
                         f'expected {expected}')
    return ids[0].astype(np.int64), ids[1].astype(np.int64), score


def _is_integer(value) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    return isinstance(value, (float, np.floating)) and float(value) == int(
        value)


def _raise_first_bad_result(results: Sequence[dict], source: str,
                            error: Exception) -> None:
    """Name the first result with a missing or malformed id / score."""
    for i, det in enumerate(results):
        if not isinstance(det, dict):
            raise ValueError(f'{source}: result #{i} is a '
                             f'{type(det).__name__}, expected a dict') \
                from error
        for name in ('image_id', 'category_id', 'score'):
            if name not in det:
                raise ValueError(f'{source}: result #{i} has no {name!r} '
                                 f'field') from error
            value = det[name]
            if name == 'score':
                ok = isinstance(value, (int, float, np.number)) and \
                    not isinstance(value, (bool, np.bool_))
                expected = 'a number'
            else:
                ok = _is_integer(value)
                expected = 'an integer id'
            if not ok:
                raise ValueError(f'{source}: result #{i} has {name}='
                                 f'{value!r}, expected {expected}') \
                    from error
    raise ValueError(f'{source}: malformed results ({error})') from error


def validate_results(gt_img_ids: Sequence[int], gt_cat_ids: Sequence[int],
                     results: Sequence[dict], iou_type: str,
                     source: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raise a clear error for detections of unknown images or categories,
    or without the field that ``iou_type`` evaluates.

    Returns:
        the ``image_id``, ``category_id`` and ``score`` arrays.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f'LVIS evaluation supports iou_type {IOU_TYPES}, '
                         f'got {iou_type!r}')
    img, cat, score = results_arrays(results, source)
    for values, known, what in ((img, gt_img_ids, 'image_id'),
                                (cat, gt_cat_ids, 'category_id')):
        unknown = ~np.isin(values, np.asarray(list(known), dtype=np.int64))
        if unknown.any():
            i = int(np.flatnonzero(unknown)[0])
            kind = 'an image' if what == 'image_id' else 'a category'
            raise ValueError(
                f'{source}: result #{i} has {what}={int(values[i])}, which '
                f'is not {kind} of the annotation file '
                f'({int(unknown.sum())} such results)')
    field_name = 'bbox' if iou_type == 'bbox' else 'segmentation'
    for i, det in enumerate(results):
        if field_name not in det:
            raise ValueError(f'{source}: result #{i} has no {field_name!r} '
                             f'field, needed for {iou_type} evaluation')
    return img, cat, score


def top_k_per_group(group: np.ndarray, score: np.ndarray,
                    k: int) -> np.ndarray:
    """Indices (ascending) of the ``k`` highest-scoring detections of each
    group (image or category); all of them when ``k < 0``.

    As lvis-api's ``LVISResults``: a stable sort by descending score inside
    each group, so among equal scores the earlier detection is kept.
    """
    if k < 0 or group.size == 0:
        return np.arange(group.size)
    order = np.lexsort((np.arange(group.size), -score, group))
    sorted_group = group[order]
    first = np.searchsorted(sorted_group, sorted_group, side='left')
    rank = np.arange(group.size) - first
    return np.sort(order[rank < k])


def top_detections_per_category(img: np.ndarray, cat: np.ndarray,
                                score: np.ndarray, max_dets_per_cat: int,
                                img_ids: Optional[Sequence[int]] = None
                                ) -> np.ndarray:
    """Indices (ascending) of the detections that fixed AP evaluates.

    Fixed AP (Dave et al., "Evaluating Large-Vocabulary Object Detectors:
    The Devil is in the Details", 2021) keeps the ``max_dets_per_cat``
    highest-scoring detections of each category over the whole evaluated
    set (10,000 on LVIS), with no per-image cap. The cap counts every
    detection on the evaluated images (``img_ids``, default all), including
    those the federated rule drops later, as it applies to the submitted
    result file. Ties in score keep the earlier detection.
    """
    candidates = np.arange(img.size)
    if img_ids is not None:
        candidates = candidates[np.isin(
            img, np.asarray(list(img_ids), dtype=np.int64))]
    kept = top_k_per_group(cat[candidates], score[candidates],
                           max_dets_per_cat)
    return candidates[kept]


def gt_dataset_of(lvis_gt) -> dict:
    """The annotation dict of an ``lvis.LVIS``, a dict or a file path."""
    if isinstance(lvis_gt, str):
        from mmdet_longtail.datasets.class_stats import load_lvis_json
        return load_lvis_json(lvis_gt)
    dataset = getattr(lvis_gt, 'dataset', lvis_gt)
    if not isinstance(dataset, dict) or 'annotations' not in dataset:
        raise TypeError('lvis_gt must be an lvis.LVIS object, an LVIS '
                        'annotation dict or the path of an annotation file, '
                        f'got {type(lvis_gt).__name__}')
    return dataset


def lvis_from_dict(dataset: dict):
    """An ``lvis.LVIS`` of an annotation dict (``LVIS`` reads only files).

    RLE ``counts`` held as bytes (lvis-api converts polygons to such RLE in
    its ground truth objects) are written as text, which pycocotools reads
    back as the same mask.
    """
    LVIS, _, _ = import_lvis()

    def text_counts(value):
        if isinstance(value, bytes):
            return value.decode('ascii')
        if isinstance(value, np.generic):
            return value.item()
        raise TypeError(f'{type(value).__name__} is not JSON serializable')

    fd, path = tempfile.mkstemp(suffix='.json', prefix='lvis_gt_')
    try:
        with os.fdopen(fd, 'w') as f:
            json.dump(dataset, f, default=text_counts)
        return LVIS(path)
    finally:
        os.remove(path)


def per_class_ap(precision: np.ndarray) -> np.ndarray:
    """AP per category from a precision array.

    ``precision`` is (iou thresholds, recall thresholds, categories, area
    ranges[, max dets]); entries of -1 mean "no ground truth". Area range 0
    is 'all'; the last max-dets setting is used.
    """
    if precision.ndim == 5:
        precision = precision[..., -1]
    ap = np.full(precision.shape[2], np.nan)
    for k in range(precision.shape[2]):
        p = precision[:, :, k, 0]
        p = p[p > -1]
        if p.size:
            ap[k] = float(np.mean(p))
    return ap


def metrics_without_detections(
        gt_dataset: dict, img_ids: Optional[Sequence[int]],
        max_dets: int) -> Tuple[Dict[str, float], np.ndarray, List[int]]:
    """What lvis-api's definitions give for an empty result list.

    lvis-api itself cannot build ``LVISResults`` from nothing. By its
    definitions, every category with ground truth in an area range has
    precision and recall 0 there; a group or range without ground truth is
    -1.
    """
    cats = sorted(gt_dataset['categories'], key=lambda c: c['id'])
    cat_ids = [c['id'] for c in cats]
    index = {c: k for k, c in enumerate(cat_ids)}
    wanted = None if img_ids is None else set(int(i) for i in img_ids)
    # has_gt[k, a]: category k has ground truth in area range a
    has_gt = np.zeros((len(cat_ids), len(AREA_RANGES)), dtype=bool)
    for ann in gt_dataset['annotations']:
        if wanted is not None and ann['image_id'] not in wanted:
            continue
        for a, (lo, hi) in enumerate(AREA_RANGES):
            if lo <= ann['area'] <= hi:
                has_gt[index[ann['category_id']], a] = True

    def zero_or_minus_one(mask: np.ndarray) -> float:
        return 0.0 if mask.any() else -1.0

    letters = np.array([c['frequency'] for c in cats])
    metrics = {}
    for key in ('AP', 'AP50', 'AP75'):
        metrics[key] = zero_or_minus_one(has_gt[:, 0])
    for key, a in (('APs', 1), ('APm', 2), ('APl', 3)):
        metrics[key] = zero_or_minus_one(has_gt[:, a])
    for letter in FREQUENCY_LETTERS:
        metrics[f'AP{letter}'] = zero_or_minus_one(has_gt[letters == letter,
                                                          0])
    for key, a in zip(LVIS_RECALL_ITEMS, range(4)):
        metrics[key.format(max_dets)] = zero_or_minus_one(has_gt[:, a])
    per_class = np.where(has_gt[:, 0], 0.0, np.nan)
    return metrics, per_class, cat_ids


def evaluate_lvis(lvis_gt,
                  results: Union[str, List[dict]],
                  iou_type: str = 'bbox',
                  img_ids: Optional[Sequence[int]] = None,
                  max_dets: int = 300,
                  source: str = 'results',
                  progress: Optional[Callable[[int, int], None]] = None,
                  max_dets_per_cat: int = -1) -> LVISEvalResult:
    """Evaluate detections with the official lvis-api.

    Args:
        lvis_gt: an ``lvis.LVIS`` instance, an LVIS annotation dict or the
            path of an annotation file.
        results: detections in LVIS/COCO result format (list or json path).
            The list is not modified.
        iou_type: ``'bbox'`` or ``'segm'``.
        img_ids: evaluate only these images (default: all images of the
            annotation file). lvis-api reads ``params.img_ids``; mmdet's
            ``LVISMetric`` sets the COCO name ``imgIds`` instead, so it always
            evaluates every image.
        max_dets: detections kept per image (LVIS: 300); -1: no cap
            (``LVISResults(max_dets=-1)``).
        source: name used in error messages.
        progress: called with (done, total) as the evaluation advances
            (lvis-api reports nothing in between: (0, 1), then (1, 1)).
        max_dets_per_cat: keep only the top detections of each category
            over the evaluated images (:func:`top_detections_per_category`)
            before lvis-api sees them; -1 (default): no such cap. Fixed AP
            is ``max_dets=-1, max_dets_per_cat=10000``.
    """
    LVIS, LVISEval, LVISResults = import_lvis()
    if isinstance(lvis_gt, str):
        lvis_gt = LVIS(lvis_gt)
    elif isinstance(lvis_gt, dict):
        lvis_gt = lvis_from_dict(lvis_gt)
    results, source = load_results(results, source)
    img, cat, score = validate_results(lvis_gt.get_img_ids(),
                                       lvis_gt.get_cat_ids(), results,
                                       iou_type, source)
    if img_ids is not None:
        img_ids = sorted(set(int(i) for i in img_ids))
    if max_dets_per_cat >= 0:
        keep = top_detections_per_category(img, cat, score,
                                           max_dets_per_cat, img_ids)
        results = [results[i] for i in keep]
    if len(results) == 0:
        metrics, per_class, cat_ids = metrics_without_detections(
            lvis_gt.dataset, img_ids, max_dets)
        return LVISEvalResult(iou_type, metrics, per_class, cat_ids)
    # LVISResults writes 'area', 'id' (and a box polygon) into each dict
    with quiet_lvis_logging():
        lvis_dt = LVISResults(
            lvis_gt, [dict(r) for r in results], max_dets=max_dets)
    lvis_eval = LVISEval(lvis_gt, lvis_dt, iou_type)
    if img_ids is not None:
        lvis_eval.params.img_ids = img_ids
    lvis_eval.params.max_dets = max_dets
    if progress is not None:
        progress(0, 1)
    lvis_eval.run()
    if progress is not None:
        progress(1, 1)
    metrics = {k: float(v) for k, v in lvis_eval.get_results().items()}
    return LVISEvalResult(iou_type, metrics,
                          per_class_ap(lvis_eval.eval['precision']),
                          list(lvis_eval.params.cat_ids))
