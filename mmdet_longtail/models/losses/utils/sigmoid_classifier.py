"""What the sigmoid RoI classifiers share, and their side of mmdet's
custom-classifier protocol.

* :class:`SigmoidClassifierMixin`: C logits, no background logit (EQL, GOL,
  ACSL, the federated loss): one-hot targets where the background (label C)
  has no positive, scores with a zero background column, accuracy over
  the foreground RoIs.
* :class:`ObjectnessClassifierMixin`: C class logits and a background
  (objectness) logit last (EQLv2, ECM): class scores gated by the
  objectness, and its accuracy.
"""
from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor

from mmdet.models.losses import accuracy
from .custom_classifier import ClassifierLayout, CustomClassifierMixin
from .inputs import ClassifierInputs
from .precision import upcast_half


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



def sigmoid_classifier_inputs(owner: str,
                              num_classes: int) -> ClassifierInputs:
    """The input checks of C sigmoid logits without a background logit,
    errors named ``owner``."""
    return ClassifierInputs(owner, num_classes, num_classes,
                            f'C={num_classes} classes, no background logit')


class SigmoidClassifierMixin(CustomClassifierMixin):
    """The protocol for C logits without a background logit, each scored
    on its own (:meth:`class_scores`, the sigmoid unless overridden), with
    a zero background column. The loss sets ``self.inputs`` from
    :meth:`classifier_inputs`."""

    inputs: ClassifierInputs

    def classifier_inputs(self, owner: str) -> ClassifierInputs:
        """The input checks of C logits, errors named ``owner``."""
        return sigmoid_classifier_inputs(owner, self.num_classes)

    def cls_channels(self) -> int:
        """C outputs: one logit per class, no background logit."""
        return self.num_classes

    def classifier_layout(self) -> ClassifierLayout:
        """Class c in row c, no background row."""
        return ClassifierLayout.sigmoid(self.num_classes)

    def class_scores(self, cls_score: Tensor) -> Tensor:
        """(N, C) probability of each class: ``sigmoid(z_c)``."""
        return torch.sigmoid(cls_score)

    def get_activation(self, cls_score: Tensor) -> Tensor:
        """Scores (N, C + 1): :meth:`class_scores`, zero background column
        last."""
        self.inputs.check_logits(cls_score)
        return with_zero_background(self.class_scores(upcast_half(cls_score)))

    def get_accuracy(self, cls_score: Tensor,
                     labels: Tensor) -> Dict[str, Tensor]:
        """Classification accuracy (%) of the foreground RoIs."""
        return foreground_accuracy(cls_score, labels, self.num_classes)


class ObjectnessClassifierMixin(CustomClassifierMixin):
    """The protocol for C class logits and a background (objectness) logit
    last, all sigmoid: class c scores ``sigmoid(z_c) * (1 -
    sigmoid(z_bg))``. The loss sets ``self.inputs`` from
    :meth:`classifier_inputs`."""

    inputs: ClassifierInputs

    def classifier_inputs(self, owner: str) -> ClassifierInputs:
        """The input checks of C + 1 logits, errors named ``owner``."""
        return ClassifierInputs(
            owner, self.num_classes, self.num_classes + 1,
            f'C={self.num_classes} classes + 1 background logit last')

    def cls_channels(self) -> int:
        """C + 1 outputs: C class logits and the background logit last."""
        return self.num_classes + 1

    def classifier_layout(self) -> ClassifierLayout:
        """Class c in row c, the background (objectness) logit last."""
        return ClassifierLayout.sigmoid(self.num_classes, background=True)

    def get_activation(self, cls_score: Tensor) -> Tensor:
        """Scores (N, C + 1): ``sigmoid(z_c) * (1 - sigmoid(z_bg))`` for the
        classes, ``sigmoid(z_bg)`` last."""
        self.inputs.check_logits(cls_score)
        scores = torch.sigmoid(upcast_half(cls_score))
        background = scores[:, -1:]
        return torch.cat([scores[:, :-1] * (1 - background), background],
                         dim=1)

    def get_accuracy(self, cls_score: Tensor,
                     labels: Tensor) -> Dict[str, Tensor]:
        """Accuracy (%) of the background logit on all RoIs (background
        when ``sigmoid(z_bg) > 0.5``) and of the class logits on the
        foreground RoIs."""
        is_background = labels == self.num_classes
        hits = ((cls_score[:, -1] > 0) == is_background).float()
        acc_objectness = hits.mean() * 100 if labels.numel() \
            else cls_score.new_tensor(0.)
        fg = ~is_background
        return dict(acc_objectness=acc_objectness,
                    acc_classes=accuracy(cls_score[fg, :-1], labels[fg]))
