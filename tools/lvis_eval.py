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
``.segm.json`` files. The IoU type of a file comes from its name
(``*.bbox.json`` / ``*.segm.json``) or else its content (``segmentation``
present: segm), unless ``--iou-type`` is given. Both backends give the
official lvis-api numbers; ``fast`` (faster-coco-eval) is several times
faster. ``--out`` writes the numbers with the metric's keys
(``lvis/bbox_AP``, ...).
"""
import argparse
import json
import os.path as osp
import sys
import time
from typing import Dict, List, Tuple

TABLE_ITEMS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'APr', 'APc',
               'APf')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Evaluate LVIS result files offline')
    parser.add_argument(
        'results', nargs='+',
        help='result json files (LVIS/COCO result format) or prefixes of '
        '<prefix>.bbox.json / <prefix>.segm.json')
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
        '--out', help='write the numbers (lvis/<type>_<item> keys) to this '
        'json file')
    parser.add_argument(
        '--classwise', action='store_true',
        help='also print the AP of every category')
    return parser.parse_args(argv)


def expand_results(paths: List[str]) -> List[str]:
    """Files for the given paths; a prefix gives its bbox / segm files."""
    files = []
    for path in paths:
        if osp.isfile(path):
            files.append(path)
            continue
        found = [
            f'{path}.{t}.json' for t in ('bbox', 'segm')
            if osp.isfile(f'{path}.{t}.json')
        ]
        if not found:
            raise FileNotFoundError(
                f'results file not found: {path} (nor {path}.bbox.json / '
                f'{path}.segm.json)')
        files.extend(found)
    return files


def infer_iou_type(path: str, results: list) -> str:
    name = osp.basename(path)
    for iou_type in ('segm', 'bbox'):
        if name.endswith(f'.{iou_type}.json'):
            return iou_type
    if results and isinstance(results[0], dict) and \
            'segmentation' in results[0]:
        return 'segm'
    return 'bbox'


def load_json_list(path: str) -> list:
    try:
        with open(path) as f:
            results = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f'{path} is not valid JSON: {e}') from e
    if not isinstance(results, list):
        raise ValueError(f'{path}: expected a list of detections, got '
                         f'{type(results).__name__}')
    return results


def format_table(rows: List[Tuple[str, Dict[str, float]]]) -> str:
    """Markdown table of the metrics (values in %, -1 = undefined)."""
    header = '| type | ' + ' | '.join(TABLE_ITEMS) + ' |'
    lines = [header, '|' + '---|' * (len(TABLE_ITEMS) + 1)]
    for iou_type, metrics in rows:
        cells = [
            f'{100 * metrics[k]:.2f}' if metrics[k] >= 0 else '-'
            for k in TABLE_ITEMS
        ]
        lines.append(f'| {iou_type} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def evaluate_files(files: List[str], ann_file: str, backend: str,
                   iou_type_arg, max_dets: int, classwise: bool):
    """Evaluate each file; returns [(iou_type, LVISEvalResult)]."""
    from mmdet_longtail.evaluation import LVIS_EVAL_BACKENDS, import_lvis
    if not osp.isfile(ann_file):
        raise FileNotFoundError(f'annotation file not found: {ann_file}')
    LVIS, _, _ = import_lvis()
    lvis_gt = LVIS(ann_file)
    evaluate = LVIS_EVAL_BACKENDS[backend]
    outcomes = []
    for path in files:
        results = load_json_list(path)
        iou_type = iou_type_arg or infer_iou_type(path, results)
        start = time.perf_counter()
        outcome = evaluate(
            lvis_gt, results, iou_type=iou_type, max_dets=max_dets,
            source=path)
        print(f'{path}: {iou_type}, {len(results):,} detections, '
              f'{backend} backend, {time.perf_counter() - start:.1f} s',
              flush=True)
        if classwise:
            cats = lvis_gt.load_cats(outcome.cat_ids)
            for cat, ap in zip(cats, outcome.per_class_ap):
                print(f'  {cat["name"]:<30s} ({cat.get("frequency", "?")}) '
                      f'{ap:.4f}')
        outcomes.append((iou_type, outcome))
    return outcomes


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        files = expand_results(args.results)
        outcomes = evaluate_files(files, args.ann, args.backend,
                                  args.iou_type, args.max_dets,
                                  args.classwise)
    except (FileNotFoundError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print('\nLVIS results (%):\n' +
          format_table([(t, o.metrics) for t, o in outcomes]))
    if args.out:
        numbers = {
            f'lvis/{t}_{k}': o.metrics[k]
            for t, o in outcomes for k in TABLE_ITEMS
        }
        with open(args.out, 'w') as f:
            json.dump(numbers, f, indent=2)
        print(f'numbers written to {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
