"""One check of what a classification loss is given.

Each loss describes its inputs once (``ClassifierInputs(...)`` in its
``__init__``) and checks them at every call. An error names the loss, the
argument and the bad value, e.g. ``EQLoss: labels must lie in [0, 3] (0..2
foreground, 3 background), found 4``.
"""
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .reduction import check_reduction

#: the usual cause of a wrong number of logits: a classifier not sized by
#: the loss (mmdet's custom-classifier protocol)
SIZED_BY_THE_LOSS = ('build the classifier through the loss (BBoxHead uses '
                     'loss_cls.get_cls_channels)')


def check_num_classes(owner: str, num_classes: int) -> int:
    """C as an int >= 1, or an error naming the loss ``owner``."""
    if int(num_classes) < 1:
        raise ValueError(f'{owner}: num_classes must be >= 1, got '
                         f'{num_classes}')
    return int(num_classes)


@dataclass(frozen=True)
class ClassifierInputs:
    """What a classification loss accepts.

    Args:
        owner (str): the loss's name, first word of every message.
        num_classes (int): C, foreground classes; labels lie in ``[0, C]``
            with C the background (mmdet's convention).
        num_columns (int): K, logits per row of ``cls_score``.
        layout (str): what the K logits are, for the shape message, e.g.
            ``'C=3 classes, no background logit'``.
        hint (str): how to fix a wrong number of logits, appended to the
            shape message. Defaults to :data:`SIZED_BY_THE_LOSS`.
        weights_per_logit (bool): ``label_weights`` may also hold one weight
            per logit (N x K), not only one per row. Defaults to False.
    """
    owner: str
    num_classes: int
    num_columns: int
    layout: str
    hint: str = SIZED_BY_THE_LOSS
    weights_per_logit: bool = False

    def check_logits(self, cls_score: Tensor) -> None:
        """``cls_score`` is (N, K) and finite."""
        if cls_score.dim() != 2 or cls_score.size(1) != self.num_columns:
            hint = f'; {self.hint}' if self.hint else ''
            raise ValueError(
                f'{self.owner}: expects {self.num_columns} logits '
                f'({self.layout}), so cls_score must be (N, '
                f'{self.num_columns}); got {tuple(cls_score.shape)}{hint}')
        if not bool(torch.isfinite(cls_score).all()):
            bad = cls_score[~torch.isfinite(cls_score)][0].item()
            raise ValueError(
                f'{self.owner}: cls_score is not finite (found {bad}); the '
                f'classifier diverged or its input is broken')

    def check(self,
              cls_score: Tensor,
              labels: Tensor,
              label_weights: Optional[Tensor] = None,
              reduction: str = 'mean') -> str:
        """Check a call ``loss(cls_score, labels, label_weights, ...,
        reduction)``: ``cls_score`` as in :meth:`check_logits`; ``labels``
        (N,) integers in ``[0, C]``; ``label_weights`` (if given) one per row
        (or per logit) and >= 0; ``reduction`` one of 'none', 'mean', 'sum'.

        Returns:
            str: ``reduction``.
        """
        check_reduction(reduction, self.owner)
        self.check_logits(cls_score)
        num = cls_score.size(0)
        if labels.dim() != 1 or labels.numel() != num:
            raise ValueError(
                f'{self.owner}: labels must be ({num},), one per row of '
                f'cls_score {tuple(cls_score.shape)}; got '
                f'{tuple(labels.shape)}')
        if labels.dtype.is_floating_point or labels.dtype.is_complex or \
                labels.dtype == torch.bool:
            raise ValueError(f'{self.owner}: labels must be integers, got '
                             f'{labels.dtype}')
        bad_labels = labels[(labels < 0) | (labels > self.num_classes)]
        if bad_labels.numel():
            classes = self.num_classes
            raise ValueError(
                f'{self.owner}: labels must lie in [0, {classes}] (0..'
                f'{classes - 1} foreground, {classes} background), found '
                f'{bad_labels[0].item()}')
        if label_weights is not None:
            self._check_weights(label_weights, num)
        return reduction

    def _check_weights(self, label_weights: Tensor, num: int) -> None:
        sizes = (num, num * self.num_columns) if self.weights_per_logit \
            else (num, )
        if label_weights.numel() not in sizes:
            what = f'one per row ({num})'
            if self.weights_per_logit:
                what += f' or one per logit ({num * self.num_columns})'
            raise ValueError(
                f'{self.owner}: label_weights must hold {what}, got '
                f'{tuple(label_weights.shape)}')
        if label_weights.numel() and not bool((label_weights >= 0).all()):
            bad = label_weights[~(label_weights >= 0)].flatten()[0].item()
            raise ValueError(f'{self.owner}: label_weights must be >= 0, '
                             f'found {bad}')
