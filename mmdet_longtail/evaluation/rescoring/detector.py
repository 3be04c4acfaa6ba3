"""The detector, data and metric of a score sweep, built from the config as
``tools/test.py`` builds them.

A model re-scored with a setting it has no component for is built with one,
by config (never by replacing modules of a built model):
:func:`scoring_model_cfg` gives plain ``nn.Linear`` classifiers the
``TauNormLinear`` that equals them at ``tau=0`` and the last stage's plain
softmax ``CrossEntropyLoss`` the ``CalibratedCrossEntropyLoss`` that equals
it at ``gamma=0`` (NorCal), in training and at test time.
"""
import copy
import os.path as osp
from typing import List, Optional

from torch import nn

#: classifier types that ``TauNormLinear(tau=0)`` equals
PLAIN_LINEAR_TYPES = ('Linear', nn.Linear)
#: losses that ``CalibratedCrossEntropyLoss(gamma=0)`` equals
PLAIN_CE_TYPES = ('CrossEntropyLoss', )


def load_config(config: str, cfg_options: Optional[dict] = None):
    """The config file with ``--cfg-options`` merged."""
    from mmengine.config import Config
    if not osp.isfile(config):
        raise FileNotFoundError(f'config file not found: {config}')
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def _head_cfgs(model_cfg: dict) -> List[dict]:
    heads = (model_cfg.get('roi_head') or {}).get('bbox_head')
    if heads is None:
        raise ValueError('the score sweep needs a two-stage detector with '
                         'a RoI box head (model.roi_head.bbox_head)')
    return list(heads) if isinstance(heads, (list, tuple)) else [heads]


def _scores_own_way(head_cfg: dict) -> bool:
    """Whether a box head type scores otherwise than mmdet's ``BBoxHead``
    (it has scoring settings of its own or its own post-processing)."""
    from mmdet.models.roi_heads.bbox_heads import BBoxHead
    from mmdet.registry import MODELS
    from mmdet_longtail.models.scoring_settings import ScoringSettingsMixin
    cls = MODELS.get(head_cfg['type']) if isinstance(head_cfg['type'],
                                                     str) else head_cfg['type']
    return issubclass(cls, ScoringSettingsMixin) or \
        cls._predict_by_feat_single is not BBoxHead._predict_by_feat_single


def with_tau_norm_classifiers(model_cfg: dict) -> List[int]:
    """Give every stage with a plain ``nn.Linear`` classifier (in place) a
    ``TauNormLinear`` with ``tau=0`` (the same layer); returns the stages
    changed. Heads that build their own classifier are left as they are."""
    changed = []
    for stage, head in enumerate(_head_cfgs(model_cfg)):
        if _scores_own_way(head):
            continue
        predictor = head.get('cls_predictor_cfg') or dict(type='Linear')
        if predictor.get('type') in PLAIN_LINEAR_TYPES:
            head['cls_predictor_cfg'] = dict(
                predictor, type='TauNormLinear', tau=0.0)
            changed.append(stage)
    return changed


def with_norcal_loss(model_cfg: dict,
                     class_statistics: Optional[str] = None) -> bool:
    """Give the last stage's plain softmax ``CrossEntropyLoss`` (in place)
    the ``CalibratedCrossEntropyLoss`` with ``gamma=0`` (the same loss and
    scores); False if it already has it. ``class_statistics`` (N_c) is
    filled from ``train_dataloader`` later when not given."""
    from mmdet_longtail.models.losses.calibrated_ce_loss import \
        CalibratedCrossEntropyLoss
    head = _head_cfgs(model_cfg)[-1]
    loss = head.get('loss_cls') or {}
    loss_type = loss.get('type')
    if loss_type in ('CalibratedCrossEntropyLoss',
                     CalibratedCrossEntropyLoss):
        return False
    if _scores_own_way(head):
        raise ValueError(
            f'--gamma (NorCal) calibrates the softmax of a stock box head; '
            f'{head["type"]} scores in its own way')
    if loss_type not in PLAIN_CE_TYPES or loss.get('use_sigmoid') or \
            loss.get('use_mask'):
        name = loss_type if isinstance(loss_type, str) else getattr(
            loss_type, '__name__', loss_type)
        raise ValueError(f'--gamma (NorCal) re-scores softmax cross-entropy '
                         f'heads; the last bbox head uses {name}'
                         f'{" (sigmoid)" if loss.get("use_sigmoid") else ""}')
    if 'num_classes' not in head:
        raise ValueError('--gamma (NorCal) needs num_classes in the config '
                         'of the last bbox head')
    kept = {
        k: v
        for k, v in loss.items()
        if k not in ('type', 'use_sigmoid', 'use_mask')
    }
    head['loss_cls'] = dict(
        kept,
        type='CalibratedCrossEntropyLoss',
        num_classes=head['num_classes'],
        gamma=0.0,
        class_statistics=class_statistics)
    return True


def scoring_model_cfg(model_cfg: dict,
                      tau: bool,
                      norcal: bool,
                      norcal_statistics: Optional[str] = None) -> dict:
    """A copy of ``model_cfg`` with the scoring components a sweep needs
    (see the module docstring): tau-norm classifiers if ``tau``, the NorCal
    loss if ``norcal``. The model built from it computes exactly what the
    original computes."""
    model_cfg = copy.deepcopy(model_cfg)
    if tau:
        with_tau_norm_classifiers(model_cfg)
    if norcal:
        with_norcal_loss(model_cfg, norcal_statistics)
    return model_cfg


def build_detector(cfg, checkpoint: str, device: str,
                   model_cfg: Optional[dict] = None) -> nn.Module:
    """The model as ``tools/test.py`` runs it (non-strict checkpoint load,
    class statistics of ``train_dataloader``), from ``model_cfg`` (default:
    ``cfg.model``)."""
    from mmengine.runner import load_checkpoint

    from mmdet.registry import MODELS
    from mmdet_longtail.engine.long_tail_runner import give_class_statistics
    model_cfg = copy.deepcopy(cfg.model if model_cfg is None else model_cfg)
    give_class_statistics(model_cfg, cfg.get('train_dataloader'))
    model = MODELS.build(model_cfg)
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
        raise ValueError(f'the score sweep needs a two-stage detector with '
                         f'a RoI box head, got {type(model).__name__}')
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
