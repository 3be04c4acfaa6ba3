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

Which row holds which class comes from the head that owns each weight, in
the model of the checkpoint's config (the one saved in the checkpoint, or
``--config``); see :class:`ClassifierLayout`. For checkpoints without a
config, ``--layout`` states the layout instead: sigmoid (C rows), softmax
(C + 1), seesaw (C + 2) or bags (C + 1 + groups, the groups from the
training instance counts and ``--group-bounds``, default 10 100 1000).

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
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

CLASSIFIER_KEY = r'fc_cls\.weight$'
EXPLICIT_LAYOUTS = ('sigmoid', 'softmax', 'seesaw', 'bags')


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
        '--config', nargs='+',
        help='the config of each checkpoint, or one for all (default: the '
        'config saved in each checkpoint)')
    parser.add_argument(
        '--layout', default='auto', choices=('auto', ) + EXPLICIT_LAYOUTS,
        help='auto: ask the heads of the config; otherwise the layout of '
        'every selected weight (for checkpoints without a config)')
    parser.add_argument(
        '--group-bounds', type=int, nargs='+',
        help='with --layout bags: group boundaries on the training '
        'instance count (default 10 100 1000)')
    parser.add_argument(
        '--num-heads', type=int, default=1,
        help='also report the norm of each of K equal splits of a row '
        '(TDE multi-head classifier)')
    parser.add_argument('--labels', nargs='+',
                        help='legend label per checkpoint (default: name)')
    return parser.parse_args(argv)


def explicit_layout(name: str, stats, group_bounds: Optional[Sequence[int]]):
    """The layout ``--layout name`` states for the classes of ``stats``."""
    from mmdet_longtail.models.layers import ClassifierLayout
    from mmdet_longtail.models.losses.group_softmax_loss import (
        DEFAULT_GROUP_BOUNDS, GroupLayout, assign_groups)
    if name == 'bags':
        bounds = tuple(group_bounds or DEFAULT_GROUP_BOUNDS)
        groups = assign_groups(stats.instance_count, bounds,
                               stats.class_names, stats.source)
        return GroupLayout(groups, len(bounds) + 1).classifier_layout()
    if group_bounds:
        raise ValueError('--group-bounds applies to --layout bags only; '
                         'otherwise the groups come from the config')
    return {
        'sigmoid': ClassifierLayout.sigmoid,
        'softmax': ClassifierLayout.softmax,
        'seesaw': ClassifierLayout.seesaw
    }[name](stats.num_classes)


def weight_layouts(path: str, state_dict: dict, checkpoint: dict,
                   args: argparse.Namespace, config: Optional[str],
                   stats) -> Dict[str, tuple]:
    """``key -> (weight, layout)`` of every selected classifier weight."""
    from mmdet_longtail.models.checkpoint_classifiers import (
        checkpoint_config, classifier_layouts, select_keys)
    keys = [
        k for k in select_keys(state_dict, args.key, path)
        if getattr(state_dict[k], 'ndim', 0) >= 2
    ]
    if not keys:
        raise ValueError(f'{path}: no weight of 2 or more dimensions '
                         f'matches {args.key!r}; pass --key')
    if args.layout == 'auto':
        layouts = classifier_layouts(state_dict, keys,
                                     checkpoint_config(checkpoint, path,
                                                       config), path)
    else:
        layout = explicit_layout(args.layout, stats, args.group_bounds)
        for key in keys:
            layout.check_param(state_dict[key].shape, key, path)
        layouts = dict.fromkeys(keys, layout)
    for key, layout in layouts.items():
        if layout.num_classes != stats.num_classes:
            raise ValueError(
                f'{path}: the classifier {key} has {layout.num_classes} '
                f'classes, {stats.source} has {stats.num_classes}')
    return {
        key: (state_dict[key].detach().float().cpu().numpy(), layout)
        for key, layout in layouts.items()
    }


def short_name(key: str) -> str:
    """'roi_head.bbox_head.1.fc_cls.weight' -> 'bbox_head.1'."""
    name = re.sub(r'\.fc_cls\.weight$|\.weight$', '', key)
    return re.sub(r'^(module\.)?roi_head\.', '', name)


def class_norms(weight: np.ndarray, layout,
                num_heads: int) -> Tuple[np.ndarray, np.ndarray]:
    """L2 norm of each class's weight (its rows for every prior), and of
    its ``num_heads`` equal splits."""
    rows = weight.reshape(weight.shape[0], -1)
    per_class = rows[layout.class_channels().T].reshape(
        layout.num_classes, -1)
    if per_class.shape[1] % num_heads:
        raise ValueError(f'--num-heads {num_heads} does not divide the '
                         f'weight width {per_class.shape[1]}')
    heads = per_class.reshape(layout.num_classes, num_heads, -1)
    return np.linalg.norm(per_class, axis=1), np.linalg.norm(heads, axis=2)


def configs_of(args: argparse.Namespace) -> list:
    """The ``--config`` of each checkpoint (None: the saved one)."""
    configs = args.config or [None]
    if len(configs) == 1:
        return configs * len(args.checkpoints)
    if len(configs) != len(args.checkpoints):
        raise ValueError('give one --config, or one per checkpoint')
    return configs


def main(argv=None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    from mmdet_longtail.datasets import get_class_statistics
    from mmdet_longtail.evaluation.analysis import (INSTANCE_BIN_BOUNDS,
                                                    bin_labels,
                                                    instance_bins,
                                                    plot_weight_norms)
    from mmdet_longtail.models.checkpoint_classifiers import (
        checkpoint_state_dict, load_checkpoint_file)
    labels = args.labels or [
        osp.splitext(osp.basename(p))[0] for p in args.checkpoints
    ]
    if len(labels) != len(args.checkpoints):
        print('error: give one --labels entry per checkpoint',
              file=sys.stderr)
        return 1
    columns: Dict[str, np.ndarray] = {}
    head_columns: Dict[str, np.ndarray] = {}
    layouts = []
    try:
        stats = get_class_statistics(args.train_ann)
        for path, label, config in tqdm(
                list(zip(args.checkpoints, labels, configs_of(args))),
                desc='checkpoints'):
            checkpoint = load_checkpoint_file(path)
            state_dict = checkpoint_state_dict(checkpoint)
            for key, (weight, layout) in weight_layouts(
                    path, state_dict, checkpoint, args, config,
                    stats).items():
                name = f'{label}:{short_name(key)}'
                columns[name], head_columns[name] = class_norms(
                    weight, layout, args.num_heads)
                layouts.append(
                    f'{name} ({layout.kind}, {weight.shape[0]} rows)')
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
