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
from mmengine.hooks import Hook

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

    Checkpoints are written by rank 0, so the states of all ranks are
    gathered into it. A checkpoint from a run with another world size
    restores rank 0's state on every rank (and logs a warning).
    """
    priority = 'VERY_LOW'  # capture after other hooks consumed randomness

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        states: List[Optional[dict]] = all_gather_object(capture_rng_state())
        checkpoint[CHECKPOINT_KEY] = states

    def __init__(self) -> None:
        self._pending_state: Optional[dict] = None

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
        if self._pending_state is not None:
            restore_rng_state(self._pending_state)
            self._pending_state = None
