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
"""
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmdet.registry import MODELS
from mmdet_longtail.datasets.class_stats import (StatisticsSource,
                                                 load_class_statistics)
from .utils import (SigmoidClassifierMixin, check_num_classes,
                    foreground_targets, reduce_roi_losses, upcast_half)


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
        cls_score (Tensor): logits (N, C); float16 / bfloat16 logits are
            computed in float32, float64 in float64.
        labels (Tensor): (N,) in ``[0, C]``, C = background.
        tail_classes (Tensor): (C,) bool or 0/1, ``T_lambda(f_j)``.
        reduction (str): 'none' (per RoI, e.g. for OHEM), 'sum' or 'mean'
            (sum / N). Defaults to 'mean'.
    """
    cls_score = upcast_half(cls_score)
    num_classes = cls_score.size(1)
    # y_ij = [j == g_i]; background RoIs (g_i = C) have no positive
    y = foreground_targets(labels, num_classes, cls_score.dtype)
    # E(i) = 1 for a foreground RoI, 0 for a background one
    is_foreground = (labels < num_classes).to(cls_score.dtype)[:, None]
    tail = tail_classes.to(cls_score.dtype)[None]
    w = 1 - is_foreground * tail * (1 - y)
    bce = F.binary_cross_entropy_with_logits(
        cls_score, y, weight=w, reduction='none')
    return reduce_roi_losses(bce.sum(1), reduction)


@MODELS.register_module()
class EQLoss(SigmoidClassifierMixin, nn.Module):
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
        class_statistics (str | ClassStatistics | dict): the train set's
            statistics, f_j = ``image_count / num_images``: the LVIS train
            annotation file (``LongTailRunner`` passes it from
            ``train_dataloader.dataset``), or see
            :func:`~mmdet_longtail.datasets.load_class_statistics`.
        loss_weight (float): multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self,
                 num_classes: int,
                 lambda_threshold: float,
                 class_statistics: Optional[StatisticsSource] = None,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        self.num_classes = check_num_classes('EQLoss', num_classes)
        lambda_threshold = float(lambda_threshold)
        if not np.isfinite(lambda_threshold) or lambda_threshold < 0:
            raise ValueError(f'EQLoss: lambda_threshold must be a finite '
                             f'number >= 0, got {lambda_threshold}')
        self.lambda_threshold = lambda_threshold
        self.loss_weight = float(loss_weight)
        stats = load_class_statistics(class_statistics, self.num_classes,
                                      'EQLoss')
        tail = eql_tail_classes(stats.image_freq, lambda_threshold)
        # derived from the dataset, so not part of checkpoints
        self.register_buffer(
            'tail_classes', torch.from_numpy(tail), persistent=False)
        self.inputs = self.classifier_inputs('EQLoss')

    def forward(self,
                cls_score: Tensor,
                labels: Tensor,
                label_weights: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None) -> Tensor:
        """EQL of logits (N, C) and labels (N,) in [0, C], reduced as
        ``reduction_override`` says (default 'mean', see
        :func:`reduce_roi_losses`)."""
        reduction = self.inputs.check(
            cls_score, labels, reduction=reduction_override or 'mean')
        return self.loss_weight * eql_loss(cls_score, labels,
                                           self.tail_classes, reduction)

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, lambda_threshold='
                f'{self.lambda_threshold}, tail classes='
                f'{int(self.tail_classes.sum())}, loss_weight='
                f'{self.loss_weight}')
