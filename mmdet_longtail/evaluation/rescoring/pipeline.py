"""A whole score sweep: config and checkpoint in, table, plot and json
out (what ``tools/analysis_tools/sweep_scoring.py`` runs)."""
import os
import os.path as osp
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from .cache import cache_is_complete, read_meta
from .detector import build_detector, load_config, scoring_model_cfg
from .fingerprint import check_fingerprint, make_fingerprint
from .report import format_table, save_plot, table_metrics, write_results
from .rescorer import Rescorer
from .settings import Setting
from .settings import sweep_settings as make_settings
from .sweep import SweepResult, build_cache, run_sweep


@dataclass
class SweepOutcome:
    """What :func:`sweep_scoring` computed.

    Attributes:
        results (list[SweepResult]): the config's setting first.
        meta (dict): the cache's meta data (full-pass timing, metrics).
        base (Setting): the config's setting.
        measured_now (bool): whether the full pass ran in this call.
    """
    results: List[SweepResult]
    meta: dict
    base: Setting
    measured_now: bool

    def extra_setting_ratio(self) -> float:
        """Mean cost of an extra setting over the full test pass."""
        extra = self.results[1:] or self.results
        mean_s = sum(r.seconds for r in extra) / len(extra)
        return mean_s / self.meta['full_pass_seconds']['total']


def sweep_scoring(config: str,
                  checkpoint: str,
                  cache_dir: Optional[str] = None,
                  out_dir: Optional[str] = None,
                  values: Optional[Dict[str, Sequence[float]]] = None,
                  grid: bool = False,
                  norcal_method: Optional[str] = None,
                  norcal_ann_file: Optional[str] = None,
                  rebuild_cache: bool = False,
                  shard_size: int = 64,
                  dump_predictions: bool = False,
                  device: str = 'cpu',
                  cfg_options: Optional[dict] = None) -> SweepOutcome:
    """Re-score ``checkpoint`` under the settings given by ``values``
    (``{'gamma': [...], 'tau': [...], 'alpha': [...], 'score_thr': [...]}``)
    and write ``sweep_results.json``, ``sweep_scoring.png`` (and with
    ``dump_predictions`` ``predictions_<k>.pkl``) to ``out_dir`` (default:
    ``cache_dir``). The cache in ``cache_dir`` is reused if it was built for
    the same model config, checkpoint and test set, else refused
    (:class:`CacheMismatchError`); it is built when missing or
    ``rebuild_cache``."""
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {checkpoint}')
    if shard_size < 1:
        raise ValueError(f'--shard-size must be >= 1, got {shard_size}')
    values = dict(values or {})
    cfg = load_config(config, cfg_options)
    cache_dir = cache_dir or osp.join(
        'work_dirs', 'sweep_scoring',
        osp.splitext(osp.basename(config))[0])
    out_dir = out_dir or cache_dir
    fingerprint = make_fingerprint(cfg, checkpoint)
    rebuild = rebuild_cache or not cache_is_complete(cache_dir)
    meta = None
    if not rebuild:
        meta = read_meta(cache_dir)
        check_fingerprint(meta['fingerprint'], fingerprint, cache_dir)

    # the components of the swept settings, by config (the same scores)
    model_cfg = scoring_model_cfg(
        cfg.model,
        tau=any(t != 0 for t in values.get('tau', [])),
        norcal=any(g != 0 for g in values.get('gamma', [])),
        norcal_statistics=norcal_ann_file)
    model = build_detector(cfg, checkpoint, device, model_cfg)
    rescorer = Rescorer(model)
    if meta is not None:
        # the cached logits were computed with the cache's tau / alpha,
        # which this config may set differently
        rescorer.use_cached_classifier_settings(meta['cached_taus'],
                                                meta['cached_alpha'])
    settings = make_settings(
        rescorer.base, values, grid=grid, norcal_method=norcal_method)
    # fail on unsupported settings before the (long) network pass
    rescorer.check_supported(settings)

    if rebuild:
        meta = build_cache(cfg, cache_dir, fingerprint, model, rescorer,
                           shard_size)
    else:
        print(f'using the scoring cache in {cache_dir}')
    results = run_sweep(cfg, cache_dir, meta, rescorer, settings,
                        out_dir if dump_predictions else None)
    os.makedirs(out_dir, exist_ok=True)
    print('\nbbox results (%), one row per setting:\n' +
          format_table(results, meta['full_pass_seconds']['total'],
                       table_metrics(results)))
    write_results(results, meta, osp.join(out_dir, 'sweep_results.json'))
    plot = osp.join(out_dir, 'sweep_scoring.png')
    if save_plot(results, rescorer.base, plot):
        print(f'plot: {plot}')
    return SweepOutcome(results, meta, rescorer.base, rebuild)
