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
cross-entropy with one-hot targets that EQL and EQLv2 share. It never builds
the dense target or weight matrices: the negative part of every row is one
matrix product ``softplus(z) @ w_neg`` and the target element is corrected
afterwards, and the backward pass is a single broadcast product. This keeps
both losses at the cost of a softmax cross-entropy at LVIS scale
(``benchmarks/bench_cls_losses.py``).
"""
import math
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from mmdet.models.losses import accuracy
from mmdet.registry import MODELS
from mmdet_longtail.datasets.class_stats import resolve_class_statistics

REDUCTIONS = ('none', 'mean', 'sum')


# --------------------------------------------------------------- checks
def check_cls_inputs(cls_score: Tensor, labels: Tensor, num_columns: int,
                     num_classes: int, owner: str) -> None:
    """Clear errors for logits / labels a sigmoid RoI loss cannot use.

    Args:
        cls_score (Tensor): logits, must be (N, ``num_columns``) and finite.
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
    # one reduction instead of an element-wise test: nan and +-inf reach
    # the sum; an overflowing sum of finite logits is re-checked exactly
    if not math.isfinite(float(cls_score.detach().sum())) and not bool(
            torch.isfinite(cls_score).all()):
        bad = cls_score[~torch.isfinite(cls_score)][0].item()
        raise ValueError(f'{owner}: cls_score is not finite (found {bad}); '
                         f'the classifier diverged or its input is broken')
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
def weighted_softplus_sums(logits: Tensor, neg_weight: Tensor) -> Tensor:
    """``softplus(logits) @ neg_weight.T``, (N, K) x (K, R) -> (N, R).

    ``BCE(z, 0) = softplus(z) = log(1 + exp(z))``. On a CPU,
    ``exp -> +1 -> log`` costs half of ``F.softplus``, which is not
    vectorised there; its only failure, ``exp`` overflowing above z ~ 88
    (float32), shows as a non-finite sum and is redone exactly. Below z ~ -17
    it returns 0 for ``exp(z)`` (< 1e-7 per element).
    """
    if not logits.is_cuda:
        sums = torch.exp(logits).add_(1).log_() @ neg_weight.t()
        if math.isfinite(float(sums.sum())):
            return sums
    return F.softplus(logits) @ neg_weight.t()


class ProbStats(NamedTuple):
    """Sigmoid probabilities a loss may need for its statistics."""
    column_sum: Tensor  # (K,) sum_i p_ij (empty unless asked for)
    target: Tensor  # (M,) p at the target elements, rows with a target


def one_hot_row_losses(logits: Tensor, rows: Tensor, cols: Tensor,
                       pos_w_t: Tensor, neg_weight: Tensor,
                       row_kind: Optional[Tensor]) -> Tensor:
    """``sum_j w_ij BCE(z_ij, y_ij)`` per row; (rows, cols) are the target
    elements and ``pos_w_t`` their weights."""
    # every row's loss as if it had no positive element ...
    neg_sums = weighted_softplus_sums(logits, neg_weight)
    if neg_weight.size(0) == 1:
        row_loss = neg_sums[:, 0]
    else:
        row_loss = neg_sums.gather(1, row_kind[:, None])[:, 0]
    # ... then the target element's negative term swapped for its positive
    # one, BCE(z, 1) = softplus(-z)
    z_t = logits[rows, cols]
    kind_t = row_kind[rows] if row_kind is not None else 0
    return row_loss.index_add(
        0, rows,
        pos_w_t * F.softplus(-z_t) -
        neg_weight[kind_t, cols] * F.softplus(z_t))


def one_hot_gradient_(prob: Tensor, rows: Tensor, cols: Tensor,
                      pos_w_t: Tensor, neg_weight: Tensor,
                      row_kind: Optional[Tensor], scale: float) -> Tensor:
    """Turn ``prob = sigmoid(z)`` in place into the gradient
    ``scale * w_ij (p_ij - y_ij)``."""
    p_t = prob[rows, cols]
    # rows of kind 0 in one broadcast product, the others by index
    other_kinds = [(kind, torch.nonzero(row_kind == kind)[:, 0])
                   for kind in range(1, neg_weight.size(0))]
    other_probs = [prob[sub] for _, sub in other_kinds]
    grad = prob.mul_(neg_weight[0] * scale)
    for (kind, sub), other in zip(other_kinds, other_probs):
        grad[sub] = other.mul_(neg_weight[kind] * scale)
    grad[rows, cols] = pos_w_t * (p_t - 1) * scale
    return grad


class _OneHotWeightedBCE(torch.autograd.Function):
    """Autograd function of :func:`one_hot_weighted_bce`.

    The gradient ``w_ij (p_ij - y_ij)`` is written in the forward pass, over
    the probabilities it starts from, so a forward + backward step allocates
    two (N, K) tensors (the CPU time at LVIS scale is mostly first-touch
    page faults of new tensors) and the backward pass is one product with
    the upstream gradient, or none when that is 1.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, target_col: Tensor, pos_weight: Tensor,
                neg_weight: Tensor, row_kind: Optional[Tensor], reduction: str,
                with_column_sum: bool) -> tuple:
        rows = torch.nonzero(target_col >= 0)[:, 0]
        cols = target_col[rows]
        pos_w_t = pos_weight[cols]
        row_loss = one_hot_row_losses(logits, rows, cols, pos_w_t, neg_weight,
                                      row_kind)
        prob = torch.sigmoid(logits)
        column_sum = prob.sum(0) if with_column_sum else prob.new_empty(0)
        p_t = prob[rows, cols]
        scale = 1.0 / max(logits.size(0), 1) if reduction == 'mean' else 1.0
        grad = one_hot_gradient_(prob, rows, cols, pos_w_t, neg_weight,
                                 row_kind, scale)

        ctx.save_for_backward(grad)
        ctx.reduction = reduction
        ctx.mark_non_differentiable(column_sum, p_t)
        # no zero gradients for the statistics outputs
        ctx.set_materialize_grads(False)
        loss = row_loss if reduction == 'none' else row_loss.sum() * scale
        return loss, column_sum, p_t

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: Optional[Tensor], *unused) -> tuple:
        if grad_loss is None:
            return (None, ) * 7
        grad, = ctx.saved_tensors
        if ctx.reduction == 'none':
            grad = grad * grad_loss[:, None]
        # the usual case, d(total loss)/d(loss) = 1: no (N, K) product
        elif grad_loss.is_cuda or float(grad_loss) != 1.0:
            grad = grad * grad_loss
        return grad, None, None, None, None, None, None


def one_hot_weighted_bce(
        cls_score: Tensor,
        target_col: Tensor,
        pos_weight: Tensor,
        neg_weight: Tensor,
        row_kind: Optional[Tensor] = None,
        reduction: str = 'mean',
        with_column_sum: bool = False) -> Tuple[Tensor, ProbStats]:
    """Weighted sigmoid cross-entropy with (at most) one positive per row.

    ``L_i = sum_j w_ij BCE(z_ij, y_ij)`` with ``y_ij = [j == t_i]``,
    ``w_ij = pos_weight[j]`` for the target element and
    ``w_ij = neg_weight[r_i, j]`` for the others. The weights get no
    gradient.

    Args:
        cls_score (Tensor): logits (N, K); float16 / bfloat16 logits are
            computed in float32.
        target_col (Tensor): (N,) int64 column of each row's positive
            element, or -1 for a row without one.
        pos_weight (Tensor): (K,) weight of a positive element per column.
        neg_weight (Tensor): (R, K) weights of the negative elements; row i
            uses ``neg_weight[row_kind[i]]``.
        row_kind (Tensor, optional): (N,) int64 in ``[0, R)``; may be None
            when R = 1. Fastest when kind 0 is the most common. Defaults to
            None.
        reduction (str): 'none' -> per-row losses (N,), 'sum', or 'mean'
            (sum / N). Defaults to 'mean'.
        with_column_sum (bool): also return ``sum_i sigmoid(z_ij)`` (K,).
            Defaults to False.

    Returns:
        tuple[Tensor, ProbStats]: the loss, and sigmoid probabilities
        without gradient: their column sums and their values at the target
        elements (rows with a target, in row order).
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
    weights = [w.detach().to(logits) for w in (pos_weight, neg_weight)]
    loss, column_sum, target = _OneHotWeightedBCE.apply(
        logits, target_col.long(), *weights, row_kind, reduction,
        with_column_sum)
    return loss, ProbStats(column_sum, target)


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
                                   (~is_background).long(), reduction)
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
