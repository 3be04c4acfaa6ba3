from .deferred_reweighting_hook import DeferredReweightingHook  # noqa: F401
from .deferred_switch_hook import DeferredSwitchHook  # noqa: F401
from .freeze_except_hook import FreezeExceptHook  # noqa: F401
from .num_class_check_hook import (LongTailNumClassCheckHook,
                                   check_num_classes)
from .progress_bar_hook import ProgressBarHook
from .rng_state_hook import RNGStateHook
from .rfs_epoch_hook import RFSEpochHook  # noqa: F401

__all__ = [
    'LongTailNumClassCheckHook', 'check_num_classes', 'ProgressBarHook',
    'RNGStateHook'
]
