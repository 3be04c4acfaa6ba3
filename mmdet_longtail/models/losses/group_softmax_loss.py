"""Balanced Group Softmax (BAGS) classification loss.

Li et al., "Overcoming Classifier Imbalance for Long-tail Object Detection
with Balanced Group Softmax", CVPR 2020. https://arxiv.org/abs/2006.10408

Classes are split into groups by their number of training instances, and a
softmax runs inside each group, so head classes cannot push the logits of
tail classes down. Each foreground group has an extra "others" entry and a
background group decides between "any foreground" and background.

Classifier layout (fixed, so checkpoints and tools agree), for G foreground
groups and C classes, ``C + 1 + (G + 1)`` outputs::

    [ G_1 | G_2 | ... | G_G | G_bg ]
    G_k  = [others, classes of group k in ascending label order]
    G_bg = [others (= any foreground), background]

Training (labels ``0..C-1`` foreground, ``C`` background), ``t_ik`` the
target of RoI ``i`` inside group ``k`` and ``w_ik`` its weight::

    L = sum_k  sum_i w_ik * (-log softmax_k(z_i)[t_ik]) / max(n_k, 1)

* ``G_bg``: every RoI, target 0 (foreground) or 1 (background),
  ``w = label_weight``, ``n = avg_factor``;
* ``G_k``: a RoI of a class in ``G_k`` gets its position in the group; any
  other RoI is "others" (0). Without an in-group RoI the group contributes 0;
  otherwise ``min(int(beta * n_in), n_others)`` "others" RoIs are drawn
  uniformly without replacement and the rest get ``w = 0``; ``n_k`` is the
  number of RoIs with ``w_ik > 0``.

Inference: ``p(c) = P_bg(foreground) * softmax_k(z)[pos(c)]`` for class c in
group k ("others" dropped, no renormalisation), ``p(bg) = P_bg(background)``.
"""
import functools
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from torch import Tensor

from mmdet.models.losses import accuracy
from mmdet.registry import MODELS
from mmdet_longtail.datasets.class_stats import (StatisticsSource,
                                                 load_class_statistics)
from .utils import (ClassifierInputs, ClassifierLayout, CustomClassifierMixin,
                    SeededSampling, check_reduction, upcast_half)

DEFAULT_GROUP_BOUNDS = (10, 100, 1000)


def check_group_bounds(group_bounds: Sequence[int]) -> Tuple[int, ...]:
    """Validated group boundaries: positive and strictly increasing."""
    bounds = tuple(group_bounds)
    if not bounds:
        raise ValueError('group_bounds must hold at least one boundary, '
                         'got an empty sequence')
    for b in bounds:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) \
                or b <= 0:
            raise ValueError(f'group_bounds must be positive integers '
                             f'(instance counts), got {bounds}')
    if any(lo >= hi for lo, hi in zip(bounds, bounds[1:])):
        raise ValueError(f'group_bounds must be strictly increasing, got '
                         f'{bounds} (e.g. (10, 100, 1000))')
    return tuple(int(b) for b in bounds)


def assign_groups(instance_count: Sequence[int],
                  group_bounds: Sequence[int] = DEFAULT_GROUP_BOUNDS,
                  class_names: Optional[Sequence[str]] = None,
                  source: str = 'counts') -> np.ndarray:
    """Foreground group of each class, ``bisect_right(group_bounds, count)``.

    With the default bounds: ``[1, 10) -> 0``, ``[10, 100) -> 1``,
    ``[100, 1000) -> 2``, ``[1000, inf) -> 3``.

    Args:
        instance_count (Sequence[int]): training instances per class.
        group_bounds (Sequence[int]): strictly increasing boundaries.
            Defaults to (10, 100, 1000).
        class_names (Sequence[str], optional): names for error messages.
        source (str): where the counts come from, for error messages.

    Returns:
        np.ndarray: int64 (C,), group index in ``0..len(group_bounds)``.
    """
    bounds = check_group_bounds(group_bounds)
    counts = np.asarray(instance_count, dtype=np.int64)
    bad = np.flatnonzero(counts <= 0)
    if bad.size:
        label = int(bad[0])
        name = class_names[label] if class_names else str(label)
        raise ValueError(
            f'{source}: class {label} ({name!r}) has {int(counts[label])} '
            f'training instances ({bad.size} such classes in total); Balanced '
            f'Group Softmax could never train its logit. Use the train '
            f'annotation file, or remove the class')
    # searchsorted(side='right') is bisect_right for every class at once
    return np.searchsorted(np.asarray(bounds), counts, side='right')


@dataclass(frozen=True)
class GroupLayout:
    """Classifier layout of Balanced Group Softmax.

    Attributes:
        group_of_class (np.ndarray): (C,) foreground group of each class.
        num_fg_groups (int): G, number of foreground groups.
    """
    group_of_class: np.ndarray
    num_fg_groups: int

    @property
    def num_classes(self) -> int:
        return len(self.group_of_class)

    @property
    def group_sizes(self) -> Tuple[int, ...]:
        """Classes in each foreground group."""
        return tuple(
            np.bincount(self.group_of_class,
                        minlength=self.num_fg_groups).tolist())

    @property
    def group_widths(self) -> Tuple[int, ...]:
        """Outputs of each group, background group last ("others" + n_k)."""
        return tuple(n + 1 for n in self.group_sizes) + (2, )

    @property
    def group_starts(self) -> Tuple[int, ...]:
        return tuple(np.cumsum((0, ) + self.group_widths[:-1]).tolist())

    @property
    def num_channels(self) -> int:
        """C + 1 + number of groups (background group included)."""
        return self.num_classes + 1 + self.num_fg_groups + 1

    @property
    def position_in_group(self) -> np.ndarray:
        """(C,) 1-based position of each class inside its group."""
        position = np.zeros(self.num_classes, dtype=np.int64)
        for k in range(self.num_fg_groups):
            members = np.flatnonzero(self.group_of_class == k)
            position[members] = np.arange(1, members.size + 1)
        return position

    @property
    def class_columns(self) -> np.ndarray:
        """(C,) classifier column of each class."""
        starts = np.asarray(self.group_starts, dtype=np.int64)
        return starts[self.group_of_class] + self.position_in_group

    @property
    def background_column(self) -> int:
        return self.num_channels - 1

    def target_table(self) -> np.ndarray:
        """(G + 1, C + 1) target of each label (bg = C) in each group."""
        table = np.zeros((self.num_fg_groups + 1, self.num_classes + 1),
                         dtype=np.int64)
        labels = np.arange(self.num_classes)
        table[self.group_of_class, labels] = self.position_in_group
        table[-1, -1] = 1  # background group: 0 = foreground, 1 = background
        return table

    def classifier_layout(self) -> ClassifierLayout:
        """The rows of every class, of the background, of each group and of
        the "others" / "any foreground" rows."""
        starts, widths = self.group_starts, self.group_widths
        groups = [range(s, s + w) for s, w in zip(starts, widths)]
        extra = [(starts[k], f'others of group {k}')
                 for k in range(self.num_fg_groups)]
        extra.append((starts[-1], 'background group: any foreground'))
        return ClassifierLayout(
            'bags',
            self.num_channels,
            self.class_columns,
            background_row=self.background_column,
            groups=groups,
            extra_rows=extra)


@functools.lru_cache(maxsize=32)
def _group_indicator(group_widths: Tuple[int, ...], device: torch.device,
                     dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    """Group of each column (K_cols,) and the (K_cols, K) 0/1 indicator."""
    groups = torch.repeat_interleave(
        torch.arange(len(group_widths)), torch.tensor(group_widths))
    indicator = F.one_hot(groups, len(group_widths))
    return groups.to(device), indicator.to(device=device, dtype=dtype)


def group_log_normalisers(cls_score: Tensor,
                          group_widths: Sequence[int]) -> Tensor:
    """(N, K) log-sum-exp of each group's logits: ``log sum_j exp z_kj``.

    One exp over all columns and a matrix product with the group indicator
    replace K separate log-sum-exps (a few kernels instead of dozens: the
    head is launch-bound on GPUs).
    """
    widths = tuple(int(w) for w in group_widths)
    column_groups, indicator = _group_indicator(widths, cls_score.device,
                                                cls_score.dtype)
    with torch.no_grad():
        # the shift cancels in value and gradient; subtracting each group's
        # max keeps exp() finite and every group's sum >= 1
        group_max = torch.stack(
            [p.amax(dim=-1) for p in cls_score.split(widths, dim=-1)], dim=-1)
    shifted = cls_score - group_max.index_select(1, column_groups)
    return (shifted.exp() @ indicator).log() + group_max


def group_softmax_loss(cls_score: Tensor,
                       target_columns: Tensor,
                       group_weights: Tensor,
                       group_widths: Sequence[int],
                       avg_factors: Tensor,
                       reduction: str = 'mean') -> Tensor:
    """Sum over groups of the weighted softmax cross-entropy in each group.

    ``L = sum_k sum_i w_ik * -log softmax_k(z_i)[t_ik] / avg_factors[k]``
    with ``-log softmax_k(z_i)[t] = logsumexp(z_ik) - z_ik[t]``.

    Args:
        cls_score (Tensor): (N, sum(group_widths)) logits.
        target_columns (Tensor): (K, N) long, column of the target of each
            RoI in each of the K groups.
        group_weights (Tensor): (K, N) per-RoI weight in each group.
        group_widths (Sequence[int]): outputs of each group.
        avg_factors (Tensor): (K,) normaliser of each group ('mean' only).
        reduction (str): 'mean' (normalised per group, summed), 'sum' (no
            normalisation) or 'none' ((N,) per-RoI sum over groups).

    Returns:
        Tensor: the loss.
    """
    check_reduction(reduction, 'GroupSoftmaxLoss')
    # only the K target logits and K normalisers per RoI are needed, not
    # the full log-softmax
    nll = group_log_normalisers(cls_score, group_widths) - \
        cls_score.gather(1, target_columns.t())  # (N, K)
    weighted = nll * group_weights.t().to(nll.dtype)
    if reduction == 'none':
        return weighted.sum(dim=1)
    if reduction == 'sum':
        return weighted.sum()
    return (weighted.sum(dim=0) / avg_factors.to(weighted.dtype)).sum()


def group_softmax_activation(cls_score: Tensor, group_widths: Sequence[int],
                             class_columns: Tensor,
                             class_groups: Tensor) -> Tensor:
    """(N, C + 1) scores: ``P_bg(fg) * in-group probability``, bg last.

    Args:
        cls_score (Tensor): (N, sum(group_widths)) logits.
        group_widths (Sequence[int]): outputs of each group, bg group last.
        class_columns (Tensor): (C,) column of each class.
        class_groups (Tensor): (C,) group of each class.
    """
    lse = group_log_normalisers(cls_score, group_widths)
    in_group = (cls_score.index_select(1, class_columns) -
                lse.index_select(1, class_groups)).exp()
    bg_group = (cls_score[:, -2:] - lse[:, -1:]).exp()  # [P(fg), P(bg)]
    return torch.cat([in_group * bg_group[:, :1], bg_group[:, 1:]], dim=1)


def sample_group_weights(group_targets: np.ndarray,
                         label_weights: np.ndarray, beta: float,
                         rng: np.random.Generator) -> np.ndarray:
    """(K, N) weights: every RoI in the background group (last row); in a
    foreground group its RoIs plus ``min(int(beta * n_in), n_others)``
    "others" drawn uniformly without replacement, and nothing without
    in-group RoIs.

    Args:
        group_targets (np.ndarray): (K, N) target position in each group,
            0 = "others".
        label_weights (np.ndarray): (N,) RoI weights; RoIs with weight 0 are
            neither in-group nor "others".
        beta (float): "others" kept per in-group RoI.
        rng (np.random.Generator): source of the draws.
    """
    valid = label_weights > 0
    in_group = (group_targets[:-1] > 0) & valid
    others = (group_targets[:-1] == 0) & valid
    keep = in_group.copy()
    for k, n_in in enumerate(in_group.sum(axis=1).tolist()):
        if n_in == 0:
            continue  # the group contributes zero
        candidates = np.flatnonzero(others[k])
        n_keep = min(int(beta * n_in), candidates.size)
        keep[k, rng.choice(candidates, n_keep, replace=False)] = True
    return np.concatenate([keep * label_weights, label_weights[None]])


@MODELS.register_module()
class GroupSoftmaxLoss(CustomClassifierMixin, SeededSampling, nn.Module):
    """Balanced Group Softmax loss for RoI classification (mmdet's
    custom-classifier protocol: ``custom_cls_channels``,
    ``get_cls_channels``, ``get_activation``, ``get_accuracy``).

    Li et al., "Overcoming Classifier Imbalance for Long-tail Object
    Detection with Balanced Group Softmax", CVPR 2020,
    https://arxiv.org/abs/2006.10408. Equations in the module docstring.

    Args:
        num_classes (int): number of foreground classes C (1203 for LVIS v1,
            1230 for v0.5).
        class_statistics (str | ClassStatistics | dict): the train set's
            statistics, whose ``instance_count`` defines the groups: the LVIS
            train annotation file (``LongTailRunner`` passes it from
            ``train_dataloader.dataset``), or see
            :func:`~mmdet_longtail.datasets.load_class_statistics`.
        group_bounds (Sequence[int]): class c goes to group
            ``bisect_right(group_bounds, count(c))``. Defaults to
            (10, 100, 1000): 4 groups [1,10) [10,100) [100,1000) [1000,inf).
        beta (float): "others" RoIs kept per in-group RoI in a foreground
            group. Defaults to 8.0.
        loss_weight (float): weight of the loss. Defaults to 1.0.
        seed (int, optional): seed of the "others" sampling. Defaults to None:
            the run's seed, ``torch.initial_seed()`` (mmengine's
            ``randomness.seed`` sets it), read at the first call.

    The draw of step ``s`` on rank ``r`` uses a fresh numpy generator keyed
    by (seed, r, s); ``s`` is the buffer ``sampling_step``, saved in
    checkpoints, so ``--resume`` continues the same draws on every rank, the
    global random streams are not consumed, and CPU and GPU runs draw alike.
    The sampling runs on the host (1024 labels; mmdet's ``BBoxHead.loss``
    has synchronised just before), so the GPU only sees the loss kernels.
    """

    def __init__(self,
                 num_classes: int,
                 class_statistics: Optional[StatisticsSource] = None,
                 group_bounds: Sequence[int] = DEFAULT_GROUP_BOUNDS,
                 beta: float = 8.0,
                 loss_weight: float = 1.0,
                 seed: Optional[int] = None) -> None:
        super().__init__()
        if beta <= 0:
            raise ValueError(f'GroupSoftmaxLoss: beta must be > 0, got {beta}')
        self.num_classes = num_classes
        self.group_bounds = check_group_bounds(group_bounds)
        self.beta = float(beta)
        self.loss_weight = loss_weight
        self.stats = load_class_statistics(class_statistics, num_classes,
                                           'GroupSoftmaxLoss')
        self.layout = GroupLayout(
            group_of_class=assign_groups(self.stats.instance_count,
                                         self.group_bounds,
                                         self.stats.class_names,
                                         self.stats.source),
            num_fg_groups=len(self.group_bounds) + 1)
        self._warn_empty_groups()

        # host-side tables: (groups, C + 1) target position and column of
        # each label in each group
        self.target_table_np = self.layout.target_table()
        self.column_table_np = self.target_table_np + np.asarray(
            self.layout.group_starts)[:, None]
        self.register_buffer(
            'class_columns',
            torch.from_numpy(self.layout.class_columns),
            persistent=False)
        self.register_buffer(
            'class_groups',
            torch.from_numpy(self.layout.group_of_class),
            persistent=False)
        self.register_sampling_step(seed)

        self.inputs = ClassifierInputs(
            'GroupSoftmaxLoss', num_classes, self.layout.num_channels,
            f'C={num_classes} + 1 + {len(self.group_widths)} groups',
            hint='was the checkpoint converted with '
            'tools/model_converters/bags_convert.py?')

    def _warn_empty_groups(self) -> None:
        for k, size in enumerate(self.layout.group_sizes):
            if size == 0:
                print_log(
                    f'GroupSoftmaxLoss: group {k} (instance counts in '
                    f'{self._group_range(k)}) has no class in '
                    f'{self.stats.source}; it keeps its "others" output',
                    logger='current')

    def _group_range(self, k: int) -> str:
        lo = self.group_bounds[k - 1] if k > 0 else 1
        hi = self.group_bounds[k] if k < len(self.group_bounds) else 'inf'
        return f'[{lo}, {hi})'

    @property
    def group_widths(self) -> Tuple[int, ...]:
        return self.layout.group_widths

    def cls_channels(self) -> int:
        """Classifier outputs: C + 1 + number of groups."""
        return self.layout.num_channels

    def classifier_layout(self) -> ClassifierLayout:
        """``[G_1 | ... | G_G | G_bg]``, see :class:`GroupLayout`."""
        return self.layout.classifier_layout()

    def get_activation(self, cls_score: Tensor) -> Tensor:
        """(N, C + 1) probabilities, background last."""
        self.inputs.check_logits(cls_score)
        return group_softmax_activation(upcast_half(cls_score),
                                        self.group_widths,
                                        self.class_columns, self.class_groups)

    def get_accuracy(self, cls_score: Tensor,
                     labels: Tensor) -> Dict[str, Tensor]:
        """Top-1 accuracy of the merged (C + 1) scores."""
        return dict(acc=accuracy(self.get_activation(cls_score), labels))

    def forward(self,
                cls_score: Tensor,
                labels: Tensor,
                label_weights: Optional[Tensor] = None,
                avg_factor: Optional[Union[int, float]] = None,
                reduction_override: Optional[str] = None,
                **kwargs) -> Tensor:
        """Group softmax loss.

        Args:
            cls_score (Tensor): (N, C + 1 + num_groups) logits.
            labels (Tensor): (N,) labels, background = C.
            label_weights (Tensor, optional): (N,) RoI weights.
            avg_factor (int | float, optional): normaliser of the background
                group (mmdet passes the number of RoIs with weight > 0,
                the default). Foreground groups use their own counts.
            reduction_override (str, optional): 'none', 'mean' or 'sum'.
        """
        reduction = self.inputs.check(cls_score, labels, label_weights,
                                      reduction_override or 'mean')
        labels_np = labels.cpu().numpy()
        weights_np = np.ones(labels_np.shape, dtype=np.float32) \
            if label_weights is None else \
            label_weights.detach().float().cpu().numpy()
        targets = self.target_table_np[:, labels_np]
        weights = sample_group_weights(targets, weights_np, self.beta,
                                       self.next_sampling_rng())
        avg_factors = (weights > 0).sum(axis=1).astype(np.float32)
        if avg_factor is not None:
            avg_factors[-1] = float(avg_factor)
        # one host-to-device copy for the weights and the normalisers
        packed = torch.from_numpy(
            np.concatenate([weights, np.maximum(avg_factors, 1)[:, None]],
                           axis=1)).to(cls_score.device, non_blocking=True)
        columns = torch.from_numpy(self.column_table_np[:, labels_np]).to(
            cls_score.device, non_blocking=True)
        loss = group_softmax_loss(upcast_half(cls_score), columns,
                                  packed[:, :-1], self.group_widths,
                                  packed[:, -1], reduction)
        return self.loss_weight * loss
