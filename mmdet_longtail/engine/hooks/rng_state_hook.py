"""Save and restore random number generator states with checkpoints.

mmengine seeds the generators once at start-up and does not store their
state in checkpoints. After ``--resume`` the RPN / RoI samplers, the BAGS
"others" sampling and any other random step therefore draw different numbers
than an uninterrupted run. This hook stores the state of python's ``random``,
numpy and torch (CPU and CUDA) for *every* rank in the checkpoint, and each
rank restores its own state on resume, so a resumed run continues exactly.
"""
import random
from typing import List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_dist_info
from mmengine.hooks import CheckpointHook, Hook

from mmdet.registry import HOOKS

CHECKPOINT_KEY = 'rng_states'


def capture_rng_state() -> dict:
    state = dict(
        python=random.getstate(),
        numpy=np.random.get_state(),
        torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict) -> None:
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state['cuda'])


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Keep every rank's RNG state in checkpoints for exact resumption.

    Checkpoints are written by rank 0 only (``Runner.save_checkpoint`` is
    ``master_only``), so a collective call there would hang. In a
    distributed run, every rank therefore takes a snapshot where
    ``CheckpointHook`` may save: after each train epoch (``by_epoch``) or
    each train iteration. The hook runs before ``CheckpointHook`` (priority
    LOW vs VERY_LOW), which then saves the gathered states. A checkpoint
    from a run with another world size restores rank 0's state on every
    rank (and logs a warning).
    """
    priority = 'LOW'

    def __init__(self) -> None:
        self._pending_state: Optional[dict] = None
        self._gathered: Optional[List[dict]] = None
        # None: no CheckpointHook, nothing to gather
        self._checkpoint_by_epoch: Optional[bool] = None

    def _snapshot(self) -> None:
        if get_dist_info()[1] > 1:
            self._gathered = all_gather_object(capture_rng_state())

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if self._checkpoint_by_epoch is False:
            self._snapshot()

    def after_train_epoch(self, runner) -> None:
        if self._checkpoint_by_epoch:
            self._snapshot()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if get_dist_info()[1] > 1:
            if self._gathered is not None:
                checkpoint[CHECKPOINT_KEY] = self._gathered
        else:
            checkpoint[CHECKPOINT_KEY] = [capture_rng_state()]

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        states = checkpoint.get(CHECKPOINT_KEY)
        if not states or not runner._resume:
            # plain `load_from` (fine-tuning) starts a new random stream
            return
        rank, world_size = get_dist_info()
        if len(states) != world_size:
            runner.logger.warning(
                f'checkpoint has RNG states of {len(states)} ranks, this run '
                f'has {world_size}: every rank restores rank 0\'s state')
            rank = 0
        # applied in before_train: Runner.resume re-seeds after this hook
        # when the checkpoint's seed differs from the configured one
        self._pending_state = states[rank]

    def before_train(self, runner) -> None:
        savers = [h for h in runner.hooks if isinstance(h, CheckpointHook)]
        if savers:
            self._checkpoint_by_epoch = savers[0].by_epoch
        if self._pending_state is not None:
            restore_rng_state(self._pending_state)
            self._pending_state = None
