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

Speed: the dense pass over every anchor x class is one fused kernel
(``torch.compile``, see ``fused_elementwise``); positives are patched in
afterwards. ``benchmarks/bench_cls_losses.py`` times it against softmax
cross-entropy.
"""
from typing import Callable, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from torch import Tensor
from torch.autograd import Variable
from torch.autograd.function import once_differentiable

from mmdet.registry import MODELS
from .eql_loss import check_reduction
from .fused_elementwise import FusedElementwise

# guards 0 / 0 for classes that have had no negative gradient yet
RATIO_EPS = 1e-10


def efl_focusing_factors(pos_neg: Tensor, gamma_b: float,
                         scale_factor: float) -> Tuple[Tensor, Tensor]:
    """Per-class focusing ``gamma_j = gamma_b + s (1 - g_j)`` and weighting
    ``gamma_j / gamma_b`` factors from the gradient ratio ``g`` (C,)."""
    gamma = gamma_b + scale_factor * (1 - pos_neg)
    return gamma, gamma / gamma_b


def efl_terms(z: Tensor, gamma: Tensor, coef: Tensor,
              weight: Tensor) -> Tuple[Tensor, Tensor]:
    """Element-wise EFL of signed logits and its derivative.

    ``z = x`` for a negative target and ``-x`` for a positive one, so that
    ``1 - p_t = q = sigmoid(z)`` and ``-log p_t = softplus(z)``::

        l     = c q ** gamma softplus(z)
        dl/dz = c q ** gamma (gamma (1 - q) softplus(z) + q)

    with ``c = coef * weight`` (``alpha_t``, the weighting factor, the
    normaliser and the label weight). Both from one ``exp(-|z|)``, one
    ``log1p`` and one ``exp``, stable for any finite ``z``.
    """
    e = torch.exp(-z.abs())
    nll = z.clamp(min=0) + torch.log1p(e)  # softplus(z)
    modulated = (coef * weight) * torch.exp(gamma * (z - nll))
    sigmoid_abs = 1 / (1 + e)
    q = torch.where(z >= 0, sigmoid_abs, e * sigmoid_abs)
    return modulated * nll, modulated * (gamma * (1 - q) * nll + q)


def efl_dense_sums(x: Tensor, gamma: Tensor, coef: Tensor,
                   weight: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """``efl_terms`` of every logit as a negative target, reduced as the
    summed loss needs: per-anchor loss (N,), ``dl/dx`` (N, C), its
    per-class sum (C,), and the per-anchor sum of the logits (N,), which is
    finite exactly when every logit is (checked for free in the same
    pass)."""
    loss, derivative = efl_terms(x, gamma, coef, weight)
    return loss.sum(1), derivative, derivative.sum(0), x.sum(1)


# the passes over every anchor x class, each one fused kernel when large
fused_dense_terms = FusedElementwise(efl_terms)
fused_dense_sums = FusedElementwise(efl_dense_sums)


def check_finite_logits(logits: Tensor, total: Tensor) -> None:
    """Raise if ``total``, a sum of every logit, is not finite: any NaN or
    inf logit makes it so (float32 accumulation: fp16 cannot overflow)."""
    if not torch.isfinite(total):
        bad = int((~torch.isfinite(logits)).sum())
        raise ValueError(f'EFL: {bad} of {logits.numel()} classification '
                         f'logits are not finite (NaN or inf): the training '
                         f'has diverged upstream')


class EqualizedFocalLossFunction(torch.autograd.Function):
    """EFL of logits (N, C) with its analytic derivative.

    Every logit is first evaluated as a negative target in one dense, fused
    pass; the positive targets (at most one per anchor) are then recomputed
    and patched in. The derivative is kept from the forward pass, so
    backward is a product at most. Backward hands ``on_gradient`` this
    call's per-class gradient magnitudes ``(G+, G-)``: for a summed loss
    they come from the per-class derivative sums of the forward pass (the
    negative targets' derivatives are >= 0, the positive ones' <= 0), so
    no extra pass over the gradient. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, pred: Tensor, pos_rows: Tensor, pos_cols: Tensor,
                gamma: Tensor, weighting: Tensor, alpha: float,
                weight: Optional[Tensor], scale: float, reduce: bool,
                on_gradient: Optional[Callable]) -> Tensor:
        if weight is None:
            weight = pred.new_ones(1, 1)
        dense_args = (pred, gamma.view(1, -1),
                      (1 - alpha) * scale * weighting.view(1, -1), weight)
        if reduce:
            loss, derivative, class_sums, logit_sums = fused_dense_sums(
                *dense_args)
            check_finite_logits(pred, logit_sums.sum())
        else:
            check_finite_logits(pred, pred.sum(dtype=torch.float32))
            loss, derivative = fused_dense_terms(*dense_args)
            class_sums = None
        # the positive targets: their terms, and, for the summed loss, the
        # negative-target terms the dense pass put there
        x_pos = pred[pos_rows, pos_cols]
        num_pos = x_pos.numel()
        weighting_pos = scale * weighting[pos_cols]
        weight_pos = weight.expand_as(pred)[pos_rows, pos_cols]
        if reduce:
            # one call for both: these are small, per-op overhead dominates
            loss_terms, derivative_terms = efl_terms(
                torch.cat([-x_pos, x_pos]), gamma[pos_cols].repeat(2),
                torch.cat([alpha * weighting_pos,
                           (1 - alpha) * weighting_pos]),
                weight_pos.repeat(2))
            loss_pos, magnitude_pos = (loss_terms[:num_pos],
                                       derivative_terms[:num_pos])
            loss.index_add_(0, pos_rows, loss_pos - loss_terms[num_pos:])
            class_sums.index_add_(
                0, pos_cols, -magnitude_pos - derivative[pos_rows, pos_cols])
        else:
            loss_pos, magnitude_pos = efl_terms(-x_pos, gamma[pos_cols],
                                                alpha * weighting_pos,
                                                weight_pos)
            loss[pos_rows, pos_cols] = loss_pos
        derivative[pos_rows, pos_cols] = -magnitude_pos
        ctx.save_for_backward(derivative, pos_rows, pos_cols, magnitude_pos)
        ctx.class_sums, ctx.on_gradient = class_sums, on_gradient
        return loss.sum() if reduce else loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: Tensor) -> tuple:
        derivative, pos_rows, pos_cols, magnitude_pos = ctx.saved_tensors
        reduce = ctx.class_sums is not None
        if reduce and grad_loss.device.type == 'cpu' and \
                float(grad_loss) == 1.0:
            grad = derivative  # the usual case: a summed, unscaled loss
        else:
            grad = grad_loss * derivative
        if ctx.on_gradient is not None:
            if reduce:
                # G- - G+ per class, from the forward pass
                positive = positive_sums(magnitude_pos, pos_cols,
                                         derivative.size(1))
                scale = grad_loss.abs()
                ctx.on_gradient(positive * scale,
                                (ctx.class_sums + positive) * scale)
            else:
                ctx.on_gradient(
                    *gradient_statistics(grad, pos_rows, pos_cols))
        return grad, None, None, None, None, None, None, None, None, None


def equalized_focal_loss_at(pred: Tensor,
                            pos_rows: Tensor,
                            pos_cols: Tensor,
                            gamma: Tensor,
                            weighting: Tensor,
                            alpha: float = 0.25,
                            weight: Optional[Tensor] = None,
                            reduction: str = 'mean',
                            avg_factor: Optional[float] = None,
                            loss_weight: float = 1.0,
                            on_gradient: Optional[Callable] = None) -> Tensor:
    """``equalized_focal_loss`` with the positive targets given as index
    pairs ``(pos_rows[k], pos_cols[k])``; every other logit is negative.
    ``loss_weight`` multiplies the result, ``on_gradient(positive,
    negative)`` receives the per-class gradient magnitudes at backward."""
    check_reduction(reduction, 'EFL')
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
    return EqualizedFocalLossFunction.apply(pred, pos_rows, pos_cols,
                                            gamma.to(pred),
                                            weighting.to(pred), alpha,
                                            weight, scale, summed,
                                            on_gradient)


def equalized_focal_loss(pred: Tensor,
                         target: Tensor,
                         gamma: Tensor,
                         weighting: Tensor,
                         alpha: float = 0.25,
                         weight: Optional[Tensor] = None,
                         reduction: str = 'mean',
                         avg_factor: Optional[float] = None) -> Tensor:
    """Equalized focal loss of logits ``pred`` (N, C).

    ``sum_ij w_ij alpha_t weighting_j (1 - p_t) ** gamma_j (-log p_t)``,
    reduced like mmdet's losses (``weight_reduce_loss``).

    Args:
        pred (Tensor): logits (N, C).
        target (Tensor): targets (N, C), boolean or 0/1.
        gamma (Tensor): focusing factor per class (C,).
        weighting (Tensor): weighting factor per class (C,).
        alpha (float): weight of the positive targets. Defaults to 0.25.
        weight (Tensor, optional): per anchor (N,) or per element (N, C)
            weight. Defaults to None.
        reduction (str): 'none', 'mean' or 'sum'. Defaults to 'mean'.
        avg_factor (float, optional): divisor of the summed loss (with
            'mean'). Defaults to None (mean over the elements).

    Returns:
        Tensor: the reduced loss ((N, C) with ``reduction='none'``).
    """
    if target.dtype != torch.bool:
        target = target > 0.5
    pos_rows, pos_cols = target.nonzero(as_tuple=True)
    return equalized_focal_loss_at(pred, pos_rows, pos_cols, gamma,
                                   weighting, alpha, weight, reduction,
                                   avg_factor)


def positive_indices(labels: Tensor,
                     num_classes: int) -> Tuple[Tensor, Tensor]:
    """(rows, classes) of the foreground anchors of labels in ``[0, C]``,
    ``C`` = background."""
    rows = (labels < num_classes).nonzero(as_tuple=True)[0]
    return rows, labels[rows]


def positive_sums(magnitude: Tensor, pos_cols: Tensor,
                  num_classes: int) -> Tensor:
    """Per-class sums of the positive targets' gradient magnitudes."""
    return magnitude.new_zeros(num_classes).index_add_(0, pos_cols, magnitude)


def gradient_statistics(grad: Tensor, pos_rows: Tensor,
                        pos_cols: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-class sums of the gradient magnitude over the positive and the
    negative targets, ``(sum_i y_ij |g_ij|, sum_i (1 - y_ij) |g_ij|)``.

    Args:
        grad (Tensor): gradient of the loss w.r.t. the logits (N, C).
            Anchors with label weight 0 have a zero gradient, so they add
            nothing.
        pos_rows, pos_cols (Tensor): index pairs of the positive targets.
    """
    magnitude = grad.abs()
    positive = positive_sums(magnitude[pos_rows, pos_cols], pos_cols,
                             grad.size(1))
    return positive, magnitude.sum(0) - positive


def positive_negative_ratio(pos_grad: Tensor, neg_grad: Tensor) -> Tensor:
    """``g_j = clamp(G+_j / G-_j, 0, 1)``."""
    return (pos_grad / (neg_grad + RATIO_EPS)).clamp(0, 1)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


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
        check_finite_logits(cls_score, cls_score.sum(dtype=torch.float32))
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
        if num and (labels.min() < 0 or labels.max() > self.num_classes):
            raise ValueError(
                f'EFL: labels must lie in [0, {self.num_classes}] (0..'
                f'{self.num_classes - 1} foreground, {self.num_classes} '
                f'background), got values in [{int(labels.min())}, '
                f'{int(labels.max())}]')
        if label_weights is not None and label_weights.numel() not in (
                num, cls_score.numel()):
            raise ValueError(f'EFL: label_weights must hold one weight per '
                             f'anchor ({num}) or per logit '
                             f'({cls_score.numel()}), got '
                             f'{tuple(label_weights.shape)}')
        if label_weights is not None and label_weights.numel() and \
                label_weights.min() < 0:
            raise ValueError(f'EFL: label_weights must be >= 0, got a '
                             f'minimum of {float(label_weights.min())}')

    # -------------------------------------------------------- statistics
    def _collect(self, positive: Tensor, negative: Tensor) -> None:
        """Backward of one call: add its per-class gradient magnitudes to
        the step's sums and schedule the update for the end of backward."""
        increment = torch.cat([positive, negative]).float()
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
        if not torch.isfinite(increment).all():
            # e.g. an AMP overflow step, which the optimizer skips too
            print_log('EFL: non-finite gradients, statistics not updated',
                      logger='current')
            return
        increment = increment.to(self.pos_grad)
        self.pos_grad += increment[:self.num_classes]
        self.neg_grad += increment[self.num_classes:]
        self.pos_neg.copy_(
            positive_negative_ratio(self.pos_grad, self.neg_grad))

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
        pos_rows, pos_cols = positive_indices(labels.detach(),
                                              self.num_classes)
        collect = self.training and logits.requires_grad
        return equalized_focal_loss_at(
            logits,
            pos_rows,
            pos_cols,
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
