"""tools/train.py and tools/test.py end to end on the synthetic set: the
tools' subprocess smokes (Faster R-CNN with --out / --show-dir, Mask R-CNN
as the README's main job with --progress), 2-process CPU DDP, and exact
resume (with EQLv2, whose loss statistics must survive it too).

Every framework x method is probed in process (build, one train step, one
prediction) by tests/test_models/test_framework_probes.py."""
import glob
import json
import os.path as osp
import pickle

import pytest
import torch

from conftest import last_checkpoint

TINY = {
    'faster': 'configs/lvis/faster-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py',
    'mask': 'configs/lvis/mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py',
}
EQLV2 = 'configs/eqlv2/faster-rcnn_r18-tiny_fpn_eqlv2_12e_synthetic-lvis.py'
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
    # what test.py wrote is what tools/model_zoo.py reads as "ours"
    from mmdet_longtail.evaluation.result_files import work_dir_metrics
    (result, ) = glob.glob(str(tmp_path / 'test' / '2*' / '2*.json'))
    with open(result) as f:
        logged = {k: v for k, v in json.load(f).items()
                  if k.startswith('lvis/')}
    assert len(logged) == 9 * len(('bbox', ) if framework == 'faster'
                                  else ('bbox', 'segm'))
    assert work_dir_metrics(str(tmp_path / 'test')) == (logged, 'test')
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
                    'default_hooks.logger.interval=1')
    assert 'Distributed training: True' in proc.stdout
    # 48 images / (2 ranks x 2 per batch) = 12 iterations per epoch
    assert 'Epoch(train) [2][12/12]' in proc.stdout
    ckpt = torch.load(last_checkpoint(work), weights_only=False)
    assert len(ckpt['rng_states']) == 2  # one per rank


def test_resume_continues_exactly(run_tool, tmp_path):
    """2 epochs straight == 1 epoch, stop, --resume, 1 more epoch, down to
    the last bit of every tensor: the weights and EQLv2's loss statistics (a
    resume that dropped them would end elsewhere)."""
    # 16 training images: 4 iterations of 4 images per epoch
    opts = ['train_cfg.max_epochs=2', 'train_cfg.val_interval=10',
            'train_dataloader.dataset.indices=16',
            'randomness.seed=0', 'randomness.deterministic=True']
    straight = str(tmp_path / 'straight')
    run_tool.train(EQLV2, straight, cfg_options=opts)

    resumed = str(tmp_path / 'resumed')
    # the first run stops after epoch 1 (as if interrupted)
    run_tool.train(EQLV2, resumed, cfg_options=opts +
                   ['train_cfg.max_epochs=1'])
    first_half = torch.load(osp.join(resumed, 'epoch_1.pth'),
                            weights_only=False)['state_dict']
    proc = run_tool.train(EQLV2, resumed, '--resume', cfg_options=opts)
    assert 'resumed epoch: 1, iter: 4' in proc.stdout
    assert 'Epoch(train) [2]' in proc.stdout
    assert 'Epoch(train) [1]' not in proc.stdout

    a = torch.load(osp.join(straight, 'epoch_2.pth'), weights_only=False)
    b = torch.load(osp.join(resumed, 'epoch_2.pth'), weights_only=False)
    assert a['meta']['iter'] == b['meta']['iter'] == 8
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for key, value in a['state_dict'].items():
        torch.testing.assert_close(b['state_dict'][key], value,
                                   msg=f'{key} differs after resume')
    stats = [k for k in a['state_dict']
             if k.rsplit('.', 1)[-1] in ('pos_grad', 'neg_grad', 'pos_neg')]
    assert sorted(stats) == [f'roi_head.bbox_head.loss_cls.{name}'
                             for name in ('neg_grad', 'pos_grad', 'pos_neg')]
    for key in stats:
        assert torch.equal(b['state_dict'][key], a['state_dict'][key]), key
        # the second epoch added to the restored statistics
        assert not torch.equal(a['state_dict'][key], first_half[key]), key


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour')
def test_amp_without_gpu_is_refused_clearly(run_tool, tmp_path):
    proc = run_tool.train(TINY['faster'], str(tmp_path / 'amp'), '--amp',
                          check=False)
    assert proc.returncode != 0
    assert '--amp needs a GPU' in proc.stdout
