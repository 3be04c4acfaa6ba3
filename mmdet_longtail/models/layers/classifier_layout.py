"""What each output of a classifier means: :class:`ClassifierLayout`.

A classifier weight has one row per output. Which row holds which class,
whether one holds the background, and what the other rows are depends on the
classification loss (softmax C + 1, sigmoid C, EQLv2's objectness, Seesaw's
two objectness rows, BAGS's groups with their "others" rows) and, for the
dense one-stage heads, on the number of priors per location. The component
that sizes the classifier knows its layout; :func:`classifier_layout` asks it,
so tools never infer the layout from a row count.

* A loss that sizes the classifier itself (mmdet's ``custom_cls_channels``)
  answers ``loss.classifier_layout()``;
* a stock mmdet ``BBoxHead`` without such a loss has C + 1 outputs,
  background last (softmax, or sigmoid with ``use_sigmoid=True``);
* mmdet's ``SeesawLoss``: C classes, then objectness (foreground,
  background);
* a dense head (RetinaNet, ATSS, ...) predicts ``cls_out_channels`` outputs
  for each of its ``num_base_priors`` priors: channel ``a * R + r`` of
  ``conv_cls`` is row ``r`` of prior ``a`` (mmdet permutes the map to
  ``(N, H, W, A * R)`` and reshapes it to ``(-1, R)``).
"""
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional, Sequence, Tuple

import numpy as np


@dataclass(frozen=True)
class ClassifierLayout:
    """The meaning of each of the ``num_rows`` outputs of a classifier.

    Every row is exactly one of: the row of a foreground class, the
    background row, or an extra row (named in ``extra_rows``).

    Attributes:
        kind (str): how the rows are scored: ``'softmax'``, ``'sigmoid'``,
            ``'seesaw'`` or ``'bags'``.
        num_rows (int): R, outputs (per prior).
        class_rows (tuple[int]): (C,) the row of each foreground class.
        background_row (int, optional): the background row; None when the
            classifier has none (sigmoid heads without a background logit,
            RetinaNet / ATSS).
        groups (tuple[tuple[int]]): rows of each softmax group when the
            outputs are split into several (BAGS, Seesaw); empty otherwise.
        extra_rows (tuple[tuple[int, str]]): ``(row, meaning)`` of the rows
            that are neither a class nor the background, ascending.
        num_priors (int): A, priors per location of a dense head (the
            classifier has ``A * R`` channels); 1 for RoI heads.
    """
    kind: str
    num_rows: int
    class_rows: Tuple[int, ...]
    background_row: Optional[int] = None
    groups: Tuple[Tuple[int, ...], ...] = ()
    extra_rows: Tuple[Tuple[int, str], ...] = ()
    num_priors: int = 1

    def __post_init__(self) -> None:
        # plain ints and tuples: layouts compare with == and hash
        object.__setattr__(self, 'class_rows',
                           tuple(int(r) for r in self.class_rows))
        object.__setattr__(self, 'groups',
                           tuple(tuple(int(r) for r in g)
                                 for g in self.groups))
        object.__setattr__(
            self, 'extra_rows',
            tuple(sorted((int(r), str(m)) for r, m in self.extra_rows)))
        if self.background_row is not None:
            object.__setattr__(self, 'background_row',
                               int(self.background_row))
        self._check()

    def _check(self) -> None:
        if self.num_priors < 1:
            raise ValueError(f'ClassifierLayout: num_priors must be >= 1, '
                             f'got {self.num_priors}')
        described = list(self.class_rows) + [r for r, _ in self.extra_rows]
        if self.background_row is not None:
            described.append(self.background_row)
        if sorted(described) != list(range(self.num_rows)):
            raise ValueError(
                f'ClassifierLayout: the class rows, the background row and '
                f'the extra rows must describe each of the {self.num_rows} '
                f'rows exactly once; got class_rows={self.class_rows}, '
                f'background_row={self.background_row}, '
                f'extra_rows={self.extra_rows}')
        grouped = [r for g in self.groups for r in g]
        if len(set(grouped)) != len(grouped) or \
                any(not 0 <= r < self.num_rows for r in grouped):
            raise ValueError(f'ClassifierLayout: groups must be disjoint '
                             f'rows in [0, {self.num_rows}), got '
                             f'{self.groups}')

    # -- constructors of the common layouts ----------------------------------

    @classmethod
    def softmax(cls, num_classes: int,
                num_priors: int = 1) -> 'ClassifierLayout':
        """C class rows, then the background row (mmdet's softmax heads)."""
        return cls('softmax', num_classes + 1, range(num_classes),
                   background_row=num_classes, num_priors=num_priors)

    @classmethod
    def sigmoid(cls, num_classes: int, background: bool = False,
                num_priors: int = 1) -> 'ClassifierLayout':
        """C sigmoid class rows, and with ``background`` a background
        (objectness) logit last."""
        return cls('sigmoid', num_classes + int(background),
                   range(num_classes),
                   background_row=num_classes if background else None,
                   num_priors=num_priors)

    @classmethod
    def seesaw(cls, num_classes: int) -> 'ClassifierLayout':
        """mmdet's Seesaw loss: a softmax over the C class rows and one over
        the two objectness rows (foreground, background)."""
        return cls('seesaw', num_classes + 2, range(num_classes),
                   background_row=num_classes + 1,
                   groups=(tuple(range(num_classes)),
                           (num_classes, num_classes + 1)),
                   extra_rows=((num_classes, 'objectness: foreground'), ))

    # -- derived quantities --------------------------------------------------

    @property
    def num_classes(self) -> int:
        """C, foreground classes."""
        return len(self.class_rows)

    @property
    def num_channels(self) -> int:
        """Outputs of the classifier layer, ``num_priors * num_rows``."""
        return self.num_priors * self.num_rows

    def class_channels(self) -> np.ndarray:
        """(A, C) channel of each class for each prior, ``a * R + row``."""
        priors = np.arange(self.num_priors)[:, None] * self.num_rows
        return priors + np.asarray(self.class_rows, dtype=np.int64)[None]

    def summary(self) -> str:
        """One line, e.g. ``'softmax: 6 rows = 5 classes + background'``."""
        parts = [f'{self.num_classes} classes']
        if self.background_row is not None:
            parts.append('background')
        if self.extra_rows:
            parts.append(f'{len(self.extra_rows)} extra')
        text = f'{self.kind}: {self.num_rows} rows = ' + ' + '.join(parts)
        if self.num_priors > 1:
            text += f', for each of {self.num_priors} priors'
        return text

    def check_param(self, shape: Sequence[int], key: str,
                    source: str) -> None:
        """Raise a clear error if a classifier parameter of ``shape`` (weight
        or bias, outputs first) does not have this layout's outputs.

        Args:
            shape (Sequence[int]): the parameter's shape.
            key (str): its state-dict key.
            source (str): the checkpoint it comes from.
        """
        shape = tuple(int(s) for s in shape)
        if shape and shape[0] == self.num_channels:
            return
        expected = (self.num_channels, ) + shape[1:]
        raise ValueError(
            f'{source}: {key} has shape {shape}, but the config describes '
            f'a classifier of shape {expected} ({self.summary()}); is the '
            f'config the one the checkpoint was trained with?')


def check_predictor(predictor: object, layout: ClassifierLayout) -> None:
    """Errors for a classifier layer whose own settings assume the
    background is the last row (``TauNormLinear(exclude_background=True)``,
    ``LWSLinear(scale_background=False)``) in a layout where it is not."""
    assumes_last = getattr(predictor, 'exclude_background', False) or \
        getattr(predictor, 'scale_background', True) is False
    if assumes_last and layout.background_row != layout.num_rows - 1:
        raise ValueError(
            f'{type(predictor).__name__} treats its last output as the '
            f'background, but the classifier layout ({layout.summary()}) '
            f'has the background at row {layout.background_row}; set '
            f'exclude_background=False / scale_background=True')


def _layout_getter(module: object
                   ) -> Optional[Callable[[], ClassifierLayout]]:
    """The function that gives ``module``'s layout, None if it has none."""
    from mmdet.models.losses import SeesawLoss
    from mmdet.models.roi_heads.bbox_heads import BBoxHead
    if callable(getattr(module, 'classifier_layout', None)):
        return module.classifier_layout
    if isinstance(module, BBoxHead):
        return partial(_bbox_head_layout, module)
    if hasattr(module, 'num_base_priors') and \
            hasattr(module, 'cls_out_channels'):
        return partial(_dense_head_layout, module)
    if isinstance(module, SeesawLoss):
        return partial(ClassifierLayout.seesaw, module.num_classes)
    return None


def describes_classifier(module: object) -> bool:
    """Whether :func:`classifier_layout` can answer for ``module``."""
    return _layout_getter(module) is not None


def classifier_layout(module: object) -> ClassifierLayout:
    """The layout of the classifier of a head, or of the classifier a loss
    sizes.

    Args:
        module: anything with a ``classifier_layout()`` method (the losses
            of this package), a box head (mmdet ``BBoxHead`` and its
            subclasses), a dense head with ``cls_out_channels`` and
            ``num_base_priors`` (``RetinaHead``, ``ATSSHead``, ...) or
            mmdet's ``SeesawLoss``.

    Raises:
        TypeError: ``module`` does not describe a classifier.
        ValueError: the layout disagrees with the classifier that was built.
    """
    getter = _layout_getter(module)
    if getter is None:
        raise TypeError(f'{type(module).__name__} does not describe a '
                        f'classifier layout: pass a box head, a dense head '
                        f'or a classification loss with classifier_layout()')
    return getter()


def _bbox_head_layout(head) -> ClassifierLayout:
    """mmdet's ``BBoxHead``: the loss's layout when it sizes the classifier
    (``custom_cls_channels``), else C + 1 outputs, background last."""
    loss = head.loss_cls
    if head.custom_cls_channels:
        try:
            layout = classifier_layout(loss)
        except TypeError:
            raise TypeError(
                f'{type(head).__name__}: its loss {type(loss).__name__} sizes '
                f'the classifier (custom_cls_channels) but does not describe '
                f'its layout; give it a classifier_layout() method') from None
        channels = loss.get_cls_channels(head.num_classes)
        if layout.num_rows != channels:
            raise ValueError(
                f'{type(loss).__name__}: get_cls_channels() gives {channels} '
                f'outputs but its layout has {layout.num_rows} '
                f'({layout.summary()})')
    elif getattr(loss, 'use_sigmoid', False):
        layout = ClassifierLayout.sigmoid(head.num_classes, background=True)
    else:
        layout = ClassifierLayout.softmax(head.num_classes)
    if layout.num_classes != head.num_classes:
        raise ValueError(f'{type(head).__name__} has {head.num_classes} '
                         f'classes but its classifier layout has '
                         f'{layout.num_classes} ({layout.summary()})')
    if getattr(head, 'with_cls', True):
        check_predictor(head.fc_cls, layout)
    return layout


def _dense_head_layout(head) -> ClassifierLayout:
    """A dense head: ``cls_out_channels`` outputs for each prior; sigmoid
    heads have one per class, softmax heads add the background last."""
    use_sigmoid = bool(getattr(head, 'use_sigmoid_cls', False))
    if use_sigmoid:
        layout = ClassifierLayout.sigmoid(
            head.num_classes, num_priors=head.num_base_priors)
    else:
        layout = ClassifierLayout.softmax(
            head.num_classes, num_priors=head.num_base_priors)
    if head.cls_out_channels != layout.num_rows:
        raise ValueError(
            f'{type(head).__name__}: cls_out_channels='
            f'{head.cls_out_channels}, but a '
            f'{"sigmoid" if use_sigmoid else "softmax"} head with '
            f'{head.num_classes} classes has {layout.num_rows}; give the '
            f'head a classifier_layout() method')
    return layout
