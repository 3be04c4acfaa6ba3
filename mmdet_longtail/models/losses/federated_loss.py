"""Federated loss for sigmoid RoI classifiers.

Zhou et al., "Probabilistic two-stage detection" (CenterNet2), 2021,
https://arxiv.org/abs/2103.07461, Sec. 5 / App. (the federated loss of the
LVIS challenge entry); the idea of evaluating only the classes a federated
dataset labels comes from Gupta et al., "LVIS", CVPR 2019.

The classifier has one sigmoid logit per foreground class (C outputs, no
background logit). For RoI i with label ``g_i`` (``C`` = background) the
target is ``y_ij = [j == g_i]`` (background rows are all zero). Each
training step restricts the binary cross-entropy to a class set S::

    L = 1/N * sum_i sum_{j in S} BCE(z_ij, y_ij)

    P = {g_i : g_i < C}              the classes present in the batch
    S = P + a sample of max(0, K - |P|) classes outside P, drawn without
        replacement with probability proportional to n_j ** alpha

``n_j`` is the number of training images of class j, ``K = 50`` and
``alpha = 0.5`` (the authors' defaults), and N is the number of RoIs.
Columns outside S get neither loss nor gradient. At test time the score of
class j is ``sigmoid(z_j)`` and a zero background column is appended, so
mmdet's heads get N x (C + 1) scores.

The draw of step s on rank r is keyed by (seed, r, s) (see
:class:`~mmdet_longtail.models.losses.utils.SeededSampling`): runs reproduce,
and ``--resume`` continues the same draws.
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
from .utils import (SeededSampling, SigmoidClassifierMixin, check_num_classes,
                    foreground_targets, reduce_roi_losses, upcast_half)


def federated_class_weights(image_count: Sequence[int],
                            power: float = 0.5,
                            source: str = 'counts') -> np.ndarray:
    """Sampling weights ``n_j ** power`` of the negative classes (float64).

    Every class needs at least one training image: a class that never occurs
    could never be a present class, and its logit would only be pushed down.
    """
    counts = np.asarray(image_count, dtype=np.float64)
    if counts.ndim != 1 or not np.isfinite(counts).all():
        raise ValueError(f'FederatedLoss: image_count must be C finite '
                         f'counts, got shape {counts.shape} from {source}')
    bad = np.flatnonzero(counts < 1)
    if bad.size:
        raise ValueError(
            f'FederatedLoss needs a training image count >= 1 for every '
            f'class; classes (labels) {bad[:10].tolist()} have '
            f'{counts[bad[:10]].tolist()} images in {source}')
    return counts**power


def sample_federated_classes(labels: np.ndarray, class_weights: np.ndarray,
                             num_sample_classes: int,
                             rng: np.random.Generator) -> np.ndarray:
    """The class set S of one step, as a bool mask (C,).

    Args:
        labels (np.ndarray): (N,) RoI labels in ``[0, C]``, C = background.
        class_weights (np.ndarray): (C,) sampling weights, > 0.
        num_sample_classes (int): K; negatives are added until |S| = K (all
            classes when C <= K). Present classes are never dropped, so
            |S| = max(K, |P|).
        rng (np.random.Generator): source of the draw.
    """
    num_classes = class_weights.size
    selected = np.zeros(num_classes, dtype=bool)
    selected[labels[labels < num_classes]] = True
    num_negatives = min(num_sample_classes, num_classes) - int(selected.sum())
    if num_negatives > 0:
        candidates = np.flatnonzero(~selected)
        weights = class_weights[candidates]
        drawn = rng.choice(
            candidates,
            num_negatives,
            replace=False,
            p=weights / weights.sum())
        selected[drawn] = True
    return selected


def federated_loss(cls_score: Tensor,
                   labels: Tensor,
                   class_mask: Tensor,
                   reduction: str = 'mean') -> Tensor:
    """Sigmoid BCE of C logits restricted to the classes in ``class_mask``.

    Args:
        cls_score (Tensor): logits (N, C); float16 / bfloat16 logits are
            computed in float32, float64 in float64.
        labels (Tensor): (N,) in ``[0, C]``, C = background.
        class_mask (Tensor): (C,) bool or 0/1, the class set S.
        reduction (str): 'none' (per RoI), 'sum' or 'mean' (sum / N).
    """
    cls_score = upcast_half(cls_score)
    num_classes = cls_score.size(1)
    y = foreground_targets(labels, num_classes, cls_score.dtype)
    w = class_mask.to(cls_score.dtype)[None].expand_as(cls_score)
    bce = F.binary_cross_entropy_with_logits(
        cls_score, y, weight=w, reduction='none')
    return reduce_roi_losses(bce.sum(1), reduction)


@MODELS.register_module()
class FederatedLoss(SigmoidClassifierMixin, SeededSampling, nn.Module):
    """Federated loss (Zhou et al., CenterNet2,
    https://arxiv.org/abs/2103.07461) for RoI heads.

    Called as mmdet's RoI heads call their classification loss:
    ``loss(cls_score (N, C), labels (N,), label_weights, avg_factor,
    reduction_override)`` with background label ``C``. As in the authors'
    code (detectron2's ``FastRCNNOutputLayers`` with ``use_fed_loss``), the
    loss is normalised by the number of RoIs N; ``label_weights`` and
    ``avg_factor`` are accepted and ignored. The loss tells ``BBoxHead``
    (Faster, Mask, Cascade and HTC) to build C outputs and to score with
    :meth:`get_activation` (sigmoid, zero background column).

    Args:
        num_classes (int): C, number of foreground classes.
        class_statistics (str | ClassStatistics | dict): the train set's
            statistics, ``n_j = image_count``: the LVIS train annotation file
            (``LongTailRunner`` passes it from ``train_dataloader.dataset``),
            or see :func:`~mmdet_longtail.datasets.load_class_statistics`.
        num_sample_classes (int): K, size of the class set per step.
            Defaults to 50.
        freq_weight_power (float): alpha; negatives are drawn with
            probability proportional to ``n_j ** alpha``. Defaults to 0.5.
        loss_weight (float): multiplier of the loss. Defaults to 1.0.
        seed (int, optional): seed of the draws. Defaults to None: the run's
            seed, ``torch.initial_seed()``, read at the first call.
    """

    def __init__(self,
                 num_classes: int,
                 class_statistics: Optional[StatisticsSource] = None,
                 num_sample_classes: int = 50,
                 freq_weight_power: float = 0.5,
                 loss_weight: float = 1.0,
                 seed: Optional[int] = None) -> None:
        super().__init__()
        num_classes = check_num_classes('FederatedLoss', num_classes)
        if isinstance(num_sample_classes, bool) or int(
                num_sample_classes) != num_sample_classes or \
                num_sample_classes < 1:
            raise ValueError(f'FederatedLoss: num_sample_classes must be an '
                             f'integer >= 1, got {num_sample_classes}')
        freq_weight_power = float(freq_weight_power)
        if not np.isfinite(freq_weight_power) or freq_weight_power < 0:
            raise ValueError(f'FederatedLoss: freq_weight_power must be a '
                             f'finite number >= 0, got {freq_weight_power}')
        self.num_classes = int(num_classes)
        self.num_sample_classes = int(num_sample_classes)
        self.freq_weight_power = freq_weight_power
        self.loss_weight = float(loss_weight)
        stats = load_class_statistics(class_statistics, self.num_classes,
                                      'FederatedLoss')
        self.class_weights = federated_class_weights(
            stats.image_count, freq_weight_power, stats.source)
        self.register_sampling_step(seed)
        self.inputs = self.classifier_inputs('FederatedLoss')

    def sample_classes(self, labels: Tensor) -> Tensor:
        """This step's class set S (bool (C,), on ``labels``' device);
        advances ``sampling_step``."""
        selected = sample_federated_classes(labels.cpu().numpy(),
                                            self.class_weights,
                                            self.num_sample_classes,
                                            self.next_sampling_rng())
        return torch.from_numpy(selected).to(labels.device)

    def forward(self,
                cls_score: Tensor,
                labels: Tensor,
                label_weights: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None) -> Tensor:
        """Federated loss of logits (N, C) and labels (N,) in [0, C],
        reduced as ``reduction_override`` says (default 'mean', see
        :func:`reduce_roi_losses`)."""
        reduction = self.inputs.check(
            cls_score, labels, reduction=reduction_override or 'mean')
        class_mask = self.sample_classes(labels)
        return self.loss_weight * federated_loss(cls_score, labels,
                                                 class_mask, reduction)

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, num_sample_classes='
                f'{self.num_sample_classes}, freq_weight_power='
                f'{self.freq_weight_power}, loss_weight={self.loss_weight}')
