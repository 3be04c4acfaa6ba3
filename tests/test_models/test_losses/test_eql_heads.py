"""EQL and EQLv2 inside mmdet's RoI heads, built from the configs: the
classifier width, the sigmoid-prior initialisation that the configs apply,
and the test-time scores through the loss's activation, in contrast with
mmdet 3.3's own EQLV2Loss, which its heads score with a softmax."""
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import build_config_model
from heads import raw_head_scores, shared_2fc_head
from mmdet_longtail.models.losses.eql_loss import EQLoss
from mmdet_longtail.models.losses.eqlv2_loss import EQLv2

FRAMEWORKS = ('faster-rcnn', 'mask-rcnn', 'cascade-mask-rcnn',
              'htc-without-semantic')
LOSSES = ('eql', 'eqlv2')
NUM_CLASSES = 30  # the synthetic configs
PRIOR_BIAS = -math.log((1 - 0.001) / 0.001)  # -6.9068


def tiny_config(loss: str, framework: str) -> str:
    return (f'configs/{loss}/{framework}_r18-tiny_fpn_{loss}_12e_'
            f'synthetic-lvis.py')


def bbox_heads(model) -> list:
    heads = model.roi_head.bbox_head
    return list(heads) if isinstance(heads, torch.nn.ModuleList) else [heads]


@pytest.fixture
def build_model(synthetic_root, monkeypatch):
    """Build a config's model on the small synthetic set."""
    monkeypatch.setenv('MMLT_SYNTHETIC_ROOT', synthetic_root)

    def build(config: str):
        from mmengine.config import Config
        from mmdet.utils import register_all_modules
        register_all_modules()
        torch.manual_seed(0)
        return build_config_model(Config.fromfile(config))

    return build


@pytest.mark.parametrize('framework', FRAMEWORKS)
@pytest.mark.parametrize('loss', LOSSES)
def test_config_builds_sigmoid_classifier_with_prior_bias(
        build_model, loss, framework):
    model = build_model(tiny_config(loss, framework))
    model.init_weights()
    model.requires_grad_(False)
    heads = bbox_heads(model)
    assert len(heads) == (1 if framework in ('faster-rcnn', 'mask-rcnn') else
                          3)
    loss_type = EQLoss if loss == 'eql' else EQLv2
    width = NUM_CLASSES if loss == 'eql' else NUM_CLASSES + 1
    for head in heads:
        assert isinstance(head.loss_cls, loss_type)
        assert head.custom_cls_channels and head.custom_activation
        assert head.fc_cls.out_features == width
        # every class starts at probability 0.001
        torch.testing.assert_close(head.fc_cls.bias,
                                   torch.full((width, ), PRIOR_BIAS))
        assert 0.008 < float(head.fc_cls.weight.std()) < 0.012
        # the other layers keep the head's own initialisation: Normal(0.001)
        # regression and Xavier-uniform shared fcs, whose bound
        # sqrt(6 / (fan_in + fan_out)) exceeds nn.Linear's 1 / sqrt(fan_in)
        assert 0.0008 < float(head.fc_reg.weight.std()) < 0.0012
        fc = head.shared_fcs[0]
        fan_out, fan_in = fc.weight.shape
        assert float(fc.weight.abs().max()) > 1.5 / math.sqrt(fan_in)
        assert float(fc.weight.abs().max()) <= math.sqrt(6 /
                                                         (fan_in + fan_out))
        assert not fc.bias.any()
    if loss == 'eql':
        # the synthetic configs' lambda: classes with image frequency < 0.08
        assert 0 < int(heads[0].loss_cls.tail_classes.sum()) < NUM_CLASSES


def test_heads_score_with_the_loss_activation():
    gen = torch.Generator().manual_seed(0)
    eqlv2 = shared_2fc_head(dict(type='EQLv2', num_classes=3))
    logits = 3 * torch.randn(5, 4, generator=gen)
    scores = raw_head_scores(eqlv2, logits)
    sigmoid = logits.sigmoid()
    torch.testing.assert_close(scores[:, :3],
                               sigmoid[:, :3] * (1 - sigmoid[:, 3:]))
    torch.testing.assert_close(scores[:, 3], sigmoid[:, 3])

    eql = shared_2fc_head(
        dict(
            type='EQLoss',
            num_classes=3,
            lambda_threshold=1e-3,
            class_statistics=dict(
                image_count=[5000, 1, 1000], num_images=10000)))
    assert eql.fc_cls.out_features == 3
    logits = 3 * torch.randn(5, 3, generator=gen)
    scores = raw_head_scores(eql, logits)
    torch.testing.assert_close(
        scores, torch.cat([logits.sigmoid(), torch.zeros(5, 1)], dim=1))


def test_mmdet_eqlv2_loss_is_scored_with_a_softmax():
    """The gap that EQLv2 closes: mmdet's EQLV2Loss does not declare the
    custom-classifier protocol, so its head applies a softmax."""
    head = shared_2fc_head(dict(type='EQLV2Loss', num_classes=3))
    assert not head.custom_cls_channels
    logits = 3 * torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        raw_head_scores(head, logits), F.softmax(logits, dim=-1))
