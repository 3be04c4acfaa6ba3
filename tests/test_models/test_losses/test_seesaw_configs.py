"""The Seesaw configs: mmdet's SeesawLoss with a NormedLinear classifier
in every framework's RoI heads, scored through the loss's activation, and
the published 2x settings (schedule, repeat factor sampling, normed mask
predictor)."""
import pytest
import torch
import torch.nn.functional as F

from conftest import build_config_model
from heads import raw_head_scores

FRAMEWORKS = ('faster-rcnn', 'mask-rcnn', 'cascade-mask-rcnn',
              'htc-without-semantic')
NUM_CLASSES = 30


def load(path: str):
    from mmengine.config import Config
    return Config.fromfile(path)


@pytest.fixture
def build_model(synthetic_root, monkeypatch):
    monkeypatch.setenv('MMLT_SYNTHETIC_ROOT', synthetic_root)

    def build(config: str):
        from mmdet.utils import register_all_modules
        register_all_modules()
        torch.manual_seed(0)
        return build_config_model(load(config))

    return build


@pytest.mark.parametrize('framework', FRAMEWORKS)
def test_heads_use_seesaw_with_a_normed_classifier(build_model, framework):
    from mmdet.models.layers import NormedLinear
    from mmdet.models.losses import SeesawLoss
    model = build_model(f'configs/seesaw/{framework}'
                        '_r18-tiny_fpn_seesaw_12e_synthetic-lvis.py')
    heads = model.roi_head.bbox_head
    heads = list(heads) if isinstance(heads, torch.nn.ModuleList) else [heads]
    assert len(heads) == (1 if framework in ('faster-rcnn', 'mask-rcnn') else
                          3)
    for head in heads:
        assert isinstance(head.loss_cls, SeesawLoss)
        assert (head.loss_cls.p, head.loss_cls.q) == (0.8, 2.0)
        assert isinstance(head.fc_cls, NormedLinear)
        assert head.fc_cls.tempearture == 20
        # C class logits + 2 objectness logits
        assert head.fc_cls.out_features == NUM_CLASSES + 2
        assert head.custom_cls_channels and head.custom_activation

    # test-time scores: softmax over the classes times P(foreground), the
    # background probability last
    head = heads[-1]
    logits = 3 * torch.randn(4, NUM_CLASSES + 2,
                             generator=torch.Generator().manual_seed(0))
    scores = raw_head_scores(head, logits)
    objectness = F.softmax(logits[:, -2:], dim=1)
    torch.testing.assert_close(
        scores[:, :NUM_CLASSES],
        F.softmax(logits[:, :NUM_CLASSES], dim=1) * objectness[:, :1])
    torch.testing.assert_close(scores[:, NUM_CLASSES], objectness[:, 1])


def test_lvis_matrix_changes_only_the_loss_and_the_classifier():
    for framework in FRAMEWORKS:
        ours = load(
            f'configs/seesaw/{framework}_r50_fpn_seesaw_ms-1x_lvis-v1.py')
        base = load(f'configs/lvis/{framework}_r50_fpn_ms-1x_lvis-v1.py')
        assert ours.train_dataloader == base.train_dataloader
        assert ours.param_scheduler == base.param_scheduler
        heads, base_heads = ours.model.roi_head.bbox_head, \
            base.model.roi_head.bbox_head
        if not isinstance(heads, list):
            heads, base_heads = [heads], [base_heads]
        for head, base_head in zip(heads, base_heads):
            assert head.loss_cls == dict(
                type='SeesawLoss', p=0.8, q=2.0, num_classes=1203,
                loss_weight=1.0)
            assert head.cls_predictor_cfg == dict(
                type='NormedLinear', tempearture=20)
            rest = {k: v for k, v in head.items()
                    if k not in ('loss_cls', 'cls_predictor_cfg')}
            assert rest == {k: v for k, v in base_head.items()
                            if k != 'loss_cls'}


def test_published_2x_settings():
    random = load('configs/seesaw/mask-rcnn_r50_fpn_seesaw_ms-2x_lvis-v1.py')
    assert random.train_cfg.max_epochs == 24
    steps = [s for s in random.param_scheduler if s.type == 'MultiStepLR']
    assert steps[0].milestones == [16, 22] and steps[0].end == 24
    assert random.train_dataloader.dataset.type == 'LVISV1LTDataset'

    rfs = load(
        'configs/seesaw/mask-rcnn_r50_fpn_seesaw_rfs-1e-3_ms-2x_lvis-v1.py')
    assert rfs.train_dataloader.sampler == dict(
        type='RFSSampler', threshold=1e-3, rounding='ceil')  # as mmdet's
    assert rfs.train_dataloader.dataset == random.train_dataloader.dataset
    assert rfs.train_dataloader.batch_sampler == \
        random.train_dataloader.batch_sampler
    assert rfs.train_cfg.max_epochs == 24

    normed = load('configs/seesaw/mask-rcnn_r50_fpn_seesaw-normed-mask_'
                  'rfs-1e-3_ms-2x_lvis-v1.py')
    assert normed.model.roi_head.mask_head.predictor_cfg == dict(
        type='NormedConv2d', tempearture=20)
    assert normed.train_dataloader == rfs.train_dataloader
