from .freeze_except_hook import FreezeExceptHook  # noqa: F401
from .num_class_check_hook import (LongTailNumClassCheckHook,
                                   check_num_classes)
from .rng_state_hook import RNGStateHook

__all__ = ['LongTailNumClassCheckHook', 'check_num_classes', 'RNGStateHook']
