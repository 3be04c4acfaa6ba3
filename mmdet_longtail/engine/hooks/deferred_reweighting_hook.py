"""``DeferredReweightingHook``: deferred re-weighting (DRW).

Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware
Margin Loss", NeurIPS 2019 (https://arxiv.org/abs/1906.07413), Sec. 3.3:
train with the unweighted loss, then switch the class weights on at a given
epoch. The :class:`DeferredSwitchHook` of the public attribute
``weights_enabled`` of every loss in the model that has one (e.g.
``ReweightedCrossEntropyLoss``, in every cascade stage).
"""
from typing import Optional

from mmdet.registry import HOOKS
from .deferred_switch_hook import DeferredSwitchHook


@HOOKS.register_module()
class DeferredReweightingHook(DeferredSwitchHook):
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

    what = 'class weights'
    example = "loss_cls=dict(type='ReweightedCrossEntropyLoss', ...)"

    def __init__(self,
                 switch_epoch: Optional[int] = None,
                 switch_iter: Optional[int] = None) -> None:
        super().__init__('weights_enabled', switch_epoch, switch_iter)
