"""Class-aware sampling: draw a class uniformly, then an image containing it.

Used by decoupled classifier re-training (cRT / LWS; Kang et al.,
"Decoupling Representation and Classifier for Long-Tailed Recognition",
ICLR 2020, https://arxiv.org/abs/1910.09217), after Shen et al., "Relay
Backpropagation for Effective Learning of Deep Convolutional Neural
Networks", ECCV 2016 (https://arxiv.org/abs/1512.05830).
"""
import math
from typing import Iterator, Optional, Tuple

import numpy as np
from mmengine.dist import get_dist_info, sync_random_seed
from torch.utils.data import Sampler

from mmdet.registry import DATA_SAMPLERS
from ..class_stats import dataset_instance_labels, describe_dataset
from .epoch_rng import epoch_random_generator


def _group_starts(counts: np.ndarray) -> np.ndarray:
    return np.cumsum(counts) - counts


def class_aware_sequence(
        class_offsets: np.ndarray, class_images: np.ndarray, num_samples: int,
        rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """(classes, images) of ``num_samples`` class-aware draws.

    Classes are drawn in rounds, each round a random permutation of the
    classes that have images, so every class is drawn equally often (the
    counts differ by at most one). For each class its images are drawn in
    random cycles: a random permutation of the class's images, then a new
    one, so an image is not repeated before every image of the class was
    drawn. Both are the "random cycle" iterators of the published code,
    vectorised.

    Args:
        class_offsets (np.ndarray): (C + 1,), class c owns
            ``class_images[class_offsets[c]:class_offsets[c + 1]]``.
        class_images (np.ndarray): image indices, grouped by class.
        num_samples (int): Length of the sequence.
        rng (np.random.Generator): Source of randomness.
    """
    images_per_class = np.diff(class_offsets)
    valid = np.flatnonzero(images_per_class > 0)
    if len(valid) == 0:
        raise ValueError('class-aware sampling needs at least one class '
                         'with an image')
    rounds = math.ceil(num_samples / len(valid))
    permutations = np.argsort(rng.random((rounds, len(valid))), axis=1)
    classes = valid[permutations].ravel()[:num_samples]

    # the j-th draw of class c takes member (j mod m_c) of its
    # (j div m_c)-th random cycle over its m_c images
    draws = np.bincount(classes, minlength=len(images_per_class))
    order = np.argsort(classes, kind='stable')
    occurrence = np.empty(num_samples, dtype=np.int64)
    occurrence[order] = np.arange(num_samples) - _group_starts(draws)[
        classes[order]]
    cycles = np.zeros_like(draws)
    cycles[valid] = -(-draws[valid] // images_per_class[valid])
    # one slot per (class, cycle, member); shuffling members inside each
    # (class, cycle) group gives every cycle its own permutation
    slots = cycles * images_per_class
    slot_class = np.repeat(np.arange(len(slots)), slots)
    slot_local = np.arange(int(slots.sum())) - np.repeat(
        _group_starts(slots), slots)
    slot_cycle = slot_local // images_per_class[slot_class]
    slot_member = slot_local % images_per_class[slot_class]
    shuffled = np.lexsort(
        (rng.random(len(slot_local)), slot_cycle, slot_class))
    member = slot_member[shuffled][_group_starts(slots)[classes] + occurrence]
    return classes, class_images[class_offsets[classes] + member]


@DATA_SAMPLERS.register_module()
class LongTailClassAwareSampler(Sampler):
    """Class-aware sampler: pick a class uniformly, then an image of it.

    Each epoch draws ``num_samples_per_epoch`` images (default: the dataset
    length): classes in random rounds (each class once per round), and the
    images of each class in random cycles (:func:`class_aware_sequence`).
    The sequence is a pure function of ``(seed, epoch)``, so every rank
    builds the same one and takes every ``world_size``-th entry starting at
    its rank (disjoint shards); :meth:`set_epoch` (called by mmengine's
    ``DistSamplerSeedHook`` and by iteration-based loops) moves to another
    sequence. Labels come from
    :func:`mmdet_longtail.datasets.class_stats.dataset_instance_labels`
    (ignored instances do not count); images without labels are never drawn.

    mmdet 3.3 registers its own ``ClassAwareSampler`` (one draw per class at
    a time, contiguous shards per rank); this one is registered under
    another name so as not to replace it. Use it with
    ``train_dataloader = dict(sampler=dict(type='LongTailClassAwareSampler',
    seed=0))``.

    Args:
        dataset (Dataset): mmdet dataset with ``metainfo['classes']``.
        seed (int, optional): Seed shared by all ranks. None (default) uses
            ``sync_random_seed()``; the runner passes the run's seed.
        num_samples_per_epoch (int, optional): Images per epoch over all
            ranks. Defaults to ``len(dataset)``.
    """

    def __init__(self,
                 dataset,
                 seed: Optional[int] = None,
                 num_samples_per_epoch: Optional[int] = None) -> None:
        self.rank, self.world_size = get_dist_info()
        self.dataset = dataset
        self.seed = sync_random_seed() if seed is None else int(seed)
        self.epoch = 0
        labels = dataset_instance_labels(dataset)
        self.class_offsets, self.class_images = labels.images_of_class()
        if len(self.class_images) == 0:
            raise ValueError(f'LongTailClassAwareSampler: '
                             f'{describe_dataset(dataset)} has no image with '
                             f'a labelled instance')
        if num_samples_per_epoch is None:
            num_samples_per_epoch = len(dataset)
        if int(num_samples_per_epoch) <= 0:
            raise ValueError(f'LongTailClassAwareSampler: '
                             f'num_samples_per_epoch must be > 0, got '
                             f'{num_samples_per_epoch}')
        self.num_samples = math.ceil(
            int(num_samples_per_epoch) / self.world_size)
        self.total_size = self.num_samples * self.world_size

    def epoch_sequence(self, epoch: Optional[int] = None) -> np.ndarray:
        """The image indices of an epoch, before sharding (all ranks)."""
        rng = epoch_random_generator(self.seed,
                                     self.epoch if epoch is None else epoch)
        _, images = class_aware_sequence(self.class_offsets, self.class_images,
                                         self.total_size, rng)
        return images

    def __iter__(self) -> Iterator[int]:
        shard = self.epoch_sequence()[self.rank::self.world_size]
        return iter(shard.tolist())

    def __len__(self) -> int:
        """Images per epoch on this rank."""
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
