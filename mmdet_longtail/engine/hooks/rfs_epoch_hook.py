"""Tell :class:`~mmdet_longtail.datasets.rfs_dataset.RFSDataset` the epoch.

RFS with stochastic rounding (Gupta et al., "LVIS", CVPR 2019, App. B.2,
https://arxiv.org/abs/1908.03195) redraws the number of copies of every
image each epoch, so the epoch's index list, and its length, change. This
hook advances the dataset and keeps mmengine's samplers, which fix their
length at construction, in step.
"""
import math
from typing import Iterator, List

from mmengine.dataset import DefaultSampler, InfiniteSampler
from mmengine.dist import all_gather_object, broadcast_object_list
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop

from mmdet.registry import HOOKS
from mmdet_longtail.datasets.rfs_dataset import (RFSDataset, index_list_digest)


def find_rfs_datasets(dataset) -> List[RFSDataset]:
    """Every RFSDataset in a dataset and its wrappers."""

    def walk(node, depth: int) -> Iterator[RFSDataset]:
        if depth > 8 or node is None:
            return
        if isinstance(node, RFSDataset):
            yield node
        yield from walk(getattr(node, 'dataset', None), depth + 1)
        for child in getattr(node, 'datasets', None) or ():
            yield from walk(child, depth + 1)

    return list(walk(dataset, 0))


def refresh_sampler_length(sampler) -> None:
    """Recompute the per-rank length of a sampler after ``len(dataset)``
    changed, as the sampler's constructor would.

    ``DefaultSampler`` and ``InfiniteSampler`` are supported; any other
    sampler whose length depends on the dataset raises, since it would
    silently pad or drop samples.
    """
    if isinstance(sampler, DefaultSampler):
        size = len(sampler.dataset)
        if sampler.round_up:
            sampler.num_samples = math.ceil(size / sampler.world_size)
            sampler.total_size = sampler.num_samples * sampler.world_size
        else:
            sampler.num_samples = math.ceil(
                (size - sampler.rank) / sampler.world_size)
            sampler.total_size = size
    elif isinstance(sampler, InfiniteSampler):
        if sampler.size != len(sampler.dataset):
            sampler.size = len(sampler.dataset)
            # its index stream is a generator built from the size
            sampler.indices = sampler._indices_of_rank()
    elif getattr(sampler, 'dataset', None) is not None:
        raise TypeError(
            f'RFSEpochHook: the length of an RFSDataset changes with the '
            f'epoch; {type(sampler).__name__} cannot follow it (use '
            f'DefaultSampler or InfiniteSampler, or mode="ceil")')


def _train_samplers(dataloader) -> list:
    samplers = [getattr(dataloader, 'sampler', None)]
    batch_sampler = getattr(dataloader, 'batch_sampler', None)
    samplers.append(getattr(batch_sampler, 'sampler', None))
    unique = []
    for sampler in samplers:
        if sampler is not None and all(sampler is not s for s in unique):
            unique.append(sampler)
    return unique


def _update_max_iters(runner) -> None:
    """Re-estimate an epoch-based loop's total iterations (used for the ETA)
    from the current epoch length; the loop computed it once, from the
    length at construction."""
    loop = runner.train_loop
    if not isinstance(loop, EpochBasedTrainLoop):
        return  # iteration-based loops have a fixed number of iterations
    remaining = max(loop.max_epochs - runner.epoch, 0)
    loop._max_iters = runner.iter + remaining * len(runner.train_dataloader)


@HOOKS.register_module()
class RFSEpochHook(Hook):
    """Advance :class:`RFSDataset` to the training epoch.

    * ``before_train``: unless the dataset was given a ``seed``, use the
      run's seed (rank 0's ``runner.seed``, which ``--resume`` restores from
      the checkpoint), so the lists are the same on every rank and after a
      resume.
    * ``before_train_epoch``: ``dataset.set_epoch(runner.epoch)`` and resize
      the train sampler to the new length. The dataloader's iterator is
      created after the hooks, so the sampler and the (persistent) workers
      see the new list.
    * With ``check_ranks=True`` (default) all ranks compare (seed, epoch,
      length, digest) of their list and a mismatch raises.

    It does nothing when the train dataset holds no RFSDataset, and calling
    it twice per epoch (e.g. registered twice) is harmless.

    Args:
        check_ranks (bool): Verify under DDP that every rank holds the same
            index list. Defaults to True.
    """
    # before any other hook that might look at the dataset's length
    priority = 'VERY_HIGH'

    def __init__(self, check_ranks: bool = True) -> None:
        self.check_ranks = check_ranks

    def before_train(self, runner) -> None:
        datasets = find_rfs_datasets(runner.train_dataloader.dataset)
        if not datasets:
            return
        seed = [runner.seed]
        broadcast_object_list(seed, src=0)
        for dataset in datasets:
            if not dataset.seed_given:
                dataset.set_seed(seed[0])
        # iteration-based loops have no before_train_epoch
        self._advance(runner, datasets)

    def before_train_epoch(self, runner) -> None:
        datasets = find_rfs_datasets(runner.train_dataloader.dataset)
        if datasets:
            self._advance(runner, datasets)

    def _advance(self, runner, datasets: List[RFSDataset]) -> None:
        for dataset in datasets:
            dataset.set_epoch(runner.epoch)
        for sampler in _train_samplers(runner.train_dataloader):
            refresh_sampler_length(sampler)
        _update_max_iters(runner)
        if self.check_ranks:
            self._check_ranks(datasets)

    @staticmethod
    def _check_ranks(datasets: List[RFSDataset]) -> None:
        mine = [(d.seed, d.epoch, len(d), index_list_digest(d.epoch_indices()))
                for d in datasets]
        everyone = all_gather_object(mine)
        if any(other != mine for other in everyone):
            raise RuntimeError(
                f'RFSEpochHook: ranks hold different RFS index lists '
                f'(seed, epoch, length, digest per rank): {everyone}')
        if len(everyone) > 1:
            print_log(
                f'RFSEpochHook: same index list on all {len(everyone)} '
                f'ranks (epoch {datasets[0].epoch}, length '
                f'{len(datasets[0])})',
                logger='current')
