"""BAGS through tools/train.py and tools/test.py on the synthetic set: every
framework end to end, and the decoupled recipe (convert a baseline, train
only the classifier; test_bags_head.py covers the three cascade stages of
the freeze and the converter)."""
import pytest
import torch

from conftest import last_checkpoint

TINY = 'configs/bags/{}_r18-tiny_fpn_bags_12e_synthetic-lvis.py'
FRAMEWORKS = ('faster-rcnn', 'mask-rcnn', 'cascade-mask-rcnn',
              'htc-without-semantic')
# 8 train images = 2 iterations at batch 4, no validation during training
SHORT = ['train_cfg.val_interval=10', 'train_dataloader.dataset.indices=8']
# 4 test images and few detections: the LVIS table is printed all the same
TEST_SHORT = ['test_dataloader.dataset.indices=4',
              'model.test_cfg.rcnn.max_per_img=20']
NUM_CHANNELS = 30 + 1 + 5  # C + 1 + number of groups


def load_state(path: str) -> dict:
    return torch.load(path, map_location='cpu', weights_only=False)[
        'state_dict']


def classifier_keys(state: dict, name: str = 'fc_cls.weight') -> list:
    return [k for k in state if k.endswith(name)]


@pytest.mark.parametrize('framework', FRAMEWORKS)
def test_train_and_test_with_the_bags_head(run_tool, tmp_path, framework):
    config = TINY.format(framework)
    work = str(tmp_path / 'work')
    train = run_tool.train(config, work, cfg_options=SHORT)
    assert 'loss_cls' in train.stdout
    state = load_state(last_checkpoint(work))
    stages = 3 if framework in ('cascade-mask-rcnn',
                                'htc-without-semantic') else 1
    weights = classifier_keys(state)
    assert len(weights) == stages
    assert all(state[k].shape[0] == NUM_CHANNELS for k in weights)
    # one "others" draw per iteration and stage, resumable
    steps = classifier_keys(state, 'loss_cls.sampling_step')
    assert [int(state[k]) for k in steps] == [2] * stages

    test = run_tool.test(config, last_checkpoint(work), str(tmp_path / 't'),
                         cfg_options=TEST_SHORT)
    assert 'LVIS results (%)' in test.stdout
    for key in ('AP', 'APr', 'APc', 'APf'):
        assert f'lvis/bbox_{key}:' in test.stdout


CONVERTER = 'model_converters/bags_convert.py'


def test_decoupled_recipe_trains_only_the_classifiers(run_tool, tmp_path):
    baseline_cfg = 'configs/lvis/faster-rcnn_r18-tiny_fpn_12e_' \
        'synthetic-lvis.py'
    decoupled_cfg = 'configs/bags/faster-rcnn_r18-tiny_fpn_bags-decoupled_' \
        '4e_synthetic-lvis.py'
    base_dir = str(tmp_path / 'baseline')
    run_tool.train(baseline_cfg, base_dir, cfg_options=SHORT)
    baseline = last_checkpoint(base_dir)

    dropped = str(tmp_path / 'dropped.pth')
    run_tool(CONVERTER, baseline, dropped)
    assert not [k for k in load_state(dropped) if '.fc_cls.' in k]

    reshaped = str(tmp_path / 'reshaped.pth')
    # a warm start, so the classifier's starting point is known
    run_tool(CONVERTER, baseline, reshaped, '--mode', 'reshape', '--config',
             decoupled_cfg)
    start = load_state(reshaped)

    work = str(tmp_path / 'decoupled')
    train = run_tool.train(
        decoupled_cfg, work, cfg_options=SHORT + [f'load_from={reshaped}'])
    assert 'FreezeExceptHook: training 2 tensors' in train.stdout
    end = load_state(last_checkpoint(work))
    changed = sorted(k for k in start if not torch.equal(start[k], end[k]))
    # everything else, BatchNorm running statistics included, is unchanged
    assert changed == ['roi_head.bbox_head.fc_cls.bias',
                       'roi_head.bbox_head.fc_cls.weight']
