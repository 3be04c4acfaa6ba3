"""NorCal (CalibratedCrossEntropyLoss), tau-normalisation (TauNormLinear and
the checkpoint converter) and LWS (LWSLinear): hand-computed examples,
identities at gamma = 0 / tau = 0 / scale = 1, invariants and checkpoint
compatibility."""
import importlib.util
import json
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import REPO_ROOT, build_config_model
from mmdet.models.losses import CrossEntropyLoss
from mmdet.registry import MODELS
from mmdet_longtail.datasets.class_stats import ClassStatistics
from mmdet_longtail.models.layers.lws_linear import LWSLinear
from mmdet_longtail.models.layers.tau_norm_linear import (
    TauNormLinear, tau_normalize_weight)
from mmdet_longtail.models.losses.calibrated_ce_loss import (
    CalibratedCrossEntropyLoss, norcal_log_factors, norcal_scores)


def load_tool(relpath: str):
    path = osp.join(REPO_ROOT, 'tools', relpath)
    spec = importlib.util.spec_from_file_location(
        osp.splitext(osp.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def norcal_loss(image_count, **kwargs) -> CalibratedCrossEntropyLoss:
    stats = ClassStatistics.from_counts(image_count)
    return CalibratedCrossEntropyLoss(
        num_classes=len(image_count), class_statistics=stats, **kwargs)


# ---------------------------------------------------------------- NorCal


def test_norcal_gamma_hand_computed():
    # C = 2, N = (1, 4), gamma = 0.5 -> a = (1, 1/2).
    # z = (ln 2, ln 2, 0): exp = (2, 2, 1) -> s = (2, 1, 1), sum 4
    # -> p = (0.5, 0.25, 0.25); the plain softmax is (0.4, 0.4, 0.2).
    loss = norcal_loss([1, 4], gamma=0.5)
    z = torch.tensor([[math.log(2), math.log(2), 0.0]], dtype=torch.float64)
    torch.testing.assert_close(
        loss.get_activation(z),
        torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64),
        rtol=0, atol=1e-12)
    torch.testing.assert_close(
        F.softmax(z, -1), torch.tensor([[0.4, 0.4, 0.2]], dtype=torch.float64),
        rtol=0, atol=1e-12)


def test_norcal_class_balanced_hand_computed():
    # cb, gamma = 0.5, N = (1, 2): a_0 = 0.5 / (1 - 0.5) = 1,
    # a_1 = 0.5 / (1 - 0.25) = 2/3.  z = (0, ln 3, 0): exp = (1, 3, 1)
    # -> s = (1, 2, 1) -> p = (0.25, 0.5, 0.25).
    loss = norcal_loss([1, 2], gamma=0.5, method='cb')
    z = torch.tensor([[0.0, math.log(3), 0.0]], dtype=torch.float64)
    torch.testing.assert_close(
        loss.get_activation(z),
        torch.tensor([[0.25, 0.5, 0.25]], dtype=torch.float64),
        rtol=0, atol=1e-12)
    factors = norcal_log_factors([1, 2], 0.5, 'cb')
    assert factors == pytest.approx([0.0, math.log(2 / 3)], rel=0, abs=1e-12)


@pytest.mark.parametrize('method', ['gamma', 'cb'])
def test_norcal_gamma_zero_is_the_softmax(method):
    torch.manual_seed(0)
    z = torch.randn(20, 6) * 5
    loss = norcal_loss([1, 3, 10, 100, 1000], gamma=0.0, method=method)
    assert torch.equal(loss.get_activation(z), F.softmax(z, -1))
    # the pure function with gamma = 0 factors agrees too
    zero = torch.from_numpy(norcal_log_factors([1, 3, 10, 100, 1000], 0.0,
                                               method)).float()
    torch.testing.assert_close(norcal_scores(z, zero), F.softmax(z, -1))


def test_norcal_background_uncalibrated_and_normalised():
    torch.manual_seed(1)
    counts = [1, 5, 50, 500]
    gamma = 0.7
    z = torch.randn(32, 5, dtype=torch.float64) * 3
    p = norcal_scores(z, torch.tensor(norcal_log_factors(counts, gamma)))
    assert torch.all((p >= 0) & (p <= 1))
    torch.testing.assert_close(p.sum(-1), torch.ones(32, dtype=z.dtype))
    # p_c / p_bg = a_c * exp(z_c - z_bg): only the foreground is reweighed
    a = torch.tensor(counts, dtype=z.dtype)**-gamma
    torch.testing.assert_close(p[:, :-1] / p[:, -1:],
                               a * torch.exp(z[:, :-1] - z[:, -1:]))
    # down-weighting the foreground moves mass to the background
    assert torch.all(p[:, -1] >= F.softmax(z, -1)[:, -1] - 1e-12)


def test_norcal_stable_for_large_logits():
    loss = norcal_loss([1, 10000], gamma=1.0)
    p = loss.get_activation(torch.tensor([[1000.0, 1000.0, -1000.0]]))
    assert torch.isfinite(p).all()
    # a = (1, 1e-4): p = (1, 1e-4) / (1 + 1e-4), background ~ 0
    torch.testing.assert_close(
        p, torch.tensor([[1 / 1.0001, 1e-4 / 1.0001, 0.0]]))


def test_norcal_trains_exactly_like_cross_entropy():
    torch.manual_seed(2)
    logits = torch.randn(40, 6, requires_grad=True)
    labels = torch.randint(0, 6, (40, ))
    weights = torch.rand(40)
    ours = norcal_loss([1, 2, 3, 4, 5], gamma=0.9, loss_weight=2.0)
    ref = CrossEntropyLoss(use_sigmoid=False, loss_weight=2.0)
    a = ours(logits, labels, weights, avg_factor=31.0)
    (grad_a, ) = torch.autograd.grad(a, logits)
    b = ref(logits, labels, weights, avg_factor=31.0)
    (grad_b, ) = torch.autograd.grad(b, logits)
    assert torch.equal(a, b) and torch.equal(grad_a, grad_b)
    assert ours.get_accuracy(logits, labels)['acc'].item() == pytest.approx(
        100.0 * (logits.argmax(-1) == labels).float().mean().item())


def test_norcal_reads_image_counts_from_the_annotation_file(tmp_path):
    # 3 classes in 1, 2 and 4 images (one class has 2 instances in one image)
    images = [dict(id=i, width=8, height=8) for i in range(1, 5)]
    anns = []
    for cat, image_ids in {1: [1], 2: [1, 2, 2], 3: [1, 2, 3, 4]}.items():
        for img in image_ids:
            anns.append(dict(id=len(anns) + 1, image_id=img, category_id=cat,
                             bbox=[0, 0, 2, 2], area=4))
    cats = [dict(id=c, name=f'c{c}', frequency='r') for c in (1, 2, 3)]
    path = tmp_path / 'train.json'
    path.write_text(json.dumps(dict(images=images, annotations=anns,
                                    categories=cats)))
    loss = MODELS.build(dict(type='CalibratedCrossEntropyLoss',
                             num_classes=3, class_statistics=str(path),
                             gamma=1.0))
    assert loss.image_count.tolist() == [1, 2, 4]
    # z = 0: s = (1, 1/2, 1/4, 1) -> p = (4, 2, 1, 4) / 11
    p = loss.get_activation(torch.zeros(1, 4))
    torch.testing.assert_close(p, torch.tensor([[4, 2, 1, 4]]) / 11.0)
    with pytest.raises(ValueError, match='num_classes=5 does not match'):
        CalibratedCrossEntropyLoss(num_classes=5,
                                   class_statistics=str(path))


def test_norcal_bad_input_is_refused():
    with pytest.raises(ValueError, match='0 <= gamma < 1'):
        norcal_loss([1, 2], gamma=1.0, method='cb')
    with pytest.raises(ValueError, match='>= 0'):
        norcal_loss([1, 2], gamma=-0.1)
    with pytest.raises(ValueError, match='unknown method'):
        norcal_loss([1, 2], gamma=0.5, method='exp')
    with pytest.raises(ValueError, match='gamma > 0 needs class_statistics'):
        CalibratedCrossEntropyLoss(num_classes=2, gamma=0.5)
    with pytest.raises(ValueError, match=r'classes \(labels\) \[1\] have no'):
        norcal_loss([3, 0], gamma=0.5)
    # gamma = 0 (a no-op) does not need the counts
    norcal_loss([3, 0], gamma=0.0)
    with pytest.raises(ValueError, match='use_sigmoid'):
        CalibratedCrossEntropyLoss(num_classes=2, use_sigmoid=True)
    with pytest.raises(ValueError, match=r'expects 3 logits.*got \(3, 4\)'):
        norcal_loss([1, 2], gamma=0.5).get_activation(torch.zeros(3, 4))
    with pytest.raises(ValueError, match='num_classes must be >= 1, got 0'):
        CalibratedCrossEntropyLoss(num_classes=0)


@pytest.mark.parametrize('logits, labels, match', [
    (torch.zeros(2, 6), torch.tensor([0, 1]), r'expects 3 logits'),
    (torch.tensor([[0.0, float('nan'), 0.0]]), torch.tensor([0]),
     'cls_score is not finite'),
    (torch.zeros(1, 3), torch.tensor([7]), r'labels must lie in \[0, 2\]'),
    (torch.zeros(2, 3), torch.tensor([0]), r'labels must be \(2,\)'),
])
def test_norcal_training_inputs_are_checked(logits, labels, match):
    """The training loss refuses what it cannot train on, naming itself
    (before, 6 logits for C = 2 trained silently)."""
    loss = norcal_loss([1, 2], gamma=0.5)
    with pytest.raises(ValueError, match='CalibratedCrossEntropyLoss: ' +
                       match):
        loss(logits, labels)


def test_norcal_trains_as_cross_entropy_float64():
    """Training is mmdet's softmax CE over C + 1 columns: in float64 equal
    to the hand-computed -log p_y, with a float64 gradcheck."""
    loss = norcal_loss([1, 4], gamma=0.5)
    # z = (ln 2, ln 2, 0): softmax (0.4, 0.4, 0.2); labels 0 and 2 (bg)
    z = torch.tensor([[math.log(2), math.log(2), 0.0]] * 2,
                     dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 2])
    expected = (-math.log(0.4) - math.log(0.2)) / 2
    assert loss(z, labels).item() == pytest.approx(expected, rel=0,
                                                   abs=1e-12)
    assert torch.autograd.gradcheck(lambda x: loss(x, labels), (z, ))


def test_norcal_scores_through_the_bbox_head_protocol():
    """A stock BBoxHead picks up NorCal at inference (aug-test path returns
    the raw per-class scores) and keeps C + 1 outputs."""
    head = MODELS.build(
        dict(
            type='BBoxHead',
            with_avg_pool=True,
            roi_feat_size=1,
            in_channels=4,
            num_classes=2,
            loss_cls=dict(
                type='CalibratedCrossEntropyLoss',
                num_classes=2,
                class_statistics=ClassStatistics.from_counts([1, 4]),
                gamma=0.5)))
    assert head.fc_cls.out_features == 3
    rois = torch.tensor([[0, 0, 0, 10, 10.]])
    z = torch.tensor([[math.log(2), math.log(2), 0.0]])
    res = head.predict_by_feat(
        rois=(rois, ), cls_scores=(z, ), bbox_preds=(torch.zeros(1, 8), ),
        batch_img_metas=[dict(img_shape=(20, 20), scale_factor=(1., 1.))],
        rcnn_test_cfg=None)
    torch.testing.assert_close(res[0].scores,
                               torch.tensor([[0.5, 0.25, 0.25]]))


def test_cascade_norcal_gamma_is_one_key():
    """Only the last cascade stage is calibrated; one --cfg-options key
    changes its gamma."""
    from mmengine.config import Config
    cfg = Config.fromfile(
        osp.join(
            REPO_ROOT, 'configs/norcal/'
            'cascade-mask-rcnn_r18-tiny_fpn_norcal_12e_synthetic-lvis.py'))
    cfg.merge_from_dict({'model.roi_head.bbox_head.2.loss_cls.gamma': 0.3})
    heads = cfg.model.roi_head.bbox_head
    assert [h.loss_cls.type for h in heads] == [
        'CrossEntropyLoss', 'CrossEntropyLoss', 'CalibratedCrossEntropyLoss'
    ]
    assert heads[2].loss_cls.gamma == 0.3
    assert heads[2].loss_cls.loss_weight == heads[0].loss_cls.loss_weight


# ---------------------------------------------------------------- tau-norm


def test_tau_norm_hand_computed():
    # two foreground rows with norms 5 and 2, then the background row
    w = torch.tensor([[3.0, 4.0], [0.0, 2.0], [5.0, 12.0]])
    torch.testing.assert_close(
        tau_normalize_weight(w, 1.0),
        torch.tensor([[0.6, 0.8], [0.0, 1.0], [5.0, 12.0]]))
    # tau = 0.5: divide by sqrt(5) and sqrt(2)
    torch.testing.assert_close(
        tau_normalize_weight(w, 0.5),
        torch.tensor([[3 / 5**0.5, 4 / 5**0.5], [0.0, 2 / 2**0.5],
                      [5.0, 12.0]]))
    # without a background row every row is normalised (norm 13 last)
    torch.testing.assert_close(
        tau_normalize_weight(w, 1.0, exclude_background=False)[2],
        torch.tensor([5 / 13, 12 / 13]))
    assert torch.equal(tau_normalize_weight(w, 0.0), w)


def test_tau_norm_linear_keeps_bias_and_background():
    layer = TauNormLinear(2, 3, tau=1.0)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 4.0], [0.0, 2.0], [5.0,
                                                                 12.0]]))
        layer.bias.copy_(torch.tensor([0.1, 0.2, 0.3]))
    x = torch.tensor([[1.0, 1.0]])
    # (0.6 + 0.8 + 0.1, 0 + 1 + 0.2, 5 + 12 + 0.3)
    torch.testing.assert_close(layer(x), torch.tensor([[1.5, 1.2, 17.3]]))


def test_tau_zero_and_state_dict_match_nn_linear():
    torch.manual_seed(3)
    linear = nn.Linear(8, 5)
    tau_layer = MODELS.build(
        dict(type='TauNormLinear', in_features=8, out_features=5, tau=0.0))
    # a baseline classifier's state dict loads strictly
    tau_layer.load_state_dict(linear.state_dict(), strict=True)
    assert set(tau_layer.state_dict()) == set(linear.state_dict())
    x = torch.randn(7, 8)
    assert torch.equal(tau_layer(x), linear(x))
    with pytest.raises(ValueError, match='tau must be >= 0'):
        TauNormLinear(8, 5, tau=-1)


TINY_CASCADE = ('configs/lvis/cascade-mask-rcnn_r18-tiny_fpn_12e_'
                'synthetic-lvis.py')
TINY_EQL = 'configs/eql/mask-rcnn_r18-tiny_fpn_eql_12e_synthetic-lvis.py'


def tiny_checkpoint(config: str) -> dict:
    """A checkpoint of a freshly built tiny model, with its config saved as
    mmengine saves it."""
    from mmengine.config import Config
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(config)
    # as LongTailRunner builds the model and saves its config
    state_dict = build_config_model(cfg).state_dict()
    return dict(
        meta=dict(epoch=12, cfg=cfg.pretty_text),
        state_dict=state_dict,
        optimizer={})


def test_tau_norm_converter_equals_test_time_layer():
    """tools/model_converters/tau_norm.py writes weights that give, in a
    plain Linear, the scores of TauNormLinear on the original weights (a
    softmax head: every row but the background, read from the config)."""
    torch.manual_seed(4)
    checkpoint = tiny_checkpoint(TINY_CASCADE)
    state = checkpoint['state_dict']
    converter = load_tool('model_converters/tau_norm.py')
    out = converter.convert(checkpoint, tau=0.8)
    assert 'optimizer' not in out and out['meta']['epoch'] == 12
    assert out['meta']['tau_norm']['keys'] == [
        f'roi_head.bbox_head.{i}.fc_cls.weight' for i in range(3)
    ]
    sd = out['state_dict']
    prefix = 'roi_head.bbox_head.2.'
    for key in ('fc_cls.bias', 'fc_reg.weight'):
        assert torch.equal(sd[prefix + key], state[prefix + key])
    weight = state[prefix + 'fc_cls.weight']
    converted = nn.Linear(weight.shape[1], weight.shape[0])
    converted.load_state_dict(
        dict(weight=sd[prefix + 'fc_cls.weight'],
             bias=sd[prefix + 'fc_cls.bias']))
    test_time = TauNormLinear(weight.shape[1], weight.shape[0], tau=0.8)
    test_time.load_state_dict(
        dict(weight=weight, bias=state[prefix + 'fc_cls.bias']))
    x = torch.randn(6, weight.shape[1])
    torch.testing.assert_close(converted(x), test_time(x))

    with pytest.raises(ValueError, match='no key of the checkpoint'):
        converter.convert(dict(state_dict={'backbone.w': torch.ones(2)}), 1.0)
    with pytest.raises(ValueError, match='does not carry its config'):
        converter.convert(dict(state_dict=dict(state)), 1.0)
    with pytest.raises(ValueError, match='has a background output'):
        converter.convert(checkpoint, 1.0, no_background=True)
    wrong = dict(checkpoint, state_dict=dict(
        state, **{prefix + 'fc_cls.weight': torch.ones(33, 4)}))
    with pytest.raises(ValueError, match=r'wrong.pth: roi_head.bbox_head.2.'
                       r'fc_cls.weight has shape \(33, 4\), but the config '
                       r'describes a classifier of shape \(31, 4\)'):
        converter.convert(wrong, 1.0, source='wrong.pth')


def test_tau_norm_of_a_sigmoid_head_normalises_every_class_row(
        run_tool, synthetic_root, tmp_path, monkeypatch):
    """EQL's classifier has C rows and no background: all are classes."""
    monkeypatch.setenv('MMLT_SYNTHETIC_ROOT', synthetic_root)
    checkpoint = tiny_checkpoint(TINY_EQL)
    path, out = str(tmp_path / 'eql.pth'), str(tmp_path / 'eql_tau1.pth')
    torch.save(checkpoint, path)
    # --no-background agrees with the layout of the config
    run_tool('model_converters/tau_norm.py', path, out, '--tau', '1',
             '--no-background')
    key = 'roi_head.bbox_head.fc_cls.weight'
    weight = torch.load(out, weights_only=False)['state_dict'][key]
    assert weight.shape[0] == 30
    torch.testing.assert_close(weight.norm(dim=1), torch.ones(30))


def test_reset_classifier_drops_every_stage_classifier():
    converter = load_tool('model_converters/reset_classifier.py')
    state = {
        'roi_head.bbox_head.0.fc_cls.weight': 1,
        'roi_head.bbox_head.0.fc_cls.bias': 2,
        'roi_head.bbox_head.1.fc_cls.weight': 3,
        'roi_head.bbox_head.1.fc_reg.weight': 4,
        'roi_head.mask_head.conv_logits.weight': 5,
    }
    kept, removed = converter.remove_classifier(state)
    assert sorted(removed) == [
        'roi_head.bbox_head.0.fc_cls.bias',
        'roi_head.bbox_head.0.fc_cls.weight',
        'roi_head.bbox_head.1.fc_cls.weight'
    ]
    assert set(kept) == {
        'roi_head.bbox_head.1.fc_reg.weight',
        'roi_head.mask_head.conv_logits.weight'
    }
    with pytest.raises(ValueError, match='no key matches'):
        converter.remove_classifier({'backbone.w': 0})


# ---------------------------------------------------------------- LWS


# A 2-class example, background last: rows w_c, biases b_c, two inputs x.
# w . x = [[3, 7, 0], [-1, -1, -2]]; w . x + b = [[3.5, 6, 3], [-0.5, -2, 1]]
LWS_W = [[1.0, 2.0], [3.0, 4.0], [-1.0, 1.0]]
LWS_B = [0.5, -1.0, 3.0]
LWS_X = [[1.0, 1.0], [1.0, -1.0]]


def lws_example(scale_bias, scale_background):
    layer = LWSLinear(
        2,
        3,
        scale_bias=scale_bias,
        scale_background=scale_background,
        dtype=torch.float64)
    f = [2.0, 0.5, 3.0] if scale_background else [2.0, 0.5]
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(LWS_W))
        layer.bias.copy_(torch.tensor(LWS_B))
        layer.weight_scaler.copy_(torch.tensor(f))
    return layer, torch.tensor(LWS_X, dtype=torch.float64)


@pytest.mark.parametrize(
    'scale_bias, scale_background, expected',
    [
        # z_c = (f_c * w_c) . x + b_c, f = (2, 0.5, 3)
        (False, True, [[6.5, 2.5, 3.0], [-1.5, -1.5, -3.0]]),
        # z_c = f_c * (w_c . x + b_c), f = (2, 0.5, 3)
        (True, True, [[7.0, 3.0, 9.0], [-1.0, -1.0, 3.0]]),
        # f = (2, 0.5) and f_bg = 1: the background is w_bg . x + b_bg
        (False, False, [[6.5, 2.5, 3.0], [-1.5, -1.5, 1.0]]),
        (True, False, [[7.0, 3.0, 3.0], [-1.0, -1.0, 1.0]]),
    ])
def test_lws_hand_computed(scale_bias, scale_background, expected):
    layer, x = lws_example(scale_bias, scale_background)
    assert torch.equal(layer(x), torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize('scale_bias', [False, True])
@pytest.mark.parametrize('scale_background', [True, False])
def test_lws_scale_gradient(scale_bias, scale_background):
    layer, x = lws_example(scale_bias, scale_background)

    def logits(weight_scaler):
        return torch.func.functional_call(layer,
                                          {'weight_scaler': weight_scaler},
                                          (x, ))

    scaler = layer.weight_scaler.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(logits, (scaler, ))


def test_lws_background_scale_is_fixed():
    layer, x = lws_example(scale_bias=True, scale_background=False)
    # C learned scales, the background's 1 is no parameter element
    assert layer.weight_scaler.shape == (2, )
    assert sum(p.numel() for p in layer.parameters()) == 6 + 3 + 2
    layer.weight.requires_grad_(False)
    layer.bias.requires_grad_(False)
    # the background logit reaches no learned scale
    layer(x)[:, -1].sum().backward()
    assert torch.equal(layer.weight_scaler.grad, torch.zeros(2).double())
    # a training step on every output leaves the background scale at 1
    optimizer = torch.optim.SGD([layer.weight_scaler], lr=0.1)
    optimizer.zero_grad()
    layer(x).pow(2).sum().backward()
    optimizer.step()
    assert not torch.equal(layer.weight_scaler,
                           torch.tensor([2.0, 0.5]).double())
    assert layer.scale()[-1].item() == 1.0


@pytest.mark.parametrize('scale_bias', [False, True])
@pytest.mark.parametrize('scale_background', [True, False])
def test_lws_starts_as_the_loaded_baseline(scale_bias, scale_background):
    torch.manual_seed(5)
    linear = nn.Linear(8, 5)
    lws = MODELS.build(
        dict(
            type='LWSLinear',
            in_features=8,
            out_features=5,
            scale_bias=scale_bias,
            scale_background=scale_background))
    missing, unexpected = lws.load_state_dict(linear.state_dict(),
                                              strict=False)
    assert missing == ['weight_scaler'] and unexpected == []
    num_scales = 5 if scale_background else 4
    assert torch.equal(lws.weight_scaler, torch.ones(num_scales))
    x = torch.randn(4, 8)
    assert torch.equal(lws(x), linear(x))
    # reset_parameters (mmdet's re-initialisation) keeps the scale at 1
    lws.weight_scaler.data.fill_(3.0)
    lws.reset_parameters()
    assert torch.equal(lws.weight_scaler, torch.ones(num_scales))


def test_lws_default_checkpoint_layout():
    # the defaults keep the layout of earlier LWS checkpoints
    state = LWSLinear(8, 5).state_dict()
    assert list(state) == ['weight', 'bias', 'weight_scaler']
    assert state['weight_scaler'].shape == (5, )
