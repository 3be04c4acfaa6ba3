"""Class re-weighted cross-entropy for RoI classifiers: class-balanced and
cost-sensitive weights, with deferred re-weighting (DRW).

* Class-balanced weights: Cui et al., "Class-Balanced Loss Based on
  Effective Number of Samples", CVPR 2019 (https://arxiv.org/abs/1901.05555),
  Eq. 4 and Sec. 4. With n_c the number of training *instances* of class c
  (``ClassStatistics.instance_count``, i.e. annotated boxes, the "samples"
  of a RoI classifier)::

      E_c = (1 - beta ** n_c) / (1 - beta)         (effective number)
      w_c = C * (1 / E_c) / sum_k (1 / E_k)         (weights sum to C)

* Cost-sensitive weights (inverse frequency)::

      w_c = n_min / n_c,       n_min = min_k n_k    (no normalisation;
                                                     the rarest class gets 1)

  On LVIS n_min = 1, so frequent classes get weights of ~1e-5: the
  degenerate baseline of the "bag of tricks" comparison.

Classes without a training instance never occur as labels; they get weight 0
and are left out of the normalisation (the sum over the classes that occur
is their number). The background (label C) has weight 1.

A RoI with label ``g_i`` (``C`` = background) is weighted by ``w_{g_i}``, in
both classifiers (Cui et al. weight the whole loss of a sample by its class's
weight, for softmax and for sigmoid)::

    softmax (C + 1 logits, background last):
        L = 1/A * sum_i lw_i * w_{g_i} * CE(z_i, g_i)
    sigmoid (C logits, no background logit; background rows have no
    positive):
        L = 1/A * sum_i lw_i * w_{g_i} * sum_j BCE(z_ij, [j == g_i])

``lw_i`` are mmdet's ``label_weights`` and A its ``avg_factor`` (the number
of RoIs with a positive label weight; N if not given), exactly as mmdet's
``CrossEntropyLoss``: with ``weights_enabled=False`` (or all weights 1) the
softmax loss *is* mmdet's, and the softmax loss with the weights is mmdet's
``CrossEntropyLoss(class_weight=[w_0, ..., w_{C-1}, 1])``.

Deferred re-weighting (Cao et al., "Learning Imbalanced Datasets with
Label-Distribution-Aware Margin Loss", NeurIPS 2019): ``weights_enabled``
switches the weights on and off; ``DeferredReweightingHook`` sets it from the
epoch (or iteration) before each one, so it is a pure function of the
training progress and a resumed run needs no extra state.
"""
import math
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from torch import Tensor

from mmdet.models.losses import weight_reduce_loss
from mmdet.registry import MODELS
from mmdet_longtail.datasets.class_stats import (StatisticsSource,
                                                 load_class_statistics)
from .utils import (PlainClassifierMixin, check_num_classes,
                    foreground_targets, upcast_half)

WEIGHTINGS = ('class_balanced', 'cost_sensitive')


def check_beta(beta: float) -> float:
    """``beta`` if it is a number in (0, 1), else a clear error."""
    beta = float(beta)
    if not math.isfinite(beta) or not 0 < beta < 1:
        raise ValueError(f'ReweightedCrossEntropyLoss: beta must lie in '
                         f'(0, 1) (Cui et al. use 0.9 ... 0.9999), got {beta}')
    return beta


def _check_counts(instance_count: Sequence[int]) -> np.ndarray:
    counts = np.asarray(instance_count, dtype=np.float64)
    if counts.ndim != 1 or not np.isfinite(counts).all() or \
            (counts < 0).any():
        raise ValueError(f'ReweightedCrossEntropyLoss: instance_count must '
                         f'be C numbers >= 0, got {counts.tolist()[:10]}')
    if not (counts > 0).any():
        raise ValueError('ReweightedCrossEntropyLoss: no class has a '
                         'training instance (instance_count is all 0)')
    return counts


def class_balanced_weights(instance_count: Sequence[int],
                           beta: float) -> np.ndarray:
    """``w_c = (1 - beta) / (1 - beta^n_c)`` normalised to sum to the number
    of classes that occur; 0 where ``n_c = 0`` (float64, (C,))."""
    beta = check_beta(beta)
    counts = _check_counts(instance_count)
    present = counts > 0
    weights = np.zeros_like(counts)
    # 1 - beta^n = -expm1(n log beta), exact for beta close to 1
    weights[present] = -math.expm1(math.log(beta)) / -np.expm1(
        counts[present] * math.log(beta))
    return weights * present.sum() / weights.sum()


def cost_sensitive_weights(instance_count: Sequence[int]) -> np.ndarray:
    """``w_c = n_min / n_c`` (n_min over the classes that occur); 0 where
    ``n_c = 0`` (float64, (C,))."""
    counts = _check_counts(instance_count)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts[present].min() / counts[present]
    return weights


def reweighted_cross_entropy(cls_score: Tensor,
                             labels: Tensor,
                             roi_weights: Tensor,
                             use_sigmoid: bool = False,
                             reduction: str = 'mean',
                             avg_factor: Optional[float] = None) -> Tensor:
    """Cross-entropy of RoIs weighted one factor per RoI.

    Args:
        cls_score (Tensor): (N, C + 1) softmax logits (background last), or
            (N, C) sigmoid logits; half precision is computed in float32.
        labels (Tensor): (N,) in ``[0, C]``, C = background.
        roi_weights (Tensor): (N,) weight of each RoI (``w_{g_i}`` times
            mmdet's label weight).
        use_sigmoid (bool): sigmoid BCE over C logits instead of softmax.
        reduction (str): 'none' (per RoI), 'sum' or 'mean' (sum /
            ``avg_factor``, or / N without one).
        avg_factor (float, optional): mmdet's normaliser of 'mean'.
    """
    cls_score = upcast_half(cls_score)
    if use_sigmoid:
        target = foreground_targets(labels, cls_score.size(1),
                                    cls_score.dtype)
        roi_losses = F.binary_cross_entropy_with_logits(
            cls_score, target, reduction='none').sum(1)
    else:
        roi_losses = F.cross_entropy(cls_score, labels.long(),
                                     reduction='none')
    return weight_reduce_loss(roi_losses, roi_weights.to(roi_losses.dtype),
                              reduction, avg_factor)


@MODELS.register_module()
class ReweightedCrossEntropyLoss(PlainClassifierMixin, nn.Module):
    """Class-balanced (Cui et al., CVPR 2019) or cost-sensitive re-weighted
    cross-entropy for RoI heads, softmax or sigmoid (see the module
    docstring for the equations).

    Called as mmdet's RoI heads call their classification loss:
    ``loss(cls_score, labels (N,), label_weights, avg_factor,
    reduction_override)``, background label ``C``. The softmax classifier has
    C + 1 outputs (background last) and scores with a softmax; the sigmoid
    classifier has C outputs and scores with a sigmoid plus a zero background
    column (N x (C + 1) for mmdet's heads). The weights are logged once per
    process and setting.

    Args:
        num_classes (int): C, number of foreground classes.
        class_statistics (str | ClassStatistics | dict): the train set's
            statistics, n_c = ``instance_count``: the LVIS train annotation
            file (``LongTailRunner`` passes it from
            ``train_dataloader.dataset``), or see
            :func:`~mmdet_longtail.datasets.load_class_statistics`.
        weighting (str): ``'class_balanced'`` or ``'cost_sensitive'``.
            Defaults to ``'class_balanced'``.
        beta (float): beta of the effective number, in (0, 1); only used by
            ``'class_balanced'``. Defaults to 0.999.
        use_sigmoid (bool): sigmoid BCE over C logits instead of softmax CE
            over C + 1. Defaults to False.
        weights_enabled (bool): apply the class weights; False gives plain
            CE (the first stage of DRW, set by ``DeferredReweightingHook``).
            Defaults to True.
        loss_weight (float): multiplier of the loss. Defaults to 1.0.
    """

    _logged = set()

    def __init__(self,
                 num_classes: int,
                 class_statistics: Optional[StatisticsSource] = None,
                 weighting: str = 'class_balanced',
                 beta: float = 0.999,
                 use_sigmoid: bool = False,
                 weights_enabled: bool = True,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise ValueError(f'ReweightedCrossEntropyLoss: weighting must be '
                             f'one of {WEIGHTINGS}, got {weighting!r}')
        self.num_classes = check_num_classes('ReweightedCrossEntropyLoss',
                                             num_classes)
        self.weighting = weighting
        self.beta = check_beta(beta)
        self.use_sigmoid = bool(use_sigmoid)
        self.weights_enabled = bool(weights_enabled)
        self.loss_weight = float(loss_weight)
        stats = load_class_statistics(class_statistics, self.num_classes,
                                      'ReweightedCrossEntropyLoss')
        if weighting == 'class_balanced':
            weights = class_balanced_weights(stats.instance_count, self.beta)
        else:
            weights = cost_sensitive_weights(stats.instance_count)
        # w_0 .. w_{C-1}, then the background's 1; derived from the
        # dataset, so not part of checkpoints
        self.register_buffer(
            'class_weight',
            torch.from_numpy(np.append(weights, 1.0)),
            persistent=False)
        self._log_weights(stats.source)
        self.inputs = self.classifier_inputs('ReweightedCrossEntropyLoss')

    def _log_weights(self, source: str) -> None:
        weights = self.class_weight[:-1].numpy()
        key = (self.weighting, self.beta if self.weighting == 'class_balanced'
               else None, weights.tobytes())
        if key in self._logged:
            return
        self._logged.add(key)
        present = weights[weights > 0]
        setting = (f'class_balanced, beta={self.beta:g}' if self.weighting
                   == 'class_balanced' else 'cost_sensitive')
        print_log(
            f'ReweightedCrossEntropyLoss ({setting}, instance counts of '
            f'{source}): {len(present)} of {self.num_classes} classes have '
            f'training instances, weights in [{present.min():.6g}, '
            f'{present.max():.6g}] (mean {present.mean():.6g}), background '
            f'1; weights by label: '
            f'{np.array2string(weights, precision=4, threshold=20)}',
            logger='current')

    def roi_weights(self, labels: Tensor,
                    label_weights: Optional[Tensor] = None) -> Tensor:
        """``w_{g_i}`` (1 when the weights are off) times the label
        weights, (N,)."""
        if self.weights_enabled:
            weights = self.class_weight[labels.long()]
        else:
            weights = self.class_weight.new_ones(labels.shape)
        if label_weights is not None:
            weights = weights * label_weights.reshape(-1).to(weights)
        return weights

    def forward(self,
                cls_score: Tensor,
                labels: Tensor,
                label_weights: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None) -> Tensor:
        """Re-weighted CE of logits and labels (N,) in [0, C], reduced as
        ``reduction_override`` says (default 'mean', see
        :func:`reweighted_cross_entropy`)."""
        reduction = self.inputs.check(
            cls_score, labels, label_weights,
            reduction=reduction_override or 'mean')
        return self.loss_weight * reweighted_cross_entropy(
            cls_score, labels, self.roi_weights(labels, label_weights),
            self.use_sigmoid, reduction, avg_factor)

    def extra_repr(self) -> str:
        beta = (f', beta={self.beta}'
                if self.weighting == 'class_balanced' else '')
        return (f'num_classes={self.num_classes}, weighting='
                f'{self.weighting!r}{beta}, use_sigmoid={self.use_sigmoid}, '
                f'weights_enabled={self.weights_enabled}, loss_weight='
                f'{self.loss_weight}')
