"""Test (and evaluate) a detector (MMDetection's ``tools/test.py`` flags).

Prints the LVIS table (AP, APr, APc, APf for bbox and segm) at the end.

Example:
    python tools/test.py CONFIG CHECKPOINT --work-dir work_dirs/x
    python tools/test.py CONFIG CHECKPOINT --cfg-options \
        model.roi_head.bbox_head.alpha=1.0

Fixed AP and pooled AP (Dave et al. 2021, see the README) need more than
LVIS's 300 detections per image: ``model.test_cfg.rcnn.max_per_img`` for
two-stage detectors (``model.test_cfg.max_per_img`` for one-stage ones)::

    python tools/test.py CONFIG CHECKPOINT --cfg-options \
        model.test_cfg.rcnn.max_per_img=1000 \
        test_evaluator.ap_fixed=True test_evaluator.ap_pool=True

The standard AP still keeps the top 300 per image (the metric's
``max_dets``). Memory at LVIS val scale: README, "Fixed AP and pooled AP".
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _runner_utils import (apply_cpu_distributed_defaults,  # noqa: E402
                           build_runner, leave_process_group, load_config)

TABLE_ITEMS = ('AP', 'AP50', 'AP75', 'APr', 'APc', 'APf')
FIXED_POOL_ITEMS = ('AP_fixed', 'APr_fixed', 'AP_pool')


def parse_args() -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Test (and evaluate) a detector')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='the directory to save the file containing evaluation metrics')
    parser.add_argument(
        '--out',
        type=str,
        help='dump predictions to a pickle file for offline evaluation')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images will be saved. If specified, '
        'it will be automatically saved to the work_dir/timestamp/show_dir')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings in the config, key=value')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--tta', action='store_true')
    parser.add_argument(
        '--progress',
        action='store_true',
        help='progress bars on the console instead of log lines (the log '
        'file in the work dir keeps everything)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def enable_visualization(cfg, args) -> None:
    hooks = cfg.default_hooks
    if 'visualization' not in hooks:
        raise RuntimeError(f'{args.config}: --show/--show-dir need '
                           f'default_hooks.visualization')
    hooks.visualization.draw = True
    if args.show:
        hooks.visualization.show = True
        hooks.visualization.wait_time = args.wait_time
    if args.show_dir:
        hooks.visualization.test_out_dir = args.show_dir


def format_lvis_table(metrics: dict) -> str:
    """A Markdown table of the LVIS metrics (values in %), with fixed /
    pooled AP columns when the metric reported them."""
    items = TABLE_ITEMS + tuple(
        k for k in FIXED_POOL_ITEMS
        if any(key.endswith(f'_{k}') for key in metrics))
    rows = []
    for iou_type in ('bbox', 'segm'):
        keys = [f'lvis/{iou_type}_{k}' for k in items]
        if all(k in metrics for k in keys[:len(TABLE_ITEMS)]):
            rows.append(f'| {iou_type} | ' + ' | '.join(
                f'{100 * metrics[k]:.2f}' if k in metrics else '-'
                for k in keys) + ' |')
    if not rows:
        return ''
    header = '| type | ' + ' | '.join(items) + ' |'
    return '\n'.join([header, '|' + '---|' * (len(items) + 1)] + rows)


def main() -> None:
    args = parse_args()
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint}')
    cfg = load_config(args.config, args.cfg_options, args.launcher,
                      args.work_dir, quiet=args.progress)
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        enable_visualization(cfg, args)
    if args.tta:
        if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
            raise RuntimeError(f'{args.config}: --tta needs tta_model and '
                               f'tta_pipeline in the config')
        cfg.model = dict(cfg.tta_model, module=cfg.model)
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    apply_cpu_distributed_defaults(cfg)
    runner = build_runner(cfg, progress=args.progress)
    if args.out is not None:
        from mmdet.evaluation import DumpDetResults
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out must be a .pkl file, got {args.out}')
        runner.test_evaluator.metrics.append(
            DumpDetResults(out_file_path=args.out))
    metrics = runner.test()
    table = format_lvis_table(metrics or {})
    if table and runner.rank == 0:
        print('\nLVIS results (%):\n' + table, flush=True)
    del runner
    leave_process_group()


if __name__ == '__main__':
    main()
