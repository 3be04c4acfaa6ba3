from . import hooks  # noqa: F401
from .long_tail_runner import LongTailRunner

__all__ = ['LongTailRunner']
