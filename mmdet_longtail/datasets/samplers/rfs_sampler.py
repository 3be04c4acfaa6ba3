"""Repeat factor sampling (RFS) as a data sampler.

Gupta, Dollar and Girshick, "LVIS: A Dataset for Large Vocabulary Instance
Segmentation", CVPR 2019, Appendix B.2 (https://arxiv.org/abs/1908.03195).
With t the threshold and f(c) the fraction of training images that contain
class c::

    r(c) = max(1, sqrt(t / f(c)))        (max(1, t / f(c)) if use_sqrt=False)
    r(I) = max_{c in I} r(c),            r(I) = 1 for an image without labels

and image I is listed r(I) times per epoch on average.
"""
import math
import zlib
from numbers import Real
from typing import Iterator, Optional

import numpy as np
from mmengine.dist import get_dist_info, sync_random_seed
from mmengine.logging import print_log
from torch.utils.data import Sampler

from mmdet.registry import DATA_SAMPLERS
from ..class_stats import (ClassStatistics, InstanceLabels, dataset_classes,
                           dataset_instance_labels, describe_dataset)
from .epoch_rng import epoch_random_generator

RFS_ROUNDINGS = ('stochastic', 'ceil')


def category_repeat_factors(image_freq: np.ndarray,
                            threshold: float,
                            use_sqrt: bool = True) -> np.ndarray:
    """r(c) = max(1, sqrt(t / f(c))), or max(1, t / f(c)) without the root,
    float64 (C,). Classes in no image (f(c) = 0) get 1: they never decide an
    image's factor."""
    image_freq = np.asarray(image_freq, dtype=np.float64)
    factors = np.ones_like(image_freq)
    present = image_freq > 0
    ratio = threshold / image_freq[present]
    factors[present] = np.maximum(1.0, np.sqrt(ratio) if use_sqrt else ratio)
    return factors


def image_repeat_factors(labels: InstanceLabels,
                         image_freq: np.ndarray,
                         threshold: float,
                         use_sqrt: bool = True) -> np.ndarray:
    """r(I) of every image, float64 (N,); 1 for an image without labels."""
    class_factors = category_repeat_factors(image_freq, threshold, use_sqrt)
    return labels.image_max(class_factors, empty_value=1.0)


def draw_repeat_counts(repeat_factors: np.ndarray, rounding: str,
                       rng: np.random.Generator) -> np.ndarray:
    """Copies of each image in one epoch, int64 (N,).

    ``'stochastic'``: floor(r) + Bernoulli(r - floor(r)), so the expected
    count is exactly r (detectron2's rounding). ``'ceil'``: ceil(r), the
    same every epoch (mmengine's ``ClassBalancedDataset``); ``rng`` is not
    used.
    """
    repeat_factors = np.asarray(repeat_factors, dtype=np.float64)
    if rounding == 'ceil':
        return np.ceil(repeat_factors).astype(np.int64)
    whole = np.floor(repeat_factors)
    uniform = rng.random(len(repeat_factors))
    return (whole + (uniform < repeat_factors - whole)).astype(np.int64)


def index_list_digest(indices: np.ndarray) -> int:
    """CRC-32 of an index list, logged so runs can be compared."""
    return zlib.crc32(np.ascontiguousarray(indices, dtype=np.int64).tobytes())


def check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or \
            not math.isfinite(threshold) or threshold <= 0:
        raise ValueError(f'RFSSampler: threshold must be a finite number > 0 '
                         f'(the LVIS paper uses 1e-3), got {threshold!r}')
    return float(threshold)


def check_rounding(rounding: str) -> str:
    if rounding not in RFS_ROUNDINGS:
        raise ValueError(f'RFSSampler: rounding must be one of '
                         f'{RFS_ROUNDINGS}, got {rounding!r}')
    return rounding


@DATA_SAMPLERS.register_module()
class RFSSampler(Sampler):
    """Repeat factor sampler (`LVIS, Gupta et al., CVPR 2019
    <https://arxiv.org/abs/1908.03195>`_, App. B.2).

    ``r(c) = max(1, sqrt(t / f(c)))`` and ``r(I) = max_{c in I} r(c)`` (1 for
    an image without labels); each epoch lists image I ``r(I)`` times on
    average. ``f(c) = image_count(c) / num_images`` is
    :attr:`ClassStatistics.image_freq
    <mmdet_longtail.datasets.class_stats.ClassStatistics.image_freq>`
    counted on the dataset the sampler gets, i.e. after mmdet's
    ``filter_cfg``: ``num_images`` counts the images with at least one
    non-ignored instance, the same definition as the class-aware sampler
    and the losses use.

    Rounding:

    * ``'stochastic'`` (default, detectron2): image I gets
      ``floor(r) + Bernoulli(r - floor(r))`` copies, redrawn each epoch, so
      its expected count is exactly r(I); the epoch length varies slightly.
    * ``'ceil'``: ``ceil(r)`` copies every epoch, the list of mmengine's
      ``ClassBalancedDataset(oversample_thr=t)`` when the dataset keeps no
      unlabelled image.

    Epochs, ranks and resume: the list of epoch ``e`` (copies, then a
    shuffle) is a pure function of ``(seed, e)``, identical on every rank.
    It is padded by wrapping around to a multiple of the world size and rank
    ``k`` takes entries ``k, k + world_size, ...`` (as mmengine's
    ``DefaultSampler``). :meth:`set_epoch` is the only state change, and
    mmengine calls it: ``DistSamplerSeedHook`` before each epoch of an
    ``EpochBasedTrainLoop``, and the iterator of an ``IterBasedTrainLoop``
    each time it restarts the exhausted dataloader (epochs 1, 2, ...). A run
    resumed at epoch ``k`` therefore lists what an uninterrupted run lists
    (an iteration-based run replays its batches through the same calls),
    provided it has the same seed: a fixed ``randomness.seed`` or ``seed``,
    since mmengine gives the sampler the run's seed when it builds it, as it
    does for ``DefaultSampler``.

    Length: ``len(sampler)`` is the current epoch's number of samples per
    rank, ``ceil(len(list) / world_size)``, the same on every rank; under
    stochastic rounding it changes with :meth:`set_epoch`, and
    ``AspectRatioBatchSampler`` and the logger read it anew each epoch.
    Every epoch iterates its whole list and nothing writes into mmengine's
    loop: ``EpochBasedTrainLoop`` computes ``max_iters`` (the ETA) once,
    from epoch 0's length, and so do schedulers with
    ``convert_to_iter_based=True``. The length of a later epoch has a
    standard deviation below ``sqrt(N) / 2`` around ``sum r(I)`` (N images),
    small against the length. ``'ceil'`` has the same length every epoch.

    Args:
        dataset (Dataset): mmdet dataset with ``metainfo['classes']`` and
            per-image instances (or ``get_cat_ids``).
        threshold (float): t; classes in fewer than this fraction of images
            are repeated. Defaults to 1e-3 (LVIS).
        rounding (str): ``'stochastic'`` or ``'ceil'``. Defaults to
            ``'stochastic'``.
        seed (int, optional): Seed shared by all ranks. None (default) uses
            ``sync_random_seed()``; mmengine's runner passes the run's seed.
        shuffle (bool): Shuffle each epoch's list. Defaults to True.
        use_sqrt (bool): ``sqrt(t / f(c))`` (the paper); False gives
            ``t / f(c)``. Defaults to True.
    """

    def __init__(self,
                 dataset,
                 threshold: float = 1e-3,
                 rounding: str = 'stochastic',
                 seed: Optional[int] = None,
                 shuffle: bool = True,
                 use_sqrt: bool = True) -> None:
        self.threshold = check_threshold(threshold)
        self.rounding = check_rounding(rounding)
        self.rank, self.world_size = get_dist_info()
        self.dataset = dataset
        self.seed = sync_random_seed() if seed is None else int(seed)
        self.shuffle = bool(shuffle)
        self.use_sqrt = bool(use_sqrt)
        labels = dataset_instance_labels(dataset)
        stats = self._statistics(dataset, labels)
        self.repeat_factors = image_repeat_factors(labels, stats.image_freq,
                                                   self.threshold,
                                                   self.use_sqrt)
        self.epoch = 0
        self._indices = self.epoch_indices(0)
        self._logged_epoch: Optional[int] = None
        self._log_summary(stats)

    @staticmethod
    def _statistics(dataset, labels: InstanceLabels) -> ClassStatistics:
        if labels.num_labelled_images() == 0:
            raise ValueError(f'RFSSampler: {describe_dataset(dataset)} has no '
                             f'image with a labelled instance; repeat factors '
                             f'need per-image labels')
        return ClassStatistics.from_instance_labels(labels,
                                                    dataset_classes(dataset))

    def epoch_indices(self, epoch: Optional[int] = None) -> np.ndarray:
        """Dataset indices of an epoch, before padding and sharding (the
        same on all ranks)."""
        rng = epoch_random_generator(self.seed,
                                     self.epoch if epoch is None else epoch)
        counts = draw_repeat_counts(self.repeat_factors, self.rounding, rng)
        indices = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        if self.shuffle:
            indices = indices[rng.permutation(len(indices))]
        return indices

    def expected_length(self) -> float:
        """Expected length of an epoch's list (all ranks, unpadded)."""
        if self.rounding == 'ceil':
            return float(np.ceil(self.repeat_factors).sum())
        return float(self.repeat_factors.sum())

    def set_epoch(self, epoch: int) -> None:
        """Use the list of ``epoch``; called by mmengine's loops."""
        if int(epoch) != self.epoch:
            self.epoch = int(epoch)
            self._indices = self.epoch_indices(self.epoch)
        if self._logged_epoch != self.epoch:
            self._logged_epoch = self.epoch
            self._log_epoch()

    def __iter__(self) -> Iterator[int]:
        total = len(self) * self.world_size
        padded = np.resize(self._indices, total)  # wraps around
        return iter(padded[self.rank:total:self.world_size].tolist())

    def __len__(self) -> int:
        """Samples of the current epoch on this rank (see the class
        docstring)."""
        return math.ceil(len(self._indices) / self.world_size)

    def _log_summary(self, stats: ClassStatistics) -> None:
        class_factors = category_repeat_factors(stats.image_freq,
                                                self.threshold, self.use_sqrt)
        num_images = len(self.repeat_factors)
        length = self.expected_length()
        length_text = (f'epoch length {int(length)}' if self.rounding
                       == 'ceil' else f'expected epoch length {length:.1f}')
        print_log(
            f'RFSSampler (t={self.threshold:g}, {self.rounding} rounding, '
            f'seed {self.seed}): {int((class_factors > 1).sum())} of '
            f'{stats.num_classes} classes have r(c) > 1 (r(c) in '
            f'[{class_factors.min():.2f}, {class_factors.max():.2f}]), '
            f'{int((self.repeat_factors > 1).sum())} of {num_images} images '
            f'have r(I) > 1; {length_text} for {num_images} images '
            f'(x{length / num_images:.3f}), '
            f'{self.world_size} rank(s)',
            logger='current')

    def _log_epoch(self) -> None:
        print_log(
            f'RFSSampler epoch {self.epoch} (seed {self.seed}): epoch length '
            f'{len(self._indices)} (expected {self.expected_length():.1f}), '
            f'{len(self)} per rank, list '
            f'digest {index_list_digest(self._indices):08x}',
            logger='current')
