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
gradients are the true ones, read by a tensor hook on the logits this loss
receives, so the focal and normalisation factors are included; a dense head
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
"""
from typing import Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from torch import Tensor
from torch.autograd import Variable
from torch.autograd.function import once_differentiable

from mmdet.models.losses.utils import weight_reduce_loss
from mmdet.registry import MODELS

# guards 0 / 0 for classes that have had no negative gradient yet
RATIO_EPS = 1e-10


def efl_focusing_factors(pos_neg: Tensor, gamma_b: float,
                         scale_factor: float) -> Tuple[Tensor, Tensor]:
    """Per-class focusing ``gamma_j = gamma_b + s (1 - g_j)`` and weighting
    ``gamma_j / gamma_b`` factors from the gradient ratio ``g`` (C,)."""
    gamma = gamma_b + scale_factor * (1 - pos_neg)
    return gamma, gamma / gamma_b


def one_hot_targets(labels: Tensor, num_classes: int) -> Tensor:
    """(N, C) boolean targets of labels in ``[0, C]``, ``C`` = background."""
    classes = torch.arange(num_classes, device=labels.device)
    return labels.view(-1, 1) == classes


class EqualizedFocalLossFunction(torch.autograd.Function):
    """Element-wise EFL with its analytic derivative.

    With ``z = -x`` for a positive target and ``z = x`` for a negative one,
    ``1 - p_t = sigmoid(z)`` and ``-log p_t = softplus(z)``, so each element
    is ``l = c * q ** gamma * softplus(z)`` with ``q = sigmoid(z)`` and
    ``c = alpha_t * weighting * w``, and::

        dl/dx = dz/dx * c * q ** gamma * (gamma * (1 - q) * softplus(z) + q)

    One saved tensor and a single product in backward replace autograd's
    chain of about ten intermediates (the loss runs on every anchor x class
    of every FPN level). Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, pred: Tensor, target: Tensor, gamma: Tensor,
                weighting: Tensor, alpha: float,
                weight: Optional[Tensor]) -> Tensor:
        z = torch.where(target, -pred, pred)
        log_q = F.logsigmoid(z)
        modulator = torch.exp(gamma * log_q)  # (1 - p_t) ** gamma_j
        nll = F.softplus(z)  # -log p_t
        coef = torch.where(target, alpha, 1 - alpha) * weighting
        if weight is not None:
            coef = coef * weight
        coef_modulator = coef * modulator
        if ctx.needs_input_grad[0]:
            q = log_q.exp()
            dl_dz = coef_modulator * (gamma * (1 - q) * nll + q)
            ctx.save_for_backward(torch.where(target, -dl_dz, dl_dz))
        return coef_modulator * nll

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: Tensor) -> tuple:
        derivative, = ctx.saved_tensors
        return grad_loss * derivative, None, None, None, None, None


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
    if weight is not None:
        weight = weight.reshape(pred.size(0), -1).to(pred.dtype)
    loss = EqualizedFocalLossFunction.apply(pred, target,
                                            gamma.to(pred), weighting.to(pred),
                                            alpha, weight)
    return weight_reduce_loss(loss, None, reduction, avg_factor)


def gradient_statistics(grad: Tensor,
                        labels: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-class sums of the gradient magnitude over the positive and the
    negative targets, ``(sum_i y_ij |g_ij|, sum_i (1 - y_ij) |g_ij|)``.

    Args:
        grad (Tensor): gradient of the loss w.r.t. the logits (N, C).
            Anchors with label weight 0 have a zero gradient, so they add
            nothing.
        labels (Tensor): (N,) in ``[0, C]``, ``C`` = background.
    """
    num_classes = grad.size(1)
    magnitude = grad.abs()
    # |g| of each anchor at its own class; background anchors land in an
    # extra bin C that is dropped
    own = magnitude.gather(1, labels.clamp(max=num_classes - 1).view(-1, 1))
    positive = magnitude.new_zeros(num_classes + 1).index_add_(
        0, labels, own.view(-1))[:num_classes]
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
        if reduction not in ('none', 'mean', 'sum'):
            raise ValueError(f"EFL: reduction must be 'none', 'mean' or "
                             f"'sum', got {reduction!r}")
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
        background = F.logsigmoid(-cls_score).sum(1, keepdim=True).exp()
        return torch.cat([cls_score.sigmoid(), background], dim=1)

    # ---------------------------------------------------------- checks
    def _check_logits(self, cls_score: Tensor) -> None:
        if cls_score.dim() != 2 or cls_score.size(1) != self.num_classes:
            hint = ''
            if cls_score.dim() == 2 and \
                    cls_score.size(1) == self.num_classes + 1:
                hint = (' (C + 1 logits: keep use_sigmoid=True in the '
                        'loss_cls config so the head outputs C)')
            raise ValueError(f'EFL: cls_score must be (N, {self.num_classes})'
                             f', got {tuple(cls_score.shape)}{hint}')
        # one reduction instead of a mask: any NaN / inf makes the sum
        # non-finite (float32 accumulation, so fp16 logits cannot overflow)
        if not torch.isfinite(cls_score.sum(dtype=torch.float32)):
            bad = int((~torch.isfinite(cls_score)).sum())
            raise ValueError(f'EFL: {bad} of {cls_score.numel()} '
                             f'classification logits are not finite (NaN or '
                             f'inf): the training has diverged upstream')

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

    # -------------------------------------------------------- statistics
    def _collect(self, grad: Tensor, labels: Tensor) -> None:
        """Tensor hook on the logits: add this call's gradient magnitudes to
        the step's sums and schedule the update for the end of backward."""
        positive, negative = gradient_statistics(grad.detach(), labels)
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

        # a view of its own, so the hook sees this loss's gradient only
        logits = cls_score.float().view_as(cls_score)
        gamma, weighting = efl_focusing_factors(self.pos_neg.detach(),
                                                self.gamma_b,
                                                self.scale_factor)
        if logits.requires_grad and self.training:
            labels = labels.detach()
            logits.register_hook(lambda grad: self._collect(grad, labels))
        loss = equalized_focal_loss(
            logits,
            one_hot_targets(labels, self.num_classes),
            gamma,
            weighting,
            alpha=self.alpha,
            weight=label_weights,
            reduction=reduction,
            avg_factor=avg_factor)
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, gamma_b={self.gamma_b}, '
                f'scale_factor={self.scale_factor}, alpha={self.alpha}, '
                f'loss_weight={self.loss_weight}')
