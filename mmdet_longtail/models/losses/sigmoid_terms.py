"""Element-wise building blocks of the sigmoid losses (EQL, EQLv2, EFL).

Every one of them needs, for each logit ``z``, the binary cross-entropy of
a target, ``softplus(z) = log(1 + exp(z))``, and the sigmoid that is its
derivative. Both come from one ``e = exp(-|z|)``::

    softplus(z) = max(z, 0) + log1p(e)
    sigmoid(z)  = 1 / (1 + e)   if z >= 0,   e / (1 + e)   otherwise

which is stable for every finite ``z``. ``log1p`` is the costly part (on a
CPU, a full-precision ``log1p`` costs three times an ``exp``), and its
argument only ever lies in ``[0, 1]``. There ``log1p(e) = 2 atanh(t)`` with
``t = e / (2 + e)`` in ``[0, 1/3]``, and the series::

    2 atanh(t) = 2 t (1 + t^2/3 + t^4/5 + ... + t^12/13 + ...)

cut after ``t^12/13`` leaves a relative error below
``(1/9)^7 / 15 / (1 - 1/9) < 1.2e-8``, under float32's rounding
(``6e-8``). It is a
division and seven multiply-adds, which a fused kernel vectorises fully.
Float64 logits take ``torch.log1p`` (the series would not reach float64
precision).

The positive targets are given either as one label per row (``labels``
(N,), at most one positive per row, any value outside ``[0, K)`` meaning
none) or as a dense boolean matrix (N, K): :func:`positive_mask` turns
either into the (N, K) mask inside the fused kernel, so the mask is never
stored.
"""
from typing import Tuple

import torch
from torch import Tensor


def log1p_of_unit(e: Tensor) -> Tensor:
    """``log(1 + e)`` for ``e`` in ``[0, 1]`` (see the module docstring):
    float32 by the atanh series, other dtypes by ``torch.log1p``."""
    if e.dtype != torch.float32:
        return torch.log1p(e)
    t = e / (2 + e)
    t2 = t * t
    # Horner's rule; literal coefficients stay compile-time constants of
    # the fused kernel (a tuple of floats would become kernel inputs)
    poly = t2 * (1 / 13)
    poly = t2 * (poly + 1 / 11)
    poly = t2 * (poly + 1 / 9)
    poly = t2 * (poly + 1 / 7)
    poly = t2 * (poly + 1 / 5)
    poly = t2 * (poly + 1 / 3)
    return 2 * t * (1 + poly)


def softplus_and_sigmoid(z: Tensor) -> Tuple[Tensor, Tensor]:
    """``(softplus(z), sigmoid(z))`` from one ``exp(-|z|)``."""
    e = torch.exp(-z.abs())
    sigmoid_abs = torch.reciprocal(1 + e)
    sigmoid = torch.where(z >= 0, sigmoid_abs, e * sigmoid_abs)
    return z.clamp(min=0) + log1p_of_unit(e), sigmoid


def positive_mask(positive: Tensor, num_columns: int) -> Tensor:
    """(N, K) bool mask of the positive targets from ``positive``: labels
    (N,) (one positive per row where ``0 <= label < K``) or a mask
    (N, K)."""
    if positive.dim() == 2:
        return positive
    # int32: twice the lanes of an int64 comparison per vector
    columns = torch.arange(
        num_columns, device=positive.device, dtype=torch.int32)
    return positive[:, None].to(torch.int32) == columns


def column_sums_at_labels(values: Tensor, labels: Tensor) -> Tensor:
    """``sum_i values[i, labels_i]`` per column (K,), over the rows whose
    label lies in ``[0, K)``; reads only those N elements, not the
    (N, K) matrix."""
    num_columns = values.size(1)
    columns = labels.clamp(0, num_columns - 1)
    at_label = values.gather(1, columns[:, None]).view(-1)
    # a row without a label in range adds to an extra bin, dropped
    bins = labels.where(labels == columns, num_columns)
    return at_label.new_zeros(num_columns + 1).index_add_(
        0, bins, at_label)[:num_columns]
