"""Detections of a cache record under a :class:`Setting`, computed by the
model's own components with their test-time scoring settings
(:mod:`mmdet_longtail.models.scoring_settings`) and the last box head's
public ``predict_by_feat`` (activation, box decoding, NMS)."""
import copy
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from mmdet_longtail.models.scoring_settings import (ScoringSettingsMixin,
                                                    scoring_components)
from .detector import stage_heads
from .fingerprint import CacheMismatchError
from .settings import Setting


def setting_owner(module: nn.Module,
                  name: str) -> Optional[ScoringSettingsMixin]:
    """The one component of ``module`` with the scoring setting ``name``
    (None if it has none)."""
    components = scoring_components(module, name)
    if len(components) > 1:
        names = [n or type(module).__name__ for n, _ in components]
        raise ValueError(f'the score sweep found the setting {name!r} on '
                         f'several components {names} of one box head')
    return components[0][1] if components else None


def stage_tau(head: nn.Module) -> float:
    """The tau-norm exponent a stage's classifier runs with (0: none)."""
    owner = setting_owner(head, 'tau')
    return float(owner.tau) if owner is not None else 0.0


class Rescorer:
    """Scores of cache records under settings, the way the model computes
    them.

    The settings are applied to the model's components through
    ``set_scoring_settings``: NorCal ``gamma`` / ``method`` and FRACAL
    ``fractal_lambda`` / ``logit_adjustment`` to the last stage's component
    that has them (the one whose activation scores), ``tau`` and ``alpha``
    to every stage. :meth:`restore` puts the model's
    own settings back.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.heads = stage_heads(model)
        self.last = self.heads[-1]
        self.with_mask = bool(getattr(model.roi_head, 'with_mask', False))
        self.rcnn_cfg = model.roi_head.test_cfg
        self.norcal = setting_owner(self.last, 'gamma')
        self.fracal = setting_owner(self.last, 'fractal_lambda')
        self.tau_owners = [setting_owner(h, 'tau') for h in self.heads]
        self.alpha_owners = [setting_owner(h, 'alpha') for h in self.heads]
        self.base = Setting(
            gamma=float(self.norcal.gamma) if self.norcal else 0.0,
            method=self.norcal.method if self.norcal else 'gamma',
            tau=stage_tau(self.last),
            alpha=self._current_alpha(),
            score_thr=float(self.rcnn_cfg.score_thr),
            **(self.fracal.scoring_settings() if self.fracal else {}))
        # the classifier settings the network ran with (= cached logits)
        self.cached_taus = [stage_tau(h) for h in self.heads]
        self.cached_alpha = self.base.alpha
        self._applied = self.base
        self._rcnn_cfgs: Dict[float, Any] = {}

    def _current_alpha(self) -> Optional[float]:
        alphas = {float(o.alpha) for o in self.alpha_owners if o is not None}
        if len(alphas) > 1:
            raise ValueError(f'the score sweep needs one TDE alpha; the '
                             f'stages use {sorted(alphas)}')
        return alphas.pop() if alphas else None

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

    # -- checks ------------------------------------------------------------

    def check_supported(self, settings: Sequence[Setting]) -> None:
        """Clear errors for settings this model cannot be re-scored with
        (before any network pass)."""
        from mmdet_longtail.models.losses.calibrated_ce_loss import \
            check_norcal_gamma
        for s in settings:
            check_norcal_gamma(s.gamma, s.method)
            if s.tau < 0:
                raise ValueError(f'--tau must be >= 0, got {s.tau}')
        if any(s.gamma != 0 for s in settings) and self.norcal is None:
            raise ValueError(
                f'--gamma (NorCal) needs a last box head whose loss has the '
                f'scoring setting gamma (CalibratedCrossEntropyLoss); '
                f'{type(self.last).__name__} uses '
                f'{type(getattr(self.last, "loss_cls", None)).__name__}')
        if self.fracal is None and any(
                s.fractal_lambda is not None or
                s.logit_adjustment is not None for s in settings):
            raise ValueError(
                f'--fractal-lambda / --logit-adjustment (FRACAL) need a last '
                f'box head whose loss has these scoring settings '
                f'(FRACALLoss); {type(self.last).__name__} uses '
                f'{type(getattr(self.last, "loss_cls", None)).__name__}')
        if any(s.alpha is not None for s in settings) and \
                self.base.alpha is None:
            raise ValueError('--alpha (TDE) needs a bbox head with the '
                             'scoring setting alpha; this model has none')
        if any(self._recomputes(s) for s in settings):
            self._check_recomputable()
        for stage, owner in enumerate(self.tau_owners):
            if owner is None and any(s.tau != 0 for s in settings):
                raise ValueError(
                    f'--tau needs classifiers with the scoring setting tau '
                    f'(TauNormLinear); stage {stage} uses '
                    f'{type(self.heads[stage].fc_cls).__name__}')
        for s in settings:  # the components' own validation
            self.apply(s)
        self.restore()

    def _check_recomputable(self) -> None:
        for stage, head in enumerate(self.heads):
            if not isinstance(getattr(head, 'fc_cls', None), nn.Module):
                raise ValueError(
                    f'--tau / --alpha need the classifier features; the '
                    f'stage-{stage} head {type(head).__name__} has no '
                    f'fc_cls module')
        for stage, head in enumerate(self.heads[:-1]):
            if not head.reg_class_agnostic:
                raise ValueError(
                    f'--tau / --alpha change the class picked for the '
                    f'class-specific box refinement of stage {stage}, so '
                    f'the cached RoIs would be stale')

    # -- settings ----------------------------------------------------------

    def apply(self, setting: Setting) -> None:
        """Set the model's scoring settings to ``setting``."""
        if self.norcal is not None:
            self.norcal.set_scoring_settings(
                gamma=setting.gamma, method=setting.method)
        for owner in self.tau_owners:
            if owner is not None:
                owner.set_scoring_settings(tau=setting.tau)
        if self.fracal is not None:
            self.fracal.set_scoring_settings(
                fractal_lambda=setting.fractal_lambda,
                logit_adjustment=setting.logit_adjustment)
        if setting.alpha is not None:
            for owner in self.alpha_owners:
                if owner is not None:
                    owner.set_scoring_settings(alpha=setting.alpha)
        self._applied = setting

    def restore(self) -> None:
        """Put the model's own (the config's) settings back."""
        self.apply(self.base)

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

    # -- scoring -----------------------------------------------------------

    def stage_logits(self, stage: int, feats: Tensor) -> Tensor:
        """Logits of one stage's classifier on cached features (with the
        applied setting)."""
        return self.heads[stage].fc_cls(feats)

    def combine_stages(self, logits: List[Tensor]) -> Tensor:
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

    def recomputed_cls_score(self, record: dict) -> Tensor:
        """The combined class output recomputed from the cached features
        with the applied setting."""
        if record['stage_feats'] is None:
            raise ValueError('this cache holds no classifier features; '
                             'rebuild it (--rebuild-cache)')
        return self.combine_stages([
            self.stage_logits(s, f)
            for s, f in enumerate(record['stage_feats'])
        ])

    def detections(self, record: dict, setting: Setting):
        """``InstanceData`` (bboxes, scores, labels) of one image."""
        if setting != self._applied:
            self.apply(setting)
        device = next(self.model.parameters()).device
        record = to_device(record, device)
        cls_score = self.recomputed_cls_score(record) \
            if self._recomputes(setting) and record['rois'].shape[0] else \
            record['cls_score']
        (results, ) = self.last.predict_by_feat(
            rois=(record['rois'], ),
            cls_scores=(cls_score, ),
            bbox_preds=(record['bbox_pred'], ),
            batch_img_metas=[record['img_meta']],
            rcnn_test_cfg=self._rcnn_cfg(setting.score_thr),
            rescale=record['rescale'])
        if self.with_mask and len(results) > 0:
            # mask heads rescale the boxes to the original image themselves
            # (FCNMaskHead.predict_by_feat with rescale=True)
            scale = results.bboxes.new_tensor(
                record['img_meta']['scale_factor']).repeat((1, 2))
            results.bboxes = results.bboxes / scale
        return results


def to_device(record: dict, device: torch.device) -> dict:
    """The record's tensors on ``device``."""
    out = dict(record)
    for key in ('rois', 'cls_score', 'bbox_pred'):
        if isinstance(out.get(key), Tensor):
            out[key] = out[key].to(device)
    if out.get('stage_feats') is not None:
        out['stage_feats'] = [f.to(device) for f in out['stage_feats']]
    return out


def check_reproduces(rescorer: Rescorer, records: List[dict],
                     outputs: list) -> None:
    """The cache re-scored with the network's own setting must give exactly
    the network's boxes, scores and labels (and logits recomputed from the
    cached features must match the cached ones)."""
    base = rescorer.base
    for record, output in zip(records, outputs):
        pred = output.pred_instances
        mine = rescorer.detections(record, base)
        name = record['img_meta'].get('img_path',
                                      record['img_meta'].get('img_id'))
        for key in ('bboxes', 'scores', 'labels'):
            expected = getattr(pred, key).cpu()
            got = getattr(mine, key).cpu()
            if expected.shape != got.shape or not torch.equal(expected, got):
                raise RuntimeError(
                    f'the score sweep cannot reproduce the {key} of '
                    f'{type(rescorer.last).__name__} on {name} from its '
                    f'cache; this head is not supported')
        if record['stage_feats'] is None or record['rois'].shape[0] == 0:
            continue
        recomputed = rescorer.recomputed_cls_score(
            to_device(record, pred.bboxes.device))
        if not torch.allclose(
                recomputed.cpu(), record['cls_score'], rtol=1e-4,
                atol=1e-5):
            raise RuntimeError(
                f'the score sweep: logits recomputed from the cached '
                f'features differ from the network logits on {name}; '
                f'--tau / --alpha are not supported for this head')
