"""Equalization Loss v2 (EQLv2) for sigmoid RoI classifiers.

Tan et al., "Equalization Loss v2: A New Gradient Balance Approach for
Long-tailed Object Detection", CVPR 2021. https://arxiv.org/abs/2012.08548

The classifier has C + 1 sigmoid logits; the last one is an objectness /
background logit. The target is one-hot over the C + 1 columns (background
RoIs are positive for the last column). Each foreground class j keeps the
accumulated magnitudes of the positive and negative gradients it received,
``pos_j`` and ``neg_j``, and their ratio ``g_j = pos_j / (neg_j + 1e-10)``::

    neg_w_j = f(g_j) = 1 / (1 + exp(-gamma (g_j - mu)))
    pos_w_j = 1 + alpha (1 - neg_w_j)          (background: both 1)
    w_ij    = pos_w_j y_ij + neg_w_j (1 - y_ij)
    L       = 1/N * sum_i sum_j w_ij BCE(z_ij, y_ij)

with N the number of RoIs. After the loss of a step, the statistics grow by
the gradient magnitudes of the weighted, un-normalised BCE of that step,
``|sigmoid(z_ij) - y_ij| w_ij``, summed over the RoIs with ``y_ij = 1``
(``pos_j``) and ``y_ij = 0`` (``neg_j``); the new ratio applies from the next
step. ``g`` starts at 100 so that both weights start at 1. Rare classes
collect few positive gradients, their ratio stays small, and their negative
gradients are damped while their positive ones are boosted.

At test time the score of class c is ``sigmoid(z_c) * (1 - sigmoid(z_bg))``
and the background score ``sigmoid(z_bg)`` is the last column.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmdet.registry import MODELS
from .utils import (GradientStatistics, ObjectnessClassifierMixin,
                    check_num_classes, reduce_roi_losses, upcast_half)

# ratio before any statistics: f(100) = 1, so both weights start at 1
INITIAL_RATIO = 100.0


def eqlv2_weights(pos_neg: Tensor, gamma: float, mu: float,
                  alpha: float) -> Tuple[Tensor, Tensor]:
    """Per-column positive and negative weights (C + 1,) from the gradient
    ratios ``g`` (C,); the background column gets 1 and 1."""
    neg_w = torch.sigmoid(gamma * (pos_neg - mu))  # f(g)
    pos_w = 1 + alpha * (1 - neg_w)
    return F.pad(pos_w, (0, 1), value=1.0), F.pad(neg_w, (0, 1), value=1.0)


def eqlv2_loss(cls_score: Tensor,
               labels: Tensor,
               pos_weight: Tensor,
               neg_weight: Tensor,
               reduction: str = 'mean') -> Tuple[Tensor, Tensor]:
    """EQLv2 loss of C + 1 sigmoid logits with per-column weights.

    Args:
        cls_score (Tensor): logits (N, C + 1), background last; float16 /
            bfloat16 logits are computed in float32, float64 in float64.
        labels (Tensor): (N,) integers in ``[0, C]``, C = background.
        pos_weight (Tensor): (C + 1,) weight of the target element.
        neg_weight (Tensor): (C + 1,) weight of the other elements.
        reduction (str): 'none' (per RoI, e.g. for OHEM), 'sum' or 'mean'
            (sum / N). Defaults to 'mean'.

    Returns:
        tuple[Tensor, Tensor]: the loss, and this step's gradient
        magnitudes of the weighted, un-normalised BCE per column (no
        gradient), stacked (2, C + 1): ``sum_i y_ij |p_ij - y_ij| w_ij``
        and ``sum_i (1 - y_ij) |p_ij - y_ij| w_ij``, the increments of the
        statistics.
    """
    cls_score = upcast_half(cls_score)
    # one-hot over the C + 1 columns: background RoIs target the last one
    y = F.one_hot(labels.long(), cls_score.size(1)).to(cls_score.dtype)
    w = pos_weight.to(y) * y + neg_weight.to(y) * (1 - y)
    bce = F.binary_cross_entropy_with_logits(
        cls_score, y, weight=w, reduction='none')
    loss = reduce_roi_losses(bce.sum(1), reduction)
    with torch.no_grad():
        # |d BCE / dz| = |sigmoid(z) - y|, times the weight
        magnitude = (torch.sigmoid(cls_score) - y).abs() * w
        increment = torch.stack([(magnitude * y).sum(0),
                                 (magnitude * (1 - y)).sum(0)])
    return loss, increment


@MODELS.register_module()
class EQLv2(ObjectnessClassifierMixin, GradientStatistics, nn.Module):
    """Equalization Loss v2 (Tan et al., CVPR 2021,
    https://arxiv.org/abs/2012.08548) for RoI heads.

    Called as mmdet's RoI heads call their classification loss:
    ``loss(cls_score (N, C + 1), labels (N,), label_weights, avg_factor,
    reduction_override)`` with background label ``C``. As in the authors'
    code, the loss is normalised by the number of RoIs N; ``label_weights``
    and ``avg_factor`` are accepted and ignored. The loss tells
    ``BBoxHead`` (Faster, Mask, Cascade and HTC) to build C + 1 outputs and
    to score with :meth:`get_activation`; mmdet's own ``EQLV2Loss`` does not,
    so its heads score it with a softmax.

    The authors initialise the classifier bias to the prior 0.001; the
    configs do this with the head's ``init_cfg`` (``bias_prob=0.001``).

    Buffers (saved in checkpoints, restored by ``--resume``): ``pos_grad``
    and ``neg_grad`` (C,), the accumulated gradient magnitudes, and
    ``pos_neg`` (C,), their ratio g (starts at 100), kept by
    :class:`~mmdet_longtail.models.losses.utils.GradientStatistics`.
    Statistics are collected by every forward call in training mode; under
    ``torch.distributed`` the increments of each step are summed over the
    ranks (every rank must call the loss the same number of times), so all
    ranks keep identical statistics.

    Args:
        num_classes (int): C, number of foreground classes.
        gamma (float): steepness of the weighting function f. Defaults to
            12.0.
        mu (float): ratio at which f = 0.5. Defaults to 0.8.
        alpha (float): extra weight of the positive gradients of classes
            with a small ratio, ``pos_w = 1 + alpha (1 - f(g))``. Defaults
            to 4.0.
        loss_weight (float): multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self,
                 num_classes: int,
                 gamma: float = 12.0,
                 mu: float = 0.8,
                 alpha: float = 4.0,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        num_classes = check_num_classes('EQLv2', num_classes)
        for name, value in (('gamma', gamma), ('mu', mu), ('alpha', alpha),
                            ('loss_weight', loss_weight)):
            if not torch.isfinite(torch.tensor(float(value))):
                raise ValueError(f'EQLv2: {name} must be finite, got {value}')
        if alpha < 0:
            raise ValueError(f'EQLv2: alpha must be >= 0, got {alpha}')
        self.num_classes = int(num_classes)
        self.gamma = float(gamma)
        self.mu = float(mu)
        self.alpha = float(alpha)
        self.loss_weight = float(loss_weight)
        self.register_gradient_statistics(self.num_classes, INITIAL_RATIO)
        self.inputs = self.classifier_inputs('EQLv2')

    def weights(self,
                dtype: Optional[torch.dtype] = None) -> Tuple[Tensor, Tensor]:
        """Current (pos_weight, neg_weight), (C + 1,) each, computed in
        ``dtype`` (default: the buffers')."""
        ratio = self.pos_neg if dtype is None else self.pos_neg.to(dtype)
        return eqlv2_weights(ratio, self.gamma, self.mu, self.alpha)

    def forward(self,
                cls_score: Tensor,
                labels: Tensor,
                label_weights: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None) -> Tensor:
        """EQLv2 of logits (N, C + 1) and labels (N,) in [0, C]; in
        training mode the statistics then grow by this step's increments.
        ``reduction_override`` as in :func:`eqlv2_loss`."""
        reduction = self.inputs.check(
            cls_score, labels, reduction=reduction_override or 'mean')
        pos_weight, neg_weight = self.weights(upcast_half(cls_score).dtype)
        loss, increment = eqlv2_loss(cls_score, labels, pos_weight,
                                     neg_weight, reduction)
        if self.training:
            # the C foreground columns; the background one has no ratio
            self.accumulate_gradient_statistics(
                increment[:, :self.num_classes])
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, gamma={self.gamma}, '
                f'mu={self.mu}, alpha={self.alpha}, loss_weight='
                f'{self.loss_weight}')
