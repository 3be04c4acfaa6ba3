"""Gumbel Optimised Loss (GOL) for RoI classifiers.

Alexandridis et al., "Long-tailed Instance Segmentation using Gumbel
Optimized Loss", ECCV 2022. https://arxiv.org/abs/2207.10936

The classifier has one logit per foreground class (C outputs, no background
logit), activated by the Gumbel cumulative distribution function instead of
the sigmoid, with the logits clamped to ``[-4, 10]`` as in the authors'
code::

    p_ij = exp(-exp(-clamp(z_ij, -4, 10)))
    L    = 1/N * sum_i sum_j w_ij * BCE(p_ij, y_ij)
    BCE(p, 1) = exp(-z),    BCE(p, 0) = -log(1 - exp(-exp(-z)))

with ``y_ij = [j == g_i]`` (background rows all zero) and N the number of
RoIs. Without the drop loss every ``w_ij = 1``. With it (the authors' main
configuration, DropLoss of Hsieh et al., AAAI 2021, on EQL's tail set)::

    w_ij = 1 - T(j) * D_i * (1 - y_ij),      T(j) = [f_j < lambda]

``f_j`` is the class's training image frequency. ``D_i = 1`` for a
foreground RoI; for a background RoI ``D_i`` is drawn as 1 with probability
``1 - r``, where r is the fraction of the batch's foreground RoIs whose
class is a tail class. The foreground RoIs of other classes therefore never
suppress a tail class, and the background RoIs do so only with probability
r. At test time the score of class j is ``p_j`` and a zero background column
is appended.
"""
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from mmdet.registry import MODELS
from mmdet_longtail.datasets.class_stats import (StatisticsSource,
                                                 load_class_statistics)
from .utils import (SigmoidClassifierMixin, check_num_classes,
                    foreground_targets, reduce_roi_losses, upcast_half)

# the authors' clamp of the logits before the Gumbel activation
GUMBEL_LOGIT_RANGE = (-4.0, 10.0)


def check_logit_range(logit_range: Optional[Sequence[float]]
                      ) -> Optional[Tuple[float, float]]:
    """``(low, high)`` with low < high, or None (no clamp)."""
    if logit_range is None:
        return None
    low, high = (float(v) for v in logit_range)
    if not low < high:
        raise ValueError(f'GOLoss: logit_range must be (low, high) with low '
                         f'< high, got {tuple(logit_range)}')
    return low, high


def gumbel_activation(cls_score: Tensor,
                      logit_range: Optional[Tuple[float, float]] =
                      GUMBEL_LOGIT_RANGE) -> Tensor:
    """``exp(-exp(-z))`` of the (clamped) logits, in their dtype (half
    upcast)."""
    cls_score = upcast_half(cls_score)
    if logit_range is not None:
        cls_score = cls_score.clamp(*logit_range)
    return torch.exp(-torch.exp(-cls_score))


def gumbel_bce(cls_score: Tensor, targets: Tensor) -> Tensor:
    """Element-wise ``BCE(exp(-exp(-z)), y)`` for 0/1 targets, from the
    logits: ``-log p = exp(-z)`` and ``-log(1 - p) =
    -log(-expm1(-exp(-z)))`` (finite for the clamped logits)."""
    neg_exp = torch.exp(-cls_score)
    return torch.where(targets > 0, neg_exp,
                       -torch.log(-torch.expm1(-neg_exp)))


def gol_drop_keep(labels: Tensor, tail_classes: Tensor,
                  draws: Tensor) -> Tensor:
    """``D_i`` (N,): 1 for foreground RoIs; for background RoIs 1 when the
    uniform draw in [0, 1) is below ``1 - r``.

    Args:
        labels (Tensor): (N,) in ``[0, C]``, C = background.
        tail_classes (Tensor): (C,) bool, ``T(j)``.
        draws (Tensor): (N,) uniform numbers in [0, 1).
    """
    num_classes = tail_classes.numel()
    fg = labels < num_classes
    fg_tail = tail_classes[labels[fg]]
    tail_ratio = fg_tail.float().mean() if fg.any() else draws.new_zeros(())
    return fg | (draws < 1 - tail_ratio)


def gol_loss(cls_score: Tensor,
             labels: Tensor,
             tail_classes: Optional[Tensor] = None,
             keep: Optional[Tensor] = None,
             logit_range: Optional[Tuple[float, float]] = GUMBEL_LOGIT_RANGE,
             reduction: str = 'mean') -> Tensor:
    """Gumbel loss of C logits (no background logit), with the drop loss
    when ``tail_classes`` is given.

    Args:
        cls_score (Tensor): logits (N, C); float16 / bfloat16 logits are
            computed in float32, float64 in float64.
        labels (Tensor): (N,) in ``[0, C]``, C = background.
        tail_classes (Tensor, optional): (C,) bool, ``T(j)``; None: no drop
            loss (every ``w_ij = 1``).
        keep (Tensor, optional): (N,) bool, ``D_i`` (see
            :func:`gol_drop_keep`); required with ``tail_classes``.
        logit_range (tuple, optional): clamp of the logits; None: no clamp.
        reduction (str): 'none' (per RoI), 'sum' or 'mean' (sum / N).
    """
    cls_score = upcast_half(cls_score)
    num_classes = cls_score.size(1)
    if logit_range is not None:
        cls_score = cls_score.clamp(*logit_range)
    # y_ij = [j == g_i]; background RoIs (g_i = C) have no positive
    y = foreground_targets(labels, num_classes, cls_score.dtype)
    bce = gumbel_bce(cls_score, y)
    if tail_classes is not None:
        tail = tail_classes.to(cls_score)[None]
        bce = bce * (1 - tail * keep.to(cls_score)[:, None] * (1 - y))
    return reduce_roi_losses(bce.sum(1), reduction)


@MODELS.register_module()
class GOLoss(SigmoidClassifierMixin, nn.Module):
    """Gumbel Optimised Loss (Alexandridis et al., ECCV 2022,
    https://arxiv.org/abs/2207.10936) for RoI heads.

    Called as mmdet's RoI heads call their classification loss:
    ``loss(cls_score (N, C), labels (N,), label_weights, avg_factor,
    reduction_override)`` with background label ``C``. As in the authors'
    code, the loss is divided by the number of RoIs N; ``label_weights``
    and ``avg_factor`` are accepted and ignored. The loss tells
    ``BBoxHead`` (Faster, Mask, Cascade and HTC) to build C outputs and to
    score with :meth:`get_activation` (Gumbel, zero background column).

    The authors initialise ``fc_cls`` to the constant 0.001 with the bias
    -2; the configs do this with the head's ``init_cfg``
    (``configs/gol/_base_/gumbel-cls-init.py``). The drop loss draws ``D_i``
    from torch's global random generator (seeded by the runner's
    ``randomness`` config).

    Args:
        num_classes (int): C, number of foreground classes.
        class_statistics (str | ClassStatistics | dict, optional): the
            train set's statistics, ``f_j = image_count / num_images``: the
            LVIS train annotation file (``LongTailRunner`` passes it from
            ``train_dataloader.dataset``), or see
            :func:`~mmdet_longtail.datasets.load_class_statistics`. Required
            with ``drop_loss``.
        drop_loss (bool): weight the loss with the drop loss (the authors'
            main configuration). Defaults to True.
        lambda_threshold (float): lambda of the tail set ``f_j < lambda``.
            Defaults to 1.1e-3 (the authors' value for LVIS v1).
        logit_range (tuple[float, float], optional): clamp of the logits
            before the activation, in training and at test time; None: no
            clamp. Defaults to (-4, 10), the authors'.
        loss_weight (float): multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self,
                 num_classes: int,
                 class_statistics: Optional[StatisticsSource] = None,
                 drop_loss: bool = True,
                 lambda_threshold: float = 1.1e-3,
                 logit_range: Optional[Sequence[float]] = GUMBEL_LOGIT_RANGE,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        self.num_classes = check_num_classes('GOLoss', num_classes)
        self.drop_loss = bool(drop_loss)
        lambda_threshold = float(lambda_threshold)
        if not np.isfinite(lambda_threshold) or lambda_threshold < 0:
            raise ValueError(f'GOLoss: lambda_threshold must be a finite '
                             f'number >= 0, got {lambda_threshold}')
        self.lambda_threshold = lambda_threshold
        self.logit_range = check_logit_range(logit_range)
        self.loss_weight = float(loss_weight)
        tail = np.zeros(self.num_classes, dtype=bool)
        if self.drop_loss:
            stats = load_class_statistics(class_statistics, self.num_classes,
                                          'GOLoss with drop_loss=True')
            tail = stats.image_freq < lambda_threshold
        # derived from the dataset, so not part of checkpoints
        self.register_buffer(
            'tail_classes', torch.from_numpy(tail), persistent=False)
        self.inputs = self.classifier_inputs('GOLoss')

    def class_scores(self, cls_score: Tensor) -> Tensor:
        """(N, C) Gumbel probability of each class (the background column
        is zero, as for a sigmoid head)."""
        return gumbel_activation(cls_score, self.logit_range)

    def forward(self,
                cls_score: Tensor,
                labels: Tensor,
                label_weights: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None) -> Tensor:
        """GOL of logits (N, C) and labels (N,) in [0, C], reduced as
        ``reduction_override`` says (default 'mean' = sum / N)."""
        reduction = self.inputs.check(
            cls_score, labels, reduction=reduction_override or 'mean')
        tail, keep = None, None
        if self.drop_loss:
            tail = self.tail_classes
            draws = torch.rand(labels.numel(), device=cls_score.device)
            keep = gol_drop_keep(labels, tail, draws)
        return self.loss_weight * gol_loss(cls_score, labels, tail, keep,
                                           self.logit_range, reduction)

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, drop_loss='
                f'{self.drop_loss}, lambda_threshold={self.lambda_threshold}'
                f', tail classes={int(self.tail_classes.sum())}, '
                f'logit_range={self.logit_range}, loss_weight='
                f'{self.loss_weight}')
