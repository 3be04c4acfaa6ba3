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
gradients are the true ones, read in the loss's backward pass from the
gradient it returns for the logits (the upstream gradient times the
analytic derivative), so the focal, normalisation and loss-scale factors
are included; a dense head
that calls the loss once per FPN level contributes every level. The update
runs once the backward pass of the step has finished (the losses of step t
use the statistics of steps ``< t``), and the increments are summed across
ranks, so every rank keeps the same statistics. ``g`` starts at 1, so
training starts as a plain focal loss (``gamma_j = gamma_b``).

Mixed precision (``--amp``): the gradients carry the loss scale, so
``pos_grad`` / ``neg_grad`` are scaled too. A step's ratio is unchanged, but
the sums weight the steps by the scale in use, which changes rarely (it
doubles after 2000 finite steps and halves on an overflow; overflow steps
add nothing). The authors train in fp32.

Speed: the loss, its derivative and the per-class sums the statistics need
come from one pass over every anchor x class. When the input is large, the
pass is a C++ kernel on a CPU (``mmdet_longtail/ops/csrc/efl_cpu.cpp``,
for labels as targets and a summed loss) and otherwise one kernel fused by
``torch.compile`` (``fused_elementwise``), with the positive targets
selected inside it (``sigmoid_terms.positive_mask``).
``benchmarks/bench_cls_losses.py`` times it against softmax cross-entropy.
"""
import math
from typing import Callable, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dist import is_distributed
from mmengine.logging import print_log
from torch import Tensor
from torch.autograd import Variable
from torch.autograd.function import once_differentiable

from mmdet.registry import MODELS
from mmdet_longtail.ops import cpu_kernels_for
from .eql_loss import check_finite_logits, check_reduction
from .fused_elementwise import FusedElementwise
from .sigmoid_terms import (column_sums_at_labels, positive_mask,
                            softplus_and_sigmoid)

# guards 0 / 0 for classes that have had no negative gradient yet
RATIO_EPS = 1e-10


def efl_focusing_factors(pos_neg: Tensor, gamma_b: float,
                         scale_factor: float) -> Tuple[Tensor, Tensor]:
    """Per-class focusing ``gamma_j = gamma_b + s (1 - g_j)`` and weighting
    ``gamma_j / gamma_b`` factors from the gradient ratio ``g`` (C,)."""
    gamma = pos_neg.mul(-scale_factor).add_(gamma_b + scale_factor)
    return gamma, gamma / gamma_b


def efl_terms(z: Tensor, gamma: Tensor, coef: Tensor,
              weight: Tensor) -> Tuple[Tensor, Tensor]:
    """Element-wise EFL of signed logits and its derivative.

    ``z = x`` for a negative target and ``-x`` for a positive one, so that
    ``1 - p_t = q = sigmoid(z)`` and ``-log p_t = softplus(z)``::

        l     = c q ** gamma softplus(z)
        dl/dz = c q ** gamma (gamma (1 - q) softplus(z) + q)

    with ``c = coef * weight`` (``alpha_t``, the weighting factor, the
    normaliser and the label weight) and ``q ** gamma =
    exp(gamma (z - softplus(z)))``: one ``exp(-|z|)`` with a cheap
    ``log1p`` (``sigmoid_terms``) and one more ``exp``, stable for any
    finite ``z``.
    """
    nll, q = softplus_and_sigmoid(z)
    modulated = (coef * weight) * torch.exp(gamma * (z - nll))
    return modulated * nll, modulated * (gamma * (1 - q) * nll + q)


def efl_dense(x: Tensor, positive: Tensor, gamma: Tensor, coef: Tensor,
              alpha: float, weight: Tensor,
              reduce: bool) -> Tuple[Tensor, ...]:
    """``efl_terms`` of every logit, positive targets given by
    ``positive`` (labels (N,) or a mask (N, C), see ``positive_mask``),
    with the coefficients ``alpha_t * coef``.

    Returns:
        tuple: the loss, per anchor (N,) with ``reduce`` or per logit
        (N, C) without; ``dl/dx`` (N, C), >= 0 at the negative targets and
        <= 0 at the positive ones; the per-anchor sums of the logits (N,),
        finite exactly when every logit is (the finiteness check, free in
        the same pass); with ``reduce``, the per-class sums of ``dl/dx``
        (C,), from which the statistics follow.
    """
    is_pos = positive_mask(positive, x.size(1))
    alpha_t = torch.where(is_pos, alpha, 1 - alpha)
    loss, derivative = efl_terms(
        torch.where(is_pos, -x, x), gamma, alpha_t * coef, weight)
    derivative = torch.where(is_pos, -derivative, derivative)
    if not reduce:
        return loss, derivative, x.sum(1)
    return loss.sum(1), derivative, x.sum(1), derivative.sum(0)


# the pass over every anchor x class, one fused kernel when large
fused_efl_dense = FusedElementwise(efl_dense)


def efl_pass(pred: Tensor, positive: Tensor, gamma: Tensor,
             weighting: Tensor, alpha: float, weight: Optional[Tensor],
             scale: float, reduce: bool,
             with_statistics: bool) -> Tuple[Tensor, ...]:
    """:func:`efl_dense` with the coefficients ``weighting * scale``, on
    the fastest path for the input: the C++ CPU kernel, the compiled pass
    or eager.

    Returns:
        tuple: the loss (per anchor (N,) with ``reduce``, else (N, C)),
        ``dl/dx`` (N, C), the per-anchor logit sums (N,), and with
        ``with_statistics`` (which needs ``reduce``) the per-class gradient
        magnitudes over the positive and the negative targets, stacked
        (2, C) (else None).
    """
    # the C++ kernel: labels as targets, no or per-anchor weights, summed
    per_anchor = weight is None or weight.size(1) == 1
    kernel = cpu_kernels_for(pred, fused_efl_dense.min_numel) \
        if reduce and positive.dim() == 1 and per_anchor else None
    if kernel is not None:
        loss, derivative, statistics, logit_sums = kernel.efl_forward_labels(
            pred, positive.long().contiguous(),
            pred.new_empty(0) if weight is None else
            weight.reshape(-1).contiguous(), gamma, weighting, alpha, scale)
        return (loss, derivative, logit_sums,
                statistics if with_statistics else None)
    loss, derivative, logit_sums, *class_sums = fused_efl_dense(
        pred, positive, gamma.view(1, -1),
        torch.mul(weighting, scale).view(1, -1), alpha,
        pred.new_ones(1, 1) if weight is None else weight, reduce)
    if not with_statistics:
        return loss, derivative, logit_sums, None
    # G- = the class sums of the derivative, which count G+ negatively, + G+
    pos_sums = positive_magnitudes(derivative, positive)
    return (loss, derivative, logit_sums,
            torch.stack([pos_sums, class_sums[0].add_(pos_sums)]))


def positive_magnitudes(derivative: Tensor, positive: Tensor) -> Tensor:
    """Per-class ``sum |dl/dx|`` over the positive targets: for labels,
    from the N elements at the labels (background anchors, label C, add
    nothing); for a mask, from every element (the positive ones are the
    non-positive derivatives)."""
    if positive.dim() == 2:
        return derivative.clamp(max=0).sum(0).neg_()
    return column_sums_at_labels(derivative, positive).neg_()


def gradient_statistics(grad: Tensor, positive: Tensor) -> Tensor:
    """Per-class sums of the gradient magnitude over the positive and the
    negative targets, ``sum_i y_ij |g_ij|`` and ``sum_i (1 - y_ij) |g_ij|``,
    stacked (2, C).

    Args:
        grad (Tensor): gradient of the loss w.r.t. the logits (N, C).
            Anchors with label weight 0 have a zero gradient, so they add
            nothing.
        positive (Tensor): labels (N,) or a mask (N, C) of the positive
            targets.
    """
    magnitude = grad.abs()
    is_pos = positive_mask(positive, grad.size(1))
    positive_sum = (magnitude * is_pos).sum(0)
    return torch.stack([positive_sum, magnitude.sum(0) - positive_sum])


class EqualizedFocalLossFunction(torch.autograd.Function):
    """EFL of logits (N, C) with its analytic derivative.

    One dense, fused pass evaluates every logit, with its target, and keeps
    the derivative, so backward is a product at most. Backward hands
    ``on_gradient`` this call's per-class gradient magnitudes ``(G+, G-)``:
    for a summed loss they come from the forward pass (the per-class sums
    of the derivative, >= 0 at the negative targets and <= 0 at the
    positive ones, and the derivatives at the positive targets), so there
    is no extra pass over the gradient. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, pred: Tensor, positive: Tensor, gamma: Tensor,
                weighting: Tensor, alpha: float, weight: Optional[Tensor],
                scale: float, reduce: bool,
                on_gradient: Optional[Callable]) -> Tensor:
        loss, derivative, logit_sums, statistics = efl_pass(
            pred, positive, gamma, weighting, alpha, weight, scale, reduce,
            with_statistics=reduce and on_gradient is not None)
        check_finite_logits(pred, logit_sums, 'EFL')
        ctx.statistics = statistics
        ctx.save_for_backward(derivative, positive)
        ctx.reduce, ctx.on_gradient = reduce, on_gradient
        return loss.sum() if reduce else loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: Tensor) -> tuple:
        derivative, positive = ctx.saved_tensors
        if ctx.reduce and grad_loss.device.type == 'cpu' and \
                float(grad_loss) == 1.0:
            grad = derivative  # the usual case: a summed, unscaled loss
        else:
            grad = grad_loss * derivative
        if ctx.on_gradient is not None:
            if ctx.statistics is not None:
                statistics = ctx.statistics if grad is derivative else \
                    ctx.statistics * grad_loss.abs()
                ctx.on_gradient(statistics)
            else:
                ctx.on_gradient(gradient_statistics(grad, positive))
        return grad, None, None, None, None, None, None, None, None


def equalized_focal_loss(pred: Tensor,
                         target: Tensor,
                         gamma: Tensor,
                         weighting: Tensor,
                         alpha: float = 0.25,
                         weight: Optional[Tensor] = None,
                         reduction: str = 'mean',
                         avg_factor: Optional[float] = None,
                         loss_weight: float = 1.0,
                         on_gradient: Optional[Callable] = None) -> Tensor:
    """Equalized focal loss of logits ``pred`` (N, C).

    ``sum_ij w_ij alpha_t weighting_j (1 - p_t) ** gamma_j (-log p_t)``,
    reduced like mmdet's losses (``weight_reduce_loss``).

    Args:
        pred (Tensor): logits (N, C).
        target (Tensor): labels (N,) in ``[0, C]`` (``C`` = background,
            mmdet's convention) or targets (N, C), boolean or 0/1.
        gamma (Tensor): focusing factor per class (C,).
        weighting (Tensor): weighting factor per class (C,).
        alpha (float): weight of the positive targets. Defaults to 0.25.
        weight (Tensor, optional): per anchor (N,) or per element (N, C)
            weight. Defaults to None.
        reduction (str): 'none', 'mean' or 'sum'. Defaults to 'mean'.
        avg_factor (float, optional): divisor of the summed loss (with
            'mean'). Defaults to None (mean over the elements).
        loss_weight (float): multiplier of the result. Defaults to 1.0.
        on_gradient (Callable, optional): called at backward with the
            per-class gradient magnitudes over the positive and the negative
            targets, stacked (2, C).

    Returns:
        Tensor: the reduced loss ((N, C) with ``reduction='none'``).
    """
    check_reduction(reduction, 'EFL')
    if target.dim() == 2 and target.dtype != torch.bool:
        target = target > 0.5
    if weight is not None:
        weight = weight.reshape(pred.size(0), -1).to(pred.dtype)
    # the normaliser and loss weight go into the per-class coefficients,
    # so the summed loss needs no rescaling in either pass
    if reduction == 'none' or reduction == 'sum':
        scale = loss_weight
    elif avg_factor is None:
        scale = loss_weight / max(pred.numel(), 1)
    else:
        # mmdet's weight_reduce_loss divides by avg_factor + eps
        scale = loss_weight / (avg_factor + torch.finfo(torch.float32).eps)
    summed = reduction != 'none'
    return EqualizedFocalLossFunction.apply(pred, target, gamma.to(pred),
                                            weighting.to(pred), alpha,
                                            weight, scale, summed,
                                            on_gradient)


def positive_negative_ratio(pos_grad: Tensor,
                            neg_grad: Tensor,
                            out: Optional[Tensor] = None) -> Tensor:
    """``g_j = clamp(G+_j / G-_j, 0, 1)`` (written to ``out`` if given)."""
    return torch.div(pos_grad, neg_grad + RATIO_EPS, out=out).clamp_(0, 1)


@MODELS.register_module()
class EFL(nn.Module):
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
    magnitudes, and ``pos_neg`` (C,), their clamped ratio ``g`` (init 1).

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
    """

    def __init__(self,
                 num_classes: int,
                 gamma_b: float = 2.0,
                 scale_factor: float = 8.0,
                 alpha: float = 0.25,
                 loss_weight: float = 1.0,
                 use_sigmoid: bool = True,
                 reduction: str = 'mean') -> None:
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
        self.register_buffer('pos_grad', torch.zeros(num_classes))
        self.register_buffer('neg_grad', torch.zeros(num_classes))
        self.register_buffer('pos_neg', torch.ones(num_classes))
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
        self._check_logits(cls_score)
        check_finite_logits(cls_score, cls_score.sum(dtype=torch.float32),
                            'EFL')
        background = F.logsigmoid(-cls_score).sum(1, keepdim=True).exp()
        return torch.cat([cls_score.sigmoid(), background], dim=1)

    # ---------------------------------------------------------- checks
    def _check_logits(self, cls_score: Tensor) -> None:
        """Shape only; the loss checks finiteness in its own pass."""
        if cls_score.dim() != 2 or cls_score.size(1) != self.num_classes:
            hint = ''
            if cls_score.dim() == 2 and \
                    cls_score.size(1) == self.num_classes + 1:
                hint = (' (C + 1 logits: keep use_sigmoid=True in the '
                        'loss_cls config so the head outputs C)')
            raise ValueError(f'EFL: cls_score must be (N, {self.num_classes})'
                             f', got {tuple(cls_score.shape)}{hint}')

    def _check_targets(self, cls_score: Tensor, labels: Tensor,
                       label_weights: Optional[Tensor]) -> None:
        num = cls_score.size(0)
        if labels.dim() != 1 or labels.numel() != num:
            raise ValueError(f'EFL: labels must be ({num},) for cls_score '
                             f'{tuple(cls_score.shape)}, got '
                             f'{tuple(labels.shape)}')
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f'EFL: labels must be integers, got '
                             f'{labels.dtype}')
        if num:
            low, high = (int(v) for v in torch.aminmax(labels))
            if low < 0 or high > self.num_classes:
                raise ValueError(
                    f'EFL: labels must lie in [0, {self.num_classes}] (0..'
                    f'{self.num_classes - 1} foreground, {self.num_classes} '
                    f'background), got values in [{low}, {high}]')
        if label_weights is not None and label_weights.numel() not in (
                num, cls_score.numel()):
            raise ValueError(f'EFL: label_weights must hold one weight per '
                             f'anchor ({num}) or per logit '
                             f'({cls_score.numel()}), got '
                             f'{tuple(label_weights.shape)}')
        if label_weights is not None and label_weights.numel():
            minimum = float(label_weights.min())
            if minimum < 0:
                raise ValueError(f'EFL: label_weights must be >= 0, got a '
                                 f'minimum of {minimum}')

    # -------------------------------------------------------- statistics
    def _collect(self, increment: Tensor) -> None:
        """Backward of one call: add its per-class gradient magnitudes
        (2, C) to the step's sums and schedule the update for the end of
        backward."""
        increment = increment.float()
        self._pending = increment if self._pending is None \
            else self._pending + increment
        if not self._update_queued:
            self._update_queued = True
            Variable._execution_engine.queue_callback(self._apply_pending)

    @torch.no_grad()
    def _apply_pending(self) -> None:
        """End of the backward pass: sum the step's increments over ranks
        and update the statistics (every rank issues this one all-reduce,
        after the last gradient of the step)."""
        increment, self._pending = self._pending, None
        self._update_queued = False
        if increment is None:
            return
        if is_distributed():
            dist.all_reduce(increment)
        # one reduction and one sync: any inf or NaN reaches the sum
        if not math.isfinite(float(increment.sum())):
            # e.g. an AMP overflow step, which the optimizer skips too
            print_log('EFL: non-finite gradients, statistics not updated',
                      logger='current')
            return
        torch._foreach_add_([self.pos_grad, self.neg_grad],
                            increment.to(self.pos_grad).unbind(0))
        positive_negative_ratio(self.pos_grad, self.neg_grad,
                                out=self.pos_neg)

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
        if reduction_override not in (None, 'none', 'mean', 'sum'):
            raise ValueError(f'EFL: reduction_override must be None, '
                             f"'none', 'mean' or 'sum', got "
                             f'{reduction_override!r}')
        reduction = reduction_override or self.reduction
        if self._update_queued:
            # a backward pass of an earlier step was interrupted
            self._pending, self._update_queued = None, False
        self._check_logits(cls_score)
        self._check_targets(cls_score, labels, label_weights)

        logits = cls_score.float()
        gamma, weighting = efl_focusing_factors(self.pos_neg.detach(),
                                                self.gamma_b,
                                                self.scale_factor)
        collect = self.training and logits.requires_grad
        return equalized_focal_loss(
            logits,
            labels.detach(),
            gamma,
            weighting,
            alpha=self.alpha,
            weight=label_weights,
            reduction=reduction,
            avg_factor=avg_factor,
            loss_weight=self.loss_weight,
            on_gradient=self._collect if collect else None)

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, gamma_b={self.gamma_b}, '
                f'scale_factor={self.scale_factor}, alpha={self.alpha}, '
                f'loss_weight={self.loss_weight}')
