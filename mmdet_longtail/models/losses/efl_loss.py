"""Equalized Focal Loss (EFL) for one-stage long-tailed detectors.

Li et al., "Equalized Focal Loss for Dense Long-Tailed Object Detection",
CVPR 2022. https://arxiv.org/abs/2201.02593

A sigmoid focal loss over the C foreground classes whose focusing and
weighting factors depend on the class. With ``p = sigmoid(x_ij)``, the
target ``y_ij`` (1 for the anchor's class, 0 otherwise; background anchors
are negative for every class), ``p_t = p y + (1 - p)(1 - y)`` and
``alpha_t = alpha y + (1 - alpha)(1 - y)``::

    gamma_j = gamma_b + s * (1 - g_j)                      (focusing factor)
    L = 1 / avg_factor * sum_ij w_i * alpha_t * (gamma_j / gamma_b)
                                * (1 - p_t) ** gamma_j * (-log p_t)

``g_j = clamp(G+_j / G-_j, 0, 1)`` is the accumulated ratio of the positive
to the negative gradient magnitude of class j: ``G+_j`` sums ``|dL/dx_ij|``
over the anchors labelled j, ``G-_j`` over every other valid anchor. The
gradients are the true ones: autograd's gradient of the logits of each call,
read in the backward pass by a hook on them (as the authors read it with a
backward hook on the classifier), so the focal, normalisation and
loss-scale factors are included; a dense head that calls the loss once per
FPN level contributes every level. The update runs once the backward pass of
the step has finished (the losses of step t use the statistics of steps
``< t``), and the increments are summed across ranks, so every rank keeps
the same statistics. ``g`` starts at 1, so
training starts as a plain focal loss (``gamma_j = gamma_b``).

On CUDA logits the loss is summed by a compiled copy of the same function
(``torch.compile``, ``fuse_on_cuda``): fused kernels that never store the
(N, C) terms, which at N anchors x 1203 classes take most of the eager
loss's memory (configs/efl/README.md has the measurement).

Mixed precision (``--amp``): the gradients carry the loss scale, so
``pos_grad`` / ``neg_grad`` are scaled too. A step's ratio is unchanged, but
the sums weight the steps by the scale in use, which changes rarely (it
doubles after 2000 finite steps and halves on an overflow; overflow steps
add nothing). The authors train in fp32.
"""
import functools
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Variable

from mmdet.registry import MODELS
from .utils import (ClassifierInputs, GradientStatistics, check_reduction,
                    compiled, upcast_half)


def efl_focusing_factors(pos_neg: Tensor, gamma_b: float,
                         scale_factor: float) -> Tuple[Tensor, Tensor]:
    """Per-class focusing ``gamma_j = gamma_b + s (1 - g_j)`` and weighting
    ``gamma_j / gamma_b`` factors from the gradient ratio ``g`` (C,)."""
    gamma = gamma_b + scale_factor * (1 - pos_neg)
    return gamma, gamma / gamma_b


def efl_targets(target: Tensor, num_classes: int) -> Tensor:
    """(N, C) bool targets ``y_ij`` from labels (N,) in ``[0, C]`` (C =
    background: no positive) or from targets (N, C), boolean or 0/1.
    Labels are not range-checked here (``EFL`` checks its inputs)."""
    if target.dim() == 2:
        return target if target.dtype == torch.bool else target > 0.5
    classes = torch.arange(num_classes, device=target.device)
    return target.unsqueeze(1) == classes


def efl_terms(pred: Tensor,
              target: Tensor,
              gamma: Tensor,
              weighting: Tensor,
              alpha: float,
              weight: Optional[Tensor] = None) -> Tensor:
    """(N, C) terms ``w_ij alpha_t weighting_j (1 - p_t) ** gamma_j
    (-log p_t)`` of logits ``pred`` (N, C) in their dtype."""
    y = efl_targets(target, pred.size(1)).to(pred.dtype)
    alpha_t = alpha * y + (1 - alpha) * (1 - y)
    # -log p_t, from the logits: exact where p_t itself underflows
    nll = F.binary_cross_entropy_with_logits(pred, y, reduction='none')
    # (1 - p_t) ** gamma_j as exp(gamma_j * log(1 - p_t)), log(1 - p_t) from
    # the logits: where 1 - p_t rounds to 0, a power gamma_j < 1 would have
    # an infinite derivative (NaN gradients), this form a finite one
    modulating = torch.exp(gamma * F.logsigmoid(pred * (1 - 2 * y)))
    loss = alpha_t * weighting * modulating * nll
    if weight is not None:
        loss = loss * weight.reshape(pred.size(0), -1).to(pred)
    return loss


def efl_sum(pred: Tensor,
            target: Tensor,
            gamma: Tensor,
            weighting: Tensor,
            alpha: float,
            weight: Optional[Tensor] = None) -> Tensor:
    """Sum of :func:`efl_terms`: compiled whole, the (N, C) terms are never
    stored."""
    return efl_terms(pred, target, gamma, weighting, alpha, weight).sum()


def efl_gradient_magnitudes(grad: Tensor, labels: Tensor) -> Tensor:
    """(2, C) per-class sums of ``|dL/dx_ij|``: over the positive targets
    (row 0, ``G+_j``: the anchors labelled j) and over the negative ones
    (row 1, ``G-_j``: every other anchor).

    Each anchor has at most one positive target, its own class: ``G+`` adds
    those N gradients into their classes, and ``G-`` sums the columns of
    ``|grad|`` with them set to zero. One (N, C) temporary instead of (N, C)
    masks and products (what a dense head at LVIS scale pays for); both are
    direct sums, exact where EFL's negatives are many orders of magnitude
    smaller than the positives.
    """
    num_classes = grad.size(1)
    labels = labels.long()
    foreground = labels < num_classes
    # each anchor's own class; background rows (label C) point at column 0
    # and keep its value
    own = torch.where(foreground, labels, 0).unsqueeze(1)
    magnitude = grad.abs()
    own_magnitude = magnitude.gather(1, own).squeeze(1)
    positive = grad.new_zeros(num_classes).index_add_(
        0, own.squeeze(1), torch.where(foreground, own_magnitude, 0))
    negative = magnitude.scatter_(
        1, own, torch.where(foreground, 0, own_magnitude).unsqueeze(1)).sum(0)
    return torch.stack([positive, negative])


def equalized_focal_loss(pred: Tensor,
                         target: Tensor,
                         gamma: Tensor,
                         weighting: Tensor,
                         alpha: float = 0.25,
                         weight: Optional[Tensor] = None,
                         reduction: str = 'mean',
                         avg_factor: Optional[Union[int, float]] = None,
                         loss_weight: float = 1.0,
                         fused: bool = False) -> Tensor:
    """Equalized focal loss of logits ``pred`` (N, C).

    ``sum_ij w_ij alpha_t weighting_j (1 - p_t) ** gamma_j (-log p_t)``,
    reduced like mmdet's losses (``weight_reduce_loss``).

    Args:
        pred (Tensor): logits (N, C); float16 / bfloat16 logits are computed
            in float32, float64 in float64.
        target (Tensor): labels (N,) in ``[0, C]`` (``C`` = background,
            mmdet's convention) or targets (N, C), boolean or 0/1.
        gamma (Tensor): focusing factor per class (C,).
        weighting (Tensor): weighting factor per class (C,).
        alpha (float): weight of the positive targets. Defaults to 0.25.
        weight (Tensor, optional): per anchor (N,) or per element (N, C)
            weight. Defaults to None.
        reduction (str): 'none', 'mean' or 'sum'. Defaults to 'mean'.
        avg_factor (float, optional): divisor of the summed loss (with
            'mean'; mmdet adds float32's eps to it). Defaults to None (mean
            over the elements).
        loss_weight (float): multiplier of the result. Defaults to 1.0.
        fused (bool): sum the terms with the compiled :func:`efl_sum`
            (``torch.compile``) instead of eagerly; 'mean' and 'sum' only.
            Defaults to False.

    Returns:
        Tensor: the reduced loss ((N, C) with ``reduction='none'``).
    """
    check_reduction(reduction, 'EFL')
    pred = upcast_half(pred)
    gamma, weighting = gamma.to(pred), weighting.to(pred)
    if reduction == 'none':
        return loss_weight * efl_terms(pred, target, gamma, weighting, alpha,
                                       weight)
    total = (compiled(efl_sum) if fused else efl_sum)(
        pred, target, gamma, weighting, alpha, weight)
    if reduction == 'sum':
        return loss_weight * total
    if avg_factor is None:
        return loss_weight * total / max(pred.numel(), 1)
    # mmdet's weight_reduce_loss divides by avg_factor + eps
    eps = torch.finfo(torch.float32).eps
    return loss_weight * total / (avg_factor + eps)


@MODELS.register_module()
class EFL(GradientStatistics, nn.Module):
    """Equalized Focal Loss (Li et al., CVPR 2022,
    https://arxiv.org/abs/2201.02593) for sigmoid one-stage heads.

    Called like mmdet's ``FocalLoss``: ``loss(cls_score (N, C), labels (N,)
    in [0, C] with C = background, label_weights (N,) or (N, C),
    avg_factor, reduction_override)``; anchors with label weight 0 are
    ignored (no loss, no statistics). The dense heads read ``use_sigmoid``
    from the config dict to give the classifier C outputs and to score with
    a sigmoid at test time, so configs keep ``use_sigmoid=True``.

    Buffers (saved in checkpoints, restored by ``--resume``): ``pos_grad``
    and ``neg_grad`` (C,), the accumulated positive / negative gradient
    magnitudes, and ``pos_neg`` (C,), their clamped ratio ``g`` (init 1),
    kept by :class:`~mmdet_longtail.models.losses.utils.GradientStatistics`.

    Args:
        num_classes (int): C, number of foreground classes.
        gamma_b (float): base focusing factor. Defaults to 2.0.
        scale_factor (float): s, how much a rare class's focusing factor
            grows, ``gamma_j = gamma_b + s (1 - g_j)``. Defaults to 8.0.
        alpha (float): weight of positive targets. Defaults to 0.25.
        loss_weight (float): multiplier of the loss. Defaults to 1.0.
        use_sigmoid (bool): must be True (read by mmdet's dense heads).
            Defaults to True.
        reduction (str): default reduction, 'none', 'mean' or 'sum'.
            Defaults to 'mean'.
        fuse_on_cuda (bool): on CUDA logits, sum the loss with the compiled
            :func:`efl_sum` (``torch.compile``: fused kernels, no (N, C)
            temporaries; configs/efl/README.md has the measurement).
            Defaults to True.
    """

    def __init__(self,
                 num_classes: int,
                 gamma_b: float = 2.0,
                 scale_factor: float = 8.0,
                 alpha: float = 0.25,
                 loss_weight: float = 1.0,
                 use_sigmoid: bool = True,
                 reduction: str = 'mean',
                 fuse_on_cuda: bool = True) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(
                num_classes, int) or num_classes < 1:
            raise ValueError(f'EFL: num_classes must be a positive int, got '
                             f'{num_classes!r}')
        if not gamma_b > 0:
            raise ValueError(f'EFL: gamma_b must be > 0 (the weighting '
                             f'factor is gamma_j / gamma_b), got {gamma_b}')
        if not scale_factor >= 0:
            raise ValueError(f'EFL: scale_factor must be >= 0, got '
                             f'{scale_factor}')
        if not 0 <= alpha <= 1:
            raise ValueError(f'EFL: alpha must lie in [0, 1], got {alpha}')
        if use_sigmoid is not True:
            raise ValueError('EFL is a sigmoid loss over C classes: set '
                             'use_sigmoid=True in its config (mmdet dense '
                             'heads read it to size the classifier)')
        check_reduction(reduction, 'EFL')
        self.num_classes = num_classes
        self.gamma_b = float(gamma_b)
        self.scale_factor = float(scale_factor)
        self.alpha = float(alpha)
        self.loss_weight = float(loss_weight)
        self.use_sigmoid = True
        self.reduction = reduction
        self.fuse_on_cuda = bool(fuse_on_cuda)
        # g starts at 1 (a plain focal loss) and stays in [0, 1]
        self.register_gradient_statistics(
            num_classes, initial_ratio=1.0, max_ratio=1.0)
        self.inputs = ClassifierInputs(
            'EFL', num_classes, num_classes,
            f'C={num_classes} classes, no background logit',
            hint='a sigmoid head has C outputs: keep use_sigmoid=True in '
            'the loss_cls config',
            weights_per_logit=True)
        # gradient sums of the running backward pass, applied at its end
        self._pending: Optional[Tensor] = None
        self._update_queued = False

    # ------------------------------------------------------- activation
    def get_activation(self, cls_score: Tensor) -> Tensor:
        """Scores (N, C + 1): sigmoid of each logit, background last.

        A sigmoid head has no background logit; the background column is
        the probability that no class is present, ``prod_j (1 - p_j)``.
        mmdet's dense heads score with ``sigmoid`` (``use_sigmoid=True``),
        which is ``get_activation(x)[:, :C]``. EFL deliberately leaves
        ``custom_cls_channels`` unset: with it, mmdet 3.3's dense heads would
        call ``get_activation`` and expect C columns (the V3Det convention).
        """
        self.inputs.check_logits(cls_score)
        background = F.logsigmoid(-cls_score).sum(1, keepdim=True).exp()
        return torch.cat([cls_score.sigmoid(), background], dim=1)

    # -------------------------------------------------------- statistics
    def focusing_factors(self,
                         dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
        """Current (gamma, weighting), (C,) each, computed in ``dtype``."""
        return efl_focusing_factors(self.pos_neg.to(dtype), self.gamma_b,
                                    self.scale_factor)

    def _collect(self, labels: Tensor, grad: Tensor) -> None:
        """Hook on the logits of one call: add its per-class gradient
        magnitudes over the positive and the negative targets to the step's
        sums and schedule the update for the end of the backward pass.
        Ignored anchors (label weight 0) have a zero gradient."""
        increment = efl_gradient_magnitudes(grad, labels)
        self._pending = increment if self._pending is None \
            else self._pending + increment
        if not self._update_queued:
            self._update_queued = True
            Variable._execution_engine.queue_callback(self._apply_pending)

    @torch.no_grad()
    def _apply_pending(self) -> None:
        """End of the backward pass: add the step's increments, summed over
        the ranks (every rank issues this one all-reduce, after the last
        gradient of the step)."""
        increment, self._pending = self._pending, None
        self._update_queued = False
        if increment is not None:
            self.accumulate_gradient_statistics(increment)

    # ----------------------------------------------------------- forward
    def forward(self,
                cls_score: Tensor,
                labels: Tensor,
                label_weights: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None) -> Tensor:
        """Loss of one call (e.g. one FPN level).

        Args:
            cls_score (Tensor): logits (N, C).
            labels (Tensor): (N,) in ``[0, C]``, ``C`` = background.
            label_weights (Tensor, optional): (N,) or (N, C) weights; 0
                ignores the anchor. Defaults to None.
            avg_factor (float, optional): normaliser of the summed loss
                (number of positive anchors in mmdet's heads).
            reduction_override (str, optional): 'none', 'mean' or 'sum'.

        Returns:
            Tensor: the loss (scaled by ``loss_weight``).
        """
        reduction = self.inputs.check(cls_score, labels, label_weights,
                                      reduction_override or self.reduction)
        if self._update_queued:
            # a backward pass of an earlier step was interrupted
            self._pending, self._update_queued = None, False
        logits = upcast_half(cls_score)
        if self.training and torch.is_grad_enabled() and \
                logits.requires_grad:
            # a node of this call alone: the gradient that reaches it is
            # d(loss)/d(logits) of this call times the upstream gradient
            logits = logits.view_as(logits)
            logits.register_hook(
                functools.partial(self._collect, labels.detach()))
        gamma, weighting = self.focusing_factors(logits.dtype)
        return equalized_focal_loss(
            logits,
            labels,
            gamma,
            weighting,
            alpha=self.alpha,
            weight=label_weights,
            reduction=reduction,
            avg_factor=avg_factor,
            loss_weight=self.loss_weight,
            fused=self.fuse_on_cuda and logits.is_cuda)

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, gamma_b={self.gamma_b}, '
                f'scale_factor={self.scale_factor}, alpha={self.alpha}, '
                f'loss_weight={self.loss_weight}')
