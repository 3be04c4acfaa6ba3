"""FRACAL: post-hoc fractal calibration of detection scores.

Alexandridis et al., "Fractal Calibration for long-tailed object detection",
CVPR 2025 (code: https://github.com/kostas1515/FRACAL).

A classifier trained as usual is re-scored at test time with two per-class
terms from the training set: a frequency logit adjustment and the
box-counting (fractal) dimension ``D_c`` of the centres of the class's
training boxes (:mod:`mmdet_longtail.datasets.fractal_dimension`), which is
high for classes spread uniformly over image space. With ``n_c`` the
training images of class c, ``N`` the training images with an annotation and
C the number of classes::

    b_c = log10(N / n_c) - log10(C)                 (logit adjustment)

Softmax classifier (C + 1 logits, background last; Eq. of the paper's
softmax calibration: ``p_c = softmax(z + b)_c / D_c^lambda``, renormalised,
background b = 0 and D = 1)::

    p = softmax([z_c + a * b_c - lambda * ln D_c  (c < C),  z_bg])

which is exactly the authors' "softmax(z + b), divide by D^lambda,
renormalise" (the renormalisation cancels the first softmax's normaliser).

Sigmoid classifier (C logits, no background logit)::

    f_c = log10(mean_k(D_k^lambda) / D_c^lambda)
    p_c = sigmoid(z_c) * sigmoid(z_c + a * b_c + f_c)

``a`` (``logit_adjustment``, 1 in the paper) and ``lambda``
(``fractal_lambda``, 2 in the paper) are the loss's test-time scoring
settings (:mod:`mmdet_longtail.models.scoring_settings`): ``--cfg-options
model.roi_head.bbox_head.loss_cls.fractal_lambda=...`` (cascade heads:
``model.roi_head.bbox_head.2.loss_cls...``), ``set_scoring_settings`` on the
built loss, or swept from one network pass by
``tools/analysis_tools/sweep_scoring.py --fractal-lambda ...``.
``a = lambda = 0`` returns exactly the plain model's scores (softmax, or
sigmoid with a zero background column); for the sigmoid head this is the
plain ``sigmoid(z)``, not the product's ``sigmoid(z) ** 2`` (the same
ranking).

Training is unchanged: softmax cross-entropy over C + 1 columns (mmdet's
``CrossEntropyLoss``, so a baseline checkpoint loads as is) or, with
``use_sigmoid=True``, binary cross-entropy of C logits against one-hot
targets (background rows all zero) summed over classes and averaged over the
RoIs.
"""
import math
from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mmdet.models.losses import CrossEntropyLoss
from mmdet.registry import MODELS
from mmdet_longtail.datasets.class_stats import (ClassStatistics,
                                                 StatisticsSource,
                                                 load_class_statistics,
                                                 positive_image_counts)
from mmdet_longtail.datasets.fractal_dimension import get_fractal_dimensions
from ..scoring_settings import ScoringSettingsMixin
from .utils import (PlainClassifierMixin, check_num_classes,
                    foreground_targets, reduce_roi_losses, upcast_half,
                    with_zero_background)

OWNER = 'FRACALLoss'


def check_setting(value: float, name: str) -> float:
    """A finite test-time setting >= 0, with a clear error otherwise."""
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f'{OWNER}: {name} must be a finite number >= 0, '
                         f'got {value}')
    return value


def fracal_logit_adjustment(image_count: Sequence[int], num_images: int,
                            source: str = 'counts') -> np.ndarray:
    """``b_c = log10(N / n_c) - log10(C)`` of every class (float64 (C,))."""
    counts = positive_image_counts(image_count, OWNER,
                                   'the logit adjustment log10(N / n_c)',
                                   source)
    return np.log10(num_images / counts) - math.log10(counts.size)


def check_fractal_dimensions(dims: Sequence[float], num_classes: int,
                             source: str) -> np.ndarray:
    """``D_c`` as float64 (C,), finite and > 0."""
    dims = np.asarray(dims, dtype=np.float64)
    if dims.shape != (num_classes, ):
        raise ValueError(f'{OWNER}: fractal_dimensions must hold one value '
                         f'per class ({num_classes}), got shape {dims.shape} '
                         f'from {source}')
    bad = np.flatnonzero(~(np.isfinite(dims) & (dims > 0)))
    if bad.size:
        raise ValueError(f'{OWNER}: fractal dimensions must be finite and '
                         f'> 0; classes (labels) {bad[:10].tolist()} have '
                         f'{dims[bad[:10]].tolist()} in {source}')
    return dims


def fracal_softmax_shift(adjustment: np.ndarray, dims: np.ndarray,
                         logit_adjustment: float,
                         fractal_lambda: float) -> np.ndarray:
    """(C,) shift of the foreground logits: ``a * b_c - lambda * ln D_c``."""
    return logit_adjustment * adjustment - fractal_lambda * np.log(dims)


def fracal_sigmoid_shift(adjustment: np.ndarray, dims: np.ndarray,
                         logit_adjustment: float,
                         fractal_lambda: float) -> np.ndarray:
    """(C,) shift inside the second sigmoid: ``a * b_c + f_c`` with
    ``f_c = log10(mean_k(D_k^lambda) / D_c^lambda)``."""
    log_w = fractal_lambda * np.log(dims)  # ln D_c^lambda
    log_mean = np.logaddexp.reduce(log_w) - math.log(dims.size)
    return logit_adjustment * adjustment + (log_mean - log_w) / math.log(10)


def fracal_softmax_scores(cls_score: Tensor, shift: Tensor) -> Tensor:
    """(N, C + 1) softmax of the shifted foreground logits, bg last."""
    return F.softmax(
        torch.cat([cls_score[:, :-1] + shift.to(cls_score), cls_score[:, -1:]],
                  dim=1),
        dim=1)


def fracal_sigmoid_scores(cls_score: Tensor, shift: Tensor) -> Tensor:
    """(N, C + 1): ``sigmoid(z) * sigmoid(z + shift)``, zero bg last."""
    scores = torch.sigmoid(cls_score) * torch.sigmoid(cls_score +
                                                      shift.to(cls_score))
    return with_zero_background(scores)


def sigmoid_bce_loss(cls_score: Tensor, labels: Tensor,
                     reduction: str) -> Tensor:
    """Plain BCE of C logits, one-hot targets (bg rows zero), summed over
    classes, reduced over RoIs by :func:`reduce_roi_losses`."""
    cls_score = upcast_half(cls_score)
    num_classes = cls_score.size(1)
    y = foreground_targets(labels, num_classes, cls_score.dtype)
    bce = F.binary_cross_entropy_with_logits(cls_score, y, reduction='none')
    return reduce_roi_losses(bce.sum(1), reduction)


@MODELS.register_module()
class FRACALLoss(PlainClassifierMixin, ScoringSettingsMixin,
                 CrossEntropyLoss):
    """Plain training, FRACAL scores at test time (equations in the module
    docstring).

    Args:
        num_classes (int): C, number of foreground classes.
        class_statistics (str | ClassStatistics | dict, optional): the train
            set's statistics (``image_count``, ``num_images``): the LVIS
            train annotation file (``LongTailRunner`` passes it from
            ``train_dataloader.dataset``), from which the fractal dimensions
            are computed too, or see
            :func:`~mmdet_longtail.datasets.load_class_statistics`. Required
            when ``logit_adjustment > 0``.
        fractal_dimensions (Sequence[float], optional): D_c of every class,
            > 0. Defaults to None: computed from the annotation file of
            ``class_statistics`` (:func:`~mmdet_longtail.datasets.
            fractal_dimension.get_fractal_dimensions`, cached). Required
            when ``fractal_lambda > 0``.
        fractal_lambda (float): lambda, strength of the fractal term; 0
            turns it off. Defaults to 2.0 (the paper's).
        logit_adjustment (float): a, weight of the frequency adjustment;
            0 turns it off, 1 is the paper's. Defaults to 1.0.
        use_sigmoid (bool): C sigmoid logits (no background logit) instead
            of a C + 1 softmax. Defaults to False.
        loss_weight (float): multiplier of the training loss. Defaults to
            1.0.
        **kwargs: further arguments of mmdet's ``CrossEntropyLoss`` for the
            softmax head (``class_weight``, ``reduction``, ...).
    """

    SCORING_SETTINGS = ('fractal_lambda', 'logit_adjustment')

    def __init__(self,
                 num_classes: int,
                 class_statistics: Optional[StatisticsSource] = None,
                 fractal_dimensions: Optional[Sequence[float]] = None,
                 fractal_lambda: float = 2.0,
                 logit_adjustment: float = 1.0,
                 use_sigmoid: bool = False,
                 loss_weight: float = 1.0,
                 **kwargs) -> None:
        if kwargs.get('use_mask'):
            raise ValueError(f'{OWNER}: use_mask must be False')
        super().__init__(loss_weight=loss_weight, **kwargs)
        self.num_classes = check_num_classes(OWNER, num_classes)
        # mmdet's CrossEntropyLoss keeps its own flag; the sigmoid head is
        # ours (C logits), so the parent stays a softmax CE
        self.use_sigmoid = bool(use_sigmoid)
        self.stats: Optional[ClassStatistics] = None
        if class_statistics is not None:
            self.stats = load_class_statistics(class_statistics,
                                               self.num_classes, OWNER)
        self._dims: Optional[np.ndarray] = None
        if fractal_dimensions is not None:
            self._dims = check_fractal_dimensions(fractal_dimensions,
                                                  self.num_classes,
                                                  'fractal_dimensions')
        self._adjustment: Optional[np.ndarray] = None
        self._shift_key: Optional[tuple] = None
        self._shift: Optional[Tensor] = None
        # fail at build time, not at the first test image
        settings = self.check_scoring_settings(
            dict(fractal_lambda=fractal_lambda,
                 logit_adjustment=logit_adjustment))
        self.fractal_lambda = settings['fractal_lambda']
        self.logit_adjustment = settings['logit_adjustment']
        self.inputs = self.classifier_inputs(OWNER)

    def check_scoring_settings(self, settings: Dict[str, Any]
                               ) -> Dict[str, Any]:
        """Finite settings >= 0; ``logit_adjustment > 0`` needs the class
        statistics and ``fractal_lambda > 0`` the fractal dimensions."""
        checked = {name: check_setting(settings[name], name)
                   for name in self.SCORING_SETTINGS}
        if checked['logit_adjustment'] > 0:
            self.adjustment()
        if checked['fractal_lambda'] > 0:
            self.fractal_dimensions()
        return checked

    # statistics ----------------------------------------------------------
    def _statistics(self, what: str) -> ClassStatistics:
        if self.stats is None:
            load_class_statistics(None, self.num_classes, f'{OWNER} ({what})')
        return self.stats

    def adjustment(self) -> np.ndarray:
        """``b_c`` (float64 (C,)) from ``class_statistics``."""
        if self._adjustment is None:
            stats = self._statistics('logit_adjustment > 0')
            self._adjustment = fracal_logit_adjustment(
                stats.image_count, stats.num_images, stats.source)
        return self._adjustment

    def fractal_dimensions(self) -> np.ndarray:
        """``D_c`` (float64 (C,)): as given, or from the annotation file of
        ``class_statistics``."""
        if self._dims is None:
            stats = self._statistics('fractal_lambda > 0')
            if stats.source == 'counts':
                raise ValueError(
                    f'{OWNER}: fractal_lambda > 0 needs the box centres of '
                    f'the train annotation file: pass class_statistics as '
                    f'the file path, or fractal_dimensions')
            self._dims = check_fractal_dimensions(
                get_fractal_dimensions(stats.source), self.num_classes,
                stats.source)
        return self._dims

    @property
    def calibrated(self) -> bool:
        """False when both settings are 0: the plain model's scores."""
        return self.fractal_lambda != 0 or self.logit_adjustment != 0

    def logit_shift(self) -> Tensor:
        """(C,) float64 shift for the current settings (cached per
        (use_sigmoid, a, lambda); they may change between calls)."""
        a, lam = self.logit_adjustment, self.fractal_lambda
        key = (self.use_sigmoid, a, lam)
        if self._shift_key != key:
            b = self.adjustment() if a else np.zeros(self.num_classes)
            dims = self.fractal_dimensions() if lam else np.ones(
                self.num_classes)
            shift = fracal_sigmoid_shift if self.use_sigmoid else \
                fracal_softmax_shift
            self._shift = torch.from_numpy(shift(b, dims, a, lam))
            self._shift_key = key
        return self._shift

    # mmdet's custom-classifier protocol (the rest: PlainClassifierMixin) --
    def get_activation(self, cls_score: Tensor) -> Tensor:
        """FRACAL scores (N, C + 1), background last."""
        self.inputs.check_logits(cls_score)
        if not self.calibrated:
            return self.plain_scores(cls_score)
        logits = upcast_half(cls_score)
        if self.use_sigmoid:
            return fracal_sigmoid_scores(logits, self.logit_shift())
        return fracal_softmax_scores(logits, self.logit_shift())

    def forward(self,
                cls_score: Tensor,
                labels: Tensor,
                label_weights: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None,
                **kwargs) -> Tensor:
        """The plain training loss: mmdet's softmax cross-entropy, or for
        the sigmoid head BCE averaged over the RoIs (``label_weights`` and
        ``avg_factor`` ignored, as in EQL)."""
        reduction = self.inputs.check(
            cls_score, labels, label_weights,
            reduction_override or self.reduction)
        if self.use_sigmoid:
            return self.loss_weight * sigmoid_bce_loss(cls_score, labels,
                                                       reduction)
        # mmdet's cross-entropy, in float32 for half-precision logits
        return super().forward(
            upcast_half(cls_score),
            labels,
            label_weights,
            avg_factor=avg_factor,
            reduction_override=reduction_override,
            **kwargs)

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, use_sigmoid='
                f'{self.use_sigmoid}, fractal_lambda={self.fractal_lambda}, '
                f'logit_adjustment={self.logit_adjustment}, loss_weight='
                f'{self.loss_weight}')
