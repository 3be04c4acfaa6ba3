"""Per-class gradient statistics of EQLv2 and EFL.

Both methods weight each class by the ratio of the positive to the negative
gradient magnitude it has accumulated over training::

    pos_grad_j += sum of |gradient| over the positive targets of class j
    neg_grad_j += sum of |gradient| over the negative targets of class j
    pos_neg_j   = pos_grad_j / (neg_grad_j + 1e-10)   (EFL: clamped to [0, 1])

What differs is the method's own: which gradient it collects (EQLv2: the
analytic ``|sigmoid(z) - y| w`` in the forward pass; EFL: the true gradient
in the backward pass), the ratio before any statistics (EQLv2: 100, EFL: 1)
and the clamp.

The three are registered buffers of the loss, so they are saved in
checkpoints, restored exactly by ``--resume`` and moved by ``.to(device)``.
mmengine's DDP does not broadcast buffers, so each step's increments are
summed over the ranks (``mmengine.dist.all_reduce``; nothing happens on one
process) and every rank keeps identical statistics. A step whose summed
increments are not finite (e.g. an AMP overflow step, which the optimizer
skips too) leaves the statistics unchanged.
"""
import math
from typing import Optional

import torch
from mmengine.dist import all_reduce
from mmengine.logging import print_log
from torch import Tensor

# guards the ratio of a class that has had no negative gradient yet
RATIO_EPS = 1e-10


class GradientStatistics:
    """Mixin of an ``nn.Module`` loss: the buffers ``pos_grad``,
    ``neg_grad`` and ``pos_neg`` (C,) and their update.

    Call :meth:`register_gradient_statistics` in ``__init__`` and
    :meth:`accumulate_gradient_statistics` once per training step, on every
    rank.
    """

    max_ratio: Optional[float] = None

    def register_gradient_statistics(
            self,
            num_classes: int,
            initial_ratio: float,
            max_ratio: Optional[float] = None) -> None:
        """Register the buffers: no gradient yet, ratio ``initial_ratio``.

        Args:
            num_classes (int): C, classes with statistics.
            initial_ratio (float): ``pos_neg`` before the first step.
            max_ratio (float, optional): clamp of the ratio to
                ``[0, max_ratio]``; None leaves it unbounded.
        """
        self.register_buffer('pos_grad', torch.zeros(num_classes))
        self.register_buffer('neg_grad', torch.zeros(num_classes))
        self.register_buffer('pos_neg',
                             torch.full((num_classes, ), float(initial_ratio)))
        self.max_ratio = max_ratio

    @torch.no_grad()
    def accumulate_gradient_statistics(self, increment: Tensor) -> bool:
        """Add one step's gradient magnitudes and recompute the ratio.

        Args:
            increment (Tensor): (2, C), this rank's positive (row 0) and
                negative (row 1) gradient magnitudes per class.

        Returns:
            bool: False when the step was skipped (non-finite increments).
        """
        increment = increment.to(self.pos_grad, copy=True)
        all_reduce(increment, op='sum')
        # one reduction and one sync: any inf or NaN reaches the sum
        if not math.isfinite(float(increment.sum())):
            print_log(f'{type(self).__name__}: non-finite gradients, '
                      f'statistics not updated', logger='current')
            return False
        self.pos_grad += increment[0]
        self.neg_grad += increment[1]
        ratio = self.pos_grad / (self.neg_grad + RATIO_EPS)
        if self.max_ratio is not None:
            ratio = ratio.clamp(0, self.max_ratio)
        self.pos_neg.copy_(ratio)
        return True
