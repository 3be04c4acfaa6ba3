"""Speed of the 'fast' LVIS backend against the official lvis-api.

A generated LVIS-val-shaped workload (default: 2,000 images, 1,203
categories, 300 detections per image, 10% of the images above the cap, bbox
and segm) is evaluated by lvis-api (``evaluate_lvis``) and by the fast
backend (``evaluate_lvis_fast``) in the same run, from the same loaded
ground truth and in-memory results (what ``LongTailLVISMetric`` hands
them). Each evaluation runs in a forked child process, so the two do not
share caches or garbage, and its peak memory above the starting point is
measured there (Linux; ``/proc/self/clear_refs``).

The numbers must be identical (max |difference| <= 1e-9 over every metric
and every per-class AP), otherwise the script exits with status 1. The last
line is the summary, e.g. ``speedup vs lvis-api: 4.1x (bbox+segm)``.

Example:
    python benchmarks/bench_lvis_eval.py
    python benchmarks/bench_lvis_eval.py --num-images 200   # quick look
"""
import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from typing import Callable, Dict, Tuple

import numpy as np

PARITY_TOL = 1e-9


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--num-images', type=int, default=2000)
    parser.add_argument('--num-classes', type=int, default=1203)
    parser.add_argument('--dets-per-image', type=int, default=300)
    parser.add_argument('--max-dets', type=int, default=300)
    parser.add_argument(
        '--iou-types', nargs='+', default=['bbox', 'segm'],
        choices=['bbox', 'segm'])
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args()


def _read_status_kb(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # reset VmHWM to the current RSS
        return True
    except OSError:
        return False


def _measure(fn: Callable, args: tuple, conn) -> None:
    """Child: run ``fn(*args)``, send (seconds, result, peak MiB or -1)."""
    can_measure = _reset_peak_rss()
    start_rss = _read_status_kb('VmRSS')
    start = time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - start
    peak = (_read_status_kb('VmHWM') - start_rss) / 1024 \
        if can_measure else -1.0
    conn.send((seconds, result, peak))
    conn.close()


def run_isolated(fn: Callable, *args) -> Tuple[float, object, float]:
    """``fn(*args)`` in a forked child: (seconds, result, peak MiB)."""
    if 'fork' not in mp.get_all_start_methods():
        start = time.perf_counter()
        result = fn(*args)
        return time.perf_counter() - start, result, -1.0
    ctx = mp.get_context('fork')
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_measure, args=(fn, args, child))
    proc.start()
    child.close()
    outcome = parent.recv()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f'{fn.__name__} failed (exit {proc.exitcode})')
    return outcome


def max_difference(a, b) -> float:
    keys = set(a.metrics) | set(b.metrics)
    diff = max(abs(a.metrics[k] - b.metrics[k]) for k in keys)
    same_nan = np.isnan(a.per_class_ap) == np.isnan(b.per_class_ap)
    if not same_nan.all():
        return float('inf')
    valid = ~np.isnan(a.per_class_ap)
    if valid.any():
        diff = max(diff, float(np.max(np.abs(
            a.per_class_ap[valid] - b.per_class_ap[valid]))))
    return diff


def fmt_mib(mib: float) -> str:
    return 'n/a' if mib < 0 else f'{mib:,.0f} MiB'


def main() -> int:
    args = parse_args()
    from mmdet_longtail.evaluation.fast_lvis_eval import evaluate_lvis_fast
    from mmdet_longtail.evaluation.lvis_api import evaluate_lvis, import_lvis
    # the generator is a test fixture: it lives in tests/, not the package
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), 'tests'))
    from synthetic_detections import make_detections, make_lvis_eval_gt

    start = time.perf_counter()
    gt = make_lvis_eval_gt(
        num_images=args.num_images, num_classes=args.num_classes,
        seed=args.seed)
    dets = make_detections(
        gt, dets_per_image=args.dets_per_image, max_dets=args.max_dets,
        with_masks='segm' in args.iou_types, seed=args.seed + 1)
    LVIS, _, _ = import_lvis()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'lvis_val_generated.json')
        with open(path, 'w') as f:
            json.dump(gt, f)
        lvis_gt = LVIS(path)
    num_dets = len(dets['bbox'])
    print(f'workload: {args.num_images} images, {args.num_classes} '
          f'categories, {len(gt["annotations"]):,} ground-truth instances, '
          f'{num_dets:,} detections per type (cap {args.max_dets} per '
          f'image); generated in {time.perf_counter() - start:.1f} s',
          flush=True)

    totals: Dict[str, float] = {'lvis': 0.0, 'fast': 0.0}
    worst = 0.0
    for iou_type in args.iou_types:
        row = {}
        for name, fn in (('lvis', evaluate_lvis), ('fast',
                                                    evaluate_lvis_fast)):
            row[name] = run_isolated(fn, lvis_gt, dets[iou_type], iou_type,
                                     None, args.max_dets)
            totals[name] += row[name][0]
        diff = max_difference(row['lvis'][1], row['fast'][1])
        worst = max(worst, diff)
        official = row['lvis'][1].metrics
        print(f'{iou_type}: lvis-api {row["lvis"][0]:7.1f} s '
              f'(peak +{fmt_mib(row["lvis"][2])}) | fast '
              f'{row["fast"][0]:6.1f} s (peak +{fmt_mib(row["fast"][2])}) | '
              f'{row["lvis"][0] / row["fast"][0]:.1f}x | AP '
              f'{official["AP"]:.4f} APr {official["APr"]:.4f} | max '
              f'|diff| {diff:.1e}', flush=True)
    if worst > PARITY_TOL:
        print(f'numbers differ by {worst:.3g} > {PARITY_TOL}: FAILED')
        return 1
    types = '+'.join(args.iou_types)
    print(f'speedup vs lvis-api: {totals["lvis"] / totals["fast"]:.1f}x '
          f'({types})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
