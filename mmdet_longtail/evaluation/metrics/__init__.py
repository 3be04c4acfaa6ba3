from .longtail_lvis_metric import LVIS_EVAL_BACKENDS, LongTailLVISMetric

__all__ = ['LVIS_EVAL_BACKENDS', 'LongTailLVISMetric']
