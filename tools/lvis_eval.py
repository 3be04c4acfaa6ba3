"""Evaluate LVIS result files offline (after a ``format_only`` test run).

On the full LVIS val, evaluating inside a multi-GPU job holds every rank's
results in RAM for many minutes. Instead, let the job write the result files
(gathered on the CPU, rank 0 writes them) and evaluate afterwards::

    bash tools/dist_test.sh CONFIG CKPT 8 --cfg-options \\
        test_evaluator.format_only=True \\
        test_evaluator.outfile_prefix=work_dirs/run/results
    python tools/lvis_eval.py work_dirs/run/results.bbox.json \\
        work_dirs/run/results.segm.json --ann data/lvis_v1/annotations/\\
lvis_v1_val.json --backend fast

A prefix (``work_dirs/run/results``) stands for its ``.bbox.json`` and
``.segm.json`` files; a ``.pkl`` written by ``tools/test.py --out`` is read
as mmdet's ``LVISMetric`` would write it (bbox, and segm when it holds
masks). The IoU type of a file comes from its name
(``*.bbox.json`` / ``*.segm.json``) or else its content (``segmentation``
present: segm), unless ``--iou-type`` is given. Both backends give the
official lvis-api numbers; ``fast`` (faster-coco-eval) is several times
faster. ``--out`` writes the numbers with the metric's keys
(``lvis/bbox_AP``, ...).

``--ap-fixed`` and ``--ap-pool`` add fixed AP and pooled AP (Dave et al.,
"Evaluating Large-Vocabulary Object Detectors: The Devil is in the
Details", 2021; the LVIS challenge's metric since 2021): no per-image cap,
the top ``--dets-per-cat`` (10,000) detections of each category, and one
precision-recall curve over all categories. Columns ``AP_fixed``,
``APr_fixed``, ``APc_fixed``, ``APf_fixed`` and ``AP_pool``; keys
``lvis/bbox_AP_fixed``, ..., ``lvis/bbox_AP_pool``. The result files must
then hold more than 300 detections per image (``test_cfg.rcnn.max_per_img``,
see the README)::

    python tools/lvis_eval.py work_dirs/run/results --ann \\
        data/lvis_v1/annotations/lvis_v1_val.json --backend fast \\
        --ap-fixed --ap-pool
"""
import argparse
import json
import sys
import time
from typing import Dict, List, Sequence, Tuple

from mmdet_longtail.evaluation.result_files import expand_results

TABLE_ITEMS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'APr', 'APc',
               'APf')
FIXED_ITEMS = ('AP_fixed', 'APr_fixed', 'APc_fixed', 'APf_fixed')
POOL_ITEMS = ('AP_pool', )


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Evaluate LVIS result files offline')
    parser.add_argument(
        'results', nargs='+',
        help='result json files (LVIS/COCO result format), prefixes of '
        '<prefix>.bbox.json / <prefix>.segm.json, or a .pkl of '
        'tools/test.py --out')
    parser.add_argument(
        '--ann', required=True, help='LVIS annotation file (e.g. val)')
    parser.add_argument(
        '--backend', default='lvis', choices=['lvis', 'fast'],
        help='lvis: official lvis-api; fast: faster-coco-eval (same '
        'numbers, faster)')
    parser.add_argument(
        '--iou-type', choices=['bbox', 'segm'],
        help='IoU type of every file (default: from name or content)')
    parser.add_argument(
        '--max-dets', type=int, default=300,
        help='detections kept per image (LVIS: 300)')
    parser.add_argument(
        '--ap-fixed', action='store_true',
        help='also report fixed AP (Dave et al. 2021): no per-image cap, the '
        'top --dets-per-cat detections of each category')
    parser.add_argument(
        '--ap-pool', action='store_true',
        help='also report pooled AP (Dave et al. 2021): one precision-recall '
        'curve over all categories, on the fixed-AP detections')
    parser.add_argument(
        '--dets-per-cat', type=int, default=10000,
        help='detections kept per category for --ap-fixed / --ap-pool '
        '(10,000 as published)')
    parser.add_argument(
        '--out', help='write the numbers (lvis/<type>_<item> keys) to this '
        'json file')
    parser.add_argument(
        '--classwise', action='store_true',
        help='also print the AP of every category')
    return parser.parse_args(argv)


def table_items(args: argparse.Namespace) -> Tuple[str, ...]:
    """The reported items: LVIS's, then fixed / pooled AP when asked."""
    return TABLE_ITEMS + (FIXED_ITEMS if args.ap_fixed else ()) + (
        POOL_ITEMS if args.ap_pool else ())


def format_table(rows: List[Tuple[str, Dict[str, float]]],
                 items: Sequence[str] = TABLE_ITEMS) -> str:
    """Markdown table of the metrics (values in %, -1 = undefined)."""
    header = '| type | ' + ' | '.join(items) + ' |'
    lines = [header, '|' + '---|' * (len(items) + 1)]
    for iou_type, metrics in rows:
        cells = [
            f'{100 * metrics[k]:.2f}' if metrics[k] >= 0 else '-'
            for k in items
        ]
        lines.append(f'| {iou_type} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def print_classwise(lvis_gt, iou_type: str, outcome) -> None:
    print(f'{iou_type} AP per category:')
    cats = lvis_gt.load_cats(outcome.cat_ids)
    for cat, ap in zip(cats, outcome.per_class_ap):
        print(f'  {cat["name"]:<30s} ({cat.get("frequency", "?")}) {ap:.4f}')


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dets_per_cat < 1:
        print(f'error: --dets-per-cat must be positive, got '
              f'{args.dets_per_cat}', file=sys.stderr)
        return 1
    from mmdet_longtail.evaluation.analysis import evaluate_result_files
    start = time.perf_counter()
    try:
        files = expand_results(args.results)
        lvis_gt, evaluated = evaluate_result_files(
            files, args.ann, args.backend, args.iou_type, args.max_dets,
            ap_fixed=args.ap_fixed, ap_pool=args.ap_pool,
            dets_per_cat=args.dets_per_cat)
    except (FileNotFoundError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    outcomes = [(o.iou_type, o) for o in evaluated]
    print(f'evaluated {", ".join(files)} with the {args.backend} backend in '
          f'{time.perf_counter() - start:.1f} s')
    if args.classwise:
        for iou_type, outcome in outcomes:
            print_classwise(lvis_gt, iou_type, outcome)
    print('\nLVIS results (%):\n' +
          format_table([(t, o.metrics) for t, o in outcomes],
                       table_items(args)))
    if args.out:
        numbers = {
            f'lvis/{t}_{k}': o.metrics[k]
            for t, o in outcomes for k in table_items(args)
        }
        with open(args.out, 'w') as f:
            json.dump(numbers, f, indent=2)
        print(f'numbers written to {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
