"""``DeferredReweightingHook``: deferred re-weighting (DRW).

Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware
Margin Loss", NeurIPS 2019 (https://arxiv.org/abs/1906.07413), Sec. 3.3:
train with the unweighted loss, then switch the class weights on at a given
epoch. Before every epoch (or iteration) the hook sets the public attribute
``weights_enabled`` of every loss in the model that has one (e.g.
``ReweightedCrossEntropyLoss``, in every cascade stage) to
``progress >= switch`` (:class:`~mmdet_longtail.utils.DeferredSwitch`). The
phase is a pure function of ``runner.epoch`` / ``runner.iter``, so a resumed
run gets the phase of the uninterrupted run with no state in the checkpoint.
"""
from typing import List, Optional

import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.logging import print_log

from mmdet.registry import HOOKS
from mmdet_longtail.utils import DeferredSwitch


def reweighted_modules(model: nn.Module) -> List[nn.Module]:
    """The modules of ``model`` with a ``weights_enabled`` switch."""
    return [m for m in model.modules() if hasattr(m, 'weights_enabled')]


@HOOKS.register_module()
class DeferredReweightingHook(Hook):
    """Switch the class weights of the model's losses on at an epoch or an
    iteration (DRW).

    Args:
        switch_epoch (int, optional): first epoch (0-based, as
            ``runner.epoch``) trained with the weights; the LDAM-DRW recipe
            uses 160 of 200 epochs, i.e. the last lr step.
        switch_iter (int, optional): first iteration (0-based, as
            ``runner.iter``) trained with the weights, for
            iteration-based loops. Give exactly one of the two.
    """

    priority = 'NORMAL'

    def __init__(self,
                 switch_epoch: Optional[int] = None,
                 switch_iter: Optional[int] = None) -> None:
        if (switch_epoch is None) == (switch_iter is None):
            raise ValueError('DeferredReweightingHook: give exactly one of '
                             f'switch_epoch ({switch_epoch!r}) and '
                             f'switch_iter ({switch_iter!r})')
        unit = 'epoch' if switch_iter is None else 'iter'
        self.switch = DeferredSwitch(
            switch_epoch if switch_iter is None else switch_iter,
            'DeferredReweightingHook', unit)
        self._modules: List[nn.Module] = []

    def before_train(self, runner) -> None:
        self._modules = reweighted_modules(runner.model)
        if not self._modules:
            raise ValueError(
                'DeferredReweightingHook: the model has no loss with a '
                'weights_enabled switch; use a re-weighted loss, e.g. '
                "loss_cls=dict(type='ReweightedCrossEntropyLoss', ...)")
        self._apply(runner.epoch if self.switch.unit == 'epoch' else
                    runner.iter)

    def before_train_epoch(self, runner) -> None:
        if self.switch.unit == 'epoch':
            self._apply(runner.epoch)

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        if self.switch.unit == 'iter':
            self._apply(runner.iter)

    def _apply(self, progress: int) -> None:
        enabled = self.switch.on(progress)
        changed = [m for m in self._modules if m.weights_enabled != enabled]
        for module in self._modules:
            module.weights_enabled = enabled
        if changed:
            print_log(
                f'DeferredReweightingHook: class weights '
                f'{"on" if enabled else "off"} from {self.switch.unit} '
                f'{progress} (switch at {self.switch.unit} '
                f'{self.switch.switch_at}) in {len(changed)} loss(es)',
                logger='current')
