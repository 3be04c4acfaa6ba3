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
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dist import get_rank
from mmengine.logging import print_log
from torch import Tensor

from mmdet.models.losses import accuracy
from mmdet.registry import MODELS
from mmdet_longtail.datasets.class_stats import (ClassStatistics,
                                                 resolve_class_statistics)

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


def grouped_log_softmax(cls_score: Tensor,
                        group_widths: Sequence[int]) -> Tensor:
    """Log-softmax inside each consecutive group of columns."""
    # split (not slicing) so the backward assembles one gradient tensor
    parts = cls_score.split(list(group_widths), dim=-1)
    return torch.cat([F.log_softmax(p, dim=-1) for p in parts], dim=-1)


def grouped_softmax(cls_score: Tensor, group_widths: Sequence[int]) -> Tensor:
    """Softmax inside each consecutive group of columns."""
    parts = cls_score.split(list(group_widths), dim=-1)
    return torch.cat([F.softmax(p, dim=-1) for p in parts], dim=-1)


def group_softmax_loss(cls_score: Tensor,
                       group_targets: Tensor,
                       group_weights: Tensor,
                       group_widths: Sequence[int],
                       avg_factors: Tensor,
                       reduction: str = 'mean') -> Tensor:
    """Sum over groups of the weighted softmax cross-entropy in each group.

    ``L = sum_k sum_i w_ik * -log softmax_k(z_i)[t_ik] / avg_factors[k]``

    Args:
        cls_score (Tensor): (N, sum(group_widths)) logits.
        group_targets (Tensor): (K, N) long, target position inside each of
            the K groups.
        group_weights (Tensor): (K, N) per-RoI weight in each group.
        group_widths (Sequence[int]): outputs of each group.
        avg_factors (Tensor): (K,) normaliser of each group ('mean' only).
        reduction (str): 'mean' (normalised per group, summed), 'sum' (no
            normalisation) or 'none' ((N,) per-RoI sum over groups).

    Returns:
        Tensor: the loss.
    """
    log_prob = grouped_log_softmax(cls_score, group_widths)
    starts = torch.as_tensor(
        np.cumsum((0, ) + tuple(group_widths[:-1])),
        dtype=torch.long,
        device=cls_score.device)
    columns = group_targets + starts[:, None]  # (K, N)
    nll = -log_prob.gather(1, columns.t())  # (N, K)
    weighted = nll * group_weights.t().to(nll.dtype)
    if reduction == 'none':
        return weighted.sum(dim=1)
    if reduction == 'sum':
        return weighted.sum()
    if reduction != 'mean':
        raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got "
                         f'{reduction!r}')
    return (weighted.sum(dim=0) / avg_factors.to(weighted.dtype)).sum()


def group_softmax_activation(cls_score: Tensor, group_widths: Sequence[int],
                             class_columns: Tensor) -> Tensor:
    """(N, C + 1) scores: ``P_bg(fg) * in-group probability``, bg last."""
    prob = grouped_softmax(cls_score, group_widths)
    fg_prob, bg_prob = prob[:, -2:-1], prob[:, -1:]
    return torch.cat([prob[:, class_columns] * fg_prob, bg_prob], dim=1)


def sample_group_weights(group_targets: Tensor, label_weights: Tensor,
                         beta: float,
                         generator: torch.Generator) -> Tensor:
    """(K, N) weights: every RoI in the background group (last row); in a
    foreground group its RoIs plus at most ``int(beta * n_in)`` "others"
    drawn uniformly without replacement, and nothing without in-group RoIs.

    Args:
        group_targets (Tensor): (K, N) long, 0 = "others".
        label_weights (Tensor): (N,) RoI weights; RoIs with weight 0 are
            neither in-group nor "others".
        beta (float): "others" kept per in-group RoI.
        generator (torch.Generator): CPU generator of the draws.
    """
    valid = label_weights > 0
    in_group = (group_targets[:-1] > 0) & valid
    others = (group_targets[:-1] == 0) & valid
    keep = in_group.clone()
    # one host sync for all groups
    counts = torch.stack([in_group.sum(1), others.sum(1)], 1).tolist()
    for k, (n_in, n_others) in enumerate(counts):
        if n_in == 0:
            continue  # the group contributes zero
        n_keep = min(int(beta * n_in), n_others)
        if n_keep == n_others:
            keep[k] |= others[k]
            continue
        candidates = others[k].nonzero(as_tuple=True)[0]
        chosen = torch.randperm(n_others, generator=generator)[:n_keep]
        keep[k, candidates[chosen.to(candidates.device)]] = True
    fg_weights = keep.to(label_weights.dtype) * label_weights
    return torch.cat([fg_weights, label_weights[None]], dim=0)


def sampling_seed(base_seed: int, rank: int, step: int) -> int:
    """64-bit seed of one sampling step, a hash of (seed, rank, step)."""
    sequence = np.random.SeedSequence([base_seed, rank, step])
    return int(sequence.generate_state(1, dtype=np.uint64)[0])


@MODELS.register_module()
class GroupSoftmaxLoss(nn.Module):
    """Balanced Group Softmax loss for RoI classification (mmdet's
    custom-classifier protocol: ``custom_cls_channels``,
    ``get_cls_channels``, ``get_activation``, ``get_accuracy``).

    Li et al., "Overcoming Classifier Imbalance for Long-tail Object
    Detection with Balanced Group Softmax", CVPR 2020,
    https://arxiv.org/abs/2006.10408. Equations in the module docstring.

    Args:
        num_classes (int): number of foreground classes C (1203 for LVIS v1,
            1230 for v0.5).
        instance_count (Sequence[int], optional): training instances per
            class. Give this or ``ann_file``.
        ann_file (str, optional): LVIS train annotation file; instance counts
            are read with :func:`get_class_statistics`.
        group_bounds (Sequence[int]): class c goes to group
            ``bisect_right(group_bounds, count(c))``. Defaults to
            (10, 100, 1000): 4 groups [1,10) [10,100) [100,1000) [1000,inf).
        beta (float): "others" RoIs kept per in-group RoI in a foreground
            group. Defaults to 8.0.
        loss_weight (float): weight of the loss. Defaults to 1.0.
        seed (int, optional): seed of the "others" sampling. Defaults to None:
            the run's seed, ``torch.initial_seed()`` (mmengine's
            ``randomness.seed`` sets it), read at the first call.

    The draw of step ``s`` on rank ``r`` uses a fresh generator seeded with
    hash(seed, r, s); ``s`` is the buffer ``sampling_step``, saved in
    checkpoints, so ``--resume`` continues the same draws on every rank and
    the global random streams are not consumed.
    """

    def __init__(self,
                 num_classes: int,
                 instance_count: Optional[Sequence[int]] = None,
                 ann_file: Optional[str] = None,
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
        self.seed = seed
        self.stats = self._class_statistics(num_classes, instance_count,
                                            ann_file)
        self.layout = GroupLayout(
            group_of_class=assign_groups(self.stats.instance_count,
                                         self.group_bounds,
                                         self.stats.class_names,
                                         self.stats.source),
            num_fg_groups=len(self.group_bounds) + 1)
        self._warn_empty_groups()

        self.register_buffer(
            'target_table',
            torch.from_numpy(self.layout.target_table()),
            persistent=False)
        self.register_buffer(
            'class_columns',
            torch.from_numpy(self.layout.class_columns),
            persistent=False)
        self.register_buffer('sampling_step',
                             torch.zeros((), dtype=torch.long))
        self._run_seed: Optional[int] = None

        # mmdet BBoxHead protocol
        self.custom_cls_channels = True
        self.custom_activation = True
        self.custom_accuracy = True

    @staticmethod
    def _class_statistics(num_classes: int,
                          instance_count: Optional[Sequence[int]],
                          ann_file: Optional[str]) -> ClassStatistics:
        if instance_count is not None and ann_file is not None:
            raise ValueError('GroupSoftmaxLoss: give instance_count or '
                             'ann_file, not both')
        stats = None
        if instance_count is not None:
            counts = np.asarray(instance_count, dtype=np.int64)
            # only instance counts matter here; image counts are a stand-in
            stats = ClassStatistics.from_counts(
                image_count=counts,
                instance_count=counts,
                num_images=max(int(counts.max(initial=0)), 1))
        return resolve_class_statistics(
            num_classes, ann_file, stats, owner='GroupSoftmaxLoss')

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

    def get_cls_channels(self, num_classes: int) -> int:
        """Classifier outputs: C + 1 + number of groups."""
        if num_classes != self.num_classes:
            raise ValueError(f'GroupSoftmaxLoss built for {self.num_classes} '
                             f'classes, the head has {num_classes}')
        return self.layout.num_channels

    def _check_width(self, cls_score: Tensor) -> None:
        if cls_score.size(-1) != self.layout.num_channels:
            raise ValueError(
                f'GroupSoftmaxLoss expects {self.layout.num_channels} logits '
                f'(C={self.num_classes} + 1 + {len(self.group_widths)} '
                f'groups), got {cls_score.size(-1)}; was the checkpoint '
                f'converted with tools/model_converters/bags_convert.py?')

    def get_activation(self, cls_score: Tensor) -> Tensor:
        """(N, C + 1) probabilities, background last."""
        self._check_width(cls_score)
        return group_softmax_activation(cls_score.float(), self.group_widths,
                                        self.class_columns)

    def get_accuracy(self, cls_score: Tensor,
                     labels: Tensor) -> Dict[str, Tensor]:
        """Top-1 accuracy of the merged (C + 1) scores."""
        return dict(acc=accuracy(self.get_activation(cls_score), labels))

    def _next_generator(self) -> torch.Generator:
        if self._run_seed is None:
            self._run_seed = (self.seed if self.seed is not None else
                              torch.initial_seed())
        step = int(self.sampling_step)
        self.sampling_step += 1
        return torch.Generator().manual_seed(
            sampling_seed(self._run_seed, get_rank(), step))

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
        self._check_width(cls_score)
        if label_weights is None:
            label_weights = cls_score.new_ones(labels.shape, dtype=torch.float)
        label_weights = label_weights.float()
        targets = self.target_table[:, labels]
        weights = sample_group_weights(targets, label_weights, self.beta,
                                       self._next_generator())
        counts = (weights > 0).sum(dim=1).float()
        if avg_factor is not None:
            counts[-1] = float(avg_factor)
        loss = group_softmax_loss(cls_score.float(), targets, weights,
                                  self.group_widths, counts.clamp(min=1.0),
                                  reduction_override or 'mean')
        return self.loss_weight * loss
