"""LVIS metric with exact numbers on current numpy, correct image subsets and
a choice of evaluation backend.

It extends mmdet's ``LVISMetric`` (same arguments, same ``lvis/...`` keys)
and fixes three things:

* it runs the official lvis-api on numpy >= 1.24 (see ``lvis_api.py``);
* it evaluates only the images that were processed (``params.img_ids``).
  mmdet sets the COCO name ``imgIds``, so a run on a subset counted every
  skipped image as having no detection;
* values are reported at full precision (mmdet rounds them to 3 decimals), and
  ``classwise=True`` also logs the per-class AP; the last per-class AP is
  kept in ``last_per_class_ap`` for the analysis tools.

Backends (``backend``), registered in :data:`LVIS_EVAL_BACKENDS`:

* ``'lvis'``: the official lvis-api;
* ``'fast'``: faster-coco-eval's LVIS mode after the two steps that make it
  equal to lvis-api (``fast_lvis_eval.py``), several times faster.

Fixed AP and pooled AP (Dave et al., "Evaluating Large-Vocabulary Object
Detectors: The Devil is in the Details", 2021; ``fixed_pool_ap.py``) are
reported next to AP with ``ap_fixed=True`` / ``ap_pool=True``: keys
``<type>_AP_fixed``, ``<type>_APr_fixed``, ``<type>_APc_fixed``,
``<type>_APf_fixed`` and ``<type>_AP_pool``. They need more than 300
detections per image from the model (``test_cfg.rcnn.max_per_img``, see
the README); the standard AP keeps its per-image cap (``max_dets``).

Results are collected on the CPU (``collect_device='cpu'``, mmdet's
default). For a multi-GPU job on the full LVIS val, ``format_only=True`` with
``outfile_prefix`` writes the result files and ``tools/lvis_eval.py``
evaluates them afterwards.
"""
import os.path as osp
import tempfile
from collections import OrderedDict
from typing import Callable, Dict, Optional, Sequence

import numpy as np
from mmengine.fileio import get_local_path, load
from mmengine.logging import MMLogger
from tqdm import tqdm

from mmdet.evaluation.metrics import LVISMetric
from mmdet.registry import METRICS
from ..fast_lvis_eval import evaluate_lvis_fast
from ..fixed_pool_ap import (FIXED_AP_DETS_PER_CAT, FIXED_AP_ITEMS,
                             evaluate_ap_fixed, evaluate_ap_pool)
from ..lvis_api import (IOU_TYPES, LVIS_METRIC_ITEMS, LVISEvalResult,
                        evaluate_lvis, import_lvis)

# name -> function(lvis_gt, results, iou_type, img_ids, max_dets, source)
LVIS_EVAL_BACKENDS: Dict[str, Callable[..., LVISEvalResult]] = {
    'lvis': evaluate_lvis,
    'fast': evaluate_lvis_fast,
}


@METRICS.register_module()
class LongTailLVISMetric(LVISMetric):
    """mmdet's ``LVISMetric`` made exact, subset-correct and pluggable.

    Args:
        ann_file (str, optional): LVIS annotation file of the evaluated
            split. None: converted from the dataset's ground truth.
        backend (str): evaluation backend, ``'lvis'`` (official lvis-api,
            default) or ``'fast'`` (faster-coco-eval, same numbers).
        max_dets (int): detections kept per image, 300 for LVIS.
        progress (bool): show a progress bar over the evaluated IoU types
            (stderr), as ``tools/test.py --progress`` does.
        ap_fixed (bool): also report fixed AP (no per-image cap, the top
            ``dets_per_cat`` detections of each category): keys
            ``<type>_AP_fixed``, ``<type>_APr_fixed``, ``<type>_APc_fixed``,
            ``<type>_APf_fixed``. Default False.
        ap_pool (bool): also report pooled AP (one precision-recall curve
            over all categories, on the fixed-AP detections): key
            ``<type>_AP_pool``. Default False.
        dets_per_cat (int): detections kept per category for fixed and
            pooled AP, 10,000 as published.
        **kwargs: the arguments of mmdet's ``LVISMetric`` (``metric``,
            ``classwise``, ``metric_items``, ``format_only``,
            ``outfile_prefix``, ``collect_device``, ...). ``metric`` may hold
            ``'bbox'`` and ``'segm'``.
    """
    default_prefix: Optional[str] = 'lvis'

    def __init__(self,
                 ann_file: Optional[str] = None,
                 backend: str = 'lvis',
                 max_dets: int = 300,
                 progress: bool = False,
                 ap_fixed: bool = False,
                 ap_pool: bool = False,
                 dets_per_cat: int = FIXED_AP_DETS_PER_CAT,
                 **kwargs) -> None:
        if backend not in LVIS_EVAL_BACKENDS:
            raise ValueError(f'LongTailLVISMetric: unknown backend '
                             f'{backend!r}; choose from '
                             f'{sorted(LVIS_EVAL_BACKENDS)}')
        if not isinstance(dets_per_cat, int) or dets_per_cat < 1:
            raise ValueError(f'LongTailLVISMetric: dets_per_cat must be a '
                             f'positive integer, got {dets_per_cat!r}')
        if ann_file is not None and not osp.isfile(ann_file):
            raise FileNotFoundError(
                f'LongTailLVISMetric: ann_file not found: {ann_file}')
        LVIS, _, _ = import_lvis()
        super().__init__(ann_file=None, **kwargs)
        for metric in self.metrics:
            if metric not in IOU_TYPES:
                raise ValueError(f'LongTailLVISMetric evaluates {IOU_TYPES}, '
                                 f'got metric={metric!r}')
        unknown_items = set(self.metric_items or ()) - set(LVIS_METRIC_ITEMS)
        if unknown_items:
            raise ValueError(f'LongTailLVISMetric: unknown metric_items '
                             f'{sorted(unknown_items)}; choose from '
                             f'{LVIS_METRIC_ITEMS}')
        self.ann_file = ann_file
        if ann_file is not None:
            with get_local_path(
                    ann_file, backend_args=self.backend_args) as local_path:
                self._lvis_api = LVIS(local_path)
        self.backend = backend
        self.max_dets = max_dets
        self.progress = progress
        self.ap_fixed = ap_fixed
        self.ap_pool = ap_pool
        self.dets_per_cat = dets_per_cat
        # per-class AP of the last evaluation, {'bbox': array, ...}, ordered
        # as last_cat_ids
        self.last_per_class_ap: Dict[str, np.ndarray] = {}
        self.last_cat_ids: Sequence[int] = ()

    def compute_metrics(self, results: list) -> Dict[str, float]:
        with tempfile.TemporaryDirectory() as tmp_dir:
            return self._compute_metrics(results, tmp_dir)

    def _compute_metrics(self, results: list,
                         tmp_dir: str) -> Dict[str, float]:
        logger: MMLogger = MMLogger.get_current_instance()
        gts, preds = zip(*results)
        outfile_prefix = self.outfile_prefix or osp.join(tmp_dir, 'results')

        if self._lvis_api is None:
            LVIS, _, _ = import_lvis()
            logger.info('Converting ground truth to coco format...')
            self._lvis_api = LVIS(
                self.gt_to_coco_json(
                    gt_dicts=gts, outfile_prefix=outfile_prefix))
        if self.cat_ids is None:
            self.cat_ids = self._lvis_api.get_cat_ids()
        processed_img_ids = sorted({gt['img_id'] for gt in gts})

        result_files = self.results2json(preds, outfile_prefix)
        eval_results: Dict[str, float] = OrderedDict()
        if self.format_only:
            logger.info(f'results are saved in {osp.dirname(outfile_prefix)}')
            return eval_results

        evaluate = LVIS_EVAL_BACKENDS[self.backend]
        for metric in tqdm(self.metrics, desc='evaluate', unit='type',
                           disable=not self.progress):
            logger.info(f'Evaluating {metric} with the {self.backend} '
                        f'backend on {len(processed_img_ids)} images...')
            dets = load(result_files[metric]) if metric in result_files \
                else []
            source = result_files.get(metric, 'predictions')
            outcome = evaluate(
                self._lvis_api,
                dets,
                iou_type=metric,
                img_ids=processed_img_ids,
                max_dets=self.max_dets,
                source=source)
            for k in self.metric_items or LVIS_METRIC_ITEMS:
                eval_results[f'{metric}_{k}'] = outcome.metrics[k]
            extra = self._fixed_and_pooled(metric, dets, processed_img_ids,
                                           source)
            eval_results.update(extra)
            if extra:
                logger.info(f'{metric}: ' + ' '.join(
                    f'{k.split("_", 1)[1]}={v:.4f}'
                    for k, v in extra.items()))
            self.last_per_class_ap[metric] = outcome.per_class_ap
            self.last_cat_ids = outcome.cat_ids
            if self.classwise:
                self._log_classwise(metric, outcome, logger)
            logger.info(f'{metric}: ' + ' '.join(
                f'{k}={outcome.metrics[k]:.4f}' for k in LVIS_METRIC_ITEMS))
        return eval_results

    def _fixed_and_pooled(self, metric: str, dets: list,
                          img_ids: Sequence[int],
                          source: str) -> Dict[str, float]:
        """Fixed AP / pooled AP numbers of one IoU type, when enabled."""
        numbers: Dict[str, float] = OrderedDict()
        if self.ap_fixed:
            fixed = evaluate_ap_fixed(
                self._lvis_api,
                dets,
                iou_type=metric,
                img_ids=img_ids,
                backend=self.backend,
                dets_per_cat=self.dets_per_cat,
                source=source)
            for k in FIXED_AP_ITEMS:
                numbers[f'{metric}_{k}_fixed'] = fixed.metrics[k]
        if self.ap_pool:
            numbers[f'{metric}_AP_pool'] = evaluate_ap_pool(
                self._lvis_api,
                dets,
                iou_type=metric,
                img_ids=img_ids,
                backend=self.backend,
                dets_per_cat=self.dets_per_cat,
                source=source)
        return numbers

    def _log_classwise(self, metric: str, outcome: LVISEvalResult,
                       logger: MMLogger) -> None:
        cats = self._lvis_api.load_cats(outcome.cat_ids)
        lines = [f'{metric} per-class AP:']
        for cat, ap in zip(cats, outcome.per_class_ap):
            lines.append(f'  {cat["name"]:<30s} ({cat.get("frequency", "?")})'
                         f' {ap:.4f}')
        logger.info('\n'.join(lines))
