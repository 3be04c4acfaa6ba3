"""Adaptive Class Suppression Loss (ACSL) for sigmoid RoI classifiers.

Wang et al., "Adaptive Class Suppression Loss for Long-Tail Object
Detection", CVPR 2021. https://arxiv.org/abs/2104.00885

The classifier has one sigmoid logit per foreground class (C outputs, no
background logit). For RoI i with label ``g_i`` (``C`` = background),
``p_ij = sigmoid(z_ij)`` and ``y_ij = [j == g_i]``::

    L = 1/N * sum_i sum_j w_ij * BCE(z_ij, y_ij)

    foreground RoI:  w_ij = 1                 if j == g_i
                     w_ij = [p_ij >= xi]      otherwise   (xi = 0.7)

so a class is suppressed by another class's RoI only where the classifier
confuses the two (its probability reaches xi), whatever the class
frequencies. The mask is computed from the detached probabilities. N is the
number of RoIs.

Background RoIs have no positive; ``background`` says which classes they
suppress:

* ``'frequency_group'`` (default, the authors' released code): per RoI,
  the rare classes with probability 0.01, the common ones with 0.1 and the
  frequent ones always (``bg_suppress_prob``, by the LVIS frequency letter
  of the training image count); the xi-mask is not used;
* ``'threshold'``: the paper's rule for every RoI, ``w_ij = [p_ij >= xi]``;
* ``'all'``: every class (``w_ij = 1``), as EQL treats background RoIs.

The released code has a sigmoid background channel as well (label 0); here
the background is the absence of a positive, as in mmdet's sigmoid heads. At
test time the score of class j is ``sigmoid(z_j)`` with a zero background
column appended.
"""
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmdet.registry import MODELS
from mmdet_longtail.datasets.class_stats import (StatisticsSource,
                                                 load_class_statistics)
from .utils import (SeededSampling, SigmoidClassifierMixin, check_num_classes,
                    foreground_targets, reduce_roi_losses, upcast_half)

ACSL_BACKGROUNDS = ('frequency_group', 'threshold', 'all')
FREQUENCY_LETTERS = ('r', 'c', 'f')


def acsl_loss(cls_score: Tensor,
              labels: Tensor,
              score_thr: float,
              bg_weights: Optional[Tensor] = None,
              reduction: str = 'mean') -> Tensor:
    """ACSL of C sigmoid logits (no background logit).

    Args:
        cls_score (Tensor): logits (N, C); half precision is computed in
            float32, float64 in float64.
        labels (Tensor): (N,) in ``[0, C]``, C = background.
        score_thr (float): xi; a negative class is suppressed where its
            probability is >= xi.
        bg_weights (Tensor, optional): (N, C) weights of the background
            RoIs' rows (rows of foreground RoIs are ignored); None applies
            the xi-rule to the background RoIs too.
        reduction (str): 'none' (per RoI), 'sum' or 'mean' (sum / N).
    """
    cls_score = upcast_half(cls_score)
    num_classes = cls_score.size(1)
    y = foreground_targets(labels, num_classes, cls_score.dtype)
    confused = (torch.sigmoid(cls_score.detach()) >= score_thr).to(y)
    w = torch.maximum(y, confused)  # the GT class, and confused negatives
    if bg_weights is not None:
        is_bg = (labels == num_classes)[:, None]
        w = torch.where(is_bg, bg_weights.to(w), w)
    bce = F.binary_cross_entropy_with_logits(
        cls_score, y, weight=w, reduction='none')
    return reduce_roi_losses(bce.sum(1), reduction)


def check_bg_suppress_prob(
        probs: Sequence[float]) -> Tuple[float, float, float]:
    """``(rare, common, frequent)`` probabilities in [0, 1]."""
    probs = tuple(float(p) for p in probs)
    if len(probs) != 3 or not all(0 <= p <= 1 for p in probs):
        raise ValueError(f'ACSLoss: bg_suppress_prob must be 3 '
                         f'probabilities in [0, 1] (rare, common, frequent), '
                         f'got {probs}')
    return probs


@MODELS.register_module()
class ACSLoss(SigmoidClassifierMixin, SeededSampling, nn.Module):
    """Adaptive Class Suppression Loss (Wang et al., CVPR 2021,
    https://arxiv.org/abs/2104.00885) for RoI heads (see the module
    docstring for the rule).

    Called as mmdet's RoI heads call their classification loss, background
    label ``C``; normalised by the number of RoIs N as in the authors' code
    (``label_weights`` and ``avg_factor`` are accepted and ignored). The
    classifier has C outputs and scores with a sigmoid and a zero
    background column. The authors initialise the bias to the prior 0.01
    (the configs' ``init_cfg``).

    Args:
        num_classes (int): C, number of foreground classes.
        score_thr (float): xi, in (0, 1). Defaults to 0.7 (the authors').
        background (str): ``'frequency_group'``, ``'threshold'`` or
            ``'all'``. Defaults to ``'frequency_group'``.
        bg_suppress_prob (Sequence[float]): probability that a background
            RoI suppresses the rare, common and frequent classes
            (``'frequency_group'``). Defaults to (0.01, 0.1, 1.0).
        class_statistics (str | ClassStatistics | dict, optional): the
            train set's statistics, for the frequency letters of
            ``'frequency_group'`` (from ``image_count``); ``LongTailRunner``
            passes them from ``train_dataloader.dataset``.
        seed (int, optional): seed of the background draws; None uses the
            run's seed (see :class:`SeededSampling`).
        loss_weight (float): multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self,
                 num_classes: int,
                 score_thr: float = 0.7,
                 background: str = 'frequency_group',
                 bg_suppress_prob: Sequence[float] = (0.01, 0.1, 1.0),
                 class_statistics: Optional[StatisticsSource] = None,
                 seed: Optional[int] = None,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        num_classes = check_num_classes('ACSLoss', num_classes)
        score_thr = float(score_thr)
        if not 0 < score_thr < 1:
            raise ValueError(f'ACSLoss: score_thr (xi) must lie in (0, 1), '
                             f'got {score_thr}')
        if background not in ACSL_BACKGROUNDS:
            raise ValueError(f'ACSLoss: background must be one of '
                             f'{ACSL_BACKGROUNDS}, got {background!r}')
        self.num_classes = int(num_classes)
        self.score_thr = score_thr
        self.background = background
        self.bg_suppress_prob = check_bg_suppress_prob(bg_suppress_prob)
        self.loss_weight = float(loss_weight)
        self.register_sampling_step(seed)
        # frequency group (0 rare, 1 common, 2 frequent) of each class
        self.class_groups: Optional[np.ndarray] = None
        if background == 'frequency_group':
            stats = load_class_statistics(class_statistics, self.num_classes,
                                          'ACSLoss with frequency_group')
            self.class_groups = np.array(
                [FREQUENCY_LETTERS.index(x) for x in stats.frequency])
        self.inputs = self.classifier_inputs('ACSLoss')

    def background_weights(self, num_rois: int,
                           like: Tensor) -> Optional[Tensor]:
        """(N, C) weights for background rows, or None for the xi-rule.

        ``'frequency_group'`` draws, per RoI and frequency group, whether
        the group is suppressed (one draw per step, keyed by the seeded
        ``sampling_step``, so ``--resume`` continues the same draws)."""
        if self.background == 'threshold':
            return None
        if self.background == 'all':
            return like.new_ones(num_rois, self.num_classes)
        rng = self.next_sampling_rng()
        draws = rng.random((num_rois, len(FREQUENCY_LETTERS)))
        suppress = draws < np.asarray(self.bg_suppress_prob)[None]
        return torch.from_numpy(suppress[:, self.class_groups]).to(like)

    def forward(self,
                cls_score: Tensor,
                labels: Tensor,
                label_weights: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None) -> Tensor:
        """ACSL of logits (N, C) and labels (N,) in [0, C], reduced as
        ``reduction_override`` says (default 'mean', sum / N)."""
        reduction = self.inputs.check(
            cls_score, labels, reduction=reduction_override or 'mean')
        bg_weights = self.background_weights(cls_score.size(0), cls_score)
        return self.loss_weight * acsl_loss(cls_score, labels,
                                            self.score_thr, bg_weights,
                                            reduction)

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, score_thr='
                f'{self.score_thr}, background={self.background!r}, '
                f'bg_suppress_prob={self.bg_suppress_prob}, loss_weight='
                f'{self.loss_weight}')
