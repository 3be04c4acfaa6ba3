"""Reductions of a loss, and the check of their names."""
from torch import Tensor

REDUCTIONS = ('none', 'mean', 'sum')


def check_reduction(reduction: str, owner: str) -> str:
    """``reduction`` if it is one of ``REDUCTIONS``, else a clear error
    naming the loss ``owner``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f'{owner}: reduction must be one of {REDUCTIONS}, '
                         f'got {reduction!r}')
    return reduction


def reduce_roi_losses(roi_losses: Tensor, reduction: str) -> Tensor:
    """Reduce per-RoI losses (N,) as the authors of EQL and EQLv2 do:
    'none' keeps them, 'sum' adds them, 'mean' divides the sum by the
    number of RoIs N (not by mmdet's ``avg_factor``)."""
    if reduction == 'none':
        return roi_losses
    if reduction == 'sum':
        return roi_losses.sum()
    return roi_losses.sum() / max(roi_losses.numel(), 1)
