"""BAGSBBoxHead inside mmdet's BBoxHead protocol, the FreezeExceptHook of
the decoupled recipe, and the checkpoint converter's reshape."""
import os.path as osp
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from mmengine.config import ConfigDict
from mmengine.logging import MMLogger

from conftest import REPO_ROOT, build_config_model
from mmdet.registry import MODELS
from mmdet_longtail.engine.hooks.freeze_except_hook import (FreezeExceptHook,
                                                            freeze_except)
from mmdet_longtail.models.layers import ClassifierLayout, classifier_layout

sys.path.insert(0, osp.join(REPO_ROOT, 'tools', 'model_converters'))
import bags_convert  # noqa: E402

COUNTS = [5, 50, 500, 5000, 20]  # groups G1, G2, G3, G4, G2 (test_bags_loss)
COLUMNS = [1, 3, 6, 8, 4]
CLASSIFIER = r'bbox_head(\.\d+)?\.fc_cls\.'


def build_head(**loss_settings):
    import mmdet_longtail  # noqa: F401
    return MODELS.build(
        dict(
            type='BAGSBBoxHead',
            num_classes=5,
            in_channels=4,
            fc_out_channels=8,
            roi_feat_size=2,
            loss_cls=dict(
                dict(
                    type='GroupSoftmaxLoss',
                    num_classes=5,
                    class_statistics=dict(
                        image_count=COUNTS, instance_count=COUNTS),
                    seed=0), **loss_settings)))


def test_head_builds_the_group_classifier():
    head = build_head(beta=2.0)
    assert head.fc_cls.out_features == 5 + 1 + 5
    assert head.loss_cls.beta == 2.0
    assert head.group_layout.class_columns.tolist() == COLUMNS
    assert head.custom_cls_channels and head.custom_activation


def test_head_loss_and_predict():
    head = build_head()
    torch.manual_seed(0)
    cls_score, bbox_pred = head(torch.randn(6, 4, 2, 2))
    labels = torch.tensor([0, 4, 3, 5, 5, 5])
    rois = torch.tensor([[0, 0, 0, 10, 10]] * 6, dtype=torch.float)
    losses = head.loss(cls_score, bbox_pred, rois, labels, torch.ones(6),
                       torch.zeros(6, 4), torch.ones(6, 4))
    assert set(losses) == {'loss_cls', 'acc', 'loss_bbox'}
    assert torch.isfinite(losses['loss_cls'])

    test_cfg = ConfigDict(
        score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5),
        max_per_img=100)
    with torch.no_grad():
        (result, ) = head.predict_by_feat((rois, ), (cls_score, ),
                                          (bbox_pred, ),
                                          [dict(img_shape=(20, 20))],
                                          test_cfg)
    assert len(result.labels) > 0
    assert int(result.labels.max()) < 5
    assert 0 <= float(result.scores.min()) <= float(result.scores.max()) <= 1


def test_head_settings_are_checked():
    with pytest.raises(ValueError, match='_delete_=True'):
        MODELS.build(
            dict(type='BAGSBBoxHead', loss_cls=dict(type='CrossEntropyLoss')))
    # settings the head once took belong to the loss now
    with pytest.raises(ValueError, match=r"\['beta'\] are settings of loss"):
        MODELS.build(
            dict(
                type='BAGSBBoxHead',
                beta=4.0,
                loss_cls=dict(type='GroupSoftmaxLoss', num_classes=5)))
    # the loss declares its classes; the head checks them
    with pytest.raises(ValueError, match='num_classes=6 but the head has 5'):
        build_head(
            num_classes=6,
            class_statistics=dict(image_count=COUNTS + [9],
                                  instance_count=COUNTS + [9]))


class TinyDetector(nn.Module):
    """Parameter names like a two-stage detector's."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.roi_head = nn.Module()
        self.roi_head.bbox_head = nn.ModuleList(
            [nn.ModuleDict(dict(fc_cls=nn.Linear(4, 3),
                                fc_reg=nn.Linear(4, 8))) for _ in range(3)])

    def forward(self, x):
        feat = self.backbone(x).mean((2, 3))
        return sum(h['fc_cls'](feat).sum() + h['fc_reg'](feat).sum()
                   for h in self.roi_head.bbox_head)


def test_freeze_except_keeps_everything_else_exactly():
    torch.manual_seed(0)
    model = TinyDetector()
    # mmengine builds the optimizer before the hooks run
    optim = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9,
                            weight_decay=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hook = FreezeExceptHook(trainable=[CLASSIFIER])
    runner = SimpleNamespace(
        model=model, logger=MMLogger.get_instance('test_bags_freeze'))
    hook.before_train(runner)
    for step in range(3):
        model.train()  # what mmengine does at every epoch start
        hook.before_train_iter(runner, step)
        assert not model.backbone[1].training
        optim.zero_grad()
        model(torch.randn(2, 3, 6, 6)).backward()
        optim.step()
    after = model.state_dict()
    changed = sorted(k for k in after if not torch.equal(after[k], before[k]))
    assert changed == sorted(f'roi_head.bbox_head.{i}.fc_cls.{p}'
                             for i in range(3) for p in ('weight', 'bias'))


def test_freeze_without_norm_eval_lets_statistics_move():
    """The check above can fail: BN statistics move in train mode."""
    model = TinyDetector()
    hook = FreezeExceptHook(trainable=[CLASSIFIER], frozen_norm_eval=False)
    runner = SimpleNamespace(
        model=model, logger=MMLogger.get_instance('test_bags_freeze'))
    hook.before_train(runner)
    model.train()
    hook.before_train_iter(runner, 0)
    mean = model.backbone[1].running_mean.clone()
    model(torch.randn(2, 3, 6, 6))
    assert not torch.equal(mean, model.backbone[1].running_mean)


def test_freeze_pattern_typo_is_an_error():
    with pytest.raises(ValueError, match="'fc_clss' matches no parameter"):
        freeze_except(TinyDetector(), ['fc_clss'])
    with pytest.raises(ValueError, match='non-empty list'):
        FreezeExceptHook(trainable='fc_cls')


SOFTMAX = ClassifierLayout.softmax(5)


def test_reshape_moves_rows_to_their_columns():
    weight = torch.arange(12.).view(6, 2)  # rows: c0..c4, background
    bags = classifier_layout(build_head())
    key = 'roi_head.bbox_head.fc_cls.weight'
    out = bags_convert.relayout_classifier(weight, SOFTMAX, bags, key)
    for c, col in enumerate(COLUMNS):
        assert out[col].tolist() == weight[c].tolist()
    assert out[10].tolist() == weight[5].tolist()  # background column
    others = [0, 2, 5, 7, 9]  # "others" of G1..G4 and the foreground column
    assert (out[others] == 0).all()
    # an already converted classifier does not have the baseline's layout
    with pytest.raises(ValueError, match=r'base.pth: roi_head.bbox_head.'
                       r'fc_cls.weight has shape \(11, 2\), but the config '
                       r'describes a classifier of shape \(6, 2\)'):
        bags_convert.relayout_classifier(out, SOFTMAX, bags, key,
                                         'base.pth')


def test_reshape_every_cascade_stage():
    bags = classifier_layout(build_head())
    state = {
        f'roi_head.bbox_head.{i}.fc_cls.{p}': torch.randn(6, 8)[:, 0]
        if p == 'bias' else torch.randn(6, 8)
        for i in range(3) for p in ('weight', 'bias')
    }
    state['backbone.conv1.weight'] = torch.randn(2)
    keys = [k for k in state if '.fc_cls.' in k]
    out, changed = bags_convert.reshape_state_dict(
        state, dict.fromkeys(keys, SOFTMAX), dict.fromkeys(keys, bags))
    assert len(changed) == 6
    assert out['roi_head.bbox_head.2.fc_cls.weight'].shape == (11, 8)
    assert out['roi_head.bbox_head.2.fc_cls.bias'].shape == (11, )
    assert torch.equal(out['backbone.conv1.weight'],
                       state['backbone.conv1.weight'])


def test_reshape_checkpoint_asks_both_configs(synthetic_root, monkeypatch):
    """The baseline's layout from the config saved in its checkpoint, the
    BAGS layout from the BAGS config: every stage's rows move to the
    columns of that stage's head."""
    from mmengine.config import Config

    from mmdet.utils import register_all_modules
    register_all_modules()
    monkeypatch.setenv('MMLT_SYNTHETIC_ROOT', synthetic_root)
    base_cfg = Config.fromfile(
        'configs/lvis/cascade-mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py')
    state = MODELS.build(base_cfg.model).state_dict()
    checkpoint = dict(meta=dict(cfg=base_cfg.pretty_text), state_dict=state)
    bags_cfg = ('configs/bags/cascade-mask-rcnn_r18-tiny_fpn_bags_12e_'
                'synthetic-lvis.py')
    out, changed = bags_convert.reshape_checkpoint(checkpoint, bags_cfg,
                                                   source='base.pth')
    assert len(changed) == 6  # weight and bias of 3 stages
    bags = build_config_model(Config.fromfile(bags_cfg))
    for i in range(3):
        key = f'roi_head.bbox_head.{i}.fc_cls.weight'
        layout = classifier_layout(bags.roi_head.bbox_head[i])
        assert out[key].shape[0] == layout.num_rows == 30 + 6
        assert torch.equal(out[key][list(layout.class_rows)],
                           state[key][:30])
        assert torch.equal(out[key][layout.background_row], state[key][30])
    with pytest.raises(ValueError, match='does not carry its config'):
        bags_convert.reshape_checkpoint(dict(state_dict=state), bags_cfg,
                                        source='bare.pth')
