"""The switch of the deferred schedules: DRW and DRS.

Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware
Margin Loss", NeurIPS 2019 (https://arxiv.org/abs/1906.07413), Sec. 3.3,
train with the plain loss and sampler first and switch to class re-weighting
(DRW) or re-sampling (DRS) at a given epoch. Whether a switch is on is a pure
function of the training progress (the epoch or the iteration about to
run)::

    on(t) = t >= switch_at

so a resumed run computes the same phase from the progress it resumes at and
checkpoints need no extra state.
"""
from dataclasses import dataclass
from numbers import Integral


@dataclass(frozen=True)
class DeferredSwitch:
    """A switch that turns on at ``switch_at`` (an epoch or an iteration,
    0-based: ``switch_at=k`` means the (k+1)-th one is the first with the
    switch on, as ``runner.epoch`` / ``runner.iter`` count).

    Args:
        switch_at (int): first epoch / iteration with the switch on, >= 0.
        owner (str): who owns the switch, for error messages.
        unit (str): ``'epoch'`` or ``'iter'``, for error messages and logs.
    """
    switch_at: int
    owner: str = 'DeferredSwitch'
    unit: str = 'epoch'

    def __post_init__(self) -> None:
        if isinstance(self.switch_at, bool) or not isinstance(
                self.switch_at, Integral) or self.switch_at < 0:
            raise ValueError(f'{self.owner}: switch_{self.unit} must be an '
                             f'integer >= 0, got {self.switch_at!r}')

    def on(self, progress: int) -> bool:
        """Whether the switch is on in epoch / iteration ``progress``."""
        return int(progress) >= self.switch_at
