"""RFS through the tools: the tiny RFS Mask R-CNN trains and tests, a
2-process CPU DDP run agrees on the index list, and ``--resume`` continues
with the list an uninterrupted run uses."""
import math
import os.path as osp
import re

import torch

from conftest import last_checkpoint

RFS_MASK = 'configs/rfs/mask-rcnn_r18-tiny_fpn_rfs-8e-2_12e_synthetic-lvis.py'
RFS_FASTER = \
    'configs/rfs/faster-rcnn_r18-tiny_fpn_rfs-8e-2_12e_synthetic-lvis.py'
SEED = ['randomness.seed=0']


def epoch_length(synthetic_root: str, epoch: int, seed: int = 0) -> int:
    """The length the run must use: RFSDataset on the config's train set
    with the run's seed."""
    from mmengine.config import Config

    from mmdet.utils import register_all_modules
    from mmdet_longtail.datasets.rfs_dataset import RFSDataset
    register_all_modules()
    cfg = Config.fromfile(RFS_MASK).train_dataloader.dataset
    inner = dict(cfg.dataset, data_root=synthetic_root, pipeline=[])
    rfs = RFSDataset(inner, threshold=cfg.threshold, seed=seed)
    return len(rfs.epoch_indices(epoch))


def epoch_lines(log: str) -> dict:
    """epoch -> (length, digest) from RFSDataset's per-epoch log lines."""
    found = re.findall(
        r'RFSDataset epoch (\d+) \(seed 0\): epoch length (\d+) .*'
        r'list digest ([0-9a-f]{8})', log)
    return {int(e): (int(n), d) for e, n, d in found}


def test_tiny_rfs_mask_rcnn_trains_and_tests(run_tool, synthetic_root,
                                             tmp_path):
    work = str(tmp_path / 'work')
    train = run_tool.train(RFS_MASK, work, cfg_options=SEED)
    # the hook gave the dataset the run's seed and resized the sampler
    length = epoch_length(synthetic_root, 0)
    assert epoch_lines(train.stdout)[0][0] == length
    iters = math.ceil(length / 4)  # batch 4
    assert f'Epoch(train) [1][{iters}/{iters}]' in train.stdout
    assert 'images have r(I) > 1' in train.stdout

    test = run_tool.test(RFS_MASK, last_checkpoint(work),
                         str(tmp_path / 'test'))
    assert 'LVIS results (%)' in test.stdout
    for iou_type in ('bbox', 'segm'):
        assert f'lvis/{iou_type}_APr:' in test.stdout


def test_rfs_two_process_ddp(run_tool, synthetic_root, tmp_path):
    work = str(tmp_path / 'ddp')
    proc = run_tool(
        'dist_train.sh',
        RFS_FASTER,
        '2',
        '--work-dir',
        work,
        '--cfg-options',
        'train_cfg.max_epochs=1',
        'train_dataloader.batch_size=2',
        'default_hooks.logger.interval=1',
        'train_cfg.val_begin=2',
        *SEED,
        timeout=300)
    assert 'Distributed training: True' in proc.stdout
    assert 'same index list on all 2 ranks (epoch 0' in proc.stdout
    length = epoch_length(synthetic_root, 0)
    # each rank takes every other entry of the epoch's list, 2 per batch
    iters = math.ceil(math.ceil(length / 2) / 2)
    assert f'Epoch(train) [1][{iters}/{iters}]' in proc.stdout


def test_resume_uses_the_uninterrupted_list(run_tool, tmp_path):
    """2 epochs straight == 1 epoch, stop, --resume, 1 more epoch: the
    epoch-2 list (length, digest) and the final weights are the same."""
    opts = SEED + [
        'train_cfg.max_epochs=2',
        'train_cfg.val_interval=10',
        'randomness.deterministic=True',
        # 16 images (about 20 samples per epoch) keep the three runs short
        'train_dataloader.dataset.dataset.indices=16'
    ]
    straight_dir = str(tmp_path / 'straight')
    straight = run_tool.train(RFS_FASTER, straight_dir, cfg_options=opts)
    resumed_dir = str(tmp_path / 'resumed')
    first = run_tool.train(
        RFS_FASTER, resumed_dir, cfg_options=opts + ['train_cfg.max_epochs=1'])
    second = run_tool.train(
        RFS_FASTER, resumed_dir, '--resume', cfg_options=opts)

    lines = epoch_lines(straight.stdout)
    assert set(lines) == {0, 1}
    assert lines[0] != lines[1]  # the draw changes with the epoch
    assert epoch_lines(first.stdout) == {0: lines[0]}
    assert epoch_lines(second.stdout) == {1: lines[1]}
    assert 'Epoch(train) [1]' not in second.stdout

    a = torch.load(osp.join(straight_dir, 'epoch_2.pth'), weights_only=False)
    b = torch.load(osp.join(resumed_dir, 'epoch_2.pth'), weights_only=False)
    assert a['meta']['iter'] == b['meta']['iter']
    for key, value in a['state_dict'].items():
        torch.testing.assert_close(
            b['state_dict'][key], value, msg=f'{key} differs after resume')
