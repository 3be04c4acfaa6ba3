"""Config handling shared by tools/train.py and tools/test.py."""
import os.path as osp
from typing import Optional

import torch


def load_config(config: str, cfg_options: Optional[dict], launcher: str,
                work_dir: Optional[str]):
    """Load a config with the CLI overrides applied (mmdet's semantics)."""
    from mmengine.config import Config
    if not osp.isfile(config):
        raise FileNotFoundError(f'config file not found: {config}')
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


def build_runner(cfg):
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return RUNNERS.build(cfg)
