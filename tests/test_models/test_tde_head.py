"""TDE (Tang et al., NeurIPS 2020): the de-confounded classifier, the
moving-average feature, the TDE correction, background-exempted scoring and
the RoI heads that train and test them.

Hand-computed examples use K = 2 heads of 2 dims, tau = 16 (tau / K = 8) and
gamma = 1/32, with weight parts of norm 31/32 so that ``||w|| + gamma = 1``.
"""
import math
from typing import List

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO_ROOT
from mmdet.registry import MODELS
from mmdet_longtail.models.layers.tde_classifier import (
    TDEClassifier, deconfounded_logits, foreground_mean, tde_correction)
from mmdet_longtail.models.roi_heads.bbox_heads.tde_bbox_head import (
    TDEBBoxHead, background_exempt_log_scores, tde_log_scores)
from mmdet_longtail.models.roi_heads.tde_roi_head import sampled_roi_labels

TAU, GAMMA = 16.0, 1 / 32
S = 31 / 32  # a weight part of norm S has ||w|| + gamma = 1

# x = [x_1 | x_2] = [3, 4 | 0, 2]  ->  x^_1 = (0.6, 0.8), x^_2 = (0, 1)
X = torch.tensor([[3.0, 4.0, 0.0, 2.0]])
# rows: class 0, class 1, background (last)
W = torch.tensor([
    [S, 0.0, 0.0, S],  # w~_01 = (S, 0), w~_02 = (0, S)
    [0.0, 63 / 32, 0.0, 0.0],  # ||w_11|| + g = 2: w~_11 = (0, 63/64); w~_12 = 0
    [-0.6 * S, -0.8 * S, S, 0.0],  # w~_21 = -S (0.6, 0.8), w~_22 = (S, 0)
])
# z_c = (tau / K) sum_k <x^_k, w~_ck>
#   z_0 = 8 (0.6 S + 1 S)             = 8 * 1.6 * 0.96875   = 12.4
#   z_1 = 8 (0.8 * 63/64 + 0)         = 8 * 0.7875          = 6.3
#   z_2 = 8 (-(0.36 + 0.64) S + 0)    = -8 * 0.96875        = -7.75
Z = torch.tensor([[12.4, 6.3, -7.75]])
# e = [4, 3 | 0, 5]: e^_1 = (0.8, 0.6), e^_2 = (0, 1);
# cos_1 = 0.6 * 0.8 + 0.8 * 0.6 = 0.96, cos_2 = 1
E = torch.tensor([4.0, 3.0, 0.0, 5.0])
# y0_c = (tau / K) sum_k cos_k <e^_k, w~_ck>
#   y0_0 = 8 (0.96 * 0.8 S + 1 * S)            = 8 * 1.71275      = 13.702
#   y0_1 = 8 (0.96 * 0.6 * 63/64 + 0)          = 8 * 0.567        = 4.536
#   y0_2 = 8 (0.96 * -(0.48 + 0.48) S + 0)     = 8 * 0.96 * -0.93 = -7.1424
Y0 = torch.tensor([[13.702, 4.536, -7.1424]])


def make_classifier(**kwargs) -> TDEClassifier:
    clf = TDEClassifier(4, 3, **kwargs)
    with torch.no_grad():
        clf.weight.copy_(W)
    return clf


# ------------------------------------------------------------- the math


def test_deconfounded_logits_hand_computed():
    torch.testing.assert_close(
        deconfounded_logits(X, W, num_heads=2, tau=TAU, gamma=GAMMA), Z)
    # the classifier module computes the same in training
    clf = make_classifier().train()
    with clf.roi_labels(torch.tensor([2])):
        torch.testing.assert_close(clf(X), Z)


def test_tde_correction_and_test_output_hand_computed():
    torch.testing.assert_close(
        tde_correction(X, E, W, num_heads=2, tau=TAU, gamma=GAMMA), Y0)
    clf = make_classifier(alpha=1.5).eval()
    clf.moving_average_feature.copy_(E)
    # test output [z | t], t = z - alpha * y0
    torch.testing.assert_close(clf(X), torch.cat([Z, Z - 1.5 * Y0], dim=1))
    # only the direction of e matters
    torch.testing.assert_close(
        tde_correction(X, 7 * E, W, 2, TAU, GAMMA), Y0)


def test_zero_moving_average_gives_zero_correction():
    y0 = tde_correction(X, torch.zeros(4), W, 2, TAU, GAMMA)
    assert torch.equal(y0, torch.zeros(1, 3))


def test_deconfounded_logits_gradients():
    torch.manual_seed(0)
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: deconfounded_logits(a, b, 3, TAU, GAMMA), (x, w))
    e = torch.randn(6, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda a, b: tde_correction(a, e, b, 3, TAU, GAMMA), (x, w))


def test_logits_are_bounded_by_tau():
    # |z_c| <= (tau / K) sum_k ||w~_ck|| < tau, whatever the feature scale
    torch.manual_seed(0)
    x = torch.randn(20, 8) * 1000
    w = torch.randn(5, 8)
    assert deconfounded_logits(x, w, 2, TAU, GAMMA).abs().max() < TAU


# ------------------------------------------------------- moving average


def test_moving_average_follows_the_recurrence_and_ignores_background():
    mu = 0.8
    clf = make_classifier(momentum=mu).train()
    torch.manual_seed(0)
    expected = torch.zeros(4)
    steps = [
        torch.tensor([0, 2, 1, 2, 0]),  # two background RoIs (label 2)
        torch.tensor([2, 2, 2, 2, 2]),  # background only: no update
        torch.tensor([1, 1, 2, 0, 2]),
        torch.tensor([0, 1, 0, 1, 0]),
    ]
    for labels in steps:
        feats = torch.rand(5, 4)
        with clf.roi_labels(labels):
            clf(feats)
        fg = labels < 2
        if fg.any():  # e <- mu e + mean of the foreground features
            expected = mu * expected + feats[fg].mean(0)
        torch.testing.assert_close(clf.moving_average_feature, expected)
    # background features do not matter: change them, same update
    e_before = clf.moving_average_feature.clone()
    labels = torch.tensor([0, 2, 1])
    feats = torch.rand(3, 4)
    with clf.roi_labels(labels):
        clf(feats)
    e_a = clf.moving_average_feature.clone()
    clf.moving_average_feature.copy_(e_before)
    feats[1] = 1e6
    with clf.roi_labels(labels):
        clf(feats)
    torch.testing.assert_close(clf.moving_average_feature, e_a)
    torch.testing.assert_close(e_a, mu * e_before + feats[[0, 2]].mean(0))


def test_foreground_mean_counts():
    feats = torch.tensor([[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]])
    mean, count = foreground_mean(feats, torch.tensor([0, 1, 2]), 2)
    torch.testing.assert_close(mean, torch.tensor([2.0, 3.0]))
    assert int(count) == 2
    mean, count = foreground_mean(feats, torch.tensor([2, 2, 2]), 2)
    assert int(count) == 0 and torch.equal(mean, torch.zeros(2))


def test_moving_average_needs_labels_once_per_forward():
    clf = make_classifier().train()
    with pytest.raises(RuntimeError, match='TDE RoI head'):
        clf(X)
    with clf.roi_labels(torch.tensor([0])):
        clf(X)
        with pytest.raises(RuntimeError, match='no RoI labels'):
            clf(X)  # the labels were used by the first forward
    with clf.roi_labels(torch.tensor([0, 1])):
        with pytest.raises(ValueError, match='2 RoI labels for 1 RoI'):
            clf(X)


def test_evaluation_does_not_update_the_moving_average():
    clf = make_classifier().eval()
    clf.moving_average_feature.copy_(E)
    clf(torch.rand(6, 4))
    assert torch.equal(clf.moving_average_feature, E)


# --------------------------------------------------------------- scoring


def test_background_exempt_scores_hand_computed():
    # z = (1, 2 | 0), t = (3, 1 | 5)
    # p = softmax(z): p_bg = 1 / (1 + e + e^2) = 0.0900306
    # q_fg = softmax(t_fg) = (e^2, 1) / (e^2 + 1) = (0.8807971, 0.1192029)
    # score_c = (1 - p_bg) q_c, score_bg = p_bg
    z = torch.tensor([[1.0, 2.0, 0.0]])
    t = torch.tensor([[3.0, 1.0, 5.0]])
    e = math.e
    p_bg = 1 / (1 + e + e**2)
    q = [e**2 / (e**2 + 1), 1 / (e**2 + 1)]
    expected = torch.tensor([[(1 - p_bg) * q[0], (1 - p_bg) * q[1], p_bg]])
    scores = background_exempt_log_scores(z, t).exp()
    torch.testing.assert_close(scores, expected)
    torch.testing.assert_close(
        expected, torch.tensor([[0.8014964, 0.1084730, 0.0900306]]))


def test_scorings_keep_probabilities_and_the_background():
    torch.manual_seed(0)
    z, t = torch.randn(50, 7) * 4, torch.randn(50, 7) * 4
    packed = torch.cat([z, t], dim=1)
    p = F.softmax(z, dim=1)
    tde = tde_log_scores(packed, 'tde').exp()
    # background-exempted scores keep the background of the plain softmax
    torch.testing.assert_close(tde[:, -1], p[:, -1])
    # and distribute the foreground mass as softmax(t) does
    torch.testing.assert_close(
        tde[:, :-1] / tde[:, :-1].sum(1, keepdim=True),
        F.softmax(t[:, :-1], dim=1))
    for scoring in ('tde', 'tde-no-bg-exempt', 'deconfound'):
        scores = tde_log_scores(packed, scoring).exp()
        assert scores.min() >= 0 and scores.max() <= 1
        torch.testing.assert_close(scores.sum(1), torch.ones(50))
    torch.testing.assert_close(
        tde_log_scores(packed, 'tde-no-bg-exempt').exp(), F.softmax(t, 1))
    torch.testing.assert_close(
        tde_log_scores(packed, 'deconfound').exp(), p)
    with pytest.raises(ValueError, match='unknown TDE scoring'):
        tde_log_scores(packed, 'causal')


def test_tde_with_alpha_zero_is_deconfound_scoring():
    torch.manual_seed(0)
    clf = TDEClassifier(8, 6, alpha=0.0).eval()
    clf.moving_average_feature.copy_(torch.rand(8))
    packed = clf(torch.rand(10, 8))
    torch.testing.assert_close(
        tde_log_scores(packed, 'tde'), tde_log_scores(packed, 'deconfound'))
    clf.alpha = 1.5
    assert not torch.allclose(
        tde_log_scores(clf(torch.rand(10, 8)), 'tde'),
        tde_log_scores(packed, 'deconfound'))


# -------------------------------------------------------- head and errors


def tde_head(**kwargs) -> TDEBBoxHead:
    cfg = dict(
        type='TDEBBoxHead',
        in_channels=4,
        fc_out_channels=8,
        roi_feat_size=2,
        num_classes=5)
    cfg.update(kwargs)
    return MODELS.build(cfg)


def test_head_builds_the_classifier_from_its_settings():
    head = tde_head(num_heads=4, tau=10.0, gamma=0.5, momentum=0.99,
                    alpha=2.0, scoring='deconfound')
    fc = head.fc_cls
    assert isinstance(fc, TDEClassifier)
    assert (fc.in_features, fc.out_features) == (8, 6)
    assert (fc.num_heads, fc.tau, fc.gamma, fc.momentum, fc.alpha) == \
        (4, 10.0, 0.5, 0.99, 2.0)
    assert head.scoring == 'deconfound'
    head.alpha = 0.5  # the head's alpha is the classifier's
    assert fc.alpha == 0.5
    # initialisation: uniform(+-1/sqrt(D)), as the authors
    head.init_weights()
    assert fc.weight.abs().max() <= 1 / math.sqrt(8)
    assert 'fc_cls.moving_average_feature' in head.state_dict()


def test_feature_dimension_not_divisible_by_heads_is_a_clear_error():
    with pytest.raises(ValueError,
                       match='fc_out_channels=8 .* not divisible by '
                       'num_heads=3'):
        tde_head(num_heads=3)
    with pytest.raises(ValueError,
                       match='in_features=10 is not divisible by '
                       'num_heads=4'):
        TDEClassifier(10, 3, num_heads=4)


@pytest.mark.parametrize('kwargs, message', [
    (dict(scoring='causal'), "scoring='causal'"),
    (dict(gamma=-1.0), 'gamma must be >= 0'),
    (dict(momentum=1.5), 'momentum must be in'),
    (dict(cls_predictor_cfg=dict(type='Linear')), 'builds its own'),
    (dict(loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True)),
     'softmax cross-entropy'),
])
def test_bad_head_settings_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tde_head(**kwargs)


def test_head_refuses_training_outputs_and_an_untrained_moving_average():
    head = tde_head().eval()
    with pytest.raises(ValueError, match=r'shape \(N, 12\)'):
        head.class_log_scores(torch.zeros(3, 6))
    packed = torch.zeros(3, 12)
    with pytest.raises(RuntimeError, match='moving-average feature .* zero'):
        head.class_log_scores(packed)
    head.scoring = 'deconfound'  # no TDE: defined without e
    assert head.class_log_scores(packed).shape == (3, 6)


def test_sampled_roi_labels_follow_the_prior_order():
    from mmdet.models.task_modules.assigners import AssignResult
    from mmdet.models.task_modules.samplers import SamplingResult
    from mmdet.structures.bbox import bbox2roi

    priors = torch.rand(5, 4) * 10
    priors[:, 2:] += priors[:, :2]
    gt = torch.tensor([[0.0, 0.0, 5.0, 5.0], [1.0, 1.0, 6.0, 6.0]])
    assign = AssignResult(
        num_gts=2,
        gt_inds=torch.tensor([0, 2, 0, 1, 2]),
        max_overlaps=torch.rand(5),
        labels=torch.tensor([-1, 7, -1, 3, 7]))
    result = SamplingResult(
        pos_inds=torch.tensor([1, 3, 4]),
        neg_inds=torch.tensor([0, 2]),
        priors=priors,
        gt_bboxes=gt,
        assign_result=assign,
        gt_flags=torch.zeros(5, dtype=torch.uint8))
    labels = sampled_roi_labels([result, result], background_label=9)
    assert labels.tolist() == [7, 3, 7, 9, 9] * 2
    assert len(labels) == len(bbox2roi([result.priors, result.priors]))


# ------------------------------------------------ through the detectors

TINY = {
    'faster': 'configs/tde/faster-rcnn_r18-tiny_fpn_tde_12e_synthetic-lvis.py',
    'cascade':
    'configs/tde/cascade-mask-rcnn_r18-tiny_fpn_tde_12e_synthetic-lvis.py',
    'htc':
    'configs/tde/htc-without-semantic_r18-tiny_fpn_tde_12e_synthetic-lvis.py',
}


def build_tiny(name: str, **test_rcnn):
    from mmengine.config import Config
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(f'{REPO_ROOT}/{TINY[name]}')
    # few RoIs: the wiring is under test, not the accuracy
    cfg.model.train_cfg.rpn_proposal.max_per_img = 40
    cfg.model.test_cfg.rpn.max_per_img = 30
    cfg.model.test_cfg.rcnn.max_per_img = 10  # few masks to predict
    cfg.model.test_cfg.rcnn.update(test_rcnn)
    torch.manual_seed(0)
    return MODELS.build(cfg.model)


def demo_batch(model, training: bool, with_mask: bool):
    from mmdet.testing import demo_mm_inputs
    torch.manual_seed(1)
    packed = demo_mm_inputs(
        batch_size=2,
        image_shapes=[(3, 64, 96), (3, 96, 64)],
        num_items=[3, 2],
        num_classes=30,
        with_mask=with_mask)
    return model.data_preprocessor(packed, training)


def stage_heads(model) -> List[TDEBBoxHead]:
    heads = model.roi_head.bbox_head
    return list(heads) if isinstance(heads, torch.nn.ModuleList) else [heads]


@pytest.mark.parametrize('name', ['faster', 'htc'])
def test_roi_head_updates_each_stage_from_its_foreground_rois(name):
    """The moving average of every stage after one training step is the
    mean of that stage's fc_cls inputs (penultimate features) over the RoIs
    the box loss sees as foreground."""
    model = build_tiny(name).train()
    heads = stage_heads(model)
    feats, labels, handles = {}, {}, []
    for stage, head in enumerate(heads):
        handles.append(head.fc_cls.register_forward_hook(
            lambda m, i, o, s=stage: feats.__setitem__(s, i[0].detach())))
        original_loss = head.loss

        def loss(*args, _s=stage, _orig=original_loss, **kwargs):
            labels[_s] = kwargs.get('labels', args[3] if len(args) > 3
                                    else None)
            return _orig(*args, **kwargs)

        head.loss = loss
    model(**demo_batch(model, True, name != 'faster'), mode='loss')
    for stage, head in enumerate(heads):
        fg = labels[stage] < head.num_classes
        assert 0 < int(fg.sum()) < len(fg), 'needs both fg and bg RoIs'
        torch.testing.assert_close(head.fc_cls.moving_average_feature,
                                   feats[stage][fg].mean(0))
        assert feats[stage].shape[1] == head.fc_out_channels


def nms_input_scores(model, batch, monkeypatch) -> torch.Tensor:
    """The class scores mmdet's multiclass_nms receives, all images."""
    import mmdet.models.roi_heads.bbox_heads.bbox_head as bbox_head_module
    seen = []
    original = bbox_head_module.multiclass_nms

    def spy(multi_bboxes, multi_scores, *args, **kwargs):
        seen.append(multi_scores.detach().clone())
        return original(multi_bboxes, multi_scores, *args, **kwargs)

    monkeypatch.setattr(bbox_head_module, 'multiclass_nms', spy)
    with torch.no_grad():
        model(**batch, mode='predict')
    monkeypatch.setattr(bbox_head_module, 'multiclass_nms', original)
    return torch.cat(seen)


def background_exempted(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    p, q = F.softmax(z, dim=1), F.softmax(t, dim=1)
    fg_q = q[:, :-1] / q[:, :-1].sum(1, keepdim=True)
    return torch.cat([(1 - p[:, -1:]) * fg_q, p[:, -1:]], dim=1)


@pytest.mark.parametrize('name,stage_average', [('faster', None),
                                                ('cascade', None),
                                                ('cascade', 'scores'),
                                                ('cascade', 'logits')])
def test_detector_scores_are_background_exempted_tde_once(
        name, stage_average, monkeypatch):
    """Scores reaching NMS equal the background-exempted TDE probabilities,
    computed here from the classifier inputs: of each stage, then averaged
    (the default 'scores', as the authors' HTC), or of the stage-averaged z
    and t ('logits'); no second softmax (the authors' code scored
    softmax(probabilities))."""
    test_rcnn = {} if stage_average is None else dict(
        tde_stage_average=stage_average)
    model = build_tiny(name, **test_rcnn).eval()
    heads = stage_heads(model)
    torch.manual_seed(2)
    feats = {}
    for stage, head in enumerate(heads):
        head.fc_cls.moving_average_feature.copy_(
            torch.rand(head.fc_out_channels))
        head.fc_cls.register_forward_hook(
            lambda m, i, o, s=stage: feats.__setitem__(s, i[0].detach()))
    scores = nms_input_scores(model, demo_batch(model, False, False),
                              monkeypatch)
    zs, ts = [], []
    for stage, head in enumerate(heads):
        fc = head.fc_cls
        z = deconfounded_logits(feats[stage], fc.weight, 2, TAU, GAMMA)
        y0 = tde_correction(feats[stage], fc.moving_average_feature,
                            fc.weight, 2, TAU, GAMMA)
        zs.append(z)
        ts.append(z - 1.5 * y0)
    of_mean = background_exempted(sum(zs) / len(zs), sum(ts) / len(ts))
    mean_of = sum(map(background_exempted, zs, ts)) / len(zs)
    expected = of_mean if stage_average == 'logits' else mean_of
    if len(zs) > 1:  # the two averages are told apart
        assert (of_mean - mean_of).abs().max() > 1e-3
    assert scores.shape == expected.shape
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(scores, F.softmax(expected, dim=1), atol=1e-3)


def test_test_cfg_overrides_alpha_and_scoring_of_every_stage(monkeypatch):
    model = build_tiny('cascade', tde_alpha=0.0)
    assert [h.alpha for h in stage_heads(model)] == [0.0] * 3
    torch.manual_seed(2)
    for head in stage_heads(model):
        head.fc_cls.moving_average_feature.copy_(torch.rand(128))
    state = model.state_dict()
    batch = demo_batch(model, False, False)
    alpha_zero = nms_input_scores(model.eval(), batch, monkeypatch)

    deconfound = build_tiny('cascade', tde_scoring='deconfound')
    assert [h.scoring for h in stage_heads(deconfound)] == ['deconfound'] * 3
    assert [h.alpha for h in stage_heads(deconfound)] == [1.5] * 3
    deconfound.load_state_dict(state)
    plain = nms_input_scores(deconfound.eval(), batch, monkeypatch)
    # TDE with alpha = 0 is the de-confounded model's scoring
    torch.testing.assert_close(alpha_zero, plain, rtol=1e-5, atol=1e-7)

    tde = build_tiny('cascade')
    tde.load_state_dict(state)
    assert not torch.allclose(
        nms_input_scores(tde.eval(), batch, monkeypatch), plain, atol=1e-4)
    with pytest.raises(ValueError, match="tde_scoring: scoring='x'"):
        build_tiny('cascade', tde_scoring='x')
    with pytest.raises(ValueError, match="rcnn.tde_stage_average='mean' is not"):
        build_tiny('cascade', tde_stage_average='mean')


def test_tde_roi_head_refuses_other_box_heads():
    from mmengine.config import Config
    cfg = Config.fromfile(f'{REPO_ROOT}/{TINY["faster"]}')
    cfg.model.roi_head.bbox_head.type = 'Shared2FCBBoxHead'
    for key in ('num_heads', 'tau', 'gamma', 'alpha', 'scoring', 'momentum'):
        cfg.model.roi_head.bbox_head.pop(key)
    with pytest.raises(TypeError, match='needs TDEBBoxHead .* '
                       'Shared2FCBBoxHead'):
        MODELS.build(cfg.model)


def test_checkpoint_round_trip_keeps_the_moving_average(tmp_path):
    from mmengine.runner import load_checkpoint, save_checkpoint
    model = build_tiny('htc')
    torch.manual_seed(3)
    for head in stage_heads(model):
        head.fc_cls.moving_average_feature.copy_(torch.rand(128))
    path = str(tmp_path / 'tde.pth')
    save_checkpoint(dict(state_dict=model.state_dict()), path)
    keys = [k for k in torch.load(path, weights_only=False)['state_dict']
            if k.endswith('moving_average_feature')]
    assert keys == [
        f'roi_head.bbox_head.{i}.fc_cls.moving_average_feature'
        for i in range(3)
    ]
    fresh = build_tiny('htc')
    load_checkpoint(fresh, path, strict=True)
    for a, b in zip(stage_heads(model), stage_heads(fresh)):
        assert torch.equal(a.fc_cls.moving_average_feature,
                           b.fc_cls.moving_average_feature)
