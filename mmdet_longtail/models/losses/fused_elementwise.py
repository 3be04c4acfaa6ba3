"""Element-wise loss math fused into one kernel by ``torch.compile``.

A sigmoid loss over every anchor x class evaluates several transcendental
functions per logit. Run op by op in eager mode, each intermediate is a
pass over memory and a fresh allocation; fused, the whole expression is one
loop (C++/OpenMP on the CPU, Triton on the GPU). The wrapped function is
still plain PyTorch, so the eager and the fused paths share one definition.

Small inputs stay eager: the guards of a compiled call cost more than the
arithmetic they would save. Where ``torch.compile`` is unavailable (no C++
compiler, no Triton) the first call falls back to eager with a warning;
``TORCH_COMPILE_DISABLE=1`` turns fusion off everywhere.
"""
import logging
from typing import Callable, Optional

import torch
from mmengine.logging import print_log

# below this many elements a kernel runs eagerly
DEFAULT_MIN_NUMEL = 1 << 16
# inductor compiles C++ kernels with -ffp-contract=off by default; letting
# the compiler fuse a * b + c into one FMA (rounded once, so at least as
# accurate) makes these transcendental-heavy kernels ~10% faster on a CPU
COMPILE_OPTIONS = {'cpp.enable_floating_point_contract_flag': 'fast'}


class FusedElementwise:
    """Call ``fn(x, *args)``: eagerly for small ``x``, else compiled.

    Args:
        fn (Callable): element-wise tensor function, its first argument the
            largest input.
        min_numel (int): inputs with fewer elements run eagerly. Defaults
            to ``DEFAULT_MIN_NUMEL``.
    """

    def __init__(self, fn: Callable,
                 min_numel: int = DEFAULT_MIN_NUMEL) -> None:
        self.fn = fn
        self.min_numel = min_numel
        self._compiled: Optional[Callable] = None
        self._verified = False  # a compiled call has succeeded
        self._unavailable = False

    def __call__(self, x: torch.Tensor, *args):
        if (x.numel() < self.min_numel or self._unavailable
                or torch.compiler.is_compiling()):
            # inside a compiled model the outer graph traces the function
            return self.fn(x, *args)
        if self._compiled is None:
            # one graph for every number of anchors
            self._compiled = torch.compile(
                self.fn, dynamic=True, options=COMPILE_OPTIONS)
        if self._verified:
            return self._compiled(x, *args)
        try:
            out = self._compiled(x, *args)
        except Exception as err:  # noqa: B902 any backend failure
            self._unavailable = True
            first_line = (str(err).splitlines() or [''])[0]
            print_log(
                f'{self.fn.__name__}: torch.compile is unavailable here '
                f'({type(err).__name__}: {first_line}); '
                f'running it eagerly (same values, slower)',
                logger='current',
                level=logging.WARNING)
            return self.fn(x, *args)
        self._verified = True
        return out
