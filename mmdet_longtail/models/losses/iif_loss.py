"""Inverse Image Frequency (IIF) weighted softmax for RoI classifiers.

Alexandridis et al., "Inverse Image Frequency for Long-tailed Image
Recognition", IEEE Transactions on Image Processing (TIP), 2023; authors'
code: https://github.com/kostas1515/iif

The classifier has C + 1 softmax logits, background last. Each foreground
logit is multiplied by the inverse image frequency of its class, the
background logit by 1, and the softmax cross-entropy is taken on the scaled
logits::

    w_c  = log_b(N / n_c)        (c < C),        w_bg = 1
    z'_c = w_c * z_c
    L    = CE(softmax(z'), y)

``n_c`` is the number of training images that contain class c, ``N`` the
number of training images with at least one annotation, ``b`` the log base
(``e`` in the paper; 2 and 10 are the authors' variants). Rare classes get
the largest weights, which sharpens their logits. The same scaling is
applied at test time: the scores are ``softmax(w * z)``, background last.
The gradient is ``dL/dz_c = w_c (softmax(z')_c - y_c)``.

The loss is reduced as mmdet's ``CrossEntropyLoss`` (``label_weights`` and
``avg_factor``), so with every ``w_c = 1`` it is the softmax baseline.
"""
import math
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmdet.models.losses import accuracy
from mmdet.models.losses.utils import weight_reduce_loss
from mmdet.registry import MODELS
from mmdet_longtail.datasets.class_stats import (StatisticsSource,
                                                 load_class_statistics,
                                                 positive_image_counts)
from .utils import PlainClassifierMixin, check_num_classes, upcast_half

IIF_LOG_BASES = ('e', 2, 10)


def check_log_base(log_base: Union[str, float]) -> float:
    """``ln(b)`` of a log base in :data:`IIF_LOG_BASES`."""
    if log_base == 'e':
        return 1.0
    if log_base in (2, 10) and not isinstance(log_base, bool):
        return math.log(log_base)
    raise ValueError(f"IIFLoss: log_base must be one of {IIF_LOG_BASES} "
                     f"('e': natural log, the paper's), got {log_base!r}")


def iif_weights(image_count: Sequence[int],
                num_images: int,
                log_base: Union[str, float] = 'e',
                source: str = 'counts') -> np.ndarray:
    """Logit weights (C + 1,) float64: ``log_b(N / n_c)`` per class, then 1
    for the background.

    Args:
        image_count (Sequence[int]): n_c, training images of each class;
            every entry must lie in ``[1, N]``.
        num_images (int): N, training images with an annotation.
        log_base ('e' | 2 | 10): b. Defaults to 'e'.
        source (str): where the counts come from, for error messages.
    """
    log_of_base = check_log_base(log_base)
    counts = positive_image_counts(image_count, 'IIFLoss',
                                   'w_c = log(N / n_c)', source)
    too_many = np.flatnonzero(counts > num_images)
    if too_many.size:
        raise ValueError(
            f'IIFLoss: classes (labels) {too_many[:10].tolist()} are in more '
            f'images than the {num_images} training images of {source}')
    weights = np.log(num_images / counts) / log_of_base
    return np.append(weights, 1.0)


def iif_scaled_logits(cls_score: Tensor, weights: Tensor) -> Tensor:
    """``w * z`` (N, C + 1) in the logits' dtype (half upcast)."""
    cls_score = upcast_half(cls_score)
    return cls_score * weights.to(cls_score)[None]


def iif_loss(cls_score: Tensor,
             labels: Tensor,
             weights: Tensor,
             label_weights: Optional[Tensor] = None,
             reduction: str = 'mean',
             avg_factor: Optional[float] = None) -> Tensor:
    """IIF loss: softmax cross-entropy of the scaled logits ``w * z``.

    Args:
        cls_score (Tensor): logits (N, C + 1), background last.
        labels (Tensor): (N,) in ``[0, C]``, C = background.
        weights (Tensor): (C + 1,) logit weights, background last.
        label_weights (Tensor, optional): (N,) per-RoI weights.
        reduction (str): 'none', 'sum' or 'mean' (sum / ``avg_factor``
            when given, else the mean), as mmdet's ``CrossEntropyLoss``.
        avg_factor (float, optional): normaliser of 'mean'.
    """
    ce = F.cross_entropy(
        iif_scaled_logits(cls_score, weights), labels.long(),
        reduction='none')
    if label_weights is not None:
        label_weights = label_weights.reshape(-1).to(ce)
    return weight_reduce_loss(
        ce, label_weights, reduction=reduction, avg_factor=avg_factor)


@MODELS.register_module()
class IIFLoss(PlainClassifierMixin, nn.Module):
    """Inverse Image Frequency softmax loss (Alexandridis et al., TIP 2023)
    for RoI heads.

    Called as mmdet's RoI heads call their classification loss:
    ``loss(cls_score (N, C + 1), labels (N,), label_weights, avg_factor,
    reduction_override)`` with background label ``C``; reduced as mmdet's
    ``CrossEntropyLoss``. The loss tells ``BBoxHead`` (Faster, Mask,
    Cascade and HTC) to build C + 1 outputs and to score with
    :meth:`get_activation`, the softmax of the scaled logits.

    The authors initialise ``fc_cls`` to the constant 0.001 with a zero
    bias; the configs do this with the head's ``init_cfg``
    (``configs/iif/_base_/iif-cls-init.py``).

    Args:
        num_classes (int): C, number of foreground classes.
        class_statistics (str | ClassStatistics | dict): the train set's
            statistics, ``n_c = image_count`` and ``N = num_images``: the
            LVIS train annotation file (``LongTailRunner`` passes it from
            ``train_dataloader.dataset``), or see
            :func:`~mmdet_longtail.datasets.load_class_statistics`.
        log_base ('e' | 2 | 10): base of the logarithm of the weights.
            Defaults to 'e' (the paper's).
        loss_weight (float): multiplier of the loss. Defaults to 1.0.
    """

    #: C + 1 softmax outputs, background last (PlainClassifierMixin)
    use_sigmoid = False

    def __init__(self,
                 num_classes: int,
                 class_statistics: Optional[StatisticsSource] = None,
                 log_base: Union[str, float] = 'e',
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        self.num_classes = check_num_classes('IIFLoss', num_classes)
        check_log_base(log_base)
        self.log_base = log_base
        self.loss_weight = float(loss_weight)
        stats = load_class_statistics(class_statistics, self.num_classes,
                                      'IIFLoss')
        weights = iif_weights(stats.image_count, stats.num_images, log_base,
                              stats.source)
        # derived from the dataset, so not part of checkpoints
        self.register_buffer(
            'logit_weights', torch.from_numpy(weights), persistent=False)
        self.inputs = self.classifier_inputs('IIFLoss')

    def get_activation(self, cls_score: Tensor) -> Tensor:
        """Scores (N, C + 1): ``softmax(w * z)``, background last."""
        self.inputs.check_logits(cls_score)
        return F.softmax(
            iif_scaled_logits(cls_score, self.logit_weights), dim=-1)

    def get_accuracy(self, cls_score: Tensor,
                     labels: Tensor) -> Dict[str, Tensor]:
        """Accuracy (%) of the scaled logits on all RoIs, as mmdet logs it
        for a softmax head."""
        return dict(
            acc=accuracy(
                iif_scaled_logits(cls_score, self.logit_weights), labels))

    def forward(self,
                cls_score: Tensor,
                labels: Tensor,
                label_weights: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None) -> Tensor:
        """IIF loss of logits (N, C + 1) and labels (N,) in [0, C]."""
        reduction = self.inputs.check(
            cls_score, labels, label_weights,
            reduction=reduction_override or 'mean')
        return self.loss_weight * iif_loss(cls_score, labels,
                                           self.logit_weights, label_weights,
                                           reduction, avg_factor)

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, log_base={self.log_base!r}'
                f', loss_weight={self.loss_weight}')
