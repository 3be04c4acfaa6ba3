from .class_stats import (ClassStatistics, get_class_statistics,
                          load_class_statistics)
from .lvis import LVISV05LTDataset, LVISV1LTDataset
from .synthetic_lvis import SyntheticLVISOptions, make_synthetic_lvis
from . import mask_mixup, rfs_dataset  # noqa: F401
from .samplers import class_aware_sampler, rfs_sampler  # noqa: F401
from .samplers import deferred_sampler  # noqa: F401

__all__ = [
    'ClassStatistics', 'get_class_statistics', 'load_class_statistics',
    'LVISV05LTDataset', 'LVISV1LTDataset', 'SyntheticLVISOptions',
    'make_synthetic_lvis'
]
