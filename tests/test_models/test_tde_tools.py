"""TDE from a checkpoint of tools/train.py on the synthetic set: alpha and
the scoring change at test time on the same checkpoint through config
options (what tools/test.py's --cfg-options merges); --resume restores the
moving-average feature. Every TDE framework is probed in process by
test_framework_probes.py."""
import os.path as osp

import pytest
import torch

from conftest import REPO_ROOT, last_checkpoint

TINY = 'configs/tde/{}_r18-tiny_fpn_tde_12e_synthetic-lvis.py'
# few detections on 4 images
TEST_SHORT = {'model.test_cfg.rcnn.max_per_img': 20}
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


def test_training_updates_the_moving_average(faster_checkpoint):
    (e, ) = moving_averages(load_state(faster_checkpoint))
    assert e.shape == (128, ) and e.norm() > 0  # from the foreground RoIs


def test_alpha_changes_at_test_time(faster_checkpoint, synthetic_root,
                                    monkeypatch):
    """One checkpoint, scored with different alphas given as config
    options (the key for every framework and the head's own key), as
    tools/test.py --cfg-options merges them."""
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.runner import load_checkpoint
    from mmdet.registry import DATASETS, MODELS
    from mmdet.utils import register_all_modules
    import mmdet_longtail  # noqa: F401
    register_all_modules()
    monkeypatch.setenv('MMLT_SYNTHETIC_ROOT', synthetic_root)
    config = osp.join(REPO_ROOT, TINY.format('faster-rcnn'))

    def scores(**options) -> list:
        cfg = Config.fromfile(config)
        cfg.merge_from_dict(dict(TEST_SHORT, **options))
        model = MODELS.build(cfg.model)
        load_checkpoint(model, faster_checkpoint, map_location='cpu')
        model.eval()
        dataset = DATASETS.build(cfg.test_dataloader.dataset)
        data = model.data_preprocessor(
            pseudo_collate([dataset[i] for i in range(4)]), False)
        with torch.no_grad():
            results = model(**data, mode='predict')
        assert len(results) == 4
        found = torch.cat([r.pred_instances.scores for r in results])
        assert len(found) and 0 <= found.min() and found.max() <= 1
        return [r.pred_instances.scores for r in results]

    default = scores()  # alpha = 1.5
    uniform_key = scores(**{'model.test_cfg.rcnn.tde_alpha': 0.0})
    head_key = scores(**{'model.roi_head.bbox_head.alpha': 0.0})
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
