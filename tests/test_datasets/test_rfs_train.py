"""RFS through the tools: the tiny RFS Mask R-CNN trains and tests, a
2-process CPU DDP run shards the epoch's list, and ``--resume`` continues
with the list an uninterrupted run uses; in-process, mmengine's Runner
iterates each epoch's list and resumes with the uninterrupted one."""
import glob
import math
import os.path as osp
import re

import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner

from conftest import last_checkpoint
from mmdet_longtail.datasets.samplers.rfs_sampler import RFSSampler

RFS_MASK = 'configs/rfs/mask-rcnn_r18-tiny_fpn_rfs-8e-2_12e_synthetic-lvis.py'
RFS_FASTER = \
    'configs/rfs/faster-rcnn_r18-tiny_fpn_rfs-8e-2_12e_synthetic-lvis.py'
SEED = ['randomness.seed=0']


def rfs_sampler(synthetic_root: str, seed: int = 0, indices=None):
    """The sampler the run builds: RFSSampler on the config's train set
    with the run's seed."""
    from mmdet.registry import DATA_SAMPLERS, DATASETS
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(RFS_MASK).train_dataloader
    dataset = DATASETS.build(
        dict(cfg.dataset, data_root=synthetic_root, pipeline=[],
             indices=indices))
    return DATA_SAMPLERS.build(
        cfg.sampler, default_args=dict(dataset=dataset, seed=seed))


def epoch_length(synthetic_root: str, epoch: int, seed: int = 0,
                 indices=None) -> int:
    """The length of the list of ``epoch`` in the run."""
    return len(
        rfs_sampler(synthetic_root, seed, indices).epoch_indices(epoch))


# the first 16 train images: the tools' wiring is the point, not the epoch
SUBSET = 16


def epoch_lines(log: str) -> dict:
    """epoch -> (length, digest) from RFSSampler's per-epoch log lines."""
    found = re.findall(
        r'RFSSampler epoch (\d+) \(seed 0\): epoch length (\d+) .*'
        r'list digest ([0-9a-f]{8})', log)
    return {int(e): (int(n), d) for e, n, d in found}


def test_tiny_rfs_mask_rcnn_trains_and_tests(run_tool, synthetic_root,
                                             tmp_path):
    work = str(tmp_path / 'work')
    train = run_tool.train(
        RFS_MASK, work,
        cfg_options=SEED + [f'train_dataloader.dataset.indices={SUBSET}'])
    # the sampler got the run's seed; the loop iterates its whole list
    length = epoch_length(synthetic_root, 0, indices=SUBSET)
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
        f'train_dataloader.dataset.indices={SUBSET}',
        *SEED,
        timeout=300)
    assert 'Distributed training: True' in proc.stdout
    length = epoch_length(synthetic_root, 0, indices=SUBSET)
    # each rank takes every other entry of the epoch's list (the same on
    # both ranks: a function of (seed, epoch)), 2 per batch
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
        'train_dataloader.dataset.indices=16'
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


# ------------------------------------------- in-process mmengine Runner
class RecordImages(Hook):
    """Records the img_id of every training sample, per epoch."""

    def __init__(self) -> None:
        self.seen = {}

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.seen.setdefault(runner.epoch, []).extend(
            sample.img_id for sample in data_batch['data_samples'])


class ToyDetector(BaseModel):
    """One parameter: the loop, hooks, checkpoints and resume of a real run
    in milliseconds per iteration (the data comes from the real config)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, inputs, data_samples=None, mode='loss'):
        return dict(loss=(self.weight - len(inputs)).pow(2).sum())


def run_in_process(synthetic_root, work_dir, max_epochs, monkeypatch,
                   name, resume=False):
    """Train on the tiny RFS config's train dataloader (24 images, t = 0.2,
    batch 4) in this process, through mmengine's Runner."""
    monkeypatch.setenv('MMLT_SYNTHETIC_ROOT', synthetic_root)
    cfg = Config.fromfile(RFS_FASTER)
    cfg.merge_from_dict({
        'train_dataloader.batch_size': 4,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'train_dataloader.dataset.indices': 24,
        'train_dataloader.sampler.threshold': 0.2,
    })
    runner = Runner(
        model=ToyDetector(),
        work_dir=work_dir,
        experiment_name=name,
        train_dataloader=cfg.train_dataloader,
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        default_hooks=cfg.default_hooks,
        custom_hooks=[RecordImages()],
        default_scope='mmdet',
        randomness=dict(seed=0),
        resume=resume)
    runner.train()
    record = [h for h in runner.hooks if isinstance(h, RecordImages)][0]
    return runner, record.seen


def test_runner_epochs_and_resume_in_process(synthetic_root, tmp_path,
                                             monkeypatch):
    """Through mmengine's Runner: each epoch loads its own list (the
    sampler's length changes, the loop is not touched), and 3 epochs
    straight == 2 epochs, then a resumed run's epoch 3, image for image."""
    straight, seen = run_in_process(synthetic_root, str(tmp_path / 'a'), 3,
                                    monkeypatch, 'rfs_straight')
    loader = straight.train_dataloader
    sampler, dataset = loader.batch_sampler.sampler, loader.dataset
    assert isinstance(sampler, RFSSampler) and sampler.seed == 0
    assert sampler.epoch == 2 and sampler.repeat_factors.max() > 1
    lists = [sampler.epoch_indices(epoch) for epoch in range(3)]
    assert len({len(listed) for listed in lists}) > 1  # lengths vary
    for epoch, listed in enumerate(lists):
        images = [dataset.get_data_info(int(i))['img_id'] for i in listed]
        assert sorted(seen[epoch]) == sorted(images)
    # max_iters: mmengine's own value from epoch 0's length, not rewritten
    assert straight.train_loop.max_iters == 3 * math.ceil(len(lists[0]) / 4)
    assert straight.train_loop.iter == sum(
        math.ceil(len(listed) / 4) for listed in lists)
    log = open(glob.glob(str(tmp_path / 'a' / '*' / '*.log'))[0]).read()
    assert 'RFSSampler (t=0.2, stochastic rounding, seed 0)' in log
    assert 'expected epoch length' in log

    resumed_dir = str(tmp_path / 'b')
    _, first = run_in_process(synthetic_root, resumed_dir, 2, monkeypatch,
                              'rfs_first')
    _, resumed = run_in_process(synthetic_root, resumed_dir, 3, monkeypatch,
                                'rfs_resumed', resume=True)
    assert first == {0: seen[0], 1: seen[1]}
    assert resumed == {2: seen[2]}
