"""Config handling shared by tools/train.py and tools/test.py."""
import contextlib
import io
import logging
import os.path as osp
import sys
from typing import Optional

import torch


def quiet_stdout(quiet: bool = True):
    """Hold back what is printed to stdout (the log file keeps it)."""
    if not quiet:
        return contextlib.nullcontext()
    return contextlib.redirect_stdout(io.StringIO())


def load_config(config: str,
                cfg_options: Optional[dict],
                launcher: str,
                work_dir: Optional[str],
                quiet: bool = False):
    """Load a config with the CLI overrides applied (mmdet's semantics).
    ``quiet``: without the console messages of config loading."""
    from mmengine.config import Config
    if not osp.isfile(config):
        raise FileNotFoundError(f'config file not found: {config}')
    with quiet_stdout(quiet):
        cfg = Config.fromfile(config)
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config))[0])
    return cfg


def apply_cpu_distributed_defaults(cfg) -> None:
    """Make a distributed job run on CPUs (CI, laptops) with PyTorch DDP.

    mmengine assumes GPUs in two places: ``init_dist`` calls
    ``torch.cuda.set_device`` and ``wrap_model`` passes
    ``device_ids=[LOCAL_RANK]`` (DDP rejects device ids for CPU modules).
    Without CUDA we create the gloo process group ourselves (mmengine then
    skips ``init_dist``) and pass ``device_ids=None`` explicitly.
    """
    if cfg.launcher == 'none' or torch.cuda.is_available():
        return
    import torch.distributed as dist
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
    cfg.env_cfg.dist_cfg.backend = 'gloo'
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    if cfg.launcher == 'pytorch' and not dist.is_initialized():
        dist.init_process_group(backend='gloo')


def leave_process_group() -> None:
    """End a distributed job as PyTorch's documentation asks: every rank
    destroys the process group once its work is done, so that the group's
    threads stop while Python is alive rather than during interpreter
    finalization. Call it once the runner is deleted: its DDP wrapper
    holds the group."""
    import gc

    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        gc.collect()  # what the runner left in reference cycles
        dist.barrier()
        dist.destroy_process_group()


def add_progress_bars(cfg) -> None:
    """Progress bars for training, testing and the LVIS evaluation."""
    import mmdet_longtail.engine.hooks  # noqa: F401 (registers the hook)
    cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [
        dict(type='ProgressBarHook')
    ]
    for key in ('val_evaluator', 'test_evaluator'):
        evaluator = cfg.get(key)
        metrics = evaluator if isinstance(evaluator, list) else [evaluator]
        for metric in metrics:
            if metric and metric.get('type') == 'LongTailLVISMetric':
                metric['progress'] = True


def build_runner(cfg, progress: bool = False):
    """Build the runner of ``cfg``.

    ``progress``: the console shows progress bars and warnings instead of
    log lines (the environment, the config, the hooks, each iteration); the
    log file in the work dir keeps all of them.
    """
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    build = Runner.from_cfg if 'runner_type' not in cfg else RUNNERS.build
    if not progress:
        return build(cfg)
    add_progress_bars(cfg)
    # the runner logs the environment, config and hooks while it is built:
    # its console handler binds the redirected stream and is re-pointed after
    with quiet_stdout():
        runner = build(cfg)
    for handler in runner.logger.handlers:
        if not isinstance(handler, logging.FileHandler) and isinstance(
                handler, logging.StreamHandler):
            handler.setStream(sys.stdout)
            handler.setLevel(max(handler.level, logging.WARNING))
    return runner
