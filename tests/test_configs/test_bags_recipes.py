"""The R-50 decoupled BAGS configs resolve to the published recipes:
LVIS v1 as the eqlv2 code base's reimplementation (lr 0.02 at batch 16, the
1x schedule), LVIS v0.5 as the authors' (lr 0.01, gradient clip 35, 500
warm-up iterations from lr / 3, 12 epochs with steps at 8 and 11,
single-scale (1333, 800) training with flip, test score threshold 0.0 for
Faster R-CNN and 0.001 for the mask models)."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config

from conftest import REPO_ROOT


def decoupled_configs(dataset: str) -> list:
    paths = sorted(
        glob.glob(
            osp.join(REPO_ROOT, 'configs', 'bags',
                     f'*_r50_fpn_bags-decoupled_*_{dataset}.py')))
    assert len(paths) == 4  # Faster, Mask, Cascade, HTC
    return paths


def assert_batch_16(cfg):
    # 2 images per GPU on 8 GPUs, the batch the learning rates are for
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.auto_scale_lr.base_batch_size == 16


@pytest.mark.parametrize(
    'path', decoupled_configs('lvis-v1'), ids=osp.basename)
def test_v1_decoupled_follows_eqlv2(path):
    cfg = Config.fromfile(path)
    assert cfg.optim_wrapper.optimizer.lr == 0.02
    assert_batch_16(cfg)


@pytest.mark.parametrize(
    'path', decoupled_configs('lvis-v0.5'), ids=osp.basename)
def test_v05_decoupled_follows_the_authors(path):
    cfg = Config.fromfile(path)
    assert cfg.optim_wrapper.optimizer.lr == 0.01
    assert cfg.optim_wrapper.clip_grad == dict(max_norm=35, norm_type=2)
    assert_batch_16(cfg)
    warmup, steps = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and not warmup.by_epoch
    assert warmup.start_factor == 1 / 3 and warmup.end == 500
    assert steps.type == 'MultiStepLR' and steps.milestones == [8, 11]
    assert cfg.train_cfg.max_epochs == 12
    pipeline = cfg.train_dataloader.dataset.pipeline
    (resize, ) = [step for step in pipeline if 'Resize' in step.type]
    assert resize.type == 'Resize' and resize.scale == (1333, 800)
    assert resize.keep_ratio
    (flip, ) = [step for step in pipeline if step.type == 'RandomFlip']
    assert flip.prob == 0.5
    score_thr = 0.0 if osp.basename(path).startswith('faster') else 0.001
    assert cfg.model.test_cfg.rcnn.score_thr == score_thr
    assert cfg.model.test_cfg.rcnn.max_per_img == 300
