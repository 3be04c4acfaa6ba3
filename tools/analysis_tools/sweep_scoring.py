"""Sweep post-hoc scoring settings of a two-stage detector without re-running
the network.

The detector runs once over the test set (built from the config and the
checkpoint exactly as ``tools/test.py`` builds it). For every image the tool
caches what the last RoI box head receives (the RoIs after the last
refinement, the stage-averaged class logits, the box regression) and the
input features of every stage's classifier. Each setting is then re-scored
from the cache with mmdet's own ``_predict_by_feat_single`` (activation, box
decoding, NMS) and evaluated with the config's LVIS metric (bbox), so one
setting gives the numbers ``tools/test.py`` gives with that setting.

Sweepable settings (one parameter at a time, or ``--grid`` for all
combinations):

* ``--gamma``: NorCal strength (Pan et al., NeurIPS 2021,
  https://arxiv.org/abs/2107.02170), ``p_c ~ exp(z_c) / N_c^gamma``; plain
  softmax-CE heads are re-scored through ``CalibratedCrossEntropyLoss``.
* ``--tau``: tau-normalisation of every stage's classifier (Kang et al.,
  ICLR 2020, https://arxiv.org/abs/1910.09217); the logits are recomputed
  from the cached classifier features.
* ``--alpha``: TDE strength (Tang et al., NeurIPS 2020,
  https://arxiv.org/abs/2009.12991) of heads with an ``alpha`` attribute
  (``mmdet_longtail`` TDE heads); logits recomputed from the features.
* ``--score-thr``: ``test_cfg.rcnn.score_thr``.

The cache is keyed by a fingerprint of the model config (post-processing
settings excluded), the checkpoint contents and the test set (dataset config
and annotation file contents). A cache built for anything else is refused
with an error naming what differs. While the cache is built, every image is
re-scored with the config's own setting and compared with the network's
output, so a head the cache cannot reproduce fails loudly.

Masks are not re-predicted: the sweep evaluates boxes (the full pass that
builds the cache evaluates everything the config asks for).

Example:
    python tools/analysis_tools/sweep_scoring.py \
        configs/norcal/mask-rcnn_r50_fpn_norcal_ms-1x_lvis-v1.py model.pth \
        --cache-dir work_dirs/sweep/mask-rcnn --gamma 0 0.2 0.4 0.6 0.8 1.0
"""
import argparse
import copy
import hashlib
import inspect
import itertools
import json
import os
import os.path as osp
import pickle
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, Iterator, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

CACHE_VERSION = 1
META_FILE = 'meta.json'
SWEEP_PARAMS = ('gamma', 'tau', 'alpha', 'score_thr')
TABLE_METRICS = ('AP', 'APr', 'APc', 'APf')
# keys of the model config that only change training or post-processing,
# so a cache stays valid when they change
TRAINING_ONLY_KEYS = ('train_cfg', 'init_cfg', 'pretrained')


class CacheMismatchError(RuntimeError):
    """The cache was built for another config, checkpoint or dataset."""


# --------------------------------------------------------------------------
# settings


@dataclass(frozen=True)
class Setting:
    """One post-hoc scoring setting.

    Attributes:
        gamma (float): NorCal strength (0 = softmax).
        method (str): NorCal variant, ``'gamma'`` or ``'cb'``.
        tau (float): tau-norm exponent of the classifiers (0 = none).
        alpha (float | None): TDE strength (None: the head has no TDE).
        score_thr (float): score threshold before NMS.
    """
    gamma: float
    method: str
    tau: float
    alpha: Optional[float]
    score_thr: float

    def label(self) -> str:
        parts = [f'gamma={self.gamma:g}' + (
            f' ({self.method})' if self.method != 'gamma' else ''),
                 f'tau={self.tau:g}']
        if self.alpha is not None:
            parts.append(f'alpha={self.alpha:g}')
        parts.append(f'score_thr={self.score_thr:g}')
        return ', '.join(parts)


def sweep_settings(base: Setting,
                   values: Dict[str, Sequence[float]],
                   grid: bool = False,
                   norcal_method: Optional[str] = None) -> List[Setting]:
    """The base setting followed by the swept ones (no duplicates).

    Without ``grid`` each parameter is varied alone around ``base``; with
    ``grid`` every combination of the given values is used. Swept gammas use
    ``norcal_method`` (default: the base setting's).
    """
    values = {k: list(v) for k, v in values.items() if v}
    unknown = set(values) - set(SWEEP_PARAMS)
    if unknown:
        raise ValueError(f'unknown sweep parameters {sorted(unknown)}; '
                         f'choose from {SWEEP_PARAMS}')
    gamma_method = dict(method=norcal_method or base.method)

    def make(**changes) -> Setting:
        extra = gamma_method if 'gamma' in changes else {}
        return replace(base, **changes, **extra)

    settings = [base]
    if grid and values:
        names = list(values)
        for combo in itertools.product(*(values[n] for n in names)):
            settings.append(make(**dict(zip(names, combo))))
    else:
        for name, vals in values.items():
            settings.extend(make(**{name: v}) for v in vals)
    unique: List[Setting] = []
    for s in settings:
        if s not in unique:
            unique.append(s)
    return unique


# --------------------------------------------------------------------------
# fingerprint of (model config, checkpoint, test set)


def to_plain(obj: Any) -> Any:
    """ConfigDict / tuple trees as plain JSON-able dicts and lists."""
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)


def _strip_keys(tree: Any, should_drop) -> Any:
    if isinstance(tree, dict):
        return {
            k: _strip_keys(v, should_drop)
            for k, v in tree.items() if not should_drop(k)
        }
    if isinstance(tree, list):
        return [_strip_keys(v, should_drop) for v in tree]
    return tree


def model_identity(model_cfg: dict) -> dict:
    """The part of the model config that determines the cached outputs.

    Dropped: training-only keys, every ``loss_*`` (training, or the test
    activation that the sweep applies itself), ``test_cfg.rcnn``
    (post-processing), and the swept classifier settings (``tau``,
    ``alpha``), whose cached values are recorded separately.
    """
    model = to_plain(model_cfg)
    model = _strip_keys(
        model, lambda k: k in TRAINING_ONLY_KEYS or k.startswith('loss_'))
    test_cfg = model.get('test_cfg')
    if isinstance(test_cfg, dict):
        test_cfg.pop('rcnn', None)
    heads = (model.get('roi_head') or {}).get('bbox_head')
    for head in heads if isinstance(heads, list) else [heads]:
        if not isinstance(head, dict):
            continue
        head.pop('alpha', None)
        predictor = head.get('cls_predictor_cfg')
        if isinstance(predictor, dict):
            predictor.pop('tau', None)
            if predictor.get('type') == 'TauNormLinear':
                predictor['type'] = 'Linear'  # TauNormLinear(tau=0)
            if predictor == {'type': 'Linear'}:
                del head['cls_predictor_cfg']  # BBoxHead's default
    return model


def resolve_ann_file(dataset_cfg: dict) -> Optional[str]:
    """Path of a dataset's annotation file (``data_root`` joined)."""
    ann_file = dataset_cfg.get('ann_file')
    if not ann_file:
        inner = dataset_cfg.get('dataset')
        return resolve_ann_file(inner) if isinstance(inner, dict) else None
    data_root = dataset_cfg.get('data_root') or ''
    return ann_file if osp.isabs(ann_file) else osp.join(data_root, ann_file)


def file_sha256(path: str, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            digest.update(block)
    return digest.hexdigest()


def json_sha256(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(',', ':'))
    return hashlib.sha256(text.encode()).hexdigest()


def make_fingerprint(cfg, checkpoint: str) -> Dict[str, dict]:
    """``{'model config': ..., 'checkpoint': ..., 'dataset': ...}``, each
    with a ``sha256`` and what is needed to explain a difference."""
    model = model_identity(cfg.model)
    dataset = to_plain(cfg.test_dataloader.dataset)
    ann_file = resolve_ann_file(dataset)
    ann_sha = file_sha256(ann_file) if ann_file and osp.isfile(ann_file) \
        else None
    # the trees name the config keys in the error messages
    model_tree = {'model': model}
    dataset_tree = {
        'test_dataloader.dataset': dataset,
        'annotation file': ann_file,
        'annotation file sha256': ann_sha
    }
    return {
        'model config': dict(sha256=json_sha256(model_tree), tree=model_tree),
        'checkpoint': dict(sha256=file_sha256(checkpoint),
                           path=osp.abspath(checkpoint)),
        'dataset': dict(sha256=json_sha256(dataset_tree), tree=dataset_tree),
    }


def tree_differences(old: Any, new: Any, path: str = '') -> List[str]:
    """Dotted paths where two JSON trees differ, with both values."""
    if isinstance(old, dict) and isinstance(new, dict):
        diffs = []
        for key in list(old) + [k for k in new if k not in old]:
            sub = f'{path}.{key}' if path else key
            if key not in old:
                diffs.append(f'{sub} (only now: {new[key]!r})')
            elif key not in new:
                diffs.append(f'{sub} (only in the cache: {old[key]!r})')
            else:
                diffs.extend(tree_differences(old[key], new[key], sub))
        return diffs
    if isinstance(old, list) and isinstance(new, list) and \
            len(old) == len(new):
        diffs = []
        for i, (a, b) in enumerate(zip(old, new)):
            diffs.extend(tree_differences(a, b, f'{path}[{i}]'))
        return diffs
    if old != new:
        return [f'{path or "<root>"}: cached {old!r}, now {new!r}']
    return []


def check_fingerprint(cached: Dict[str, dict], current: Dict[str, dict],
                      cache_dir: str) -> None:
    """Raise :class:`CacheMismatchError` naming every differing part."""
    problems = []
    for part, now in current.items():
        old = cached.get(part, {})
        if old.get('sha256') == now['sha256']:
            continue
        if part == 'checkpoint':
            problems.append(
                f'checkpoint: cached {old.get("path")} (sha256 '
                f'{str(old.get("sha256"))[:12]}), now {now["path"]} '
                f'(sha256 {now["sha256"][:12]})')
            continue
        details = tree_differences(old.get('tree'), now['tree'])
        if not details:
            details = ['(contents differ)']
        problems.append(f'{part}: differs at ' + '; '.join(details[:5]) +
                        (f' (+{len(details) - 5} more)'
                         if len(details) > 5 else ''))
    if problems:
        raise CacheMismatchError(
            f'the scoring cache in {cache_dir} was built for a different '
            f'run:\n  - ' + '\n  - '.join(problems) +
            '\nUse --rebuild-cache to overwrite it, or another --cache-dir.')


# --------------------------------------------------------------------------
# model, data and metric


def load_config(config: str, cfg_options: Optional[dict]):
    from mmengine.config import Config
    if not osp.isfile(config):
        raise FileNotFoundError(f'config file not found: {config}')
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def build_detector(cfg, checkpoint: str, device: str) -> nn.Module:
    """The model as ``tools/test.py`` runs it (non-strict checkpoint load)."""
    from mmengine.runner import load_checkpoint

    from mmdet.registry import MODELS
    from mmdet_longtail.engine.long_tail_runner import give_class_statistics
    give_class_statistics(cfg.model, cfg.get('train_dataloader'))
    model = MODELS.build(cfg.model)
    load_checkpoint(
        model,
        checkpoint,
        map_location='cpu',
        strict=False,
        revise_keys=[(r'^module\.', '')],
        logger='silent')
    return model.to(device).eval()


def stage_heads(model: nn.Module) -> List[nn.Module]:
    """The bbox head of every stage (one for Faster / Mask R-CNN)."""
    roi_head = getattr(model, 'roi_head', None)
    if roi_head is None or not getattr(roi_head, 'with_bbox', False):
        raise ValueError(f'sweep_scoring needs a two-stage detector with a '
                         f'RoI box head, got {type(model).__name__}')
    heads = roi_head.bbox_head
    return list(heads) if isinstance(heads, nn.ModuleList) else [heads]


def build_evaluator(cfg, dataset_meta: dict, bbox_only: bool):
    """The config's test evaluator (restricted to boxes if asked)."""
    from mmengine.evaluator import Evaluator
    evaluator_cfg = copy.deepcopy(cfg.test_evaluator)
    if bbox_only:
        metric_cfgs = evaluator_cfg if isinstance(evaluator_cfg,
                                                  list) else [evaluator_cfg]
        for metric_cfg in metric_cfgs:
            if 'metric' in metric_cfg:
                metric_cfg['metric'] = 'bbox'
    evaluator = Evaluator(evaluator_cfg)
    evaluator.dataset_meta = dataset_meta
    return evaluator


# --------------------------------------------------------------------------
# recording what the heads compute


class HeadRecorder:
    """Record, during ``model.test_step``, the inputs of the last bbox
    head's ``predict_by_feat`` and the input of every stage's classifier
    (``fc_cls``)."""

    def __init__(self, heads: List[nn.Module]) -> None:
        self.heads = heads
        self.head_inputs: Optional[dict] = None
        self.stage_feats: List[List[torch.Tensor]] = []
        self._handles = []

    def __enter__(self) -> 'HeadRecorder':
        last = self.heads[-1]
        original = last.predict_by_feat
        signature = inspect.signature(original)

        def recording_predict_by_feat(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            self.head_inputs = dict(bound.arguments)
            return original(*args, **kwargs)

        # an instance attribute shadows the method until __exit__
        last.predict_by_feat = recording_predict_by_feat
        for stage, head in enumerate(self.heads):
            if isinstance(getattr(head, 'fc_cls', None), nn.Module):
                self._handles.append(
                    head.fc_cls.register_forward_hook(
                        self._make_feature_hook(stage)))
        return self

    def __exit__(self, *exc) -> None:
        del self.heads[-1].predict_by_feat
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _make_feature_hook(self, stage: int):

        def hook(module, inputs, output):
            self.stage_feats[stage].append(inputs[0].detach())

        return hook

    def start_batch(self) -> None:
        self.head_inputs = None
        self.stage_feats = [[] for _ in self.heads]

    def image_records(self, batch_img_metas: List[dict]) -> List[dict]:
        """One cache record per image of the batch just run."""
        inputs = self.head_inputs
        if inputs is None:
            # no RoI in the whole batch: mmdet returns empty results early
            return [
                dict(
                    img_meta=dict(meta),
                    rois=torch.zeros(0, 5),
                    cls_score=torch.zeros(0, 0),
                    bbox_pred=None,
                    stage_feats=None,
                    rescale=False) for meta in batch_img_metas
            ]
        counts = [int(r.shape[0]) for r in inputs['rois']]
        feats_per_stage = []
        for stage, calls in enumerate(self.stage_feats):
            if len(calls) > 1:
                raise RuntimeError(
                    f'sweep_scoring: the classifier of stage {stage} ran '
                    f'{len(calls)} times in one batch; cannot tell which '
                    f'run produced the scores')
            feats_per_stage.append(calls[0].split(counts) if calls else None)
        records = []
        for i, meta in enumerate(inputs['batch_img_metas']):
            bbox_pred = inputs['bbox_preds'][i]
            stage_feats = None
            if all(f is not None for f in feats_per_stage):
                stage_feats = [f[i].cpu().clone() for f in feats_per_stage]
            records.append(
                dict(
                    img_meta=dict(meta),
                    rois=inputs['rois'][i].cpu().clone(),
                    cls_score=inputs['cls_scores'][i].cpu().clone(),
                    bbox_pred=None if bbox_pred is None else
                    bbox_pred.cpu().clone(),
                    stage_feats=stage_feats,
                    rescale=bool(inputs['rescale'])))
        return records


# --------------------------------------------------------------------------
# re-scoring


def classifier_tau(fc_cls: Optional[nn.Module]) -> float:
    """The tau-norm exponent a classifier runs with (0: not normalised).
    Only :class:`TauNormLinear` has one; other classifiers may use the name
    ``tau`` for something else (TDE's logit scale)."""
    from mmdet_longtail.models.layers.tau_norm_linear import TauNormLinear
    return float(fc_cls.tau) if isinstance(fc_cls, TauNormLinear) else 0.0


def tde_module(head: nn.Module) -> Optional[nn.Module]:
    """The module of ``head`` that holds a TDE ``alpha`` (or None)."""
    for module in (head, getattr(head, 'fc_cls', None)):
        if module is not None and isinstance(
                getattr(module, 'alpha', None), (int, float)):
            return module
    return None


class Rescorer:
    """Scores of a cache record under a :class:`Setting`, the way mmdet's
    box head computes them."""

    def __init__(self,
                 model: nn.Module,
                 norcal_ann_file: Optional[str] = None) -> None:
        from mmdet_longtail.models.losses.calibrated_ce_loss import \
            CalibratedCrossEntropyLoss
        self.model = model
        self.heads = stage_heads(model)
        self.last = self.heads[-1]
        self.with_mask = bool(getattr(model.roi_head, 'with_mask', False))
        self.rcnn_cfg = model.roi_head.test_cfg
        loss = self.last.loss_cls
        self.calibrated = isinstance(loss, CalibratedCrossEntropyLoss)
        self._norcal_ann_file = norcal_ann_file
        self.base = Setting(
            gamma=float(loss.gamma) if self.calibrated else 0.0,
            method=loss.method if self.calibrated else 'gamma',
            tau=classifier_tau(getattr(self.last, 'fc_cls', None)),
            alpha=self._current_alpha(),
            score_thr=float(self.rcnn_cfg.score_thr))
        # the classifier settings the network ran with (= cached logits)
        self.cached_taus = [
            classifier_tau(getattr(h, 'fc_cls', None)) for h in self.heads
        ]
        self.cached_alpha = self.base.alpha
        self._rcnn_cfgs: Dict[float, Any] = {}

    def use_cached_classifier_settings(self, taus: Sequence[float],
                                       alpha: Optional[float]) -> None:
        """Declare the tau of each stage and the TDE alpha that the cached
        logits were computed with (a cache built by another run)."""
        if len(taus) != len(self.heads):
            raise CacheMismatchError(
                f'the cache holds {len(taus)} classifier stages, the model '
                f'has {len(self.heads)}; use --rebuild-cache')
        if (alpha is None) != (self.cached_alpha is None):
            raise CacheMismatchError(
                'the cache and the model disagree on whether the box head '
                'is a TDE head; use --rebuild-cache')
        self.cached_taus = [float(t) for t in taus]
        self.cached_alpha = alpha

    def _current_alpha(self) -> Optional[float]:
        modules = [tde_module(h) for h in self.heads]
        alphas = {float(m.alpha) for m in modules if m is not None}
        if len(alphas) > 1:
            raise ValueError(f'sweep_scoring: the stages use different TDE '
                             f'alphas {sorted(alphas)}')
        return alphas.pop() if alphas else None

    # -- checks ------------------------------------------------------------

    def check_supported(self, settings: Sequence[Setting]) -> None:
        """Clear errors for settings this model cannot be re-scored with."""
        from mmdet.models.losses import CrossEntropyLoss
        from mmdet.models.roi_heads.bbox_heads import BBoxHead
        from mmdet_longtail.models.losses.calibrated_ce_loss import \
            check_norcal_gamma
        for s in settings:
            check_norcal_gamma(s.gamma, s.method)
            if s.tau < 0:
                raise ValueError(f'--tau must be >= 0, got {s.tau}')
        if any(s.gamma != 0 for s in settings) and not self.calibrated:
            loss = self.last.loss_cls
            if type(self.last)._predict_by_feat_single is not \
                    BBoxHead._predict_by_feat_single:
                raise ValueError(
                    f'--gamma (NorCal) calibrates the softmax of a stock '
                    f'box head; {type(self.last).__name__} scores in its '
                    f'own way')
            if type(loss) is not CrossEntropyLoss or loss.use_sigmoid:
                raise ValueError(
                    f'--gamma (NorCal) re-scores softmax cross-entropy heads;'
                    f' the last bbox head uses {type(loss).__name__}')
            self._install_norcal_loss()
        needs_logits = [s for s in settings if self._recomputes(s)]
        if needs_logits:
            for stage, head in enumerate(self.heads):
                if not isinstance(getattr(head, 'fc_cls', None), nn.Module):
                    raise ValueError(
                        f'--tau / --alpha need the classifier features; '
                        f'the stage-{stage} head '
                        f'{type(head).__name__} has no fc_cls module')
            for stage, head in enumerate(self.heads[:-1]):
                if not head.reg_class_agnostic:
                    raise ValueError(
                        f'--tau / --alpha change the class picked for the '
                        f'class-specific box refinement of stage {stage}, '
                        f'so the cached RoIs would be stale')
        if any(s.alpha is not None for s in settings) and \
                self.base.alpha is None:
            raise ValueError('--alpha (TDE) needs a bbox head with a TDE '
                             '`alpha`; this model has none')
        for s in settings:
            self._check_tau_classifiers(s.tau)

    def _check_tau_classifiers(self, tau: float) -> None:
        from mmdet_longtail.models.layers.tau_norm_linear import \
            TauNormLinear
        for stage, head in enumerate(self.heads):
            fc = head.fc_cls
            if tau != self.cached_taus[stage] and not (
                    type(fc) is nn.Linear or isinstance(fc, TauNormLinear)):
                raise ValueError(
                    f'--tau re-normalises nn.Linear / TauNormLinear '
                    f'classifiers; stage {stage} uses {type(fc).__name__}')

    def _install_norcal_loss(self) -> None:
        """Score a plain softmax-CE head through NorCal (same training)."""
        from mmdet_longtail.models.losses.calibrated_ce_loss import \
            CalibratedCrossEntropyLoss
        if not self._norcal_ann_file:
            raise ValueError('--gamma needs the training annotation file '
                             '(N_c); none found in train_dataloader, pass '
                             '--norcal-ann-file')
        loss = self.last.loss_cls
        self.last.loss_cls = CalibratedCrossEntropyLoss(
            num_classes=self.last.num_classes,
            class_statistics=self._norcal_ann_file,
            loss_weight=loss.loss_weight)
        self.calibrated = True

    # -- scoring -----------------------------------------------------------

    def _rcnn_cfg(self, score_thr: float):
        """``test_cfg.rcnn`` with another ``score_thr`` (built once)."""
        if score_thr not in self._rcnn_cfgs:
            rcnn_cfg = copy.deepcopy(self.rcnn_cfg)
            rcnn_cfg.score_thr = score_thr
            self._rcnn_cfgs[score_thr] = rcnn_cfg
        return self._rcnn_cfgs[score_thr]

    def _recomputes(self, setting: Setting) -> bool:
        return any(setting.tau != t for t in self.cached_taus) or \
            setting.alpha != self.cached_alpha

    def stage_logits(self, stage: int, feats: torch.Tensor,
                     setting: Setting) -> torch.Tensor:
        """Logits of one stage's classifier on cached features."""
        from mmdet_longtail.models.layers.tau_norm_linear import (
            TauNormLinear, tau_normalize_weight)
        head = self.heads[stage]
        fc = head.fc_cls
        tde = tde_module(head)
        saved_alpha = tde.alpha if tde is not None else None
        saved_tau = fc.tau if isinstance(fc, TauNormLinear) else None
        try:
            if tde is not None:
                tde.alpha = setting.alpha
            if saved_tau is not None:
                fc.tau = setting.tau
            elif setting.tau != 0:
                weight = tau_normalize_weight(fc.weight, setting.tau)
                return F.linear(feats, weight, fc.bias)
            return fc(feats)
        finally:
            if tde is not None:
                tde.alpha = saved_alpha
            if saved_tau is not None:
                fc.tau = saved_tau

    def cls_score(self, record: dict, setting: Setting) -> torch.Tensor:
        """Logits as the last head receives them (stages averaged)."""
        if not self._recomputes(setting):
            return record['cls_score']
        if record['stage_feats'] is None:
            raise ValueError('this cache holds no classifier features; '
                             'rebuild it (--rebuild-cache)')
        return self.combine_stages([
            self.stage_logits(s, f, setting)
            for s, f in enumerate(record['stage_feats'])
        ])

    def combine_stages(self, logits: List[torch.Tensor]) -> torch.Tensor:
        """The stages' class outputs combined as the RoI head does."""
        if len(logits) == 1:
            return logits[0]
        from mmdet_longtail.models.roi_heads.tde_roi_head import (
            TDECascadeMixin, combine_stages)
        roi_head = self.model.roi_head
        if isinstance(roi_head, TDECascadeMixin):
            return combine_stages(self.heads, logits, roi_head.stage_average)
        # the same arithmetic as CascadeRoIHead._refine_roi
        return sum(logits) / float(len(logits))

    def detections(self, record: dict, setting: Setting):
        """``InstanceData`` (bboxes, scores, labels) of one image."""
        loss = self.last.loss_cls
        if self.calibrated:
            loss.gamma, loss.method = setting.gamma, setting.method
        rcnn_cfg = self._rcnn_cfg(setting.score_thr)
        device = next(self.model.parameters()).device
        record = to_device(record, device)
        results = self.last._predict_by_feat_single(
            roi=record['rois'],
            cls_score=self.cls_score(record, setting),
            bbox_pred=record['bbox_pred'],
            img_meta=record['img_meta'],
            rescale=record['rescale'],
            rcnn_test_cfg=rcnn_cfg)
        if self.with_mask and len(results) > 0:
            # mask heads rescale the boxes to the original image themselves
            # (FCNMaskHead.predict_by_feat with rescale=True)
            scale = results.bboxes.new_tensor(
                record['img_meta']['scale_factor']).repeat((1, 2))
            results.bboxes = results.bboxes / scale
        return results


def to_device(record: dict, device) -> dict:
    out = dict(record)
    for key in ('rois', 'cls_score', 'bbox_pred'):
        if isinstance(out.get(key), torch.Tensor):
            out[key] = out[key].to(device)
    if out.get('stage_feats') is not None:
        out['stage_feats'] = [f.to(device) for f in out['stage_feats']]
    return out


def check_reproduces(rescorer: Rescorer, records: List[dict], outputs,
                     base: Setting) -> None:
    """The cache re-scored with the network's own setting must give exactly
    the network's boxes, scores and labels (and recomputed logits must match
    the cached ones)."""
    for record, output in zip(records, outputs):
        pred = output.pred_instances
        mine = rescorer.detections(record, base)
        name = record['img_meta'].get('img_path', record['img_meta'].get(
            'img_id'))
        for key in ('bboxes', 'scores', 'labels'):
            expected = getattr(pred, key).cpu()
            got = getattr(mine, key).cpu()
            if expected.shape != got.shape or not torch.equal(expected, got):
                raise RuntimeError(
                    f'sweep_scoring cannot reproduce the {key} of '
                    f'{type(rescorer.last).__name__} on {name} from its '
                    f'cache; this head is not supported')
        feats = record['stage_feats']
        if feats is None or record['rois'].shape[0] == 0 or any(
                not isinstance(getattr(h, 'fc_cls', None), nn.Module)
                for h in rescorer.heads):
            continue
        recomputed = rescorer.combine_stages([
            rescorer.stage_logits(s, f.to(pred.bboxes.device), base)
            for s, f in enumerate(feats)
        ])
        if not torch.allclose(
                recomputed.cpu(), record['cls_score'], rtol=1e-4,
                atol=1e-5):
            raise RuntimeError(
                f'sweep_scoring: logits recomputed from the cached features '
                f'differ from the network logits on {name}; --tau / --alpha '
                f'are not supported for this head')


# --------------------------------------------------------------------------
# cache on disk


def cache_is_complete(cache_dir: str) -> bool:
    return osp.isfile(osp.join(cache_dir, META_FILE))


def read_meta(cache_dir: str) -> dict:
    with open(osp.join(cache_dir, META_FILE)) as f:
        meta = json.load(f)
    if meta.get('version') != CACHE_VERSION:
        raise CacheMismatchError(
            f'{cache_dir} holds a scoring cache of version '
            f'{meta.get("version")}, this tool writes version '
            f'{CACHE_VERSION}; use --rebuild-cache')
    return meta


def iter_shards(cache_dir: str, meta: dict) -> Iterator[List[dict]]:
    for name in meta['shards']:
        path = osp.join(cache_dir, name)
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'{path} is missing from the scoring cache; use '
                f'--rebuild-cache')
        # our own file (metadata dicts, not only tensors)
        yield torch.load(path, map_location='cpu', weights_only=False)


class ShardWriter:
    """Append image records, written in shards of ``shard_size`` images."""

    def __init__(self, cache_dir: str, shard_size: int) -> None:
        self.cache_dir = cache_dir
        self.shard_size = shard_size
        self.pending: List[dict] = []
        self.shards: List[str] = []
        self.num_images = 0

    def add(self, records: List[dict]) -> None:
        self.pending.extend(records)
        self.num_images += len(records)
        while len(self.pending) >= self.shard_size:
            self._write(self.pending[:self.shard_size])
            self.pending = self.pending[self.shard_size:]

    def close(self) -> None:
        if self.pending:
            self._write(self.pending)
            self.pending = []

    def _write(self, records: List[dict]) -> None:
        name = f'shard_{len(self.shards):05d}.pt'
        torch.save(records, osp.join(self.cache_dir, name))
        self.shards.append(name)


def clear_cache(cache_dir: str) -> None:
    """Remove the files this tool writes (nothing else)."""
    if not osp.isdir(cache_dir):
        return
    for name in os.listdir(cache_dir):
        if name == META_FILE or (name.startswith('shard_')
                                 and name.endswith('.pt')):
            os.remove(osp.join(cache_dir, name))


def prefixed_metrics(metrics: Dict[str, float], iou_type: str = 'bbox'
                     ) -> Dict[str, float]:
    """``{'AP': ..., 'APr': ...}`` from the evaluator's ``lvis/bbox_AP`` (or
    ``coco/bbox_mAP``-style) keys."""
    out = {}
    for key, value in metrics.items():
        short = key.split('/')[-1]
        if short.startswith(iou_type + '_'):
            out[short[len(iou_type) + 1:]] = float(value)
    return out


def build_cache(cfg, cache_dir: str, fingerprint: dict, model: nn.Module,
                rescorer: Rescorer, shard_size: int) -> dict:
    """Run the detector once: cache per-image head inputs, evaluate like
    ``tools/test.py`` and time it (the full test pass)."""
    from mmengine.runner import Runner
    from mmengine.utils import ProgressBar

    os.makedirs(cache_dir, exist_ok=True)
    clear_cache(cache_dir)
    loader = Runner.build_dataloader(cfg.test_dataloader)
    dataset_meta = loader.dataset.metainfo
    evaluator = build_evaluator(cfg, dataset_meta, False)
    heads = stage_heads(model)
    writer = ShardWriter(cache_dir, shard_size)
    base = rescorer.base
    print(f'running the detector once over {len(loader.dataset)} images '
          f'(cache: {cache_dir})')
    bar = ProgressBar(len(loader.dataset))
    network_s = extra_s = 0.0
    with HeadRecorder(heads) as recorder:
        start = time.perf_counter()
        for data_batch in loader:
            recorder.start_batch()
            with torch.no_grad():
                outputs = model.test_step(data_batch)
            evaluator.process(data_samples=outputs, data_batch=data_batch)
            network_end = time.perf_counter()
            network_s += network_end - start
            records = recorder.image_records(
                [o.metainfo for o in outputs])
            with torch.no_grad():
                check_reproduces(rescorer, records, outputs, base)
            writer.add(records)
            bar.update(len(outputs))
            start = time.perf_counter()
            extra_s += start - network_end
    writer.close()
    sys.stdout.write('\n')
    eval_start = time.perf_counter()
    metrics = evaluator.evaluate(writer.num_images)
    evaluation_s = time.perf_counter() - eval_start
    meta = dict(
        version=CACHE_VERSION,
        fingerprint=fingerprint,
        num_images=writer.num_images,
        shards=writer.shards,
        num_stages=len(heads),
        cached_taus=rescorer.cached_taus,
        cached_alpha=rescorer.cached_alpha,
        full_pass_seconds=dict(
            network=network_s,
            evaluation=evaluation_s,
            total=network_s + evaluation_s,
            caching=extra_s),
        config_setting=asdict(base),
        dataset_meta=to_plain(dataset_meta),
        config_metrics={k: float(v)
                        for k, v in metrics.items()})
    # written last: its presence marks a complete cache
    with open(osp.join(cache_dir, META_FILE), 'w') as f:
        json.dump(meta, f, indent=1)
    return meta


# --------------------------------------------------------------------------
# the sweep


@dataclass
class SweepResult:
    setting: Setting
    metrics: Dict[str, float]
    scoring_s: float
    evaluation_s: float

    @property
    def seconds(self) -> float:
        return self.scoring_s + self.evaluation_s


def run_sweep(cfg, cache_dir: str, meta: dict, rescorer: Rescorer,
              settings: List[Setting],
              dump_dir: Optional[str] = None) -> List[SweepResult]:
    """Re-score every cached image under every setting, then evaluate each
    setting with the config's metric (boxes)."""
    from mmengine.structures import InstanceData
    from mmengine.utils import ProgressBar

    rescorer.check_supported(settings)
    evaluator = build_evaluator(cfg, meta['dataset_meta'], True)

    per_setting: List[List[dict]] = [[] for _ in settings]
    scoring_s = [0.0] * len(settings)
    print(f're-scoring {meta["num_images"]} cached images under '
          f'{len(settings)} settings')
    bar = ProgressBar(meta['num_images'] * len(settings))
    for shard in iter_shards(cache_dir, meta):
        for k, setting in enumerate(settings):
            start = time.perf_counter()
            with torch.no_grad():
                for record in shard:
                    pred = rescorer.detections(record, setting)
                    per_setting[k].append(
                        dict(
                            img_id=record['img_meta']['img_id'],
                            ori_shape=record['img_meta']['ori_shape'],
                            img_path=record['img_meta'].get('img_path'),
                            pred_instances=InstanceData(
                                bboxes=pred.bboxes.cpu(),
                                scores=pred.scores.cpu(),
                                labels=pred.labels.cpu())))
            scoring_s[k] += time.perf_counter() - start
            bar.update(len(shard))
    sys.stdout.write('\n')

    results = []
    for k, setting in enumerate(settings):
        start = time.perf_counter()
        evaluator.process(
            data_samples=[
                dict(d, pred_instances=d['pred_instances'].to_dict())
                for d in per_setting[k]
            ],
            data_batch=None)
        metrics = evaluator.evaluate(len(per_setting[k]))
        evaluation_s = time.perf_counter() - start
        results.append(
            SweepResult(setting, prefixed_metrics(metrics), scoring_s[k],
                        evaluation_s))
        if dump_dir is not None:
            dump_predictions(per_setting[k],
                             osp.join(dump_dir, f'predictions_{k:03d}.pkl'))
    return results


def dump_predictions(samples: List[dict], path: str) -> None:
    """Predictions in ``tools/test.py --out`` format (list of dicts)."""
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    with open(path, 'wb') as f:
        pickle.dump([
            dict(
                img_id=s['img_id'],
                ori_shape=s['ori_shape'],
                img_path=s['img_path'],
                pred_instances=s['pred_instances'].to_dict()) for s in samples
        ], f)


# --------------------------------------------------------------------------
# report


def swept_params(settings: List[Setting]) -> List[str]:
    return [
        p for p in SWEEP_PARAMS if len({getattr(s, p)
                                        for s in settings}) > 1
    ]


def format_table(results: List[SweepResult], full_pass_s: float) -> str:
    header = '| setting | ' + ' | '.join(TABLE_METRICS) + \
        ' | seconds | % of full pass |'
    lines = [header, '|' + '---|' * (len(TABLE_METRICS) + 3)]
    for r in results:
        values = ' | '.join(
            f'{100 * r.metrics[m]:.2f}' if m in r.metrics else '-'
            for m in TABLE_METRICS)
        lines.append(f'| {r.setting.label()} | {values} | {r.seconds:.2f} | '
                     f'{100 * r.seconds / full_pass_s:.1f} |')
    return '\n'.join(lines)


def save_plot(results: List[SweepResult], base: Setting, path: str) -> bool:
    """AP / APr / APc / APf against each swept parameter (the other
    parameters at their config values); False if nothing to plot."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    params = swept_params([r.setting for r in results])
    if not params:
        return False
    fig, axes = plt.subplots(
        1, len(params), figsize=(5 * len(params), 4), squeeze=False)
    for ax, param in zip(axes[0], params):
        others = [p for p in SWEEP_PARAMS if p != param]
        rows = sorted(
            (r for r in results if all(
                getattr(r.setting, p) == getattr(base, p) for p in others)),
            key=lambda r: getattr(r.setting, param))
        xs = [getattr(r.setting, param) for r in rows]
        for metric in TABLE_METRICS:
            ys = [100 * r.metrics.get(metric, float('nan')) for r in rows]
            ax.plot(xs, ys, marker='o', label=metric)
        if param == 'score_thr':
            ax.set_xscale('log')
        ax.set_xlabel(param)
        ax.set_ylabel('bbox AP (%)')
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_results(results: List[SweepResult], meta: dict, path: str) -> None:
    full = meta['full_pass_seconds']['total']
    with open(path, 'w') as f:
        json.dump(
            dict(
                full_pass_seconds=meta['full_pass_seconds'],
                config_metrics=meta['config_metrics'],
                settings=[
                    dict(
                        setting=asdict(r.setting),
                        metrics=r.metrics,
                        scoring_seconds=r.scoring_s,
                        evaluation_seconds=r.evaluation_s,
                        cost_vs_full_pass=r.seconds / full)
                    for r in results
                ]),
            f,
            indent=1)


# --------------------------------------------------------------------------
# command line


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Sweep post-hoc scoring settings from a cache of the '
        'RoI head outputs (one network pass)')
    parser.add_argument('config', help='test config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--cache-dir',
        help='where the head outputs are cached (default: '
        'work_dirs/sweep_scoring/<config name>)')
    parser.add_argument(
        '--out-dir', help='table, plot and json (default: the cache dir)')
    parser.add_argument(
        '--gamma', type=float, nargs='+', default=[], help='NorCal gammas')
    parser.add_argument(
        '--norcal-method',
        choices=['gamma', 'cb'],
        help='NorCal variant of the swept gammas (default: the config\'s, '
        'else gamma)')
    parser.add_argument(
        '--norcal-ann-file',
        help='training annotation file for N_c (default: the '
        'train_dataloader\'s)')
    parser.add_argument(
        '--tau', type=float, nargs='+', default=[], help='tau-norm taus')
    parser.add_argument(
        '--alpha', type=float, nargs='+', default=[], help='TDE alphas')
    parser.add_argument(
        '--score-thr',
        type=float,
        nargs='+',
        default=[],
        help='score thresholds')
    parser.add_argument(
        '--grid',
        action='store_true',
        help='all combinations instead of one parameter at a time')
    parser.add_argument(
        '--rebuild-cache',
        action='store_true',
        help='run the detector again and overwrite the cache')
    parser.add_argument(
        '--shard-size',
        type=int,
        default=64,
        help='images per cache file (default 64)')
    parser.add_argument(
        '--dump-predictions',
        action='store_true',
        help='write out-dir/predictions_<k>.pkl per setting (the '
        'tools/test.py --out format)')
    parser.add_argument(
        '--device',
        default='cuda' if torch.cuda.is_available() else 'cpu',
        help='device of the network pass and the re-scoring')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings in the config, key=value')
    return parser.parse_args(argv)


def default_train_ann_file(cfg) -> Optional[str]:
    from mmdet_longtail.engine.long_tail_runner import \
        train_annotation_file
    train = cfg.get('train_dataloader')
    return train_annotation_file(train.dataset) if train else None


def main(argv: Optional[Sequence[str]] = None) -> List[SweepResult]:
    args = parse_args(argv)
    from mmdet.utils import register_all_modules
    register_all_modules()
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint}')
    if args.shard_size < 1:
        raise ValueError(f'--shard-size must be >= 1, got {args.shard_size}')
    cfg = load_config(args.config, args.cfg_options)
    cache_dir = args.cache_dir or osp.join(
        'work_dirs', 'sweep_scoring',
        osp.splitext(osp.basename(args.config))[0])
    out_dir = args.out_dir or cache_dir
    fingerprint = make_fingerprint(cfg, args.checkpoint)
    rebuild = args.rebuild_cache or not cache_is_complete(cache_dir)
    meta = None
    if not rebuild:
        meta = read_meta(cache_dir)
        check_fingerprint(meta['fingerprint'], fingerprint, cache_dir)

    model = build_detector(cfg, args.checkpoint, args.device)
    rescorer = Rescorer(
        model,
        norcal_ann_file=args.norcal_ann_file or default_train_ann_file(cfg))
    if meta is not None:
        # the cached logits were computed with the cache's tau / alpha,
        # which this config may set differently
        rescorer.use_cached_classifier_settings(meta['cached_taus'],
                                                meta['cached_alpha'])
    settings = sweep_settings(
        rescorer.base,
        dict(
            gamma=args.gamma,
            tau=args.tau,
            alpha=args.alpha,
            score_thr=args.score_thr),
        grid=args.grid,
        norcal_method=args.norcal_method)
    # fail on unsupported settings before the (long) network pass
    rescorer.check_supported(settings)

    if rebuild:
        meta = build_cache(cfg, cache_dir, fingerprint, model, rescorer,
                           args.shard_size)
        measured = 'measured now'
    else:
        measured = 'measured when the cache was built'
        print(f'using the scoring cache in {cache_dir}')

    results = run_sweep(cfg, cache_dir, meta, rescorer, settings,
                        out_dir if args.dump_predictions else None)
    full_s = meta['full_pass_seconds']['total']
    os.makedirs(out_dir, exist_ok=True)
    print('\nbbox results (%), one row per setting:\n' +
          format_table(results, full_s))
    write_results(results, meta, osp.join(out_dir, 'sweep_results.json'))
    if save_plot(results, rescorer.base,
                 osp.join(out_dir, 'sweep_scoring.png')):
        print(f'plot: {osp.join(out_dir, "sweep_scoring.png")}')
    extra = results[1:] or results
    mean_s = sum(r.seconds for r in extra) / len(extra)
    print(f'full test pass: {full_s:.2f} s ({measured}; network '
          f'{meta["full_pass_seconds"]["network"]:.2f} s + evaluation '
          f'{meta["full_pass_seconds"]["evaluation"]:.2f} s)')
    print(f'each extra setting: {mean_s:.2f} s = '
          f'{100 * mean_s / full_s:.1f}% of a full test pass '
          f'(ratio {mean_s / full_s:.3f}, goal < 0.25)')
    return results


if __name__ == '__main__':
    try:
        main()
    except CacheMismatchError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
