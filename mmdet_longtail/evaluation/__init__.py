from .fast_lvis_eval import evaluate_lvis_fast
from .lvis_api import (LVISEvalResult, evaluate_lvis, import_lvis,
                       patch_lvis_numpy)
from .metrics import LVIS_EVAL_BACKENDS, LongTailLVISMetric

__all__ = [
    'evaluate_lvis', 'evaluate_lvis_fast', 'import_lvis', 'patch_lvis_numpy',
    'LVISEvalResult', 'LongTailLVISMetric', 'LVIS_EVAL_BACKENDS'
]
