"""Equalization Loss (EQL) for sigmoid RoI classifiers.

Tan et al., "Equalization Loss for Long-Tailed Object Recognition", CVPR 2020.
https://arxiv.org/abs/2003.05176

The classifier has one sigmoid logit per foreground class (C outputs, no
background logit). For RoI i with label ``g_i`` (``C`` = background) the
target is ``y_ij = [j == g_i]`` (background rows are all zero) and::

    L = 1/N * sum_i sum_j w_ij * BCE(z_ij, y_ij)
    w_ij = 1 - E(i) * T_lambda(f_j) * (1 - y_ij)

``E(i) = 1`` for foreground RoIs, ``T_lambda(f_j) = 1`` when the class's
training image frequency ``f_j`` (images containing j / images with an
annotation) is below ``lambda``, and N is the number of RoIs. The
foreground RoIs of other classes therefore stop suppressing the tail
classes, while background RoIs still suppress every class. At test time the
score of class j is ``sigmoid(z_j)`` and a zero background column is appended
(the authors' convention), so mmdet's heads get N x (C + 1) scores.

This module also holds :func:`one_hot_weighted_bce`, the weighted sigmoid
cross-entropy with one-hot targets that EQL and EQLv2 share. It never stores
the dense target or weight matrices: one pass over the logits computes
each element's loss and gradient from one ``exp`` and a cheap ``log1p``
(``sigmoid_terms``), the per-row losses, the per-column gradient sums the
statistics of EQLv2 need, and the finiteness check of the logits. When the
input is large, the pass is a C++ kernel on a CPU
(``mmdet_longtail/ops/csrc/one_hot_bce_cpu.cpp``) and otherwise one kernel
fused by ``torch.compile`` (``fused_elementwise``). Backward is one
broadcast product at most. ``benchmarks/bench_cls_losses.py`` times
it against softmax cross-entropy.
"""
import math
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor
from torch.autograd.function import once_differentiable

from mmdet.models.losses import accuracy
from mmdet.registry import MODELS
from mmdet_longtail.datasets.class_stats import resolve_class_statistics
from mmdet_longtail.ops import cpu_kernels_for
from .fused_elementwise import FusedElementwise
from .sigmoid_terms import (column_sums_at_labels, positive_mask,
                            softplus_and_sigmoid)

REDUCTIONS = ('none', 'mean', 'sum')


# --------------------------------------------------------------- checks
def check_cls_inputs(cls_score: Tensor, labels: Tensor, num_columns: int,
                     num_classes: int, owner: str) -> None:
    """Clear errors for logits / labels a sigmoid RoI loss cannot use.
    Non-finite logits are caught by the loss's own pass
    (:func:`check_finite_logits`), not by a separate one here.

    Args:
        cls_score (Tensor): logits, must be (N, ``num_columns``).
        labels (Tensor): (N,) integers in ``[0, num_classes]`` (``C`` is the
            background, mmdet's convention).
        num_columns (int): expected number of logit columns.
        num_classes (int): C, number of foreground classes.
        owner (str): loss name used in the messages.
    """
    if cls_score.dim() != 2 or cls_score.size(1) != num_columns:
        raise ValueError(
            f'{owner}: cls_score must be (N, {num_columns}) for '
            f'num_classes={num_classes}, got {tuple(cls_score.shape)}; '
            f'build the classifier through the loss (BBoxHead uses '
            f'loss_cls.get_cls_channels)')
    if labels.dim() != 1 or labels.numel() != cls_score.size(0):
        raise ValueError(f'{owner}: labels must be ({cls_score.size(0)},), '
                         f'got {tuple(labels.shape)}')
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f'{owner}: labels must be integers, got '
                         f'{labels.dtype}')
    if not labels.numel():
        return
    low, high = torch.aminmax(labels)
    if int(low) < 0 or int(high) > num_classes:
        bad = labels[(labels < 0) | (labels > num_classes)][0].item()
        raise ValueError(f'{owner}: labels must lie in [0, {num_classes}] '
                         f'({num_classes} = background), found {bad}')


def check_reduction(reduction: str, owner: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f'{owner}: reduction must be one of {REDUCTIONS}, '
                         f'got {reduction!r}')
    return reduction


# ------------------------------------------- shared weighted sigmoid BCE
def one_hot_bce_sums(logits: Tensor, target_col: Tensor, pos_weight: Tensor,
                     neg_weight: Tensor, row_kind: Optional[Tensor],
                     scale: float,
                     with_column_sums: bool) -> Tuple[Tensor, ...]:
    """Every element of the weighted BCE in one pass, and its reductions.

    ``BCE(x, y) = softplus(x) - y x`` and ``dBCE/dx = sigmoid(x) - y``. The
    weights are ``pos_weight[j]`` at the targets and ``neg_weight[r_i, j]``
    elsewhere, times ``scale`` (the normaliser).

    Returns:
        tuple: per-row losses (N,), the gradient (N, K), the per-row sums of
        the logits, finite exactly when every logit is (the finiteness
        check, free in the same pass), and with ``with_column_sums`` the
        gradient's per-column sums (K,).
    """
    is_pos = positive_mask(target_col, logits.size(1))
    negative_weight = neg_weight[0] if row_kind is None else \
        neg_weight[row_kind]
    weight = torch.where(is_pos, pos_weight, negative_weight) * scale
    softplus, sigmoid = softplus_and_sigmoid(logits)
    bce = softplus - torch.where(is_pos, logits, 0)
    grad = (sigmoid - is_pos.to(logits.dtype)) * weight
    sums = ((weight * bce).sum(1), grad, logits.sum(1))
    # a second loop over the gradient: only when the statistics need it
    return sums + (grad.sum(0), ) if with_column_sums else sums


# one fused kernel when large (see fused_elementwise)
fused_one_hot_bce_sums = FusedElementwise(one_hot_bce_sums)


class GradStats(NamedTuple):
    """Per-column gradient magnitudes ``sum_i w_ij |p_ij - y_ij|`` of the
    un-normalised loss, split by the target."""
    positive: Tensor  # (K,) over the elements with y_ij = 1
    negative: Tensor  # (K,) over the elements with y_ij = 0


def check_finite_logits(logits: Tensor, logit_sums: Tensor,
                        owner: str) -> None:
    """Raise if the sum of ``logit_sums`` (partial sums of every logit, as
    a fused pass returns them) is not finite: any NaN or inf logit makes it
    so; an overflowing sum of finite logits is re-checked element-wise."""
    # one reduction and one sync in the usual, finite case
    if math.isfinite(float(logit_sums.sum())) or bool(
            torch.isfinite(logits).all()):
        return
    bad = logits[~torch.isfinite(logits)][0].item()
    raise ValueError(f'{owner}: cls_score is not finite (found {bad}); '
                     f'the classifier diverged or its input is broken')


def gradient_magnitudes(grad: Tensor, target_col: Tensor,
                        column_sums: Tensor,
                        scale: float) -> Tuple[Tensor, Tensor]:
    """Per-column ``sum_i w_ij |p_ij - y_ij|`` over the targets and over
    the other elements, from the gradient (N, K) of the loss normalised by
    ``scale`` and its column sums: the targets' gradients are <= 0, the
    others' >= 0, so only the N target elements are read again."""
    pos_magnitude = column_sums_at_labels(grad, target_col).mul_(-1 / scale)
    # clamped: rounding can leave a column with no negatives below 0
    neg_magnitude = torch.add(
        pos_magnitude, column_sums, alpha=1 / scale).clamp_(min=0)
    return pos_magnitude, neg_magnitude


def one_hot_bce_pass(
    logits: Tensor, target_col: Tensor, pos_weight: Tensor,
    neg_weight: Tensor, row_kind: Optional[Tensor], scale: float,
    with_statistics: bool
) -> Tuple[Tensor, Tensor, Tensor, Optional[Tuple[Tensor, Tensor]]]:
    """:func:`one_hot_bce_sums` on the fastest path for the input: the
    C++ CPU kernel, the compiled pass or eager.

    Returns:
        tuple: per-row losses (N,), the gradient (N, K), the per-row logit
        sums (N,), and with ``with_statistics`` the per-column gradient
        magnitudes of the un-normalised loss over the targets and over the
        other elements (else None).
    """
    kernel = cpu_kernels_for(logits, fused_one_hot_bce_sums.min_numel)
    if kernel is not None:
        row_loss, grad, logit_sums, *statistics = kernel.one_hot_bce_forward(
            logits, target_col.contiguous(), pos_weight.contiguous(),
            neg_weight.contiguous(),
            logits.new_empty(0, dtype=torch.long)
            if row_kind is None else row_kind.long().contiguous(), scale,
            with_statistics)
        magnitudes = statistics[0].unbind(0) if statistics else None
        return row_loss, grad, logit_sums, magnitudes
    row_loss, grad, logit_sums, *column_sums = fused_one_hot_bce_sums(
        logits, target_col, pos_weight, neg_weight, row_kind, scale,
        with_statistics)
    magnitudes = gradient_magnitudes(grad, target_col, column_sums[0],
                                     scale) if with_statistics else None
    return row_loss, grad, logit_sums, magnitudes


class _OneHotWeightedBCE(torch.autograd.Function):
    """Autograd function of :func:`one_hot_weighted_bce`.

    The gradient is written in the forward pass, by the same fused kernel
    as the loss, so backward is one product with the upstream gradient, or
    none when that is 1.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, target_col: Tensor, pos_weight: Tensor,
                neg_weight: Tensor, row_kind: Optional[Tensor], reduction: str,
                with_statistics: bool, owner: str) -> tuple:
        scale = 1.0 / max(logits.size(0), 1) if reduction == 'mean' else 1.0
        row_loss, grad, logit_sums, magnitudes = one_hot_bce_pass(
            logits, target_col, pos_weight, neg_weight, row_kind, scale,
            with_statistics)
        check_finite_logits(logits, logit_sums, owner)
        ctx.save_for_backward(grad)
        ctx.reduction = reduction
        if with_statistics:
            pos_magnitude, neg_magnitude = magnitudes
            ctx.mark_non_differentiable(pos_magnitude, neg_magnitude)
        else:
            pos_magnitude = neg_magnitude = None
        # no zero gradients for the statistics outputs
        ctx.set_materialize_grads(False)
        # 'none' keeps the rows (scale 1), the others are scaled sums
        loss = row_loss if reduction == 'none' else row_loss.sum()
        return loss, pos_magnitude, neg_magnitude

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: Optional[Tensor], *unused) -> tuple:
        if grad_loss is None:
            return (None, ) * 8
        grad, = ctx.saved_tensors
        if ctx.reduction == 'none':
            grad = grad * grad_loss[:, None]
        # the usual case, d(total loss)/d(loss) = 1: no (N, K) product
        elif grad_loss.is_cuda or float(grad_loss) != 1.0:
            grad = grad * grad_loss
        return grad, None, None, None, None, None, None, None


def one_hot_weighted_bce(cls_score: Tensor,
                         target_col: Tensor,
                         pos_weight: Tensor,
                         neg_weight: Tensor,
                         row_kind: Optional[Tensor] = None,
                         reduction: str = 'mean',
                         with_statistics: bool = False,
                         owner: str = 'one_hot_weighted_bce'
                         ) -> Tuple[Tensor, GradStats]:
    """Weighted sigmoid cross-entropy with (at most) one positive per row.

    ``L_i = sum_j w_ij BCE(z_ij, y_ij)`` with ``y_ij = [j == t_i]``,
    ``w_ij = pos_weight[j]`` for the target element and
    ``w_ij = neg_weight[r_i, j]`` for the others. The weights get no
    gradient. The dense target and weight matrices are never stored: one
    fused pass (``sigmoid_terms``) computes the loss, the gradient and its
    per-column sums.

    Args:
        cls_score (Tensor): logits (N, K); float16 / bfloat16 logits are
            computed in float32.
        target_col (Tensor): (N,) integer column of each row's positive
            element; a row without one has a value outside ``[0, K)``
            (e.g. -1).
        pos_weight (Tensor): (K,) weight of a positive element per column.
        neg_weight (Tensor): (R, K) weights of the negative elements; row i
            uses ``neg_weight[row_kind[i]]``.
        row_kind (Tensor, optional): (N,) int64 in ``[0, R)``; may be None
            when R = 1. Defaults to None.
        reduction (str): 'none' -> per-row losses (N,), 'sum', or 'mean'
            (sum / N). Defaults to 'mean'.
        with_statistics (bool): also return the per-column gradient
            magnitudes. Defaults to False.
        owner (str): loss name in the error raised for non-finite logits.

    Returns:
        tuple[Tensor, GradStats]: the loss, and the per-column magnitudes of
        the gradient of the un-normalised loss (no gradient; None without
        ``with_statistics``).
    """
    if neg_weight.dim() != 2 or neg_weight.size(1) != cls_score.size(1):
        raise ValueError(f'neg_weight must be (R, {cls_score.size(1)}), got '
                         f'{tuple(neg_weight.shape)}')
    if neg_weight.size(0) > 1 and row_kind is None:
        raise ValueError('row_kind is required with several neg_weight rows')
    # half precision logits (AMP) are computed in float32
    logits = cls_score if cls_score.dtype in (torch.float32,
                                              torch.float64) else \
        cls_score.float()
    # no gradient for the weights (the function returns None for them)
    weights = [w.to(logits) for w in (pos_weight, neg_weight)]
    loss, positive, negative = _OneHotWeightedBCE.apply(
        logits, target_col.long(), *weights, row_kind, reduction,
        with_statistics, owner)
    return loss, GradStats(positive, negative)


# ----------------------------------------------------------------- EQL
def eql_tail_classes(image_freq: Sequence[float],
                     lambda_threshold: float) -> np.ndarray:
    """``T_lambda(f_j) = [f_j < lambda]`` per class (bool, (C,))."""
    freq = np.asarray(image_freq, dtype=np.float64)
    if freq.ndim != 1 or not np.isfinite(freq).all() or (freq < 0).any() \
            or (freq > 1).any():
        raise ValueError('EQLoss: image_freq must be C numbers in [0, 1] '
                         '(image_count / number of training images)')
    return freq < lambda_threshold


def eql_loss(cls_score: Tensor,
             labels: Tensor,
             tail_classes: Tensor,
             reduction: str = 'mean') -> Tensor:
    """Equalization loss of C sigmoid logits (no background logit).

    Args:
        cls_score (Tensor): logits (N, C).
        labels (Tensor): (N,) in ``[0, C]``, C = background.
        tail_classes (Tensor): (C,) bool or 0/1, ``T_lambda(f_j)``.
        reduction (str): 'none' (per RoI), 'sum' or 'mean' (sum / N).
            Defaults to 'mean'.
    """
    num_classes = cls_score.size(1)
    is_background = labels == num_classes
    target_col = torch.where(is_background, -1, labels)
    tail = tail_classes.to(torch.float32)
    # row kind 0 = background RoI: w = 1 everywhere;
    # row kind 1 = foreground RoI: w = 1 - T_j off the target
    neg_weight = torch.stack([torch.ones_like(tail), 1 - tail])
    loss, _ = one_hot_weighted_bce(cls_score, target_col,
                                   torch.ones_like(tail), neg_weight,
                                   (~is_background).long(), reduction,
                                   owner='EQLoss')
    return loss


def sigmoid_scores_with_background(cls_score: Tensor) -> Tensor:
    """``sigmoid`` of C logits with a zero background column appended."""
    scores = torch.sigmoid(cls_score)
    return torch.cat([scores, scores.new_zeros(scores.size(0), 1)], dim=1)


@MODELS.register_module()
class EQLoss(nn.Module):
    """Equalization Loss (Tan et al., CVPR 2020,
    https://arxiv.org/abs/2003.05176) for RoI heads.

    Called as mmdet's RoI heads call their classification loss:
    ``loss(cls_score (N, C), labels (N,), label_weights, avg_factor,
    reduction_override)`` with background label ``C``. As in the authors'
    code, the loss is normalised by the number of RoIs N; ``label_weights``
    and ``avg_factor`` are accepted and ignored. The loss tells
    ``BBoxHead`` (Faster, Mask, Cascade and HTC) to build C outputs and to
    score with :meth:`get_activation` (sigmoid, zero background column).

    The authors initialise the classifier bias to the prior 0.001; the
    configs do this with the head's ``init_cfg`` (``bias_prob=0.001``).

    Args:
        num_classes (int): C, number of foreground classes.
        lambda_threshold (float): lambda; classes whose training image
            frequency is below it are not suppressed by other classes'
            foreground RoIs. 1.76e-3 for LVIS v0.5 (the 915 rare and common
            classes) and 1.1e-3 for LVIS v1 in the configs.
        image_freq (Sequence[float], optional): f_j of every class
            (``image_count / num_images``). Give this or ``ann_file``.
            Defaults to None.
        ann_file (str, optional): LVIS training annotation file; f_j comes
            from ``mmdet_longtail.datasets.class_stats``. Defaults to None.
        loss_weight (float): multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self,
                 num_classes: int,
                 lambda_threshold: float,
                 image_freq: Optional[Sequence[float]] = None,
                 ann_file: Optional[str] = None,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f'EQLoss: num_classes must be >= 1, got '
                             f'{num_classes}')
        self.num_classes = int(num_classes)
        lambda_threshold = float(lambda_threshold)
        if not np.isfinite(lambda_threshold) or lambda_threshold < 0:
            raise ValueError(f'EQLoss: lambda_threshold must be a finite '
                             f'number >= 0, got {lambda_threshold}')
        self.lambda_threshold = lambda_threshold
        self.loss_weight = float(loss_weight)
        tail = eql_tail_classes(
            self._image_freq(image_freq, ann_file), lambda_threshold)
        # derived from the dataset, so not part of checkpoints
        self.register_buffer(
            'tail_classes', torch.from_numpy(tail), persistent=False)
        # the BBoxHead protocol: C outputs, sigmoid scores at test time
        self.custom_cls_channels = True
        self.custom_activation = True
        self.custom_accuracy = True

    def _image_freq(self, image_freq: Optional[Sequence[float]],
                    ann_file: Optional[str]) -> np.ndarray:
        if image_freq is not None and ann_file is not None:
            raise ValueError('EQLoss: give image_freq or ann_file, not both')
        if image_freq is None:
            return resolve_class_statistics(
                self.num_classes, ann_file, owner='EQLoss').image_freq
        freq = np.asarray(image_freq, dtype=np.float64)
        if freq.shape != (self.num_classes, ):
            raise ValueError(f'EQLoss: image_freq has {freq.size} entries, '
                             f'expected num_classes={self.num_classes}')
        return freq

    def get_cls_channels(self, num_classes: int) -> int:
        """C outputs: one sigmoid logit per class, no background logit."""
        if num_classes != self.num_classes:
            raise ValueError(f'EQLoss: num_classes={self.num_classes} but '
                             f'the head has {num_classes} classes')
        return num_classes

    def get_activation(self, cls_score: Tensor) -> Tensor:
        """Scores (N, C + 1): sigmoid, zero background column last."""
        return sigmoid_scores_with_background(cls_score)

    def get_accuracy(self, cls_score: Tensor,
                     labels: Tensor) -> Dict[str, Tensor]:
        """Classification accuracy (%) of the foreground RoIs."""
        fg = labels < self.num_classes
        return dict(acc_classes=accuracy(cls_score[fg], labels[fg]))

    def forward(self,
                cls_score: Tensor,
                labels: Tensor,
                label_weights: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None) -> Tensor:
        """EQL of logits (N, C) and labels (N,) in [0, C].

        ``reduction_override``: 'none' gives the per-RoI losses (N,)
        (e.g. for OHEM), 'sum' their sum, 'mean' (default) sum / N.
        """
        reduction = check_reduction(reduction_override or 'mean', 'EQLoss')
        check_cls_inputs(cls_score, labels, self.num_classes, self.num_classes,
                         'EQLoss')
        return self.loss_weight * eql_loss(cls_score, labels,
                                           self.tail_classes, reduction)

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, lambda_threshold='
                f'{self.lambda_threshold}, tail classes='
                f'{int(self.tail_classes.sum())}, loss_weight='
                f'{self.loss_weight}')
