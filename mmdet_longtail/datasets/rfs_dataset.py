"""Repeat Factor Sampling (RFS) as a dataset wrapper.

Gupta, Dollar and Girshick, "LVIS: A Dataset for Large Vocabulary Instance
Segmentation", CVPR 2019, Appendix B.2 (https://arxiv.org/abs/1908.03195).
With t the threshold and f(c) the fraction of training images that contain
class c::

    r(c) = max(1, sqrt(t / f(c)))        (max(1, t / f(c)) if use_sqrt=False)
    r(I) = max_{c in I} r(c),            r(I) = 1 for an image without labels

and image I is seen r(I) times per epoch on average.
"""
import copy
import logging
import math
import zlib
from numbers import Real
from typing import List, Optional, Union

import numpy as np
import torch
from mmengine.dataset import BaseDataset
from mmengine.dist import sync_random_seed
from mmengine.logging import MessageHub, print_log

from mmdet.registry import DATASETS
from .class_stats import (InstanceLabels, describe_dataset,
                          full_init_reading_labels)

RFS_MODES = ('stochastic', 'ceil')


def category_repeat_factors(image_freq: np.ndarray,
                            threshold: float,
                            use_sqrt: bool = True) -> np.ndarray:
    """r(c) = max(1, sqrt(t / f(c))), or max(1, t / f(c)) without the root.

    Classes in no image (f(c) = 0) get 1: they never decide an image's
    factor. The division is written as ``t / f`` with ``f = count / N`` so
    that the result is bit-identical to mmengine's ``ClassBalancedDataset``.
    """
    image_freq = np.asarray(image_freq, dtype=np.float64)
    factors = np.ones_like(image_freq)
    present = image_freq > 0
    ratio = threshold / image_freq[present]
    factors[present] = np.maximum(1.0, np.sqrt(ratio) if use_sqrt else ratio)
    return factors


def image_repeat_factors(instance_labels: InstanceLabels,
                         threshold: float,
                         use_sqrt: bool = True) -> np.ndarray:
    """r(I) of every image, float64 (N,).

    f(c) = (images containing c) / N, where N counts *all* images of the
    dataset, those without labels included (they get r(I) = 1), as in
    mmengine's ``ClassBalancedDataset``.
    """
    if instance_labels.num_images == 0:
        return np.zeros(0, dtype=np.float64)
    image_freq = instance_labels.image_count() / instance_labels.num_images
    class_factors = category_repeat_factors(image_freq, threshold, use_sqrt)
    return instance_labels.image_max(class_factors, empty_value=1.0)


def epoch_random_generator(seed: int, epoch: int) -> np.random.Generator:
    """The generator of one epoch's draw: a pure function of (seed, epoch),
    so every rank, every dataloader worker and a resumed run draw the same
    numbers."""
    return np.random.default_rng([int(seed) % 2**63, int(epoch)])


def draw_repeat_counts(repeat_factors: np.ndarray,
                       mode: str = 'stochastic',
                       seed: int = 0,
                       epoch: int = 0) -> np.ndarray:
    """Integer number of copies of each image in one epoch, int64 (N,).

    ``'stochastic'``: floor(r) + Bernoulli(r - floor(r)), so the expected
    count is exactly r (detectron2's rounding); drawn from
    :func:`epoch_random_generator`. ``'ceil'``: ceil(r) every epoch
    (mmengine's ``ClassBalancedDataset``).
    """
    repeat_factors = np.asarray(repeat_factors, dtype=np.float64)
    if mode == 'ceil':
        return np.ceil(repeat_factors).astype(np.int64)
    if mode != 'stochastic':
        raise ValueError(f'mode must be one of {RFS_MODES}, got {mode!r}')
    whole = np.floor(repeat_factors)
    uniform = epoch_random_generator(seed, epoch).random(len(repeat_factors))
    return (whole + (uniform < repeat_factors - whole)).astype(np.int64)


def index_list_digest(indices: np.ndarray) -> int:
    """CRC-32 of an index list, logged so runs can be compared."""
    return zlib.crc32(np.ascontiguousarray(indices, dtype=np.int64).tobytes())


def _check_threshold(threshold) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or \
            not math.isfinite(threshold) or threshold <= 0:
        raise ValueError(f'RFSDataset: threshold must be a finite number > 0 '
                         f'(the LVIS paper uses 1e-3), got {threshold!r}')
    return float(threshold)


@DATASETS.register_module()
class RFSDataset:
    """Repeat Factor Sampling wrapper (`LVIS, Gupta et al., CVPR 2019
    <https://arxiv.org/abs/1908.03195>`_, App. B.2).

    ``r(c) = max(1, sqrt(t / f(c)))``, ``r(I) = max_{c in I} r(c)`` (1 for an
    image without labels) and each epoch lists image I ``r(I)`` times on
    average. f(c) is counted over the images of the wrapped dataset, i.e.
    after its ``filter_cfg`` (``filter_empty_gt``, ``min_size``); the
    denominator is the number of images of the wrapped dataset (those
    without labels included when it keeps them). Labels are read once through
    :mod:`mmdet_longtail.datasets.class_stats` (ignored instances do not
    count) and all statistics are vectorised.

    Rounding (``mode``):

    * ``'stochastic'`` (default, detectron2's rounding): each epoch, image I
      gets ``floor(r) + Bernoulli(r - floor(r))`` copies, so its expected
      count is exactly r(I). The epoch length varies slightly from epoch to
      epoch.
    * ``'ceil'``: ``ceil(r)`` copies every epoch; identical to mmengine's
      ``ClassBalancedDataset(oversample_thr=threshold)``.

    How the per-epoch redraw stays correct under mmengine:

    * The index list of epoch ``e`` is a pure function of ``(seed, e)``
      (:func:`draw_repeat_counts`): every rank computes the same list, and a
      resumed run gets the same list as an uninterrupted one.
    * :class:`~mmdet_longtail.engine.hooks.RFSEpochHook` (add it to
      ``custom_hooks``) calls :meth:`set_epoch` before each training epoch,
      sets the seed to the run's seed (the ``randomness`` seed of rank 0,
      restored from the checkpoint by ``--resume``) unless ``seed`` is
      given, resizes ``DefaultSampler`` / ``InfiniteSampler`` to the new
      length (``DefaultSampler`` fixes its length at construction) and checks
      that all ranks hold the same list.
    * Dataloader workers hold copies of this object. The (seed, epoch) pair
      lives in a shared-memory tensor, and each copy rebuilds its list when
      the pair changes, so persistent workers follow the main process.
    * Without the hook every epoch reuses the draw of epoch 0 (a warning says
      so once training passes epoch 0).

    Args:
        dataset (BaseDataset | dict): The dataset to repeat, or its config.
            A config is built with ``lazy_init=True`` so the labels are read
            before the data list is serialised (fast at LVIS scale).
        threshold (float): t, frequency below which a class is repeated.
            Defaults to 1e-3 (LVIS).
        mode (str): ``'stochastic'`` or ``'ceil'``. Defaults to
            ``'stochastic'``.
        seed (int, optional): Seed of the stochastic rounding, the same on all
            ranks. None (default) means the run's seed: a seed shared by all
            ranks (``sync_random_seed``) at construction, replaced by the
            run's ``randomness`` seed by ``RFSEpochHook``.
        use_sqrt (bool): Use ``sqrt(t / f(c))`` (the paper); False gives
            ``t / f(c)``. Defaults to True.

    Attributes:
        repeat_factors (np.ndarray): float64 (N,), r(I) of every image of the
            wrapped dataset.
        epoch (int): The epoch whose list is in use.
        seed (int): The seed in use; ``seed_given`` says whether it came from
            the constructor (then ``RFSEpochHook`` keeps it).

    Note:
        mmengine's epoch-based loop computes its total number of iterations
        once, from the first length; ``RFSEpochHook`` re-estimates it each
        epoch so that the logged ETA stays right. Schedulers converted from
        epochs to iterations keep the first epoch's length.
    """

    def __init__(self,
                 dataset: Union[BaseDataset, dict],
                 threshold: float = 1e-3,
                 mode: str = 'stochastic',
                 seed: Optional[int] = None,
                 use_sqrt: bool = True) -> None:
        self.threshold = _check_threshold(threshold)
        if mode not in RFS_MODES:
            raise ValueError(
                f'RFSDataset: mode must be one of {RFS_MODES}, got {mode!r}')
        self.mode = mode
        self.use_sqrt = bool(use_sqrt)
        self.dataset = self._build(dataset)
        # raises a clear error for a dataset without category information
        labels = full_init_reading_labels(self.dataset)
        # after full_init: some datasets take their classes from the file
        self._metainfo = self.dataset.metainfo
        self.repeat_factors = image_repeat_factors(labels, self.threshold,
                                                   self.use_sqrt)
        self.seed_given = seed is not None
        if seed is None:
            # the ceil list needs no seed; do not touch any RNG for it
            seed = sync_random_seed() if mode == 'stochastic' else 0
        self.seed = int(seed)
        self.epoch = 0
        # (seed, epoch) shared with dataloader workers (see class docstring)
        self._shared_state = torch.tensor([self.seed, 0],
                                          dtype=torch.int64).share_memory_()
        self._indices_key = None
        self._indices = np.zeros(0, dtype=np.int64)
        self._warned_stale_epoch = False
        self._log_factors()

    @staticmethod
    def _build(dataset: Union[BaseDataset, dict]):
        if not isinstance(dataset, dict):
            if not hasattr(dataset, 'get_data_info'):
                raise TypeError(f'RFSDataset: dataset must be a config dict '
                                f'or a dataset, got {type(dataset)}')
            return dataset
        cfg = dict(dataset)
        dataset_cls = cfg.get('type')
        if isinstance(dataset_cls, str):
            dataset_cls = DATASETS.get(dataset_cls)
        if isinstance(dataset_cls, type) and issubclass(
                dataset_cls, BaseDataset):
            cfg.setdefault('lazy_init', True)
        return DATASETS.build(cfg)

    # ----------------------------------------------------------- epoch list
    @property
    def metainfo(self) -> dict:
        return copy.deepcopy(self._metainfo)

    def full_init(self) -> None:
        """Nothing to do: the wrapper is initialised on construction."""

    def repeat_counts(self, epoch: Optional[int] = None) -> np.ndarray:
        """Copies of each image in ``epoch`` (default: the current one)."""
        return draw_repeat_counts(self.repeat_factors, self.mode, self.seed,
                                  self.epoch if epoch is None else epoch)

    def epoch_indices(self, epoch: Optional[int] = None) -> np.ndarray:
        """Indices into the wrapped dataset listed in ``epoch``, ascending
        (the sampler shuffles them)."""
        counts = self.repeat_counts(epoch)
        return np.repeat(np.arange(len(counts), dtype=np.int64), counts)

    def set_epoch(self, epoch: int) -> None:
        """Use the list of ``epoch`` (a no-op if it is already in use)."""
        epoch = int(epoch)
        if epoch == self.epoch and self._indices_key == (self.seed, epoch):
            return
        self.epoch = epoch
        self._shared_state[1] = epoch
        self._log_epoch(self._current_indices())

    def set_seed(self, seed: int) -> None:
        """Use another seed for the stochastic rounding."""
        self.seed = int(seed)
        self._shared_state[0] = self.seed

    def _current_indices(self) -> np.ndarray:
        seed, epoch = (int(v) for v in self._shared_state.tolist())
        if self._indices_key != (seed, epoch):
            # a worker's copy learns the new state from shared memory
            self.seed, self.epoch = seed, epoch
            self._indices = self.epoch_indices(epoch)
            self._indices_key = (seed, epoch)
        return self._indices

    def _log_factors(self) -> None:
        repeated = int(np.count_nonzero(self.repeat_factors > 1))
        max_factor = float(self.repeat_factors.max(initial=1.0))
        if self.mode == 'ceil':
            length = f'epoch length {len(self._current_indices())}'
        else:
            length = (f'expected epoch length '
                      f'{self.repeat_factors.sum():.1f}')
        print_log(
            f'RFSDataset (t={self.threshold:g}, {self.mode}): {repeated} of '
            f'{len(self.repeat_factors)} images have r(I) > 1 (max '
            f'{max_factor:.2f}), {length}',
            logger='current')

    def _log_epoch(self, indices: np.ndarray) -> None:
        if self.mode == 'ceil':
            return  # the same list every epoch, logged once
        print_log(
            f'RFSDataset epoch {self.epoch} (seed {self.seed}): epoch length '
            f'{len(indices)} (expected {self.repeat_factors.sum():.1f}), '
            f'list digest {index_list_digest(indices):08x}',
            logger='current')

    def _warn_if_epoch_is_stale(self) -> None:
        if self.mode != 'stochastic' or self._warned_stale_epoch:
            return
        runner_epoch = MessageHub.get_current_instance().get_info('epoch')
        if runner_epoch is not None and runner_epoch > self.epoch:
            self._warned_stale_epoch = True
            print_log(
                f'RFSDataset: training is at epoch {runner_epoch} but the '
                f'dataset still lists epoch {self.epoch}: add '
                f"dict(type='RFSEpochHook') to custom_hooks to redraw the "
                f'stochastic repeats every epoch',
                logger='current',
                level=logging.WARNING)

    # ------------------------------------------------------ dataset protocol
    def __len__(self) -> int:
        self._warn_if_epoch_is_stale()
        return len(self._current_indices())

    def _source_index(self, idx: int) -> int:
        return int(self._current_indices()[idx])

    def __getitem__(self, idx: int):
        return self.dataset[self._source_index(idx)]

    def get_data_info(self, idx: int) -> dict:
        return self.dataset.get_data_info(self._source_index(idx))

    def get_cat_ids(self, idx: int) -> List[int]:
        return self.dataset.get_cat_ids(self._source_index(idx))

    def get_subset_(self, indices) -> None:
        raise NotImplementedError(
            'RFSDataset does not support get_subset_: set `indices` on the '
            'wrapped dataset instead')

    def get_subset(self, indices):
        raise NotImplementedError(
            'RFSDataset does not support get_subset: set `indices` on the '
            'wrapped dataset instead')

    def __repr__(self) -> str:
        return (f'RFSDataset(dataset={describe_dataset(self.dataset)}, '
                f'threshold={self.threshold:g}, mode={self.mode!r}, '
                f'seed={self.seed}, use_sqrt={self.use_sqrt}, '
                f'epoch={self.epoch}, len={len(self._current_indices())})')
