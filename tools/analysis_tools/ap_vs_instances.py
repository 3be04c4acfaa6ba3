"""Scatter plot of per-class AP against training instances (log x).

From the ``per_class_ap.csv`` of ``lvis_per_class_ap.py`` (instant), or
from result files (evaluated first, with a progress bar). Writes
``ap_vs_instances_<bbox|segm>.png`` to ``--out-dir``, one point per class
coloured by its LVIS frequency group.

Examples:
    python tools/analysis_tools/ap_vs_instances.py \\
        --per-class-csv work_dirs/run/analysis/per_class_ap.csv \\
        --out-dir work_dirs/run/analysis
    python tools/analysis_tools/ap_vs_instances.py work_dirs/run/results \\
        --ann data/lvis_v1/annotations/lvis_v1_val.json \\
        --train-ann data/lvis_v1/annotations/lvis_v1_train.json \\
        --out-dir work_dirs/run/analysis
"""
import argparse
import os
import os.path as osp
import sys


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('results', nargs='*',
                        help='result json files or their prefix')
    parser.add_argument('--per-class-csv',
                        help='per_class_ap.csv of lvis_per_class_ap.py '
                        '(instead of result files)')
    parser.add_argument('--ann', help='annotation file of the results')
    parser.add_argument('--train-ann', help='training annotation file')
    parser.add_argument('--out-dir', required=True)
    parser.add_argument('--backend', default='fast', choices=['lvis', 'fast'])
    parser.add_argument('--iou-type', choices=['bbox', 'segm'])
    args = parser.parse_args(argv)
    if bool(args.per_class_csv) == bool(args.results):
        parser.error('give result files or --per-class-csv (one of them)')
    if args.results and not (args.ann and args.train_ann):
        parser.error('result files need --ann and --train-ann')
    return args


def load_rows(args):
    from mmdet_longtail.datasets import get_class_statistics
    from mmdet_longtail.evaluation.analysis import (evaluate_result_files,
                                                    per_class_table,
                                                    read_per_class_csv)
    from mmdet_longtail.evaluation.result_files import expand_results
    if args.per_class_csv:
        if not osp.isfile(args.per_class_csv):
            raise FileNotFoundError(
                f'per-class csv not found: {args.per_class_csv}')
        return read_per_class_csv(args.per_class_csv)
    stats = get_class_statistics(args.train_ann)
    lvis_gt, outcomes = evaluate_result_files(
        expand_results(args.results), args.ann, args.backend, args.iou_type)
    return per_class_table(outcomes, lvis_gt.dataset['categories'], stats)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmdet_longtail.evaluation.analysis import plot_ap_vs_instances
    try:
        rows = load_rows(args)
    except (FileNotFoundError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    os.makedirs(args.out_dir, exist_ok=True)
    for iou_type in rows[0].ap:
        path = osp.join(args.out_dir, f'ap_vs_instances_{iou_type}.png')
        plot_ap_vs_instances(rows, iou_type, path)
        print(f'wrote {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
