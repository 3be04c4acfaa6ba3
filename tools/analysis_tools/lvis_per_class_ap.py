"""Per-class LVIS AP, and AP by frequency group and by training instances.

Evaluates result files (``*.bbox.json`` / ``*.segm.json``, e.g. written by
``tools/test.py`` with ``test_evaluator.outfile_prefix=...``) and writes to
``--out-dir``:

* ``per_class_ap.csv``: category id, name, frequency letter, training images
  and instances, instance bin, AP per IoU type;
* ``ap_by_group.csv``: AP of rare / common / frequent and of the four
  Balanced-Group-Softmax instance bins [0,10) [10,100) [100,1000)
  [1000,inf) (mean AP of the classes with ground truth; the frequency rows
  equal the metric's APr / APc / APf);
* ``ap_by_group.png``: the same as bar charts.

Example:
    python tools/analysis_tools/lvis_per_class_ap.py \\
        work_dirs/run/results --ann data/lvis_v1/annotations/lvis_v1_val.json \\
        --train-ann data/lvis_v1/annotations/lvis_v1_train.json \\
        --out-dir work_dirs/run/analysis --backend fast
"""
import argparse
import csv
import os
import os.path as osp
import sys

from mmdet_longtail.evaluation.result_files import expand_results


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('results', nargs='+',
                        help='result json files or their prefix')
    parser.add_argument('--ann', required=True,
                        help='annotation file the results are for (val)')
    parser.add_argument('--train-ann', required=True,
                        help='training annotation file (class statistics)')
    parser.add_argument('--out-dir', required=True)
    parser.add_argument('--backend', default='fast', choices=['lvis', 'fast'])
    parser.add_argument('--iou-type', choices=['bbox', 'segm'])
    return parser.parse_args(argv)


def write_group_csv(tables, path: str) -> None:
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(
            ['iou_type', 'grouping', 'group', 'classes', 'classes_with_ap',
             'AP'])
        for iou_type, table in tables.items():
            for r in table:
                writer.writerow([
                    iou_type, r['grouping'], r['group'], r['classes'],
                    r['classes_with_ap'], repr(r['ap'])
                ])


def markdown(tables) -> str:
    iou_types = list(tables)
    lines = ['| grouping | group | classes | ' +
             ' | '.join(f'{t} AP (%)' for t in iou_types) + ' |',
             '|---|---|---|' + '---|' * len(iou_types)]
    first = tables[iou_types[0]]
    for i, r in enumerate(first):
        cells = []
        for t in iou_types:
            ap = tables[t][i]['ap']
            cells.append(f'{100 * ap:.2f}' if ap >= 0 else '-')
        lines.append(f'| {r["grouping"]} | {r["group"]} | {r["classes"]} | '
                     + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmdet_longtail.datasets import get_class_statistics
    from mmdet_longtail.evaluation.analysis import (evaluate_result_files,
                                                    group_ap, per_class_table,
                                                    plot_group_ap,
                                                    write_per_class_csv)
    try:
        files = expand_results(args.results)
        stats = get_class_statistics(args.train_ann)
        lvis_gt, outcomes = evaluate_result_files(files, args.ann,
                                                  args.backend, args.iou_type)
        rows = per_class_table(outcomes, lvis_gt.dataset['categories'],
                               stats)
    except (FileNotFoundError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    os.makedirs(args.out_dir, exist_ok=True)
    tables = {o.iou_type: group_ap(rows, o.iou_type) for o in outcomes}
    outputs = {
        'per_class_ap.csv': lambda p: write_per_class_csv(rows, p),
        'ap_by_group.csv': lambda p: write_group_csv(tables, p),
        'ap_by_group.png': lambda p: plot_group_ap(tables, p),
    }
    for name, write in outputs.items():
        write(osp.join(args.out_dir, name))
    print(markdown(tables))
    print(f'wrote {", ".join(outputs)} to {args.out_dir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
