"""Score sweeps: re-score a two-stage detector under many test-time scoring
settings from one network pass.

The detector runs once over the test set (built from the config and the
checkpoint as ``tools/test.py`` builds it). For every image the RoIs after
the last refinement, the combined class output, the box regression and the
input features of every stage's classifier are cached (recorded with
forward hooks, :class:`HeadRecorder`). Each :class:`Setting` is then applied
to the model's components through their test-time scoring settings
(:mod:`mmdet_longtail.models.scoring_settings`: NorCal ``gamma``, tau-norm
``tau``, TDE ``alpha``) and re-scored from the cache with the last box
head's ``predict_by_feat``; so one setting gives exactly what
``tools/test.py --cfg-options <that setting>`` gives. The cache is keyed by
a fingerprint of the model config, the checkpoint and the test set
(:func:`make_fingerprint`). The command line is
``tools/analysis_tools/sweep_scoring.py``.
"""
from .cache import (CACHE_VERSION, META_FILE, ShardWriter, cache_is_complete,
                    clear_cache, iter_shards, read_meta)
from .detector import (build_detector, build_evaluator, load_config,
                       scoring_model_cfg, stage_heads,
                       with_norcal_loss, with_tau_norm_classifiers)
from .fingerprint import (CacheMismatchError, check_fingerprint,
                          make_fingerprint, model_identity, tree_differences)
from .pipeline import SweepOutcome, sweep_scoring
from .recorder import HeadRecorder
from .report import (TABLE_METRICS, format_table, save_plot, table_metrics,
                     write_results)
from .rescorer import Rescorer, check_reproduces
from .settings import SWEEP_PARAMS, Setting, swept_params, sweep_settings
from .sweep import (SweepResult, build_cache, dump_predictions,
                    prefixed_metrics, run_sweep)

__all__ = [
    'CACHE_VERSION', 'META_FILE', 'ShardWriter', 'cache_is_complete',
    'clear_cache', 'iter_shards', 'read_meta', 'build_detector',
    'build_evaluator', 'load_config', 'scoring_model_cfg', 'stage_heads',
    'with_norcal_loss', 'with_tau_norm_classifiers', 'CacheMismatchError',
    'check_fingerprint', 'make_fingerprint', 'model_identity',
    'tree_differences', 'HeadRecorder', 'TABLE_METRICS', 'format_table',
    'table_metrics',
    'save_plot', 'write_results', 'Rescorer', 'check_reproduces',
    'SWEEP_PARAMS', 'Setting', 'swept_params', 'sweep_settings',
    'SweepResult', 'build_cache', 'dump_predictions', 'prefixed_metrics',
    'run_sweep', 'SweepOutcome', 'sweep_scoring'
]
