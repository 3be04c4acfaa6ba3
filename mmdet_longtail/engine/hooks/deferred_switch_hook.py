"""``DeferredSwitchHook``: turn a boolean switch of the model's losses on at
an epoch or an iteration.

The one hook of the deferred schedules of the losses: deferred re-weighting
(DRW, ``weights_enabled``, see ``DeferredReweightingHook``) and Pairwise
Class Balance (PCB, ``pcb_enabled`` of ``PCBLoss``). Before every epoch (or
iteration) the hook sets the public attribute ``attribute`` of every module
of the model that has one (e.g. the loss of every stage) to
``progress >= switch`` (:class:`~mmdet_longtail.utils.DeferredSwitch`). The
phase is a pure function of ``runner.epoch`` / ``runner.iter``, so a resumed
run gets the phase of the uninterrupted run with no state in the
checkpoint.
"""
from typing import List, Optional

import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.logging import print_log

from mmdet.registry import HOOKS
from mmdet_longtail.utils import DeferredSwitch


def switched_modules(model: nn.Module, attribute: str) -> List[nn.Module]:
    """The modules of ``model`` with the switch ``attribute``."""
    return [m for m in model.modules() if hasattr(m, attribute)]


@HOOKS.register_module()
class DeferredSwitchHook(Hook):
    """Switch ``attribute`` of the model's losses on at an epoch or an
    iteration.

    Args:
        attribute (str): the boolean attribute to set, e.g.
            ``'pcb_enabled'`` (PCB) or ``'weights_enabled'`` (DRW).
        switch_epoch (int, optional): first epoch (0-based, as
            ``runner.epoch``) with the switch on.
        switch_iter (int, optional): first iteration (0-based, as
            ``runner.iter``) with the switch on, for iteration-based loops.
            Give exactly one of the two.
    """

    priority = 'NORMAL'
    # what is switched, for the log and errors
    what: Optional[str] = None
    example = "loss_cls=dict(type='PCBLoss', ...)"

    def __init__(self,
                 attribute: str,
                 switch_epoch: Optional[int] = None,
                 switch_iter: Optional[int] = None) -> None:
        owner = type(self).__name__
        if not isinstance(attribute, str) or not attribute.isidentifier():
            raise ValueError(f'{owner}: attribute must be an attribute '
                             f'name, got {attribute!r}')
        if (switch_epoch is None) == (switch_iter is None):
            raise ValueError(f'{owner}: give exactly one of '
                             f'switch_epoch ({switch_epoch!r}) and '
                             f'switch_iter ({switch_iter!r})')
        unit = 'epoch' if switch_iter is None else 'iter'
        self.attribute = attribute
        self.switch = DeferredSwitch(
            switch_epoch if switch_iter is None else switch_iter, owner,
            unit)
        self._modules: List[nn.Module] = []

    def before_train(self, runner) -> None:
        self._modules = switched_modules(runner.model, self.attribute)
        if not self._modules:
            raise ValueError(
                f'{type(self).__name__}: the model has no loss with a '
                f'{self.attribute} switch; use a loss that has one, e.g. '
                f'{self.example}')
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
        changed = [
            m for m in self._modules
            if getattr(m, self.attribute) != enabled
        ]
        for module in self._modules:
            setattr(module, self.attribute, enabled)
        if changed:
            print_log(
                f'{type(self).__name__}: {self.what or self.attribute} '
                f'{"on" if enabled else "off"} from {self.switch.unit} '
                f'{progress} (switch at {self.switch.unit} '
                f'{self.switch.switch_at}) in {len(changed)} loss(es)',
                logger='current')
