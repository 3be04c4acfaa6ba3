"""tools/train.py and tools/test.py end to end on the synthetic set: each
tiny framework, 2-process CPU DDP, and exact resume."""
import glob
import os.path as osp
import pickle

import pytest
import torch

from conftest import last_checkpoint

TINY = {
    'faster': 'configs/lvis/faster-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py',
    'mask': 'configs/lvis/mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py',
    'cascade':
    'configs/lvis/cascade-mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py',
    'htc':
    'configs/lvis/htc-without-semantic_r18-tiny_fpn_12e_synthetic-lvis.py',
}
LVIS_KEYS = ('AP', 'APr', 'APc', 'APf')


def log_file_text(work_dir: str) -> str:
    """What mmengine wrote to the run's log file in the work dir."""
    (path, ) = glob.glob(osp.join(work_dir, '2*', '2*.log'))
    with open(path) as f:
        return f.read()


@pytest.mark.parametrize('framework', sorted(TINY))
def test_train_then_test_prints_lvis_table(run_tool, tmp_path, framework):
    """Mask R-CNN runs as the README's main job does (``--progress``): the
    console shows bars and the table, the log file everything."""
    config = TINY[framework]
    work = str(tmp_path / 'work')
    progress = ['--progress'] if framework == 'mask' else []
    train = run_tool.train(config, work, *progress)
    train_log = log_file_text(work)
    assert 'Epoch(train) [1]' in train_log
    if progress:
        assert 'Epoch(train)' not in train.stdout
        assert 'Hooks will be executed' not in train.stdout
        assert 'train: 100%' in train.stdout  # the bar (stderr)
    else:
        assert 'Epoch(train) [1]' in train.stdout
    ckpt = last_checkpoint(work)
    assert osp.isfile(ckpt)

    extra = list(progress)
    if framework == 'faster':
        extra = ['--out', str(tmp_path / 'preds.pkl'),
                 '--show-dir', 'vis']
    test = run_tool.test(config, ckpt, str(tmp_path / 'test'), *extra)
    assert 'LVIS results (%)' in test.stdout
    test_log = log_file_text(str(tmp_path / 'test'))
    types = ('bbox', ) if framework == 'faster' else ('bbox', 'segm')
    for iou_type in types:
        for key in LVIS_KEYS:
            assert f'lvis/{iou_type}_{key}:' in test_log
            assert (f'lvis/{iou_type}_{key}:' in test.stdout) != bool(
                progress)
        assert f'| {iou_type} |' in test.stdout
    if progress:
        assert 'test: 100%' in test.stdout and 'evaluate: 100%' in test.stdout
    if framework == 'faster':
        with open(tmp_path / 'preds.pkl', 'rb') as f:
            preds = pickle.load(f)
        assert len(preds) == 16  # every val image of the small set
        assert 'pred_instances' in preds[0]
        painted = glob.glob(str(tmp_path / 'test' / '*' / 'vis' / '*.jpg'))
        assert len(painted) == 16


def test_two_process_ddp_on_cpu(run_tool, tmp_path):
    work = str(tmp_path / 'ddp')
    # 2 epochs: the checkpoint after epoch 1 must not block (it is written
    # by rank 0 only, the RNG states of both ranks included)
    proc = run_tool('dist_train.sh', TINY['faster'], '2', '--work-dir', work,
                    '--cfg-options', 'train_cfg.max_epochs=2',
                    'train_cfg.val_interval=2',
                    'train_dataloader.batch_size=2',
                    'default_hooks.logger.interval=1',
                    env={'PORT': '29561'})
    assert 'Distributed training: True' in proc.stdout
    # 48 images / (2 ranks x 2 per batch) = 12 iterations per epoch
    assert 'Epoch(train) [2][12/12]' in proc.stdout
    ckpt = torch.load(last_checkpoint(work), weights_only=False)
    assert len(ckpt['rng_states']) == 2  # one per rank


def test_resume_continues_exactly(run_tool, tmp_path):
    """2 epochs straight == 1 epoch, stop, --resume, 1 more epoch."""
    opts = ['train_cfg.max_epochs=2', 'train_cfg.val_interval=10',
            'randomness.seed=0', 'randomness.deterministic=True']
    straight = str(tmp_path / 'straight')
    run_tool.train(TINY['faster'], straight, cfg_options=opts)

    resumed = str(tmp_path / 'resumed')
    # the first run stops after epoch 1 (as if interrupted)
    run_tool.train(TINY['faster'], resumed, cfg_options=opts +
                   ['train_cfg.max_epochs=1'])
    proc = run_tool.train(TINY['faster'], resumed, '--resume',
                          cfg_options=opts)
    assert 'resumed epoch: 1, iter: 12' in proc.stdout
    assert 'Epoch(train) [2]' in proc.stdout
    assert 'Epoch(train) [1]' not in proc.stdout

    a = torch.load(osp.join(straight, 'epoch_2.pth'), weights_only=False)
    b = torch.load(osp.join(resumed, 'epoch_2.pth'), weights_only=False)
    assert a['meta']['iter'] == b['meta']['iter'] == 24
    for key, value in a['state_dict'].items():
        torch.testing.assert_close(b['state_dict'][key], value,
                                   msg=f'{key} differs after resume')


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour')
def test_amp_without_gpu_is_refused_clearly(run_tool, tmp_path):
    proc = run_tool.train(TINY['faster'], str(tmp_path / 'amp'), '--amp',
                          check=False)
    assert proc.returncode != 0
    assert '--amp needs a GPU' in proc.stdout
