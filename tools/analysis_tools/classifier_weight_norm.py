"""Classifier weight norm per class, classes sorted by training instances.

Figure 1 of "Overcoming Classifier Imbalance for Long-tail Object Detection
with Balanced Group Softmax" (Li et al., CVPR 2020,
https://arxiv.org/abs/2006.10408): with plain softmax the weight norms of
the classifier follow the number of training instances, so tail classes are
suppressed. This tool reads every ``fc_cls.weight`` of one or more
checkpoints (all cascade / HTC stages), maps its rows to classes and writes
to ``--out-dir``:

* ``weight_norm.csv``: category id, name, frequency, training instances and
  the L2 norm of each class's weight row per checkpoint and stage (with
  ``--num-heads K``, also the norm of each of the K splits of the row, as
  TDE's multi-head classifier normalises them);
* ``weight_norm.png``: the norms with classes sorted by training instances
  (most first), instance counts in grey on a log axis.

Head layouts (``--layout auto`` picks by the number of rows, C classes):
sigmoid (EQL) C, softmax / EQLv2 / TDE / normed C + 1, Seesaw C + 2, BAGS
C + 1 + groups (rows mapped back to classes by the groups of the training
instance counts, ``--group-bounds``, default 10 100 1000).

Example:
    python tools/analysis_tools/classifier_weight_norm.py \\
        work_dirs/baseline/epoch_12.pth work_dirs/bags/epoch_12.pth \\
        --train-ann data/lvis_v1/annotations/lvis_v1_train.json \\
        --out-dir work_dirs/analysis
"""
import argparse
import csv
import os
import os.path as osp
import re
import sys
from typing import Dict, List, Tuple

import numpy as np

CLASSIFIER_KEY = r'fc_cls\.weight$'


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('checkpoints', nargs='+', help='checkpoint files')
    parser.add_argument('--train-ann', required=True,
                        help='training annotation file (class statistics)')
    parser.add_argument('--out-dir', required=True)
    parser.add_argument(
        '--key', default=CLASSIFIER_KEY,
        help=f'regular expression selecting the classifier weights '
        f'(default {CLASSIFIER_KEY!r}, every stage)')
    parser.add_argument(
        '--layout', default='auto',
        choices=['auto', 'sigmoid', 'softmax', 'seesaw', 'bags'])
    parser.add_argument(
        '--group-bounds', type=int, nargs='+',
        help='BAGS group boundaries on the training instance count '
        '(default: from the config saved in the checkpoint, else 10 100 '
        '1000)')
    parser.add_argument(
        '--num-heads', type=int, default=1,
        help='also report the norm of each of K equal splits of a row '
        '(TDE multi-head classifier)')
    parser.add_argument('--labels', nargs='+',
                        help='legend label per checkpoint (default: name)')
    return parser.parse_args(argv)


def load_checkpoint(path: str) -> Tuple[dict, list]:
    """The state dict and the box-head configs saved with it (mmengine
    stores the config text in ``meta['cfg']``; [] if absent)."""
    import torch
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    # our own training outputs: full pickles (mmengine's HistoryBuffer...)
    checkpoint = torch.load(path, map_location='cpu', weights_only=False)
    if not isinstance(checkpoint, dict):
        raise ValueError(f'{path}: not a checkpoint (a {type(checkpoint)})')
    state_dict = checkpoint
    for key in ('state_dict', 'model'):
        if isinstance(checkpoint.get(key), dict):
            state_dict = checkpoint[key]
            break
    return state_dict, saved_bbox_heads(checkpoint.get('meta', {}))


def saved_bbox_heads(meta: dict) -> list:
    """Box-head configs (one per stage) of the config in ``meta``."""
    text = meta.get('cfg') if isinstance(meta, dict) else None
    if not isinstance(text, str):
        return []
    from mmengine.config import Config
    try:
        cfg = Config.fromstring(text, '.py')
    except Exception:  # an unparsable config only loses the hint
        return []
    heads = cfg.get('model', {}).get('roi_head', {}).get('bbox_head', [])
    return list(heads) if isinstance(heads, (list, tuple)) else [heads]


def group_bounds_of(key: str, heads: list, default):
    """BAGS group bounds of the stage that ``key`` belongs to."""
    from mmdet_longtail.models.losses.group_softmax_loss import \
        DEFAULT_GROUP_BOUNDS
    if default is not None:
        return tuple(default)
    stage = re.search(r'bbox_head\.(\d+)\.', key)
    index = int(stage.group(1)) if stage else 0
    head = heads[index] if index < len(heads) else {}
    bounds = head.get('group_bounds') or \
        (head.get('loss_cls') or {}).get('group_bounds')
    return tuple(bounds) if bounds else DEFAULT_GROUP_BOUNDS


def classifier_weights(state_dict: dict, pattern: str,
                       source: str) -> Dict[str, np.ndarray]:
    """Selected 2-D weights, by state-dict key."""
    selected = {
        k: v.detach().float().cpu().numpy()
        for k, v in state_dict.items()
        if re.search(pattern, k) and getattr(v, 'ndim', 0) == 2
    }
    if not selected:
        weights = [k for k in state_dict if k.endswith('weight')][-5:]
        raise ValueError(f'{source}: no 2-D weight matches {pattern!r} '
                         f'(some weights: {weights}); pass --key')
    return selected


def short_name(key: str) -> str:
    """'roi_head.bbox_head.1.fc_cls.weight' -> 'bbox_head.1'."""
    name = re.sub(r'\.fc_cls\.weight$|\.weight$', '', key)
    return re.sub(r'^(module\.)?roi_head\.', '', name)


def class_norms(weight: np.ndarray, rows: np.ndarray,
                num_heads: int) -> Tuple[np.ndarray, np.ndarray]:
    """L2 norm of each class's row, and of its ``num_heads`` splits."""
    per_class = weight[rows]
    if per_class.shape[1] % num_heads:
        raise ValueError(f'--num-heads {num_heads} does not divide the '
                         f'weight width {per_class.shape[1]}')
    heads = per_class.reshape(len(rows), num_heads, -1)
    return np.linalg.norm(per_class, axis=1), np.linalg.norm(heads, axis=2)


def main(argv=None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    from mmdet_longtail.datasets import get_class_statistics
    from mmdet_longtail.evaluation.analysis import (INSTANCE_BIN_BOUNDS,
                                                    bin_labels,
                                                    classifier_class_rows,
                                                    instance_bins,
                                                    plot_weight_norms)
    labels = args.labels or [
        osp.splitext(osp.basename(p))[0] for p in args.checkpoints
    ]
    if len(labels) != len(args.checkpoints):
        print('error: give one --labels entry per checkpoint',
              file=sys.stderr)
        return 1
    columns: Dict[str, np.ndarray] = {}
    head_columns: Dict[str, np.ndarray] = {}
    layouts: List[str] = []
    try:
        stats = get_class_statistics(args.train_ann)
        for path, label in tqdm(
                list(zip(args.checkpoints, labels)), desc='checkpoints'):
            state_dict, heads = load_checkpoint(path)
            weights = classifier_weights(state_dict, args.key, path)
            for key, weight in weights.items():
                rows, layout = classifier_class_rows(
                    weight.shape[0], stats.num_classes, args.layout,
                    stats.instance_count,
                    group_bounds_of(key, heads, args.group_bounds))
                name = f'{label}:{short_name(key)}'
                columns[name], head_columns[name] = class_norms(
                    weight, rows, args.num_heads)
                layouts.append(f'{name} ({layout}, {weight.shape[0]} rows)')
    except (FileNotFoundError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1

    os.makedirs(args.out_dir, exist_ok=True)
    csv_path = osp.join(args.out_dir, 'weight_norm.csv')
    with open(csv_path, 'w', newline='') as f:
        writer = csv.writer(f)
        header = ['category_id', 'name', 'frequency', 'train_instances']
        for name in columns:
            header.append(f'norm[{name}]')
            if args.num_heads > 1:
                header += [
                    f'norm[{name}][head{k}]' for k in range(args.num_heads)
                ]
        writer.writerow(header)
        for c in range(stats.num_classes):
            line = [stats.cat_ids[c], stats.class_names[c],
                    stats.frequency[c], int(stats.instance_count[c])]
            for name, norms in columns.items():
                line.append(repr(float(norms[c])))
                if args.num_heads > 1:
                    line += [repr(float(v)) for v in head_columns[name][c]]
            writer.writerow(line)
    png_path = osp.join(args.out_dir, 'weight_norm.png')
    plot_weight_norms(stats.instance_count, columns, png_path)

    bins = instance_bins(stats.instance_count, INSTANCE_BIN_BOUNDS)
    names = bin_labels(INSTANCE_BIN_BOUNDS)
    print('classifiers: ' + '; '.join(layouts))
    print('| weights | ' + ' | '.join(f'mean norm {n}' for n in names) + ' |')
    print('|---|' + '---|' * len(names))
    for name, norms in columns.items():
        cells = [
            f'{norms[bins == b].mean():.4f}' if (bins == b).any() else '-'
            for b in range(len(names))
        ]
        print(f'| {name} | ' + ' | '.join(cells) + ' |')
    print(f'wrote {csv_path} and {png_path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
