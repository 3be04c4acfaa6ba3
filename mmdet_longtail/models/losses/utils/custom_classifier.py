"""mmdet's custom-classifier protocol of ``BBoxHead``, in one place.

mmdet 3.3's ``BBoxHead`` asks its classification loss three questions:

* ``custom_cls_channels``: does the loss size the classifier? Then ``fc_cls``
  gets ``loss_cls.get_cls_channels(num_classes)`` outputs, and inference
  scores with ``loss_cls.get_activation(cls_score)`` (N x (C + 1),
  background last) instead of a softmax.
* ``custom_activation``: do the cascade heads apply ``get_activation``
  before their arg-max, and does ``loss()`` log ``get_accuracy``?
* ``custom_accuracy``: does ``get_accuracy(cls_score, labels)`` return the
  accuracies to log (a dict)?

Using the protocol is what makes a loss work in Faster, Mask, Cascade and
HTC heads alike. A loss that sizes the classifier also says what each output
is (:meth:`CustomClassifierMixin.classifier_layout`), for the tools that read
classifier weights.
"""
from typing import Dict

from torch import Tensor

from mmdet_longtail.models.layers.classifier_layout import ClassifierLayout


class CustomClassifierMixin:
    """The protocol's flags and ``get_cls_channels`` for a loss that has
    ``num_classes`` (C) and implements :meth:`cls_channels`,
    :meth:`classifier_layout`, :meth:`get_activation` and
    :meth:`get_accuracy`. Put it before
    ``nn.Module`` (or the loss class it extends) in the bases."""

    custom_cls_channels = True
    custom_activation = True
    custom_accuracy = True

    num_classes: int

    def cls_channels(self) -> int:
        """Number of classifier outputs for the loss's C classes."""
        raise NotImplementedError

    def get_cls_channels(self, num_classes: int) -> int:
        """Classifier outputs for a head with ``num_classes`` classes, which
        must be the loss's own C."""
        if num_classes != self.num_classes:
            raise ValueError(f'{type(self).__name__}: num_classes='
                             f'{self.num_classes} but the head has '
                             f'{num_classes} classes')
        return self.cls_channels()

    def classifier_layout(self) -> ClassifierLayout:
        """What each of the :meth:`cls_channels` outputs is."""
        raise NotImplementedError(
            f'{type(self).__name__} does not describe its classifier layout')

    def get_activation(self, cls_score: Tensor) -> Tensor:
        """Scores (N, C + 1), background last, from the logits."""
        raise NotImplementedError

    def get_accuracy(self, cls_score: Tensor,
                     labels: Tensor) -> Dict[str, Tensor]:
        """Accuracies (%) to log during training."""
        raise NotImplementedError
