"""NorCal: post-hoc normalised calibration of softmax detection scores.

Pan et al., "On Model Calibration for Long-Tailed Object Detection and
Instance Segmentation", NeurIPS 2021. https://arxiv.org/abs/2107.02170

A softmax RoI classifier trained with plain cross-entropy over C foreground
classes plus background (last column) is re-scored at test time. Each
foreground score is divided by a calibration factor that grows with the
class's training sample size ``N_c`` (the number of training *images* that
contain class c); the background score is left uncalibrated; then the
scores of each proposal are renormalised over all C + 1 columns::

    s_c  = a_c * exp(z_c)   (c < C),     s_bg = exp(z_bg)
    p_c  = s_c / (sum_{k<C} s_k + s_bg)

    a_c = 1 / N_c ** gamma                          (method='gamma')
    a_c = (1 - gamma) / (1 - gamma ** N_c)          (method='cb', the
                                                     class-balanced variant)

``gamma = 0`` gives ``a_c = 1`` in both variants, i.e. the plain softmax.
Since ``a_c * exp(z_c) = exp(z_c + log a_c)``, the scores are computed as a
softmax of shifted logits, which is exact and cannot overflow.

The loss trains exactly like mmdet's ``CrossEntropyLoss`` (softmax CE over
C + 1 columns), so a baseline checkpoint loads unchanged; the calibration
lives in ``get_activation``, which mmdet's ``BBoxHead`` calls at inference
when ``custom_cls_channels`` is set. ``gamma`` can therefore be changed at
test time, e.g. ``--cfg-options model.roi_head.bbox_head.loss_cls.gamma=0.6``
(cascade heads: ``model.roi_head.bbox_head.2.loss_cls.gamma=0.6``).
"""
import math
from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mmdet.models.losses import CrossEntropyLoss
from mmdet.registry import MODELS
from mmdet_longtail.datasets.class_stats import (StatisticsSource,
                                                 load_class_statistics)
from ..scoring_settings import ScoringSettingsMixin
from .utils import PlainClassifierMixin, check_num_classes, upcast_half

NORCAL_METHODS = ('gamma', 'cb')


def check_norcal_gamma(gamma: float, method: str) -> float:
    """Validated ``gamma`` for ``method`` (clear error otherwise)."""
    if method not in NORCAL_METHODS:
        raise ValueError(f'NorCal: unknown method {method!r}; choose from '
                         f'{NORCAL_METHODS}')
    gamma = float(gamma)
    if not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f'NorCal: gamma must be a finite number >= 0, got '
                         f'{gamma}')
    if method == 'cb' and gamma >= 1:
        raise ValueError(f"NorCal method='cb' needs 0 <= gamma < 1 (a_c = "
                         f'(1 - gamma) / (1 - gamma ** N_c)), got {gamma}')
    return gamma


def norcal_log_factors(image_count: Sequence[int],
                       gamma: float,
                       method: str = 'gamma',
                       source: str = 'counts') -> np.ndarray:
    """``log a_c`` of every foreground class (float64, shape (C,)).

    Args:
        image_count (Sequence[int]): N_c, training images of each class;
            every entry must be >= 1 (``1 / 0 ** gamma`` is undefined).
        gamma (float): calibration strength, >= 0 (< 1 for ``'cb'``).
        method (str): ``'gamma'``: a_c = N_c^-gamma; ``'cb'``:
            a_c = (1 - gamma) / (1 - gamma^N_c).
        source (str): where the counts come from, for error messages.
    """
    gamma = check_norcal_gamma(gamma, method)
    counts = np.asarray(image_count, dtype=np.float64)
    if counts.ndim != 1 or (counts < 1).any():
        bad = np.flatnonzero(counts < 1)[:10].tolist()
        raise ValueError(f'NorCal needs a training image count >= 1 for '
                         f'every class; classes (labels) {bad} have no '
                         f'training image in {source}')
    if gamma == 0:
        return np.zeros_like(counts)
    if method == 'gamma':
        return -gamma * np.log(counts)
    # log(1 - gamma) - log(1 - gamma^N), with log1p for precision
    return math.log1p(-gamma) - np.log1p(-np.power(gamma, counts))


def norcal_scores(cls_score: Tensor, log_factors: Tensor) -> Tensor:
    """NorCal probabilities from raw logits (background last).

    Args:
        cls_score (Tensor): (N, C + 1) logits, background in the last column.
        log_factors (Tensor): (C,) ``log a_c`` of the foreground classes.

    Returns:
        Tensor: (N, C + 1) scores, each row sums to 1.
    """
    if cls_score.size(-1) != log_factors.numel() + 1:
        raise ValueError(f'NorCal: cls_score has {cls_score.size(-1)} '
                         f'columns, expected C + 1 = '
                         f'{log_factors.numel() + 1}')
    shifted = torch.cat([
        cls_score[..., :-1] + log_factors.to(cls_score), cls_score[..., -1:]
    ], dim=-1)
    return F.softmax(shifted, dim=-1)


@MODELS.register_module()
class CalibratedCrossEntropyLoss(ScoringSettingsMixin, PlainClassifierMixin,
                                 CrossEntropyLoss):
    """Softmax cross-entropy for training, NorCal scores at test time.

    ``gamma`` and ``method`` are test-time scoring settings (see
    :mod:`mmdet_longtail.models.scoring_settings`): set them from the
    config or at run time with ``set_scoring_settings(gamma=..., method=...)``.
    With ``gamma=0`` the loss is exactly ``CrossEntropyLoss`` in training
    and at test time.

    Args:
        num_classes (int): number of foreground classes C (the classifier has
            C + 1 outputs, background last).
        class_statistics (str | ClassStatistics | dict, optional): the
            train set's statistics, N_c = ``image_count``: the LVIS train
            annotation file (``LongTailRunner`` passes it from
            ``train_dataloader.dataset``), or see
            :func:`~mmdet_longtail.datasets.load_class_statistics`. Required
            when ``gamma > 0``. Defaults to None.
        gamma (float): calibration strength; 0 leaves the softmax unchanged
            (NorCal's own default, so it must be set for an effect).
            Defaults to 0.
        method (str): ``'gamma'`` (a_c = 1 / N_c^gamma) or ``'cb'``
            (a_c = (1 - gamma) / (1 - gamma^N_c), class-balanced).
            Defaults to ``'gamma'``.
        **kwargs: arguments of mmdet's ``CrossEntropyLoss`` (``loss_weight``,
            ``reduction``, ``class_weight``, ...); ``use_sigmoid`` and
            ``use_mask`` must stay False.
    """

    #: test-time scoring settings (see ScoringSettingsMixin)
    SCORING_SETTINGS = ('gamma', 'method')

    def __init__(self,
                 num_classes: int,
                 class_statistics: Optional[StatisticsSource] = None,
                 gamma: float = 0.0,
                 method: str = 'gamma',
                 **kwargs) -> None:
        if kwargs.get('use_sigmoid') or kwargs.get('use_mask'):
            raise ValueError('CalibratedCrossEntropyLoss calibrates a softmax '
                             'classifier: use_sigmoid and use_mask must be '
                             'False')
        super().__init__(**kwargs)
        self.num_classes = check_num_classes('CalibratedCrossEntropyLoss',
                                             num_classes)
        self.inputs = self.classifier_inputs('CalibratedCrossEntropyLoss')
        check_norcal_gamma(gamma, method)
        self.image_count: Optional[np.ndarray] = None
        self.stats_source = 'counts'
        if class_statistics is not None:
            stats = load_class_statistics(class_statistics, self.num_classes,
                                          'CalibratedCrossEntropyLoss')
            self.image_count = stats.image_count.copy()
            self.stats_source = stats.source
        # fails at build time on classes without training images
        settings = self.check_scoring_settings(
            dict(gamma=gamma, method=method))
        self.gamma = settings['gamma']
        self.method = settings['method']
        self._log_factors_key: Optional[tuple] = None
        self._log_factors: Optional[Tensor] = None

    def check_scoring_settings(self, settings: Dict[str, Any]
                               ) -> Dict[str, Any]:
        """A valid ``gamma`` for ``method``; ``gamma > 0`` needs the class
        statistics, with N_c >= 1 for every class."""
        gamma = check_norcal_gamma(settings['gamma'], settings['method'])
        if gamma > 0:
            if self.image_count is None:
                load_class_statistics(
                    None, self.num_classes,
                    'CalibratedCrossEntropyLoss with gamma > 0')
            norcal_log_factors(self.image_count, gamma, settings['method'],
                               self.stats_source)
        return dict(settings, gamma=gamma)

    def forward(self,
                cls_score: Tensor,
                label: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None,
                **kwargs) -> Tensor:
        """Training: mmdet's softmax cross-entropy (NorCal changes only the
        test-time scores), in float32 for half-precision logits. Labels lie
        in [0, C], as RoI heads give them (no ``ignore_index`` label)."""
        self.inputs.check(cls_score, label, weight,
                          reduction_override or self.reduction)
        return super().forward(
            upcast_half(cls_score), label, weight, avg_factor,
            reduction_override, **kwargs)

    def log_factors(self) -> Tensor:
        """``log a_c`` for the current ``gamma`` / ``method`` (float64; the
        scores cast it to the logits' dtype).

        Cached per (gamma, method): both may be changed between calls (test
        time option, score sweeps).
        """
        key = (self.gamma, self.method)
        if self._log_factors_key != key:
            if self.gamma != 0 and self.image_count is None:
                raise ValueError('CalibratedCrossEntropyLoss: gamma > 0 '
                                 'needs class_statistics')
            counts = self.image_count if self.image_count is not None \
                else np.ones(self.num_classes)
            self._log_factors = torch.from_numpy(
                norcal_log_factors(counts, self.gamma, self.method,
                                   self.stats_source))
            self._log_factors_key = key
        return self._log_factors

    def get_activation(self, cls_score: Tensor) -> Tensor:
        """NorCal scores (N, C + 1), background last, float32 for
        half-precision logits."""
        self.inputs.check_logits(cls_score)
        if self.gamma == 0:
            # exactly the stock softmax head
            return self.plain_scores(cls_score)
        return norcal_scores(upcast_half(cls_score), self.log_factors())

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, gamma={self.gamma}, '
                f'method={self.method!r}, ' + super().extra_repr())
