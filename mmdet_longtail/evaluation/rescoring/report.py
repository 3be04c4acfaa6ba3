"""The sweep's table, plot and json."""
import json
from dataclasses import asdict
from typing import List, Sequence, Tuple

from .settings import SWEEP_PARAMS, Setting, swept_params
from .sweep import SweepResult

#: metric keys (of :func:`~.sweep.prefixed_metrics`) in the table and plot;
#: every metric the evaluator gives is in the json whatever this holds, so
#: another metric needs only its key here (or in ``metrics=``)
TABLE_METRICS = ('AP', 'APr', 'APc', 'APf')
#: added to the table when the metric gives them (its ``ap_fixed`` and
#: ``ap_pool`` options)
FIXED_POOL_METRICS = ('AP_fixed', 'APr_fixed', 'APc_fixed', 'APf_fixed',
                      'AP_pool')


def table_metrics(results: List[SweepResult]) -> Tuple[str, ...]:
    """``TABLE_METRICS``, then the fixed and pooled APs that the results
    hold."""
    given = set().union(*(r.metrics for r in results))
    return TABLE_METRICS + tuple(m for m in FIXED_POOL_METRICS if m in given)


def format_table(results: List[SweepResult],
                 full_pass_s: float,
                 metrics: Sequence[str] = TABLE_METRICS) -> str:
    """A markdown table: one row per setting, the metrics in %, the cost in
    seconds and against the full test pass."""
    header = '| setting | ' + ' | '.join(metrics) + \
        ' | seconds | % of full pass |'
    lines = [header, '|' + '---|' * (len(metrics) + 3)]
    for r in results:
        values = ' | '.join(
            f'{100 * r.metrics[m]:.2f}' if m in r.metrics else '-'
            for m in metrics)
        lines.append(f'| {r.setting.label()} | {values} | {r.seconds:.2f} | '
                     f'{100 * r.seconds / full_pass_s:.1f} |')
    return '\n'.join(lines)


def save_plot(results: List[SweepResult],
              base: Setting,
              path: str,
              metrics: Sequence[str] = TABLE_METRICS) -> bool:
    """The metrics against each swept parameter (the other parameters at
    their config values); False if nothing to plot."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    params = swept_params([r.setting for r in results])
    if not params:
        return False
    fig, axes = plt.subplots(
        1, len(params), figsize=(5 * len(params), 4), squeeze=False)
    for ax, param in zip(axes[0], params):
        others = [p for p in SWEEP_PARAMS if p != param]
        rows = sorted(
            (r for r in results if all(
                getattr(r.setting, p) == getattr(base, p) for p in others)),
            key=lambda r: getattr(r.setting, param))
        xs = [getattr(r.setting, param) for r in rows]
        for metric in metrics:
            ys = [100 * r.metrics.get(metric, float('nan')) for r in rows]
            ax.plot(xs, ys, marker='o', label=metric)
        if param == 'score_thr':
            ax.set_xscale('log')
        ax.set_xlabel(param)
        ax.set_ylabel('bbox AP (%)')
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_results(results: List[SweepResult], meta: dict, path: str) -> None:
    """Every setting's metrics and cost as json."""
    full = meta['full_pass_seconds']['total']
    with open(path, 'w') as f:
        json.dump(
            dict(
                full_pass_seconds=meta['full_pass_seconds'],
                config_metrics=meta['config_metrics'],
                settings=[
                    dict(
                        setting=asdict(r.setting),
                        metrics=r.metrics,
                        scoring_seconds=r.scoring_s,
                        evaluation_seconds=r.evaluation_s,
                        cost_vs_full_pass=r.seconds / full)
                    for r in results
                ]),
            f,
            indent=1)
