"""ACSLoss: the xi-rule and the three background rules by hand (float64),
the seeded background draws and their resume, gradcheck, through mmdet's
Shared2FCBBoxHead, bad input."""
import math

import numpy as np
import pytest
import torch

from mmdet_longtail.models.losses.acsl_loss import ACSLoss, acsl_loss
from heads import head_losses, raw_head_scores, shared_2fc_head

# labels 0: rare (5 images), 1: common (50), 2: frequent (500)
STATS = dict(image_count=[5, 50, 500], num_images=1000)


def bce(x, y):
    p = 1 / (1 + math.exp(-x))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


# sigmoid(1) = 0.731 >= 0.7, sigmoid(0.5) = 0.622 < 0.7
Z = torch.tensor([[2.0, 1.0, 0.5],    # label 0: class 1 confused
                  [-1.0, 0.5, 3.0],   # label 1: class 2 confused
                  [1.0, 0.5, -2.0],   # background
                  [0.5, 0.5, 0.5]],   # label 2: nothing confused
                 dtype=torch.float64)
LABELS = torch.tensor([0, 1, 3, 2])


def by_hand(bg_row_weights):
    w = [[1, 1, 0], [0, 1, 1], bg_row_weights, [0, 0, 1]]
    return [
        sum(w[i][j] * bce(Z[i, j].item(), float(j == g)) for j in range(3))
        for i, g in enumerate(LABELS.tolist())
    ]


@pytest.mark.parametrize('background, bg_row', [
    ('threshold', [1, 0, 0]),  # xi-rule: only class 0 (p = 0.731)
    ('all', [1, 1, 1]),
])
def test_xi_rule_by_hand(background, bg_row):
    loss = ACSLoss(num_classes=3, background=background)
    got = loss(Z, LABELS, reduction_override='none')
    assert got.dtype == torch.float64
    assert got.tolist() == pytest.approx(by_hand(bg_row), rel=1e-12)
    assert loss(Z, LABELS).item() == pytest.approx(
        sum(by_hand(bg_row)) / 4, rel=1e-12)


def test_frequency_group_background_by_hand():
    loss = ACSLoss(num_classes=3, class_statistics=STATS, seed=7)
    assert loss.class_groups.tolist() == [0, 1, 2]
    got = loss(Z, LABELS, reduction_override='none')
    # the draws of step 0 of seed 7 on rank 0
    draws = np.random.default_rng([7, 0, 0]).random((4, 3))
    bg_row = (draws[2] < np.array([0.01, 0.1, 1.0])).astype(float).tolist()
    assert bg_row[2] == 1.0  # the frequent classes always
    assert got.tolist() == pytest.approx(by_hand(bg_row), rel=1e-12)
    assert int(loss.sampling_step) == 1


def test_frequency_group_rates_and_resume():
    loss = ACSLoss(num_classes=3, class_statistics=STATS, seed=0)
    weights = torch.stack([
        loss.background_weights(2000, torch.zeros(1)) for _ in range(3)])
    rates = weights.mean((0, 1))
    assert rates[2] == 1 and abs(rates[1] - 0.1) < 0.01 and \
        abs(rates[0] - 0.01) < 0.004
    # resume from step 2: the third draw again
    resumed = ACSLoss(num_classes=3, class_statistics=STATS, seed=0)
    state = loss.state_dict()
    state['sampling_step'] = torch.tensor(2)
    resumed.load_state_dict(state)
    torch.testing.assert_close(
        resumed.background_weights(2000, torch.zeros(1)), weights[2])


def test_functional_default_is_the_xi_rule():
    torch.testing.assert_close(
        acsl_loss(Z, LABELS, 0.7, reduction='sum'),
        ACSLoss(num_classes=3, background='threshold')(
            Z, LABELS, reduction_override='sum'))


@pytest.mark.parametrize('background', ['threshold', 'all',
                                        'frequency_group'])
def test_gradcheck(background):
    loss = ACSLoss(num_classes=3, background=background, seed=1,
                   class_statistics=STATS)
    z = (Z + 0.01).clone().requires_grad_(True)  # away from xi

    def fn(x):
        loss.sampling_step.zero_()
        loss._step = None
        return loss(x, LABELS)

    assert torch.autograd.gradcheck(fn, (z, ))


def test_through_shared2fc_bbox_head():
    head = shared_2fc_head(
        dict(type='ACSLoss', num_classes=3, background='threshold'))
    assert head.fc_cls.out_features == 3
    logits = Z.float()
    scores = raw_head_scores(head, logits)
    torch.testing.assert_close(scores[:, :3], logits.sigmoid())
    assert (scores[:, 3] == 0).all()
    losses = head_losses(head, logits, LABELS)
    assert losses['loss_cls'].item() == pytest.approx(
        sum(by_hand([1, 0, 0])) / 4, rel=1e-6)
    assert 'acc_classes' in losses


@pytest.mark.parametrize('kwargs, match', [
    (dict(score_thr=1.0), r'score_thr \(xi\) must lie in \(0, 1\), got 1.0'),
    (dict(background='none'), r"background must be one of .*'none'"),
    (dict(bg_suppress_prob=(0.1, 2.0, 1.0)), 'bg_suppress_prob must be 3'),
    (dict(num_classes=0), 'num_classes must be >= 1'),
    (dict(class_statistics=None), 'needs class_statistics'),
])
def test_bad_arguments(kwargs, match):
    kwargs = dict(dict(num_classes=3, class_statistics=STATS), **kwargs)
    with pytest.raises(ValueError, match=match):
        ACSLoss(**kwargs)


def test_bad_inputs():
    loss = ACSLoss(num_classes=3, background='all')
    with pytest.raises(ValueError, match=r'no background logit.*\(N, 3\)'):
        loss(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 3\]'):
        loss(torch.zeros(2, 3), torch.tensor([0, 5]))
