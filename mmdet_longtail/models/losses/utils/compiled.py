"""Fused (``torch.compile``) versions of a loss's elementwise terms."""
import functools
from typing import Callable

import torch


@functools.cache
def compiled(fn: Callable) -> Callable:
    """``fn`` compiled by ``torch.compile`` with dynamic shapes (one graph
    for every number of anchors), built once per process and function.

    The compiled function computes the same equation as ``fn`` in one or two
    fused kernels instead of one kernel and one (N, C) temporary per
    operation: what pays for the dense losses on a GPU (N anchors x 1203
    classes). Compilation happens at the first call.
    """
    return torch.compile(fn, dynamic=True)
