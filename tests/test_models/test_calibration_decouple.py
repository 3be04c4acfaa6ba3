"""The decoupled recipes (Kang et al., ICLR 2020) through tools/train.py on
the tiny Mask R-CNN: cRT re-initialises fc_cls and trains only it, LWS
trains only the per-class scale; every other tensor of the loaded baseline
(weights and BatchNorm statistics) is unchanged after training."""
import importlib.util
import os.path as osp

import pytest
import torch

from conftest import REPO_ROOT, build_config_model, last_checkpoint

BASELINE = 'configs/lvis/mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py'
CRT = 'configs/decouple/mask-rcnn_r18-tiny_fpn_crt_cas-4e_synthetic-lvis.py'
LWS = 'configs/decouple/mask-rcnn_r18-tiny_fpn_lws_cas-4e_synthetic-lvis.py'
CLASSIFIER = 'roi_head.bbox_head.fc_cls.'
ONE_EPOCH = [
    'train_cfg.max_epochs=1', 'param_scheduler.0.end=2', 'randomness.seed=0'
]


def load_tool(relpath: str):
    path = osp.join(REPO_ROOT, 'tools', relpath)
    spec = importlib.util.spec_from_file_location(
        osp.splitext(osp.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def baseline(synthetic_root, tmp_path_factory) -> dict:
    """A tiny Mask R-CNN checkpoint with non-trivial weights and BatchNorm
    statistics (what the recipes start from)."""
    from mmengine.config import Config

    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(osp.join(REPO_ROOT, BASELINE))
    torch.manual_seed(0)
    model = build_config_model(cfg)
    model.init_weights()
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith(('running_mean', 'running_var')):
                buf.uniform_(0.5, 1.5)
    path = str(tmp_path_factory.mktemp('decouple') / 'baseline.pth')
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save(dict(meta=dict(), state_dict=state), path)
    return dict(path=path, state_dict=state)


def trained_state(run_tool, config: str, work_dir: str, load_from: str):
    proc = run_tool.train(config, work_dir,
                          cfg_options=ONE_EPOCH + [f'load_from={load_from}'])
    # the recipe's class-aware sampler and freezing hook were in use
    assert "type='LongTailClassAwareSampler'" in proc.stdout
    assert 'FreezeExceptHook: training' in proc.stdout
    ckpt = torch.load(last_checkpoint(work_dir), weights_only=False)
    return ckpt['state_dict']


def assert_unchanged_except(state: dict, reference: dict,
                            trainable_prefix: str) -> None:
    for key, value in reference.items():
        if key.startswith(trainable_prefix) or key.endswith(
                'num_batches_tracked'):
            continue
        assert torch.equal(state[key], value), f'{key} changed'


def test_crt_retrains_only_the_reinitialised_classifier(
        baseline, run_tool, tmp_path):
    reset = load_tool('model_converters/reset_classifier.py')
    state, removed = reset.remove_classifier(baseline['state_dict'])
    assert sorted(removed) == [CLASSIFIER + 'bias', CLASSIFIER + 'weight']
    crt_init = str(tmp_path / 'crt_init.pth')
    torch.save(dict(meta=dict(), state_dict=state), crt_init)

    trained = trained_state(run_tool, CRT, str(tmp_path / 'crt'), crt_init)
    assert_unchanged_except(trained, baseline['state_dict'], CLASSIFIER)
    # fc_cls started from a fresh Normal(0, 0.01) init (not the baseline's,
    # whose norm is the same only by chance) and was trained
    old = baseline['state_dict'][CLASSIFIER + 'weight']
    new = trained[CLASSIFIER + 'weight']
    assert not torch.equal(new, old)
    assert new.std().item() == pytest.approx(0.01, rel=0.2)
    assert trained[CLASSIFIER + 'bias'].abs().sum() > 0  # init was 0


def test_lws_learns_only_the_scale(baseline, run_tool, tmp_path):
    trained = trained_state(run_tool, LWS, str(tmp_path / 'lws'),
                            baseline['path'])
    scale = trained[CLASSIFIER + 'weight_scaler']
    assert scale.shape == (31, ) and not torch.equal(scale, torch.ones(31))
    # the classifier weight and bias are the baseline's, untouched
    assert_unchanged_except(trained, baseline['state_dict'],
                            CLASSIFIER + 'weight_scaler')
    assert torch.equal(trained[CLASSIFIER + 'weight'],
                       baseline['state_dict'][CLASSIFIER + 'weight'])
