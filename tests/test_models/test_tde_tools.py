"""TDE through tools/train.py and tools/test.py on the synthetic set: every
framework trains and tests; alpha and the scoring change at test time on the
same checkpoint through --cfg-options; --resume restores the moving-average
feature."""
import os.path as osp
import pickle

import pytest
import torch

from conftest import last_checkpoint

TINY = 'configs/tde/{}_r18-tiny_fpn_tde_12e_synthetic-lvis.py'
FRAMEWORKS = ('faster-rcnn', 'mask-rcnn', 'cascade-mask-rcnn',
              'htc-without-semantic')
# few detections on 4 images: the LVIS tables are printed all the same
TEST_SHORT = ['test_dataloader.dataset.indices=4',
              'model.test_cfg.rcnn.max_per_img=20']
# 8 train images = 2 iterations at batch 4; the validation mmengine runs
# after the last epoch (4 images) tests the trained model
SHORT = ['train_dataloader.dataset.indices=8',
         'val_dataloader.dataset.indices=4',
         'model.test_cfg.rcnn.max_per_img=20']
MOVING_AVERAGE = 'fc_cls.moving_average_feature'


def load_state(path: str) -> dict:
    return torch.load(path, map_location='cpu', weights_only=False)[
        'state_dict']


def moving_averages(state: dict) -> list:
    return [v for k, v in sorted(state.items()) if k.endswith(MOVING_AVERAGE)]


def detections(path: str) -> list:
    with open(path, 'rb') as f:
        return [r['pred_instances'] for r in pickle.load(f)]


def train(run_tool, work: str, framework: str) -> str:
    """Train 2 iterations and validate; the checkpoint."""
    proc = run_tool.train(TINY.format(framework), work, cfg_options=SHORT)
    assert 'loss_cls' in proc.stdout
    for key in ('AP', 'APr', 'APc', 'APf'):
        assert f'lvis/bbox_{key}:' in proc.stdout
    if framework != 'faster-rcnn':
        assert 'lvis/segm_AP:' in proc.stdout
    return last_checkpoint(work)


@pytest.fixture(scope='module')
def faster_checkpoint(run_tool, tmp_path_factory) -> str:
    return train(run_tool, str(tmp_path_factory.mktemp('tde_faster')),
                 'faster-rcnn')


@pytest.mark.parametrize('framework', FRAMEWORKS)
def test_train_and_test_each_framework(run_tool, tmp_path, framework,
                                       request):
    if framework == 'faster-rcnn':
        checkpoint = request.getfixturevalue('faster_checkpoint')
    else:
        checkpoint = train(run_tool, str(tmp_path / 'work'), framework)
    averages = moving_averages(load_state(checkpoint))
    stages = 3 if framework in ('cascade-mask-rcnn',
                                'htc-without-semantic') else 1
    assert len(averages) == stages
    for e in averages:  # updated from the foreground RoIs
        assert e.shape == (128, ) and e.norm() > 0


def test_alpha_changes_at_test_time(run_tool, tmp_path, faster_checkpoint):
    """One checkpoint through tools/test.py, scored with different alphas
    given with --cfg-options (the key for every framework and the head's
    own key)."""
    config = TINY.format('faster-rcnn')

    def scores(*options: str) -> list:
        name = f'r{len(list(tmp_path.glob("*.pkl")))}.pkl'
        out = str(tmp_path / name)
        test = run_tool.test(config, faster_checkpoint,
                             str(tmp_path / 'test'), '--out', out,
                             cfg_options=TEST_SHORT + list(options))
        assert 'LVIS results (%)' in test.stdout
        results = detections(out)
        assert len(results) == 4
        scores = torch.cat([r['scores'] for r in results])
        assert len(scores) and 0 <= scores.min() and scores.max() <= 1
        return [r['scores'] for r in results]

    default = scores()  # alpha = 1.5
    uniform_key = scores('model.test_cfg.rcnn.tde_alpha=0.0')
    head_key = scores('model.roi_head.bbox_head.alpha=0.0')
    assert any(not torch.equal(a, b) for a, b in zip(default, uniform_key))
    for a, b in zip(uniform_key, head_key):
        assert torch.equal(a, b)


def test_resume_restores_the_moving_average(tmp_path, faster_checkpoint):
    from mmengine.config import Config
    from mmengine.runner import Runner
    checkpoint = faster_checkpoint
    saved = moving_averages(load_state(checkpoint))[0]
    dumped = osp.join(osp.dirname(checkpoint),
                      osp.basename(TINY.format('faster-rcnn')))
    cfg = Config.fromfile(dumped)
    cfg.work_dir = str(tmp_path / 'resumed')
    cfg.resume = True
    cfg.load_from = checkpoint
    runner = Runner.from_cfg(cfg)
    head = runner.model.roi_head.bbox_head
    assert head.fc_cls.moving_average_feature.norm() == 0  # fresh model
    runner.load_or_resume()
    assert torch.equal(head.fc_cls.moving_average_feature, saved)
    assert runner.iter == 2
