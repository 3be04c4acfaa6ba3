"""``DeferredSampler``: deferred re-sampling (DRS).

Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware
Margin Loss", NeurIPS 2019 (https://arxiv.org/abs/1906.07413), Sec. 3.3 and
Sec. 4: train with uniform sampling first, then switch to a re-sampling
scheme (here repeat factor sampling or class-aware sampling) at a given
epoch. Epoch ``e`` is sampled by::

    sampler(e) = uniform   if e < switch_epoch    (mmengine DefaultSampler)
                 target    otherwise              (e.g. RFSSampler)

Both samplers list a pure function of ``(seed, e)``, and so does this one:
:meth:`DeferredSampler.set_epoch`, which mmengine calls before every epoch
(``DistSamplerSeedHook``; iteration-based loops each time they restart the
dataloader), is its only state change, so a run resumed at any epoch, before,
at or after the switch, lists what the uninterrupted run lists.
"""
from typing import Iterator, Optional

from mmengine.dataset import DefaultSampler
from mmengine.dist import sync_random_seed
from mmengine.logging import print_log
from torch.utils.data import Sampler

from mmdet.registry import DATA_SAMPLERS
from mmdet_longtail.utils import DeferredSwitch


@DATA_SAMPLERS.register_module()
class DeferredSampler(Sampler):
    """Uniform sampling before ``switch_epoch``, ``sampler`` from then on.

    Use it as ``train_dataloader.sampler``, e.g. DRS with RFS from epoch 8::

        train_dataloader = dict(sampler=dict(
            _delete_=True, type='DeferredSampler', switch_epoch=8,
            sampler=dict(type='RFSSampler', threshold=1e-3)))

    The epoch length is that of the active sampler. mmengine computes
    ``max_iters`` (the ETA) and iteration-based scheduler milestones from
    epoch 0's length, as with :class:`RFSSampler`'s varying lengths.

    Args:
        dataset (Dataset): the training dataset (mmengine passes it).
        sampler (dict): config of the target sampler, built with the same
            dataset and seed, e.g. ``dict(type='RFSSampler', threshold=1e-3)``
            or ``dict(type='LongTailClassAwareSampler')``.
        switch_epoch (int): first epoch (0-based) sampled by ``sampler``.
        seed (int, optional): seed of both samplers, the same on all ranks;
            None uses ``sync_random_seed()``, the runner passes its seed.
        shuffle (bool): shuffle in the uniform phase. Defaults to True.
    """

    def __init__(self,
                 dataset,
                 sampler: dict,
                 switch_epoch: int,
                 seed: Optional[int] = None,
                 shuffle: bool = True) -> None:
        if not isinstance(sampler, dict) or 'type' not in sampler:
            raise ValueError(f'DeferredSampler: sampler must be a sampler '
                             f"config with a 'type', got {sampler!r}")
        self.switch = DeferredSwitch(switch_epoch, 'DeferredSampler')
        self.seed = sync_random_seed() if seed is None else int(seed)
        self.uniform = DefaultSampler(
            dataset, shuffle=shuffle, seed=self.seed)
        self.target = DATA_SAMPLERS.build(
            sampler, default_args=dict(dataset=dataset, seed=self.seed))
        self.dataset = dataset
        self.epoch = 0
        print_log(
            f'DeferredSampler: uniform sampling for epochs < '
            f'{self.switch.switch_at}, then {type(self.target).__name__}',
            logger='current')

    @property
    def active(self) -> Sampler:
        """The sampler of the current epoch."""
        return self.target if self.switch.on(self.epoch) else self.uniform

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch`` (of the sampler it falls to)."""
        before = self.active
        self.epoch = int(epoch)
        self.active.set_epoch(self.epoch)
        if self.active is not before:
            print_log(
                f'DeferredSampler: epoch {self.epoch} samples with '
                f'{type(self.active).__name__}', logger='current')

    def __iter__(self) -> Iterator[int]:
        return iter(self.active)

    def __len__(self) -> int:
        """Samples of the current epoch on this rank."""
        return len(self.active)
