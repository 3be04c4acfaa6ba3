"""The precision the losses compute in."""
import torch
from torch import Tensor

HALF_DTYPES = (torch.float16, torch.bfloat16)


def upcast_half(x: Tensor) -> Tensor:
    """``x`` in float32 if it is float16 / bfloat16 (mixed precision),
    otherwise unchanged: float32 stays float32 and float64 stays float64.
    Autograd casts the gradient back to the input's dtype."""
    return x.float() if x.dtype in HALF_DTYPES else x
