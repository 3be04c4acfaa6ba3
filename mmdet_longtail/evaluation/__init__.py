from .lvis_api import evaluate_lvis, import_lvis, patch_lvis_numpy
from .metrics import LongTailLVISMetric
from . import fast_lvis_eval  # noqa: F401

__all__ = [
    'evaluate_lvis', 'import_lvis', 'patch_lvis_numpy', 'LongTailLVISMetric'
]
