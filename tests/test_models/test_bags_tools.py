"""BAGS's decoupled recipe through its converter and tools/train.py:
convert a baseline, train only the classifier (test_bags_head.py covers the
three cascade stages of the freeze and the converter; every BAGS framework
is probed in process by test_framework_probes.py)."""
import os.path as osp

import torch

from conftest import REPO_ROOT, last_checkpoint

# 8 train images = 2 iterations at batch 4, no validation during training
SHORT = ['train_cfg.val_interval=10', 'train_dataloader.dataset.indices=8']


def load_state(path: str) -> dict:
    return torch.load(path, map_location='cpu', weights_only=False)[
        'state_dict']


def save_baseline(config: str, path: str) -> str:
    """A freshly built (seeded) baseline checkpoint with non-trivial
    BatchNorm statistics: the recipe needs its tensors, not its accuracy."""
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(osp.join(REPO_ROOT, config)).model)
    model.init_weights()
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith(('running_mean', 'running_var')):
                buf.uniform_(0.5, 1.5)
    torch.save(dict(meta=dict(), state_dict=model.state_dict()), path)
    return path


CONVERTER = 'model_converters/bags_convert.py'


def test_decoupled_recipe_trains_only_the_classifiers(run_tool, tmp_path):
    baseline_cfg = 'configs/lvis/faster-rcnn_r18-tiny_fpn_12e_' \
        'synthetic-lvis.py'
    decoupled_cfg = 'configs/bags/faster-rcnn_r18-tiny_fpn_bags-decoupled_' \
        '4e_synthetic-lvis.py'
    baseline = save_baseline(baseline_cfg, str(tmp_path / 'baseline.pth'))
    assert [k for k in load_state(baseline) if '.fc_cls.' in k]

    dropped = str(tmp_path / 'dropped.pth')
    run_tool(CONVERTER, baseline, dropped)
    assert not [k for k in load_state(dropped) if '.fc_cls.' in k]

    reshaped = str(tmp_path / 'reshaped.pth')
    # a warm start, so the classifier's starting point is known
    run_tool(CONVERTER, baseline, reshaped, '--mode', 'reshape', '--config',
             decoupled_cfg, '--baseline-config', baseline_cfg)
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
