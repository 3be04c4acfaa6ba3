"""Reproducible per-step sampling inside a loss.

Losses that draw a random subset at every training step (BAGS's "others"
RoIs, the federated loss's negative classes) key each draw by
(seed, rank, step):

* ``seed``: the loss's ``seed`` argument, or the run's seed
  (``torch.initial_seed()``, which mmengine's ``randomness.seed`` sets), read
  at the first draw;
* ``rank``: the process's rank, so the ranks draw differently;
* ``step``: the buffer ``sampling_step``, saved in checkpoints, so
  ``--resume`` continues the same draws on every rank.

Every draw uses a fresh numpy generator, so the global random streams are not
consumed and CPU and GPU runs draw alike.
"""
from typing import Optional

import numpy as np
import torch
from mmengine.dist import get_rank


def sampling_rng(base_seed: int, rank: int,
                 step: int) -> np.random.Generator:
    """Generator of one sampling step, keyed by (seed, rank, step)."""
    return np.random.default_rng([base_seed, rank, step])


class SeededSampling:
    """Mixin of an ``nn.Module`` loss: the ``sampling_step`` buffer and
    :meth:`next_sampling_rng`.

    Call :meth:`register_sampling_step` in ``__init__`` (after
    ``nn.Module.__init__``) and :meth:`next_sampling_rng` once per draw.
    """

    seed: Optional[int] = None

    def register_sampling_step(self, seed: Optional[int] = None) -> None:
        """Register the ``sampling_step`` buffer (0) and keep ``seed``
        (None: the run's seed at the first draw)."""
        self.seed = seed
        self.register_buffer('sampling_step',
                             torch.zeros((), dtype=torch.long))
        self._run_seed: Optional[int] = None
        self._step: Optional[int] = None  # host copy of sampling_step

    def next_sampling_rng(self) -> np.random.Generator:
        """The generator of the current step; advances ``sampling_step``."""
        if self._run_seed is None:
            self._run_seed = (self.seed if self.seed is not None else
                              torch.initial_seed())
        if self._step is None:
            self._step = int(self.sampling_step)
        step = self._step
        self._step += 1
        self.sampling_step.fill_(self._step)
        return sampling_rng(self._run_seed, get_rank(), step)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        # mmengine's checkpoint loader calls this (not load_state_dict):
        # the next draw re-reads the loaded step
        super()._load_from_state_dict(*args, **kwargs)
        self._step = None
