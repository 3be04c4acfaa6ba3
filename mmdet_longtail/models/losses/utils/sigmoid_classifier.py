"""What the sigmoid RoI classifiers without a background logit share: C
logits, one-hot targets where the background (label C) has no positive,
scores with a zero background column, accuracy over foreground RoIs."""
from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor

from mmdet.models.losses import accuracy


def foreground_targets(labels: Tensor, num_classes: int,
                       dtype: torch.dtype) -> Tensor:
    """(N, C) targets ``y_ij = [j == g_i]``; background RoIs (``g_i = C``)
    are all zero."""
    return F.one_hot(labels.long(),
                     num_classes + 1)[:, :num_classes].to(dtype)


def with_zero_background(scores: Tensor) -> Tensor:
    """(N, C) foreground scores as mmdet's (N, C + 1), background last."""
    return torch.cat([scores, scores.new_zeros(scores.size(0), 1)], dim=1)


def foreground_accuracy(cls_score: Tensor, labels: Tensor,
                        num_classes: int) -> Dict[str, Tensor]:
    """Top-1 accuracy (%) of the C logits over the foreground RoIs."""
    fg = labels < num_classes
    return dict(acc_classes=accuracy(cls_score[fg], labels[fg]))
