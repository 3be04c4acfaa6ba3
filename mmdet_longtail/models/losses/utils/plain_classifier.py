"""The custom-classifier protocol of a plain classifier, for losses that
change the training or the scores but keep the classifier of mmdet's
heads: C + 1 softmax logits (background last) or, with ``use_sigmoid``, C
sigmoid logits and no background logit."""
from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor

from mmdet.models.losses import accuracy
from .custom_classifier import ClassifierLayout, CustomClassifierMixin
from .inputs import ClassifierInputs
from .precision import upcast_half
from .sigmoid_classifier import (foreground_accuracy,
                                 sigmoid_classifier_inputs,
                                 with_zero_background)


class PlainClassifierMixin(CustomClassifierMixin):
    """C + 1 softmax outputs, or C sigmoid outputs when ``use_sigmoid``;
    scored by :meth:`plain_scores` unless the loss overrides
    :meth:`get_activation`. The loss sets ``self.inputs`` from
    :meth:`classifier_inputs`."""

    use_sigmoid: bool
    inputs: ClassifierInputs

    def classifier_inputs(self, owner: str) -> ClassifierInputs:
        """The input checks of :meth:`cls_channels` logits, errors named
        ``owner``."""
        if self.use_sigmoid:
            return sigmoid_classifier_inputs(owner, self.num_classes)
        return ClassifierInputs(
            owner, self.num_classes, self.num_classes + 1,
            f'C={self.num_classes} classes + background last')

    def cls_channels(self) -> int:
        """C sigmoid logits, or C + 1 softmax logits (background last)."""
        return self.num_classes + (0 if self.use_sigmoid else 1)

    def classifier_layout(self) -> ClassifierLayout:
        """As mmdet's plain sigmoid / softmax head."""
        if self.use_sigmoid:
            return ClassifierLayout.sigmoid(self.num_classes)
        return ClassifierLayout.softmax(self.num_classes)

    def plain_scores(self, cls_score: Tensor) -> Tensor:
        """Scores (N, C + 1), background last: the softmax, or the sigmoid
        with a zero background column; float32 for half-precision
        logits."""
        cls_score = upcast_half(cls_score)
        if self.use_sigmoid:
            return with_zero_background(torch.sigmoid(cls_score))
        return F.softmax(cls_score, dim=-1)

    def get_activation(self, cls_score: Tensor) -> Tensor:
        """:meth:`plain_scores`."""
        return self.plain_scores(cls_score)

    def get_accuracy(self, cls_score: Tensor,
                     labels: Tensor) -> Dict[str, Tensor]:
        """Accuracy (%) of all RoIs (softmax, as mmdet logs it for CE) or of
        the foreground RoIs (sigmoid, which has no background logit)."""
        if self.use_sigmoid:
            return foreground_accuracy(cls_score, labels, self.num_classes)
        return dict(acc=accuracy(cls_score, labels))
