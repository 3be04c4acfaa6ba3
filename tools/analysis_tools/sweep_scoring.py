"""Sweep test-time scoring settings of a two-stage detector from one network
pass.

The detector runs once over the test set; each setting is then re-scored
from a cache of the RoI head's outputs and evaluated with the config's
metric (boxes), giving exactly the numbers ``tools/test.py --cfg-options``
gives with that setting (see ``mmdet_longtail.evaluation.rescoring``).

Sweepable (one parameter at a time, or ``--grid`` for all combinations):

* ``--gamma``: NorCal strength (``CalibratedCrossEntropyLoss.gamma``); a
  plain softmax-CE head is built with the NorCal loss at ``gamma=0``
  (the same scores).
* ``--tau``: tau-norm exponent of every stage's classifier
  (``TauNormLinear.tau``); plain ``nn.Linear`` classifiers are built as
  ``TauNormLinear`` with ``tau=0`` (the same layer).
* ``--alpha``: TDE strength (``TDEBBoxHead.alpha``).
* ``--fractal-lambda`` / ``--logit-adjustment``: FRACAL's two terms
  (``FRACALLoss``; a baseline checkpoint tests with a FRACAL config as is).
* ``--score-thr``: ``test_cfg.rcnn.score_thr``.

``--ap-fixed`` adds AP-fixed (APr / APc / APf too) and AP-pool to the table
(the metric's ``ap_fixed`` and ``ap_pool``); they differ from AP only with
more than 300 detections per image (``--cfg-options
model.test_cfg.rcnn.max_per_img=1000``).

Example:
    python tools/analysis_tools/sweep_scoring.py \\
        configs/norcal/mask-rcnn_r50_fpn_norcal_ms-1x_lvis-v1.py model.pth \\
        --cache-dir work_dirs/sweep/mask-rcnn --gamma 0 0.2 0.4 0.6 0.8 1.0
"""
import argparse
import sys
from typing import Optional, Sequence

import torch

from mmdet_longtail.evaluation.rescoring import (CacheMismatchError,
                                                 SweepOutcome, sweep_scoring)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Sweep test-time scoring settings from a cache of the '
        'RoI head outputs (one network pass)')
    parser.add_argument('config', help='test config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--cache-dir',
        help='where the head outputs are cached (default: '
        'work_dirs/sweep_scoring/<config name>)')
    parser.add_argument(
        '--out-dir', help='table, plot and json (default: the cache dir)')
    parser.add_argument(
        '--gamma', type=float, nargs='+', default=[], help='NorCal gammas')
    parser.add_argument(
        '--norcal-method',
        choices=['gamma', 'cb'],
        help='NorCal variant of the swept gammas (default: the config\'s, '
        'else gamma)')
    parser.add_argument(
        '--norcal-ann-file',
        help='training annotation file for N_c (default: the '
        'train_dataloader\'s)')
    parser.add_argument(
        '--tau', type=float, nargs='+', default=[], help='tau-norm taus')
    parser.add_argument(
        '--alpha', type=float, nargs='+', default=[], help='TDE alphas')
    parser.add_argument(
        '--fractal-lambda', type=float, nargs='+', default=[],
        help='FRACAL lambdas')
    parser.add_argument(
        '--logit-adjustment', type=float, nargs='+', default=[],
        help='FRACAL weights of the frequency term')
    parser.add_argument(
        '--score-thr',
        type=float,
        nargs='+',
        default=[],
        help='score thresholds')
    parser.add_argument(
        '--grid',
        action='store_true',
        help='all combinations instead of one parameter at a time')
    parser.add_argument(
        '--ap-fixed',
        action='store_true',
        help='also report AP-fixed and AP-pool (test_evaluator.ap_fixed '
        'and ap_pool)')
    parser.add_argument(
        '--rebuild-cache',
        action='store_true',
        help='run the detector again and overwrite the cache')
    parser.add_argument(
        '--shard-size',
        type=int,
        default=64,
        help='images per cache file (default 64)')
    parser.add_argument(
        '--dump-predictions',
        action='store_true',
        help='write out-dir/predictions_<k>.pkl per setting (the '
        'tools/test.py --out format)')
    parser.add_argument(
        '--device',
        default='cuda' if torch.cuda.is_available() else 'cpu',
        help='device of the network pass and the re-scoring')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings in the config, key=value')
    return parser.parse_args(argv)


def print_summary(outcome: SweepOutcome) -> None:
    """The cost of an extra setting against the full test pass."""
    full = outcome.meta['full_pass_seconds']
    ratio = outcome.extra_setting_ratio()
    measured = 'measured now' if outcome.measured_now else \
        'measured when the cache was built'
    print(f'full test pass: {full["total"]:.2f} s ({measured}; network '
          f'{full["network"]:.2f} s + evaluation {full["evaluation"]:.2f} s)')
    print(f'each extra setting: {ratio * full["total"]:.2f} s = '
          f'{100 * ratio:.1f}% of a full test pass (ratio {ratio:.3f}, goal '
          f'< 0.25)')


def main(argv: Optional[Sequence[str]] = None) -> SweepOutcome:
    args = parse_args(argv)
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg_options = dict(args.cfg_options or {})
    if args.ap_fixed:
        cfg_options.update({'test_evaluator.ap_fixed': True,
                            'test_evaluator.ap_pool': True})
    outcome = sweep_scoring(
        args.config,
        args.checkpoint,
        cache_dir=args.cache_dir,
        out_dir=args.out_dir,
        values=dict(
            gamma=args.gamma,
            tau=args.tau,
            alpha=args.alpha,
            fractal_lambda=args.fractal_lambda,
            logit_adjustment=args.logit_adjustment,
            score_thr=args.score_thr),
        grid=args.grid,
        norcal_method=args.norcal_method,
        norcal_ann_file=args.norcal_ann_file,
        rebuild_cache=args.rebuild_cache,
        shard_size=args.shard_size,
        dump_predictions=args.dump_predictions,
        device=args.device,
        cfg_options=cfg_options)
    print_summary(outcome)
    return outcome


if __name__ == '__main__':
    try:
        main()
    except CacheMismatchError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
