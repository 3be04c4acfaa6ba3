"""Effective Class-Margin (ECM) loss for sigmoid RoI classifiers.

Cho and Kraehenbuehl, "Long-tail Detection with Effective Class-Margins",
ECCV 2022.
https://www.ecva.net/papers/eccv_2022/papers_ECCV/papers/136680684.pdf

The classifier has C + 1 sigmoid logits; the last one is the background.
Every column j (the background included) is a binary problem with ``n+_j``
positive and ``n-_j`` negative samples, counted in training images::

    n_j  = image_count_j (j < C),   n_bg = r * sum_{c<C} n_c   (r = 6.3313)
    n+_j = n_j,                     n-_j = sum_k n_k - n_j     (k <= C)

and gets fixed margins and a fixed weight (the paper's Theorem 2)::

    m+_j = log((n+_j^(1/4) + n-_j^(1/4)) / n-_j^(1/4))
    m-_j = log((n+_j^(1/4) + n-_j^(1/4)) / n+_j^(1/4))
    w_j  = a_j * log((1 + a_j) / a_j),      a_j = n-_j / n+_j

The margin-adjusted probability of the positive is
``p_ij = e^(z_ij + m+_j) / (e^(z_ij + m+_j) + e^(-z_ij + m-_j))`` and::

    L = 1/N * sum_i sum_j w_j * BCE(p_ij, y_ij)

with ``y_ij = [j == g_i]`` over the C + 1 columns (a background RoI is
positive for the background column) and N the number of RoIs. Since
``p_ij = sigmoid(2 z_ij + m+_j - m-_j)``, the loss is computed as
``BCE_with_logits(2 z + m+ - m-, y)``, which is exact and cannot overflow;
``dL/dz_ij = 2 w_j (p_ij - y_ij) / N``. At test time the score of class c is
``sigmoid(z_c) * (1 - sigmoid(z_bg))`` and the background score
``sigmoid(z_bg)`` is the last column.
"""
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmdet.registry import MODELS
from mmdet_longtail.datasets.class_stats import (StatisticsSource,
                                                 load_class_statistics,
                                                 positive_image_counts)
from .utils import (ObjectnessClassifierMixin, check_num_classes,
                    reduce_roi_losses, upcast_half)

# the authors' empirical ratio of background to foreground RoIs
# (Mask R-CNN on LVIS v1)
FG_BG_RATIO = 6.3313


def ecm_sample_counts(image_count: Sequence[int],
                      fg_bg_ratio: float = FG_BG_RATIO,
                      source: str = 'counts') -> np.ndarray:
    """``n`` (C + 1,) float64: the classes' training image counts, then the
    background count ``fg_bg_ratio * sum(n)``."""
    counts = positive_image_counts(
        image_count, 'ECMLoss', 'its margins are log-ratios of the counts',
        source)
    fg_bg_ratio = float(fg_bg_ratio)
    if not np.isfinite(fg_bg_ratio) or fg_bg_ratio <= 0:
        raise ValueError(f'ECMLoss: fg_bg_ratio must be a finite number > '
                         f'0, got {fg_bg_ratio}')
    return np.append(counts, fg_bg_ratio * counts.sum())


def ecm_margins(sample_counts: np.ndarray
                ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(m+, m-, w)``, each (C + 1,) float64, from the counts ``n``
    (C + 1,) of :func:`ecm_sample_counts`."""
    n_pos = np.asarray(sample_counts, dtype=np.float64)
    n_neg = n_pos.sum() - n_pos
    root_pos, root_neg = n_pos**0.25, n_neg**0.25
    m_pos = np.log((root_pos + root_neg) / root_neg)
    m_neg = np.log((root_pos + root_neg) / root_pos)
    a = n_neg / n_pos
    weights = a * np.log1p(1 / a)  # a * log((1 + a) / a)
    return m_pos, m_neg, weights


def ecm_loss(cls_score: Tensor,
             labels: Tensor,
             margin_shift: Tensor,
             class_weights: Tensor,
             reduction: str = 'mean') -> Tensor:
    """ECM loss of C + 1 sigmoid logits (background last).

    Args:
        cls_score (Tensor): logits (N, C + 1); float16 / bfloat16 logits are
            computed in float32, float64 in float64.
        labels (Tensor): (N,) in ``[0, C]``, C = background.
        margin_shift (Tensor): (C + 1,) ``m+ - m-``.
        class_weights (Tensor): (C + 1,) ``w``.
        reduction (str): 'none' (per RoI), 'sum' or 'mean' (sum / N).
    """
    cls_score = upcast_half(cls_score)
    y = F.one_hot(labels.long(), cls_score.size(1)).to(cls_score)
    # p = e^(z + m+) / (e^(z + m+) + e^(-z + m-)) = sigmoid(2z + m+ - m-)
    logits = 2 * cls_score + margin_shift.to(cls_score)[None]
    bce = F.binary_cross_entropy_with_logits(
        logits, y, weight=class_weights.to(cls_score)[None],
        reduction='none')
    return reduce_roi_losses(bce.sum(1), reduction)


@MODELS.register_module()
class ECMLoss(ObjectnessClassifierMixin, nn.Module):
    """Effective Class-Margin loss (Cho and Kraehenbuehl, ECCV 2022) for RoI
    heads.

    Called as mmdet's RoI heads call their classification loss:
    ``loss(cls_score (N, C + 1), labels (N,), label_weights, avg_factor,
    reduction_override)`` with background label ``C``. As in the authors'
    code, the loss is divided by the number of RoIs N; ``label_weights``
    and ``avg_factor`` are accepted and ignored. The loss tells
    ``BBoxHead`` (Faster, Mask, Cascade and HTC) to build C + 1 outputs and
    to score with :meth:`get_activation`. The margins and weights are fixed
    by the training image counts; the method has no hyperparameter to tune
    besides ``fg_bg_ratio``.

    Args:
        num_classes (int): C, number of foreground classes.
        class_statistics (str | ClassStatistics | dict): the train set's
            statistics, ``n_c = image_count``: the LVIS train annotation file
            (``LongTailRunner`` passes it from ``train_dataloader.dataset``),
            or see :func:`~mmdet_longtail.datasets.load_class_statistics`.
        fg_bg_ratio (float): background count per foreground image count,
            ``n_bg = fg_bg_ratio * sum(n_c)``. Defaults to 6.3313, the
            authors' value measured on Mask R-CNN / LVIS v1.
        loss_weight (float): multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self,
                 num_classes: int,
                 class_statistics: Optional[StatisticsSource] = None,
                 fg_bg_ratio: float = FG_BG_RATIO,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        self.num_classes = check_num_classes('ECMLoss', num_classes)
        self.fg_bg_ratio = float(fg_bg_ratio)
        self.loss_weight = float(loss_weight)
        stats = load_class_statistics(class_statistics, self.num_classes,
                                      'ECMLoss')
        counts = ecm_sample_counts(stats.image_count, fg_bg_ratio,
                                   stats.source)
        m_pos, m_neg, weights = ecm_margins(counts)
        # derived from the dataset, so not part of checkpoints
        for name, value in (('pos_margin', m_pos), ('neg_margin', m_neg),
                            ('class_weights', weights)):
            self.register_buffer(
                name, torch.from_numpy(value), persistent=False)
        self.inputs = self.classifier_inputs('ECMLoss')

    def forward(self,
                cls_score: Tensor,
                labels: Tensor,
                label_weights: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None) -> Tensor:
        """ECM loss of logits (N, C + 1) and labels (N,) in [0, C], reduced
        as ``reduction_override`` says (default 'mean' = sum / N)."""
        reduction = self.inputs.check(
            cls_score, labels, reduction=reduction_override or 'mean')
        return self.loss_weight * ecm_loss(
            cls_score, labels, self.pos_margin - self.neg_margin,
            self.class_weights, reduction)

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, fg_bg_ratio='
                f'{self.fg_bg_ratio}, loss_weight={self.loss_weight}')
