"""RoI box head with a de-confounded classifier and TDE inference.

Tang, Huang and Zhang, "Long-Tailed Classification by Keeping the Good and
Removing the Bad Momentum Causal Effect", NeurIPS 2020.
https://arxiv.org/abs/2009.12991

The classifier (:class:`TDEClassifier`) gives the de-confounded logits ``z``
and the TDE logits ``t = z - alpha * y0``. The head turns them into class
probabilities with *background-exempted* scoring::

    p = softmax(z),  q = softmax(t)
    score_bg = p_bg
    score_c  = (1 - p_bg) * q_c / sum_{j != bg} q_j        (c foreground)

so the detector's foreground / background split is that of the de-confounded
model and TDE only redistributes the foreground mass among the classes.
"""
import math
from typing import Any, ContextManager, Dict, Optional

import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData
from torch import Tensor

from mmdet.models.losses import CrossEntropyLoss
from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
from mmdet.registry import MODELS
from mmdet_longtail.models.layers.tde_classifier import check_tde_settings
from mmdet_longtail.models.scoring_settings import ScoringSettingsMixin

#: floor of the log-probabilities handed to mmdet's softmax: exp() of
#: smaller values is subnormal in float32, which CPUs compute about 100x
#: slower; probabilities below 1e-30 are far below any score threshold
MIN_LOG_SCORE = math.log(1e-30)

#: test-time scorings: TDE with background exemption (the paper's method),
#: TDE logits through a plain softmax (the paper's ablation, Table 5), and
#: the de-confounded logits through a plain softmax (no TDE)
SCORINGS = ('tde', 'tde-no-bg-exempt', 'deconfound')


def background_exempt_log_scores(logits: Tensor, tde_logits: Tensor) -> Tensor:
    """Log of the background-exempted scores, ``(N, C + 1)``.

    ``log score_bg = log p_bg`` and ``log score_c = log(sum_{j != bg} p_j) +
    log softmax(t_fg)_c`` with ``p = softmax(z)``. The scores sum to 1 over
    the C + 1 columns.

    Args:
        logits (Tensor): the de-confounded logits z, ``(N, C + 1)``.
        tde_logits (Tensor): the TDE logits t, ``(N, C + 1)``; its
            background column is not used.
    """
    return tde_log_scores(torch.cat([logits, tde_logits], dim=1), 'tde')


def tde_log_scores(packed_scores: Tensor, scoring: str = 'tde') -> Tensor:
    """Log-probabilities ``(N, C + 1)`` from the classifier's test output.

    Log-probabilities below :data:`MIN_LOG_SCORE` (probabilities below
    1e-30) are raised to it.

    Args:
        packed_scores (Tensor): ``[z | t]``, ``(N, 2 (C + 1))`` (see
            :class:`TDEClassifier`), possibly averaged over cascade stages.
        scoring (str): one of :data:`SCORINGS`.
    """
    return _unclamped_log_scores(packed_scores,
                                 scoring).clamp_(min=MIN_LOG_SCORE)


def _unclamped_log_scores(packed_scores: Tensor, scoring: str) -> Tensor:
    num_rois = packed_scores.size(0)
    # (N, 2, C + 1): row 0 is z, row 1 is t; one softmax kernel for both
    pair = packed_scores.reshape(num_rois, 2, -1)
    if scoring == 'deconfound':
        return F.log_softmax(pair[:, 0], dim=1)
    if scoring == 'tde-no-bg-exempt':
        return F.log_softmax(pair[:, 1], dim=1)
    if scoring != 'tde':
        raise ValueError(f'unknown TDE scoring {scoring!r}; use one of '
                         f'{SCORINGS}')
    log_pq = F.log_softmax(pair, dim=2)
    # log of the foreground masses sum_{j != bg} p_j and sum_{j != bg} q_j,
    # summed from the foreground probabilities: 1 - p_bg would round to 0
    # for confident background RoIs
    log_fg_mass = log_pq[..., :-1].exp().sum(dim=2).log()
    # log softmax(t_fg)_c = log q_c - log sum_{j != bg} q_j
    shift = log_fg_mass[:, :1] - log_fg_mass[:, 1:]
    return torch.cat([log_pq[:, 1, :-1] + shift, log_pq[:, 0, -1:]], dim=1)


def check_scoring(scoring: str, owner: str) -> str:
    if scoring not in SCORINGS:
        raise ValueError(f'{owner}: scoring={scoring!r} is not one of '
                         f'{SCORINGS}')
    return scoring


def check_alpha(alpha: float, owner: str) -> float:
    """``alpha`` as a float; a clear error unless it is finite."""
    alpha = float(alpha)
    if not math.isfinite(alpha):
        raise ValueError(f'{owner}: alpha must be a finite number, got '
                         f'{alpha}')
    return alpha


@MODELS.register_module()
class TDEBBoxHead(ScoringSettingsMixin, Shared2FCBBoxHead):
    """Shared 2-fc box head with the de-confounded classifier of TDE.

    ``fc_cls`` is a :class:`TDEClassifier` fed with the output of the shared
    fcs (the penultimate RoI feature); box regression is the stock one. In
    training the classifier gives the de-confounded logits (trained with the
    head's softmax cross-entropy) and updates its moving-average feature from
    the foreground RoIs; the labels come from the RoI head
    (:class:`TDERoIHead`, :class:`TDECascadeRoIHead`,
    :class:`TDEHybridTaskCascadeRoIHead`), which is required. At test time
    the head scores with :func:`tde_log_scores` and hands mmdet's
    ``_predict_by_feat_single`` the *log*-probabilities: its softmax maps
    them back to the same probabilities (softmax(log p) = p when p sums to
    1), so the scores reach NMS normalised exactly once.

    ``alpha`` and ``scoring`` are test-time scoring settings (see
    :mod:`mmdet_longtail.models.scoring_settings`), changed without
    retraining: from the config (``model.roi_head.bbox_head.alpha=1.0``;
    ``test_cfg.rcnn.tde_alpha`` / ``tde_scoring`` set them for every stage
    at once, see :class:`TDERoIHead`) or at run time with
    ``set_scoring_settings(alpha=1.0)``.

    Args:
        num_heads (int): K, the feature / weight split; must divide
            ``fc_out_channels``. Defaults to 2.
        tau (float): logit scale. Defaults to 16.0.
        gamma (float): added to the weight norms. Defaults to 1/32.
        momentum (float): mu of the moving-average feature; the authors
            used 0.9 (LVIS v0.5) and 0.9998 (LVIS v1). Defaults to 0.9.
        alpha (float): TDE strength at test time. Defaults to 1.5.
        scoring (str): test-time scoring, one of :data:`SCORINGS`:
            ``'tde'`` (background-exempted TDE, the paper's method),
            ``'tde-no-bg-exempt'`` (softmax of the TDE logits) or
            ``'deconfound'`` (softmax of the de-confounded logits).
            Defaults to ``'tde'``.
        **kwargs: the arguments of :class:`Shared2FCBBoxHead`, except
            ``cls_predictor_cfg`` (the head builds its classifier). The
            classification loss must be the softmax ``CrossEntropyLoss``.
    """

    def __init__(self,
                 num_heads: int = 2,
                 tau: float = 16.0,
                 gamma: float = 1 / 32,
                 momentum: float = 0.9,
                 alpha: float = 1.5,
                 scoring: str = 'tde',
                 **kwargs) -> None:
        if 'cls_predictor_cfg' in kwargs:
            raise ValueError(
                'TDEBBoxHead builds its own classifier (TDEClassifier); set '
                'num_heads / tau / gamma / momentum / alpha on the head '
                'instead of cls_predictor_cfg')
        fc_out_channels = kwargs.get('fc_out_channels', 1024)
        if isinstance(num_heads, int) and num_heads > 0 and \
                fc_out_channels % num_heads != 0:
            raise ValueError(
                f'TDEBBoxHead: fc_out_channels={fc_out_channels} (the RoI '
                f'feature dimension) is not divisible by num_heads='
                f'{num_heads}')
        check_tde_settings(fc_out_channels, num_heads, tau, gamma, momentum)
        check_scoring(scoring, 'TDEBBoxHead')
        alpha = check_alpha(alpha, 'TDEBBoxHead')
        default_init = kwargs.get('init_cfg') is None
        super().__init__(**kwargs)
        self._check_loss()
        self.scoring = scoring
        self.cls_predictor_cfg = ConfigDict(
            type='TDEClassifier',
            num_heads=num_heads,
            tau=tau,
            gamma=gamma,
            momentum=momentum,
            alpha=alpha)
        # replaces the plain Linear built by ConvFCBBoxHead
        self.fc_cls = MODELS.build(
            dict(
                self.cls_predictor_cfg,
                in_features=self.cls_last_dim,
                out_features=self.num_classes + 1))
        if default_init:
            self.init_cfg = [
                cfg for cfg in self.init_cfg
                if cfg.get('override') != dict(name='fc_cls')
            ]
            bound = 1 / math.sqrt(self.cls_last_dim)
            self.init_cfg.append(
                dict(
                    type='Uniform',
                    a=-bound,
                    b=bound,
                    override=dict(name='fc_cls')))

    def _check_loss(self) -> None:
        loss = self.loss_cls
        if not isinstance(loss, CrossEntropyLoss) or loss.use_sigmoid or \
                loss.use_mask or self.custom_cls_channels:
            raise ValueError(
                f'TDEBBoxHead trains the de-confounded logits with a softmax '
                f'cross-entropy over C + 1 classes; loss_cls must be '
                f'dict(type="CrossEntropyLoss", use_sigmoid=False), got '
                f'{type(loss).__name__}')
        if not self.with_cls:
            raise ValueError('TDEBBoxHead needs with_cls=True')

    # -- test-time settings ------------------------------------------------

    SCORING_SETTINGS = ('alpha', 'scoring')

    @property
    def alpha(self) -> float:
        """TDE strength used by the classifier at test time (held by
        ``fc_cls``; change it with :meth:`set_scoring_settings`)."""
        return self.fc_cls.alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        self.fc_cls.alpha = check_alpha(value, 'TDEBBoxHead')

    def check_scoring_settings(self, settings: Dict[str, Any]
                               ) -> Dict[str, Any]:
        """A finite ``alpha`` and a ``scoring`` of :data:`SCORINGS`."""
        return dict(
            settings,
            alpha=check_alpha(settings['alpha'], 'TDEBBoxHead'),
            scoring=check_scoring(settings['scoring'], 'TDEBBoxHead'))

    # -- training ----------------------------------------------------------

    def roi_labels(self, labels: Tensor) -> ContextManager[None]:
        """Context giving the labels (background = ``num_classes``) of the
        RoIs of the next training forward; see
        :meth:`TDEClassifier.roi_labels`."""
        return self.fc_cls.roi_labels(labels)

    # -- inference ---------------------------------------------------------

    def class_log_scores(self, cls_score: Tensor) -> Tensor:
        """Log-probabilities ``(N, C + 1)`` of the test-time output
        ``[z | t]`` (one stage's, or averaged over stages)."""
        expected = 2 * (self.num_classes + 1)
        if cls_score.dim() != 2 or cls_score.size(1) != expected:
            raise ValueError(
                f'TDEBBoxHead expects test-time class scores [z | t] of '
                f'shape (N, {expected}), got {tuple(cls_score.shape)}; were '
                f'they produced in training mode?')
        if self.scoring != 'deconfound' and self.alpha != 0 and \
                not self.fc_cls.has_moving_average():
            raise RuntimeError(
                'TDEBBoxHead: the moving-average feature '
                '(fc_cls.moving_average_feature) is zero, so TDE is '
                'undefined: the head has not been trained with a TDE RoI '
                'head or the checkpoint does not hold it. Score with '
                'scoring="deconfound" (test_cfg.rcnn.tde_scoring) to skip '
                'TDE')
        return tde_log_scores(cls_score, self.scoring)

    def _predict_by_feat_single(
            self,
            roi: Tensor,
            cls_score: Tensor,
            bbox_pred: Tensor,
            img_meta: dict,
            rescale: bool = False,
            rcnn_test_cfg: Optional[ConfigDict] = None) -> InstanceData:
        """mmdet's post-processing of one image with TDE scores.

        The stock method applies a softmax to ``cls_score``; given the
        log-probabilities it returns the probabilities themselves.
        """
        return super()._predict_by_feat_single(
            roi=roi,
            cls_score=self.class_log_scores(cls_score),
            bbox_pred=bbox_pred,
            img_meta=img_meta,
            rescale=rescale,
            rcnn_test_cfg=rcnn_test_cfg)

