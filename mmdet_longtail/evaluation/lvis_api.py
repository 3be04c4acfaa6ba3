"""The official LVIS evaluation (PyPI ``lvis==0.5.3``) on current numpy.

``lvis==0.5.3`` is the last release of lvis-api. Its ``LVISEval.accumulate``
casts with ``np.float``, which numpy 1.24 removed, so the evaluation crashes
after a whole training run. The upstream fix replaced the alias by the
builtin ``float``, but it was never released. Here, ``lvis.eval`` gets a
numpy proxy that adds back the removed alias, with the same meaning. numpy
itself is left untouched, and the official code computes every number, so
the results are the official evaluator's.

:func:`evaluate_lvis` is the one entry point used by the metric, the offline
evaluation tool and the analysis tools.
"""
import types
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

# numpy 1.24 removed these aliases; lvis 0.5.3 uses np.float only, the rest
# are kept for forks of lvis-api that may use them.
_REMOVED_NUMPY_ALIASES = dict(float=float, int=int, bool=bool, object=object)

LVIS_METRIC_ITEMS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'APr', 'APc',
                     'APf')


class _NumpyWithRemovedAliases(types.ModuleType):
    """numpy, plus the aliases that numpy 1.24 removed."""

    def __init__(self) -> None:
        super().__init__('numpy')
        for name, value in _REMOVED_NUMPY_ALIASES.items():
            if not hasattr(np, name):
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


@dataclass
class LVISEvalResult:
    """Numbers of one LVIS evaluation (full precision)."""
    iou_type: str
    metrics: Dict[str, float]
    # AP of each category (NaN where it is undefined), ordered by cat_ids
    per_class_ap: np.ndarray = field(default_factory=lambda: np.zeros(0))
    cat_ids: List[int] = field(default_factory=list)


def validate_results(lvis_gt, results: Sequence[dict], source: str) -> None:
    """Raise a clear error for detections of unknown images or categories."""
    img_ids = set(lvis_gt.get_img_ids())
    cat_ids = set(lvis_gt.get_cat_ids())
    for i, det in enumerate(results):
        if det.get('image_id') not in img_ids:
            raise ValueError(
                f'{source}: result #{i} has image_id={det.get("image_id")!r}, '
                f'which is not an image of the annotation file')
        if det.get('category_id') not in cat_ids:
            raise ValueError(
                f'{source}: result #{i} has category_id='
                f'{det.get("category_id")!r}, which is not a category of the '
                f'annotation file')


def per_class_ap(precision: np.ndarray) -> np.ndarray:
    """AP per category from lvis-api's precision array.

    ``precision`` is (iou thresholds, recall thresholds, categories, area
    ranges); entries of -1 mean "no ground truth". Area range 0 is 'all'.
    """
    ap = np.full(precision.shape[2], np.nan)
    for k in range(precision.shape[2]):
        p = precision[:, :, k, 0]
        p = p[p > -1]
        if p.size:
            ap[k] = float(np.mean(p))
    return ap


def evaluate_lvis(lvis_gt,
                  results: Union[str, List[dict]],
                  iou_type: str = 'bbox',
                  img_ids: Optional[Sequence[int]] = None,
                  max_dets: int = 300,
                  source: str = 'results') -> LVISEvalResult:
    """Evaluate detections with the official lvis-api.

    Args:
        lvis_gt: an ``lvis.LVIS`` instance or the path of an annotation file.
        results: detections in LVIS/COCO result format (list or json path).
        iou_type: ``'bbox'`` or ``'segm'``.
        img_ids: evaluate only these images (default: all images of the
            annotation file). lvis-api reads ``params.img_ids``; mmdet's
            ``LVISMetric`` sets the COCO name ``imgIds`` instead, so it always
            evaluates every image.
        max_dets: detections kept per image (LVIS: 300).
        source: name used in error messages.
    """
    LVIS, LVISEval, LVISResults = import_lvis()
    if isinstance(lvis_gt, str):
        lvis_gt = LVIS(lvis_gt)
    if isinstance(results, str):
        import json
        with open(results) as f:
            source, results = results, json.load(f)
    validate_results(lvis_gt, results, source)
    cat_ids = sorted(lvis_gt.get_cat_ids())
    if len(results) == 0:
        # lvis-api cannot build LVISResults from nothing; AP of nothing is 0
        metrics = {k: 0.0 for k in LVIS_METRIC_ITEMS}
        return LVISEvalResult(iou_type, metrics,
                              np.full(len(cat_ids), np.nan), cat_ids)
    lvis_dt = LVISResults(lvis_gt, results, max_dets=max_dets)
    lvis_eval = LVISEval(lvis_gt, lvis_dt, iou_type)
    if img_ids is not None:
        lvis_eval.params.img_ids = sorted(set(int(i) for i in img_ids))
    lvis_eval.params.max_dets = max_dets
    lvis_eval.run()
    metrics = {
        k: float(v)
        for k, v in lvis_eval.get_results().items()
    }
    return LVISEvalResult(iou_type, metrics,
                          per_class_ap(lvis_eval.eval['precision']),
                          list(lvis_eval.params.cat_ids))
