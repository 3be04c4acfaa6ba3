"""Cost of one extra setting of a score sweep
(``mmdet_longtail.evaluation.rescoring``, the library of
tools/analysis_tools/sweep_scoring.py) against a full test pass, measured in
the same run.

For each tiny NorCal config (Faster R-CNN: the cheapest network, so the
worst case for the ratio; Mask R-CNN: a full pass that also predicts and
evaluates masks) the script trains a detector briefly on a generated
synthetic LVIS set, then runs the sweep with a fresh cache: one network pass
(the full test pass: network, post-processing and the config's evaluation,
timed by the tool) and several NorCal gammas re-scored from the cache (each
timed: re-scoring + bbox evaluation). The goal of the issue is an extra
setting under 25% of a full pass: the script exits with status 1 above
``--max-ratio`` (default: that goal). An extra setting re-scores *and
evaluates*, so the evaluation share of the full pass is a floor of the
ratio, and the network time of these tiny models varies with the machine's
load: compare runs on the same machine (issue 17 recorded under 12%; a
shared 2-core CPU gave 0.18-0.24, and 0.25 for the sweep before the
scoring settings, whose re-scoring took 1.5x as long). The last line is
the summary, e.g. ``sweep_scoring: an extra setting costs 9.1% of a full
test pass (worst of faster-rcnn 9.1%, mask-rcnn 4.0%; goal < 25%)``.

Example:
    python benchmarks/bench_sweep_scoring.py
    python benchmarks/bench_sweep_scoring.py --num-val-images 200
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import tempfile
from typing import Dict

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = {
    'faster-rcnn':
    'configs/norcal/faster-rcnn_r18-tiny_fpn_norcal_12e_synthetic-lvis.py',
    'mask-rcnn':
    'configs/norcal/mask-rcnn_r18-tiny_fpn_norcal_12e_synthetic-lvis.py',
}
GOAL = 0.25


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--num-train-images', type=int, default=48)
    parser.add_argument('--num-val-images', type=int, default=64)
    parser.add_argument('--train-epochs', type=int, default=2)
    parser.add_argument(
        '--gammas', type=float, nargs='+', default=[0.0, 0.3, 0.6, 1.0])
    parser.add_argument(
        '--models', nargs='+', default=sorted(CONFIGS), choices=CONFIGS)
    parser.add_argument('--work-dir', help='default: a temporary directory')
    parser.add_argument(
        '--max-ratio',
        type=float,
        default=GOAL,
        help='fail (exit status 1) when an extra setting costs more than '
        'this fraction of a full test pass')
    return parser.parse_args()


def train(config: str, work_dir: str, epochs: int) -> str:
    """A briefly trained detector (scores that look like a detector's)."""
    subprocess.run([
        sys.executable,
        osp.join(REPO_ROOT, 'tools', 'train.py'), config, '--work-dir',
        work_dir, '--cfg-options', f'train_cfg.max_epochs={epochs}',
        f'train_cfg.val_interval={epochs + 1}', 'param_scheduler.0.end=4',
        'train_dataloader.batch_size=4'
    ],
                   cwd=REPO_ROOT,
                   check=True,
                   stdout=subprocess.DEVNULL)
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return osp.join(work_dir, osp.basename(f.read().strip()))


def bench_one(name: str, root: str, args) -> Dict[str, float]:
    from mmdet_longtail.evaluation.rescoring import sweep_scoring
    config = osp.join(REPO_ROOT, CONFIGS[name])
    ckpt = train(config, osp.join(root, name, 'train'), args.train_epochs)
    cache = osp.join(root, name, 'cache')
    results = sweep_scoring(
        config,
        ckpt,
        cache_dir=cache,
        rebuild_cache=True,
        values=dict(gamma=args.gammas),
        cfg_options={
            'test_dataloader.batch_size': 4
        }).results
    with open(osp.join(cache, 'meta.json')) as f:
        full = json.load(f)['full_pass_seconds']
    extra = results[1:]
    per_setting = sum(r.seconds for r in extra) / len(extra)
    return dict(
        rescoring_s=sum(r.scoring_s for r in extra) / len(extra),
        num_settings=len(extra),
        full_s=full['total'],
        network_s=full['network'],
        evaluation_s=full['evaluation'],
        setting_s=per_setting,
        ratio=per_setting / full['total'])


def main() -> None:
    args = parse_args()
    tmp = None
    root = args.work_dir
    if root is None:
        tmp = tempfile.TemporaryDirectory()
        root = tmp.name
    from mmdet_longtail.datasets import make_synthetic_lvis
    data_root = osp.join(root, 'synthetic_lvis') + '/'
    make_synthetic_lvis(
        data_root,
        num_classes=30,
        num_train_images=args.num_train_images,
        num_val_images=args.num_val_images,
        min_class_images=1,  # NorCal needs N_c >= 1 for every class
        seed=0)
    os.environ['MMLT_SYNTHETIC_ROOT'] = data_root
    from mmdet.utils import register_all_modules
    register_all_modules()
    rows = {name: bench_one(name, root, args) for name in args.models}

    num_settings = max(r['num_settings'] for r in rows.values())
    print(f'\n{args.num_val_images} val images, {num_settings} extra '
          f'settings (NorCal gammas {args.gammas}; the config\'s own gamma '
          f'is the full pass)')
    print('| model | full test pass (s) | network (s) | evaluation (s) | '
          'per extra setting (s) | of which re-scoring (s) | ratio |')
    print('|---|---|---|---|---|---|---|')
    for name, r in rows.items():
        print(f'| {name} | {r["full_s"]:.2f} | {r["network_s"]:.2f} | '
              f'{r["evaluation_s"]:.2f} | {r["setting_s"]:.2f} | '
              f'{r["rescoring_s"]:.2f} | '
              f'{r["ratio"]:.3f} |')
    worst = max(rows, key=lambda n: rows[n]['ratio'])
    each = ', '.join(f'{n} {100 * r["ratio"]:.1f}%' for n, r in rows.items())
    print(f'sweep_scoring: an extra setting costs '
          f'{100 * rows[worst]["ratio"]:.1f}% of a full test pass (worst of '
          f'{each}; goal < {100 * args.max_ratio:.0f}%)')
    if tmp is not None:
        tmp.cleanup()
    if rows[worst]['ratio'] > args.max_ratio:
        sys.exit(f'sweep_scoring: {worst} costs {rows[worst]["ratio"]:.3f} '
                 f'of a full test pass per extra setting, above '
                 f'--max-ratio {args.max_ratio}')


if __name__ == '__main__':
    main()
