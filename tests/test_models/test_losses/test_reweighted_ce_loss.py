"""ReweightedCrossEntropyLoss: class-balanced and cost-sensitive weights by
hand, the loss by hand (softmax and sigmoid, float64), equality with mmdet's
CrossEntropyLoss, gradcheck, through mmdet's Shared2FCBBoxHead, bad input."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmdet_longtail.models.losses.reweighted_ce_loss import (
    ReweightedCrossEntropyLoss, class_balanced_weights,
    cost_sensitive_weights)
from heads import head_losses, raw_head_scores, shared_2fc_head

# 3 classes with 1, 10 and 100 training instances
COUNTS = dict(image_count=[1, 5, 20], instance_count=[1, 10, 100],
              num_images=25)


def cb_by_hand(counts, beta):
    raw = [(1 - beta) / (1 - beta**n) for n in counts]
    return [w * len(counts) / sum(raw) for w in raw]


def test_class_balanced_weights_by_hand():
    beta = 0.9
    # (1 - b) / (1 - b^n): n=1 -> 1; n=10 -> 0.1 / (1 - 0.9^10)
    raw = [1.0, 0.1 / (1 - 0.9**10), 0.1 / (1 - 0.9**100)]
    expected = [3 * w / sum(raw) for w in raw]
    got = class_balanced_weights([1, 10, 100], beta)
    assert got.tolist() == pytest.approx(expected, rel=1e-12)
    assert got.sum() == pytest.approx(3, rel=1e-12)
    # beta -> 1 is inverse frequency, beta close to 0 is uniform
    inv = [1 / 1, 1 / 10, 1 / 100]
    assert class_balanced_weights([1, 10, 100], 1 - 1e-9).tolist() == \
        pytest.approx([3 * w / sum(inv) for w in inv], rel=1e-6)
    assert class_balanced_weights([1, 10, 100], 1e-9).tolist() == \
        pytest.approx([1, 1, 1], rel=1e-8)


def test_cost_sensitive_weights_by_hand():
    assert cost_sensitive_weights([4, 8, 100]).tolist() == \
        pytest.approx([1.0, 0.5, 0.04], rel=1e-12)


def test_classes_without_instances_get_zero_weight():
    weights = class_balanced_weights([0, 10, 100], 0.9)
    assert weights[0] == 0 and weights.sum() == pytest.approx(2, rel=1e-12)
    assert cost_sensitive_weights([0, 10, 100]).tolist() == \
        pytest.approx([0, 1, 0.1], rel=1e-12)


def make_loss(**kwargs):
    kwargs.setdefault('class_statistics', COUNTS)
    return ReweightedCrossEntropyLoss(num_classes=3, **kwargs)


def test_softmax_loss_by_hand():
    loss = make_loss(beta=0.9)
    w = cb_by_hand([1, 10, 100], 0.9) + [1.0]
    z = torch.tensor([[2., -1., 0.5, 0.], [0., 1., -2., 3.],
                      [1., 1., 1., 1.], [-1., 0., 2., 0.5]],
                     dtype=torch.float64)
    labels = torch.tensor([0, 3, 2, 1])
    label_weights = torch.tensor([1., 1., 0.5, 1.], dtype=torch.float64)
    expected = 0.0
    for i, g in enumerate(labels.tolist()):
        logsumexp = math.log(sum(math.exp(v) for v in z[i].tolist()))
        expected += label_weights[i].item() * w[g] * (
            logsumexp - z[i, g].item())
    got = loss(z, labels, label_weights, avg_factor=4)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(
        expected / (4 + torch.finfo(torch.float32).eps), rel=1e-12)
    # mmdet's CrossEntropyLoss with the same class_weight (bg 1)
    from mmdet.models.losses import CrossEntropyLoss
    mmdet_ce = CrossEntropyLoss(class_weight=w)
    torch.testing.assert_close(
        got, mmdet_ce(z, labels, label_weights, avg_factor=4), rtol=1e-12,
        atol=0)
    # weights off (the first DRW stage): plain mmdet CE
    loss.weights_enabled = False
    torch.testing.assert_close(
        loss(z, labels, label_weights, avg_factor=4),
        CrossEntropyLoss()(z, labels, label_weights, avg_factor=4),
        rtol=1e-12, atol=0)


def test_sigmoid_loss_by_hand():
    loss = make_loss(weighting='cost_sensitive', use_sigmoid=True)
    w = [1.0, 0.1, 0.01, 1.0]
    z = torch.tensor([[2., -1., 0.5], [0., 1., -2.], [1., -3., 1.]],
                     dtype=torch.float64)
    labels = torch.tensor([1, 3, 2])

    def bce(x, y):
        p = 1 / (1 + math.exp(-x))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    per_roi = [
        w[g] * sum(bce(z[i, j].item(), float(j == g)) for j in range(3))
        for i, g in enumerate(labels.tolist())
    ]
    got = loss(z, labels, reduction_override='none')
    assert got.tolist() == pytest.approx(per_roi, rel=1e-12)
    assert loss(z, labels, reduction_override='sum').item() == \
        pytest.approx(sum(per_roi), rel=1e-12)
    # weights off: mmdet's sigmoid CE over the same C logits
    from mmdet.models.losses import CrossEntropyLoss
    loss.weights_enabled = False
    torch.testing.assert_close(
        loss(z, labels, torch.ones(3, dtype=torch.float64), avg_factor=3),
        CrossEntropyLoss(use_sigmoid=True)(
            z, labels, torch.ones(3, dtype=torch.float64),
            avg_factor=3).double(),  # mmdet casts the target to float32
        rtol=1e-6, atol=0)


@pytest.mark.parametrize('use_sigmoid', [False, True])
def test_gradcheck(use_sigmoid):
    loss = make_loss(beta=0.99, use_sigmoid=use_sigmoid)
    z = torch.randn(5, 3 if use_sigmoid else 4, dtype=torch.float64,
                    requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 3])
    assert torch.autograd.gradcheck(lambda x: loss(x, labels, avg_factor=5),
                                    (z, ))


def test_half_precision_computes_in_float32():
    loss = make_loss()
    z = torch.randn(4, 4)
    labels = torch.tensor([0, 1, 2, 3])
    torch.testing.assert_close(
        loss(z.half(), labels).float(), loss(z.half().float(), labels))


def test_logged_once(capsys):
    from mmengine.logging import MMLogger
    MMLogger.get_instance('rw_log_test')
    stats = dict(COUNTS, instance_count=[3, 7, 11])
    first = make_loss(class_statistics=stats, beta=0.5)
    make_loss(class_statistics=stats, beta=0.5)
    out = capsys.readouterr().out
    assert out.count('ReweightedCrossEntropyLoss (class_balanced, beta=0.5'
                     ) == 1
    assert 'background 1' in out
    assert first.class_weight[-1] == 1


def test_through_shared2fc_bbox_head():
    for use_sigmoid, width in ((False, 4), (True, 3)):
        head = shared_2fc_head(
            dict(type='ReweightedCrossEntropyLoss', num_classes=3,
                 use_sigmoid=use_sigmoid, beta=0.9,
                 class_statistics=COUNTS))
        assert head.fc_cls.out_features == width
        logits = 4 * torch.randn(6, width)
        scores = raw_head_scores(head, logits)
        assert scores.shape == (6, 4)
        if use_sigmoid:
            torch.testing.assert_close(scores[:, :3], logits.sigmoid())
            assert (scores[:, 3] == 0).all()
        else:
            torch.testing.assert_close(scores, logits.softmax(-1))
        labels = torch.tensor([0, 3, 2, 3, 1, 3])
        losses = head_losses(head, logits, labels)
        w = torch.tensor(cb_by_hand([1, 10, 100], 0.9) + [1.0])[labels]
        if use_sigmoid:
            target = F.one_hot(labels, 4)[:, :3].float()
            per_roi = F.binary_cross_entropy_with_logits(
                logits, target, reduction='none').sum(1)
        else:
            per_roi = F.cross_entropy(logits, labels, reduction='none')
        # BBoxHead: avg_factor = #RoIs with label weight > 0 = 6
        torch.testing.assert_close(losses['loss_cls'],
                                   (w * per_roi).sum() / 6)
        assert ('acc_classes' if use_sigmoid else 'acc') in losses


@pytest.mark.parametrize('kwargs, match', [
    (dict(weighting='focal'), r"weighting must be one of .*'focal'"),
    (dict(beta=1.0), r'beta must lie in \(0, 1\).*got 1.0'),
    (dict(beta=0), r'beta must lie in \(0, 1\)'),
    (dict(num_classes=0), 'num_classes must be >= 1, got 0'),
    (dict(class_statistics=None), 'needs class_statistics'),
    (dict(class_statistics=dict(COUNTS, instance_count=[0, 0, 0])),
     'no class has a training instance'),
    (dict(num_classes=4), r'num_classes=4 does not match the 3'),
])
def test_bad_arguments(kwargs, match):
    kwargs = dict(dict(num_classes=3, class_statistics=COUNTS), **kwargs)
    with pytest.raises(ValueError, match=match):
        ReweightedCrossEntropyLoss(**kwargs)


def test_bad_inputs():
    loss = make_loss()
    with pytest.raises(ValueError, match=r'cls_score must be \(N, 4\)'):
        loss(torch.zeros(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 3\]'):
        loss(torch.zeros(2, 4), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match='reduction must be one of'):
        loss(torch.zeros(2, 4), torch.tensor([0, 1]),
             reduction_override='avg')
    sigmoid = make_loss(use_sigmoid=True)
    with pytest.raises(ValueError, match=r'no background logit.*\(N, 3\)'):
        sigmoid(torch.zeros(2, 4), torch.tensor([0, 1]))
