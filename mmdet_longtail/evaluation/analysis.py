"""Per-class LVIS analysis shared by ``tools/analysis_tools/``.

* :func:`per_class_table`: AP of every category next to its training
  statistics (from ``class_stats.py``), its LVIS frequency group and its
  instance-count bin;
* :func:`group_ap`: AP by frequency group (rare / common / frequent) and by
  the four instance-count bins of Balanced Group Softmax, [0, 10),
  [10, 100), [100, 1000), [1000, inf) training instances (Li et al., CVPR
  2020, https://arxiv.org/abs/2006.10408). The AP of a group is the mean AP
  of its categories with a defined AP, so for the frequency groups it equals
  lvis-api's APr / APc / APf (each category contributes the same number of
  precision entries);
* the plots of the tools, :func:`plot_weight_norms` among them (which row
  of a classifier holds which class is the head's answer,
  :func:`mmdet_longtail.models.layers.classifier_layout`).
"""
import csv
import math
import os.path as osp
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mmdet_longtail.datasets.class_stats import ClassStatistics
from .lvis_api import FREQUENCY_LETTERS, LVISEvalResult

INSTANCE_BIN_BOUNDS = (10, 100, 1000)
FREQUENCY_NAMES = {'r': 'rare', 'c': 'common', 'f': 'frequent'}


def instance_bins(instance_count: Sequence[int],
                  bounds: Sequence[int] = INSTANCE_BIN_BOUNDS) -> np.ndarray:
    """Bin of each class: ``bisect_right(bounds, count)`` (BAGS's rule;
    unlike the BAGS loss, a class without training instances is allowed and
    falls in the first bin)."""
    return np.searchsorted(np.asarray(bounds), np.asarray(instance_count),
                           side='right')


def bin_labels(bounds: Sequence[int] = INSTANCE_BIN_BOUNDS) -> List[str]:
    edges = [0, *bounds, math.inf]
    return [f'[{lo}, {hi})' for lo, hi in zip(edges[:-1], edges[1:])]


@dataclass
class ClassRow:
    """One category: training statistics and AP per IoU type."""
    cat_id: int
    name: str
    frequency: str
    train_images: int
    train_instances: int
    instance_bin: int
    ap: Dict[str, float]


def per_class_table(outcomes: Sequence[LVISEvalResult], val_categories:
                    Sequence[dict], train_stats: ClassStatistics,
                    bounds: Sequence[int] = INSTANCE_BIN_BOUNDS
                    ) -> List[ClassRow]:
    """Join per-class AP (one or more evaluations) with the training
    statistics, by category id.

    Args:
        outcomes: evaluations (e.g. bbox and segm) of the same categories.
        val_categories: the ``categories`` of the evaluated annotation file
            (names and the ``frequency`` letters the evaluator groups by).
        train_stats: statistics of the training set.
        bounds: instance-count bin boundaries.
    """
    train_index = {c: k for k, c in enumerate(train_stats.cat_ids)}
    cats = sorted(val_categories, key=lambda c: c['id'])
    missing = [c['id'] for c in cats if c['id'] not in train_index]
    if missing:
        raise ValueError(
            f'category ids {missing[:5]} of the evaluated annotation file are '
            f'not in the training statistics ({train_stats.source}); pass the '
            f'training annotation file of the same LVIS version')
    bins = instance_bins(train_stats.instance_count, bounds)
    aps = []
    for outcome in outcomes:
        if list(outcome.cat_ids) != [c['id'] for c in cats]:
            raise ValueError(f'{outcome.iou_type} evaluation covers other '
                             f'categories than the annotation file')
        aps.append((outcome.iou_type, outcome.per_class_ap))
    rows = []
    for k, cat in enumerate(cats):
        label = train_index[cat['id']]
        rows.append(
            ClassRow(
                cat_id=cat['id'],
                name=cat.get('name', str(cat['id'])),
                frequency=cat['frequency'],
                train_images=int(train_stats.image_count[label]),
                train_instances=int(train_stats.instance_count[label]),
                instance_bin=int(bins[label]),
                ap={iou_type: float(ap[k]) for iou_type, ap in aps}))
    return rows


def _mean_defined(values: List[float]) -> Tuple[float, int]:
    defined = [v for v in values if not math.isnan(v)]
    return (float(np.mean(defined)) if defined else -1.0), len(defined)


def group_ap(rows: Sequence[ClassRow], iou_type: str,
             bounds: Sequence[int] = INSTANCE_BIN_BOUNDS) -> List[dict]:
    """AP (mean over categories with a defined AP, -1 if none) of every
    frequency group, every instance-count bin and all categories."""
    groups = [('all', 'all', list(rows))]
    for letter in FREQUENCY_LETTERS:
        groups.append(('frequency', FREQUENCY_NAMES[letter],
                       [r for r in rows if r.frequency == letter]))
    for b, label in enumerate(bin_labels(bounds)):
        groups.append(('instances', label,
                       [r for r in rows if r.instance_bin == b]))
    table = []
    for kind, name, members in groups:
        ap, defined = _mean_defined([r.ap[iou_type] for r in members])
        table.append(
            dict(grouping=kind, group=name, classes=len(members),
                 classes_with_ap=defined, ap=ap))
    return table


def write_per_class_csv(rows: Sequence[ClassRow], path: str,
                        bounds: Sequence[int] = INSTANCE_BIN_BOUNDS) -> None:
    labels = bin_labels(bounds)
    iou_types = list(rows[0].ap) if rows else []
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow([
            'category_id', 'name', 'frequency', 'train_images',
            'train_instances', 'instance_bin'
        ] + [f'AP_{t}' for t in iou_types])
        for r in rows:
            writer.writerow([
                r.cat_id, r.name, r.frequency, r.train_images,
                r.train_instances, labels[r.instance_bin]
            ] + ['' if math.isnan(r.ap[t]) else repr(r.ap[t])
                 for t in iou_types])


def read_per_class_csv(path: str,
                       bounds: Sequence[int] = INSTANCE_BIN_BOUNDS
                       ) -> List[ClassRow]:
    """Rows written by :func:`write_per_class_csv`."""
    with open(path, newline='') as f:
        reader = csv.DictReader(f)
        iou_types = [
            k[3:] for k in (reader.fieldnames or []) if k.startswith('AP_')
        ]
        if not iou_types:
            raise ValueError(f'{path}: no AP_<type> column; write it with '
                             f'tools/analysis_tools/lvis_per_class_ap.py')
        rows = []
        for line in reader:
            count = int(line['train_instances'])
            rows.append(
                ClassRow(
                    cat_id=int(line['category_id']),
                    name=line['name'],
                    frequency=line['frequency'],
                    train_images=int(line['train_images']),
                    train_instances=count,
                    instance_bin=int(instance_bins([count], bounds)[0]),
                    ap={
                        t: float(line[f'AP_{t}'])
                        if line[f'AP_{t}'] else math.nan
                        for t in iou_types
                    }))
    return rows


def evaluate_with_progress(lvis_gt, results: list, iou_type: str,
                           backend: str, source: str,
                           max_dets: int = 300) -> LVISEvalResult:
    """Evaluate with a progress bar (per category chunk with the fast
    backend; lvis-api reports only start and end)."""
    from tqdm import tqdm

    from .metrics import LVIS_EVAL_BACKENDS
    evaluate = LVIS_EVAL_BACKENDS[backend]
    with tqdm(desc=f'{iou_type} ({backend})', unit='step',
              leave=False) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        return evaluate(lvis_gt, results, iou_type=iou_type, source=source,
                        max_dets=max_dets, progress=progress)


def evaluate_result_files(files: Sequence[str], ann_file: str, backend: str,
                          iou_type: Optional[str] = None,
                          max_dets: int = 300,
                          ap_fixed: bool = False,
                          ap_pool: bool = False,
                          dets_per_cat: int = 10000):
    """Evaluate result files against ``ann_file``, with progress bars.

    With ``ap_fixed`` / ``ap_pool``, fixed AP (``AP_fixed``,
    ``APr_fixed``, ``APc_fixed``, ``APf_fixed``) and pooled AP
    (``AP_pool``) of Dave et al. 2021 (``fixed_pool_ap.py``) are added to
    each result's ``metrics``.

    Returns:
        the ``lvis.LVIS`` ground truth and one :class:`LVISEvalResult` per
        file (IoU type from ``iou_type`` or the file, see
        :func:`infer_iou_type`).
    """
    from .lvis_api import import_lvis
    if not osp.isfile(ann_file):
        raise FileNotFoundError(f'annotation file not found: {ann_file}')
    LVIS, _, _ = import_lvis()
    lvis_gt = LVIS(ann_file)
    outcomes = []
    for path in files:
        for kind, results, source in _result_lists(path, lvis_gt, iou_type):
            outcomes.append(
                _evaluate_one(lvis_gt, results, kind, backend, source,
                              max_dets, ap_fixed, ap_pool, dets_per_cat))
    return lvis_gt, outcomes


def _result_lists(path: str, lvis_gt, iou_type: Optional[str]):
    """(iou type, results, source name) of a json file or of each type in
    a ``tools/test.py --out`` pickle."""
    from .result_files import (PICKLE_SUFFIXES, infer_iou_type,
                               load_json_list, load_predictions)
    if path.endswith(PICKLE_SUFFIXES):
        lists = load_predictions(path, sorted(lvis_gt.get_cat_ids()))
        return [(kind, results, f'{path} ({kind})')
                for kind, results in lists.items()
                if iou_type is None or kind == iou_type]
    results = load_json_list(path)
    return [(iou_type or infer_iou_type(path, results), results, path)]


def _evaluate_one(lvis_gt, results: list, kind: str, backend: str,
                  path: str, max_dets: int, ap_fixed: bool, ap_pool: bool,
                  dets_per_cat: int) -> LVISEvalResult:
    """One evaluation, plus fixed / pooled AP in ``metrics`` when asked."""
    from .fixed_pool_ap import (FIXED_AP_ITEMS, evaluate_ap_fixed,
                                evaluate_ap_pool)
    outcome = evaluate_with_progress(lvis_gt, results, kind, backend,
                                     path, max_dets)
    if ap_fixed:
        fixed = evaluate_ap_fixed(lvis_gt, results, kind,
                                  backend=backend,
                                  dets_per_cat=dets_per_cat,
                                  source=path)
        for k in FIXED_AP_ITEMS:
            outcome.metrics[f'{k}_fixed'] = fixed.metrics[k]
    if ap_pool:
        outcome.metrics['AP_pool'] = evaluate_ap_pool(
            lvis_gt, results, kind, backend=backend,
            dets_per_cat=dets_per_cat, source=path)
    return outcome


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def plot_group_ap(tables: Dict[str, List[dict]], path: str) -> None:
    """Bar charts of AP by frequency group and by instance bin."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, grouping, title in ((axes[0], 'frequency', 'LVIS frequency'),
                                (axes[1], 'instances',
                                 'training instances')):
        width = 0.8 / max(len(tables), 1)
        for i, (iou_type, table) in enumerate(tables.items()):
            rows = [r for r in table if r['grouping'] == grouping]
            x = np.arange(len(rows)) + i * width
            values = [100 * max(r['ap'], 0.0) for r in rows]
            ax.bar(x, values, width, label=iou_type)
            ax.set_xticks(np.arange(len(rows)) + width * (len(tables) - 1) /
                          2)
            ax.set_xticklabels([f'{r["group"]}\n({r["classes"]})'
                                for r in rows])
        ax.set_title(f'AP by {title} (classes)')
        ax.set_ylabel('AP (%)')
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


FREQUENCY_COLORS = {'r': 'tab:red', 'c': 'tab:orange', 'f': 'tab:blue'}


def plot_ap_vs_instances(rows: Sequence[ClassRow], iou_type: str,
                         path: str) -> None:
    """Scatter of per-class AP against training instances (log x)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for letter in FREQUENCY_LETTERS:
        members = [
            r for r in rows
            if r.frequency == letter and not math.isnan(r.ap[iou_type])
        ]
        ax.scatter([max(r.train_instances, 1) for r in members],
                   [100 * r.ap[iou_type] for r in members],
                   s=12, alpha=0.7, color=FREQUENCY_COLORS[letter],
                   label=f'{FREQUENCY_NAMES[letter]} ({len(members)})')
    ax.set_xscale('log')
    ax.set_xlabel('training instances (log)')
    ax.set_ylabel(f'{iou_type} AP (%)')
    ax.set_title(f'per-class {iou_type} AP vs training instances')
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_weight_norms(instance_count: np.ndarray,
                      norms: Dict[str, np.ndarray], path: str) -> None:
    """Classifier weight norm per class, classes sorted by training
    instances (most first), with the instance counts on a second axis (as
    Figure 1 of the BAGS paper)."""
    plt = _pyplot()
    order = np.argsort(-np.asarray(instance_count), kind='stable')
    fig, ax = plt.subplots(figsize=(9, 4.5))
    x = np.arange(len(order))
    for label, norm in norms.items():
        ax.plot(x, norm[order], linewidth=1, label=label)
    ax.set_xlabel('classes sorted by training instances (descending)')
    ax.set_ylabel('weight norm')
    counts = ax.twinx()
    counts.fill_between(x, np.asarray(instance_count)[order], color='gray',
                        alpha=0.2, step='mid')
    counts.set_yscale('log')
    counts.set_ylabel('training instances (log)')
    ax.set_zorder(counts.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.legend(fontsize=8)
    ax.set_title('classifier weight norm per class')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
