"""Gumbel Optimised Loss (Alexandridis et al., ECCV 2022): value and
gradient of a hand-computed example with and without the drop loss (float64
to 1e-12), the drop draws, the logit clamp, gradcheck, the tail set from the
train statistics, the test-time scores through a real Shared2FCBBoxHead and
clear errors."""
import math

import numpy as np
import pytest
import torch

from mmdet_longtail.datasets.class_stats import get_class_statistics
from mmdet_longtail.models.losses.gol_loss import (GOLoss, gol_drop_keep,
                                                   gol_loss,
                                                   gumbel_activation)
from heads import raw_head_scores, shared_2fc_head

LN2 = math.log(2)
E = math.exp
# Gumbel p = exp(-exp(-z)); at z = ln 2, 0, -ln 2: exp(-z) = 1/2, 1, 2.
#   BCE(p, 1) = exp(-z)            = 0.5, 1, 2
#   BCE(p, 0) = -log(1 - p)        = -log(1 - e^-0.5) = 0.932752 (z = ln 2)
#                                    -log(1 - e^-1)   = 0.458675 (z = 0)
#                                    -log(1 - e^-2)   = 0.145413 (z = -ln 2)
# dBCE(p, 1)/dz = -exp(-z);  dBCE(p, 0)/dz = p exp(-z) / (1 - p)
POS = {LN2: 0.5, 0.: 1., -LN2: 2.}
NEG = {z: -math.log(1 - E(-q)) for z, q in POS.items()}
GRAD_POS = {z: -q for z, q in POS.items()}
GRAD_NEG = {z: E(-q) * q / (1 - E(-q)) for z, q in POS.items()}

# tail set as EQL's: f = [0.5, 0.001, 0.0005] < lambda = 1.1e-3
# -> T = [0, 1, 1]
STATS = dict(image_count=[5000, 10, 5], num_images=10000)
LAMBDA = 1.1e-3
# RoI 0: class 0 (head), RoI 1: class 1 (tail), RoI 2: background (label 3)
LOGITS = [[LN2, 0., -LN2], [0., LN2, 0.], [-LN2, 0., LN2]]
LABELS = [0, 1, 3]
Y = [[1, 0, 0], [0, 1, 0], [0, 0, 0]]
# r = tail share of the foreground RoIs = 1/2; the background RoI keeps its
# suppression of the tail classes (D = 0) when its draw is >= 1 - r:
#   RoI 0 (fg, D = 1): w = 1 - T (1 - y) = [1, 0, 0]
#   RoI 1 (fg, D = 1): w = [1, 1, 0]
#   RoI 2 (bg, D = 1): w = [1, 0, 0]   (drawn < 1/2: tail not suppressed)
#   RoI 2 (bg, D = 0): w = [1, 1, 1]
W_DROPPED = [[1, 0, 0], [1, 1, 0], [1, 0, 0]]
W_KEPT = [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
W_PLAIN = [[1, 1, 1]] * 3


def hand(weights):
    """Per-RoI losses and the gradient / N of the example, element by
    element."""
    rows, grad = [], []
    for zrow, yrow, wrow in zip(LOGITS, Y, weights):
        rows.append(sum(w * (POS[z] if y else NEG[z])
                        for z, y, w in zip(zrow, yrow, wrow)))
        grad.append([w * (GRAD_POS[z] if y else GRAD_NEG[z]) / 3
                     for z, y, w in zip(zrow, yrow, wrow)])
    return rows, grad


def make_gol(**kwargs) -> GOLoss:
    kwargs.setdefault('lambda_threshold', LAMBDA)
    return GOLoss(3, class_statistics=STATS, **kwargs)


@pytest.mark.parametrize('keep_background,weights',
                         [(True, W_DROPPED), (False, W_KEPT), (None, W_PLAIN)],
                         ids=['bg-drops-tail', 'bg-suppresses', 'no-drop'])
def test_float64_value_and_gradient_equal_hand_computation(
        keep_background, weights):
    logits = torch.tensor(LOGITS, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor(LABELS)
    tail = keep = None
    if keep_background is not None:
        tail = make_gol().tail_classes
        assert tail.tolist() == [False, True, True]
        keep = torch.tensor([True, True, keep_background])
    rows, grad = hand(weights)
    per_roi = gol_loss(logits, labels, tail, keep, reduction='none')
    torch.testing.assert_close(
        per_roi, torch.tensor(rows, dtype=torch.float64), rtol=0, atol=1e-12)
    loss = gol_loss(logits, labels, tail, keep)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(sum(rows) / 3, rel=0, abs=1e-12)
    loss.backward()
    torch.testing.assert_close(
        logits.grad, torch.tensor(grad, dtype=torch.float64), rtol=0,
        atol=1e-12)


def test_hand_numbers():
    assert NEG[LN2] == pytest.approx(0.932752, abs=1e-6)
    assert NEG[0.] == pytest.approx(0.458675, abs=1e-6)
    assert NEG[-LN2] == pytest.approx(0.145413, abs=1e-6)
    rows, _ = hand(W_DROPPED)
    # RoI 0: 0.5; RoI 1: 0.458675 + 0.5; RoI 2: -log(1 - e^-2) = 0.145413
    assert rows == pytest.approx([0.5, 0.958675, 0.145413], abs=1e-6)


def test_background_draws():
    labels = torch.tensor(LABELS)
    tail = torch.tensor([False, True, True])
    # r = 1/2: a background RoI drops the tail negatives when drawn < 1/2
    assert gol_drop_keep(labels, tail, torch.tensor([.9, .9, .49])).tolist() \
        == [True, True, True]
    assert gol_drop_keep(labels, tail, torch.tensor([.0, .0, .5])).tolist() \
        == [True, True, False]
    # no tail foreground in the batch (r = 0): every background RoI drops
    assert gol_drop_keep(torch.tensor([0, 3, 3]), tail,
                         torch.tensor([0., .99, .999])).tolist() == [True] * 3
    # only background RoIs: r = 0 as well
    assert gol_drop_keep(torch.tensor([3, 3]), tail,
                         torch.tensor([.5, .999])).tolist() == [True, True]


def test_module_draws_from_the_global_generator():
    logits = torch.randn(50, 3, dtype=torch.float64)
    labels = torch.randint(0, 4, (50, ))
    gol = make_gol()
    torch.manual_seed(3)
    loss = gol(logits, labels)
    torch.manual_seed(3)
    keep = gol_drop_keep(labels, gol.tail_classes,
                         torch.rand(50, dtype=torch.float32))
    expected = gol_loss(logits, labels, gol.tail_classes, keep)
    assert loss.item() == pytest.approx(expected.item(), rel=0, abs=1e-12)
    # label_weights and avg_factor are ignored (normalised by the RoIs)
    label_weights = torch.rand(50)
    torch.manual_seed(3)
    assert gol(logits, labels, label_weights, avg_factor=3.).item() == \
        pytest.approx(expected.item(), rel=0, abs=1e-12)
    # without the drop loss no statistics are needed
    plain = GOLoss(3, drop_loss=False)
    assert plain.tail_classes.sum() == 0
    assert plain(logits, labels).item() == pytest.approx(
        gol_loss(logits, labels).item(), rel=0, abs=1e-12)


def test_logits_are_clamped_to_the_authors_range():
    logits = torch.tensor([[-6., 12., 0.]], dtype=torch.float64,
                          requires_grad=True)
    labels = torch.tensor([0])
    gol = GOLoss(3, drop_loss=False)
    loss = gol(logits, labels)
    # z = -6 counts as -4: BCE(p, 1) = e^4; z = 12 counts as 10
    expected = E(4) - math.log(1 - E(-E(-10))) - math.log(1 - E(-1))
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    loss.backward()
    assert logits.grad[0, :2].tolist() == [0., 0.]
    scores = gol.get_activation(logits.detach())
    assert scores[0, 0].item() == pytest.approx(E(-E(4)), rel=1e-12)
    unclamped = GOLoss(3, drop_loss=False, logit_range=None)
    assert unclamped.get_activation(logits.detach())[0, 0].item() == \
        pytest.approx(E(-E(6)), rel=1e-12)


def test_gradcheck_float64():
    # inside the clamp range, where the loss is smooth
    logits = (torch.rand(6, 3, dtype=torch.float64) * 8 - 3).requires_grad_()
    labels = torch.tensor([0, 1, 2, 3, 3, 1])
    tail = torch.tensor([False, True, True])
    keep = torch.tensor([True, True, True, False, True, True])
    for reduction in ('mean', 'sum', 'none'):
        assert torch.autograd.gradcheck(
            lambda z: gol_loss(z, labels, tail, keep,
                               reduction=reduction), (logits, ))


def test_half_precision_logits_are_computed_in_float32():
    logits = torch.tensor(LOGITS).half().requires_grad_()
    loss = GOLoss(3, drop_loss=False)(logits, torch.tensor(LABELS))
    assert loss.dtype == torch.float32
    rows, _ = hand(W_PLAIN)
    assert loss.item() == pytest.approx(sum(rows) / 3, abs=2e-3)
    loss.backward()
    assert logits.grad.dtype == torch.float16


def test_tail_set_from_the_train_annotation_file(synthetic_root):
    ann_file = synthetic_root + 'annotations/lvis_v1_train.json'
    stats = get_class_statistics(ann_file)
    lam = float(np.median(stats.image_freq))
    gol = GOLoss(30, class_statistics=ann_file, lambda_threshold=lam)
    expected = stats.image_count / stats.num_images < lam
    assert gol.tail_classes.numpy().tolist() == expected.tolist()
    assert 0 < expected.sum() < 30
    assert 'tail_classes' not in gol.state_dict()


def test_scores_through_a_shared_2fc_head():
    """C outputs; Gumbel scores in [0, 1] with a zero background column."""
    head = shared_2fc_head(dict(type='GOLoss', num_classes=3,
                                class_statistics=STATS,
                                lambda_threshold=LAMBDA))
    assert head.custom_cls_channels and head.fc_cls.out_features == 3
    logits = 3 * torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    scores = raw_head_scores(head, logits)
    torch.testing.assert_close(
        scores[:, :3], torch.exp(-torch.exp(-logits.clamp(-4, 10))))
    torch.testing.assert_close(scores[:, :3], gumbel_activation(logits))
    assert bool((scores[:, 3] == 0).all())
    assert bool(((scores >= 0) & (scores <= 1)).all())
    acc = head.loss_cls.get_accuracy(torch.tensor(LOGITS),
                                     torch.tensor(LABELS))
    assert acc['acc_classes'].item() == pytest.approx(100.)


# ------------------------------------------------------------ bad input
def test_class_without_training_images_is_a_tail_class():
    """GOL divides by no count: a class without training images has
    f = 0 < lambda and is simply a tail class (no error, unlike IIF / ECM)."""
    gol = GOLoss(3, class_statistics=dict(image_count=[5, 0, 5],
                                          num_images=10),
                 lambda_threshold=0.1)
    assert gol.tail_classes.tolist() == [False, True, False]


def test_missing_statistics_and_bad_options_raise():
    with pytest.raises(ValueError, match='GOLoss with drop_loss=True needs '
                       'class_statistics'):
        GOLoss(3)
    with pytest.raises(ValueError, match='lambda_threshold must be'):
        make_gol(lambda_threshold=float('nan'))
    with pytest.raises(ValueError, match=r'logit_range must be \(low, high\)'):
        make_gol(logit_range=(10, -4))


def test_wrong_width_and_non_finite_logits_raise():
    gol = make_gol()
    with pytest.raises(ValueError, match=r'GOLoss: expects 3 logits .*'
                       r'got \(3, 4\)'):
        gol(torch.zeros(3, 4), torch.tensor(LABELS))
    logits = torch.tensor(LOGITS)
    logits[2, 0] = float('nan')
    with pytest.raises(ValueError, match='GOLoss: cls_score is not finite'):
        gol(logits, torch.tensor(LABELS))
    with pytest.raises(ValueError, match='GOLoss: cls_score is not finite'):
        gol.get_activation(logits)
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 3\]'):
        gol(torch.tensor(LOGITS), torch.tensor([0, 1, 7]))
