"""Federated loss (CenterNet2): hand-computed value and gradient, the class
set and its seeded per-(seed, rank, step) draws (resumed from a checkpoint's
buffer), the train-file statistics, the scores of a real mmdet head and bad
input."""
import json
import math
import os.path as osp

import numpy as np
import pytest
import torch

from mmdet_longtail.models.losses.federated_loss import (
    FederatedLoss, federated_class_weights, federated_loss,
    sample_federated_classes)
from mmdet_longtail.models.losses.utils import sampling_rng
from heads import head_losses, raw_head_scores, shared_2fc_head


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def bce(z: float, y: float) -> float:
    return -(y * math.log(sigmoid(z)) + (1 - y) * math.log(1 - sigmoid(z)))


def fed_loss(image_count, **kwargs) -> FederatedLoss:
    return FederatedLoss(
        num_classes=len(image_count),
        class_statistics=dict(image_count=image_count),
        **kwargs)


Z = [[0.5, -1.0, 2.0, 0.0], [-0.3, 1.2, -2.0, 0.7], [1.5, 0.2, -0.4, -1.1]]
LABELS = [1, 4, 3]  # C = 4: RoI 1 is background
MASK = [True, True, False, True]  # S = {0, 1, 3}


def test_value_and_gradient_hand_computed():
    z = torch.tensor(Z, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor(LABELS)
    loss = federated_loss(z, labels, torch.tensor(MASK))
    expected, grad = 0.0, np.zeros((3, 4))
    for i, row in enumerate(Z):
        for j, zij in enumerate(row):
            y = float(LABELS[i] == j)
            if MASK[j]:
                expected += bce(zij, y) / 3
                grad[i, j] = (sigmoid(zij) - y) / 3
    assert loss.dtype == torch.float64
    assert abs(loss.item() - expected) < 1e-12
    loss.backward()
    np.testing.assert_allclose(z.grad.numpy(), grad, rtol=0, atol=1e-12)
    # column 2 is outside S: no gradient at all
    assert (z.grad[:, 2] == 0).all()


def test_reductions_and_gradcheck():
    z = torch.tensor(Z, dtype=torch.float64, requires_grad=True)
    labels, mask = torch.tensor(LABELS), torch.tensor(MASK)
    per_roi = federated_loss(z, labels, mask, 'none')
    assert per_roi.shape == (3, )
    torch.testing.assert_close(per_roi.sum(), federated_loss(
        z, labels, mask, 'sum'))
    torch.testing.assert_close(per_roi.mean(), federated_loss(
        z, labels, mask, 'mean'))
    assert torch.autograd.gradcheck(
        lambda x: federated_loss(x, labels, mask), (z, ))


def test_half_logits_computed_in_float32():
    z = torch.tensor(Z, dtype=torch.float16)
    loss = federated_loss(z, torch.tensor(LABELS), torch.tensor(MASK))
    assert loss.dtype == torch.float32
    ref = federated_loss(z.double(), torch.tensor(LABELS), torch.tensor(MASK))
    assert abs(loss.item() - ref.item()) < 1e-6


def test_class_set_holds_present_classes_and_reaches_k():
    weights = federated_class_weights([100, 1, 4, 9, 16, 25])
    np.testing.assert_allclose(weights, [10, 1, 2, 3, 4, 5])
    labels = np.array([1, 6, 1, 4, 6])  # present {1, 4}; 6 = background
    for step in range(20):
        selected = sample_federated_classes(labels, weights, 4,
                                            sampling_rng(0, 0, step))
        assert selected[[1, 4]].all() and selected.sum() == 4
    # K >= C: every class; |P| > K: the present classes only
    assert sample_federated_classes(labels, weights, 50,
                                    sampling_rng(0, 0, 0)).all()
    many = np.array([0, 1, 2, 3, 4])
    np.testing.assert_array_equal(
        sample_federated_classes(many, weights, 2, sampling_rng(0, 0, 0)),
        [True] * 5 + [False])


def test_negatives_drawn_in_proportion_to_sqrt_image_count():
    # one negative among {0, 2, 3, 5}: P(j) = sqrt(n_j) / (10+2+3+5)
    weights = federated_class_weights([100, 1, 4, 9, 16, 25])
    labels = np.array([1, 4])
    hits = np.zeros(6)
    draws = 4000
    for step in range(draws):
        hits += sample_federated_classes(labels, weights, 3,
                                         sampling_rng(1, 0, step))
    freq = (hits - draws * np.isin(np.arange(6), labels)) / draws
    np.testing.assert_allclose(
        freq, [10 / 20, 0, 2 / 20, 3 / 20, 0, 5 / 20], atol=0.025)


def test_draws_keyed_by_seed_rank_step_and_resumed():
    counts = list(range(1, 201))
    labels = torch.tensor([3, 200, 7, 200])
    first = fed_loss(counts, num_sample_classes=10, seed=5)
    sets = [first.sample_classes(labels) for _ in range(4)]
    assert int(first.sampling_step) == 4
    for step, s in enumerate(sets):
        expected = sample_federated_classes(labels.numpy(),
                                            first.class_weights, 10,
                                            sampling_rng(5, 0, step))
        np.testing.assert_array_equal(s.numpy(), expected)
    assert not all(torch.equal(sets[0], s) for s in sets[1:])
    # a loss resumed from the checkpoint's buffer continues the same draws
    state = {k: v.clone() for k, v in first.state_dict().items()}
    assert set(state) == {'sampling_step'}
    nxt = first.sample_classes(labels)
    resumed = fed_loss(counts, num_sample_classes=10, seed=5)
    resumed.load_state_dict(state)
    assert torch.equal(resumed.sample_classes(labels), nxt)
    # another rank draws differently
    other = sample_federated_classes(labels.numpy(), first.class_weights, 10,
                                     sampling_rng(5, 1, 0))
    assert not np.array_equal(other, sets[0].numpy())


def test_forward_uses_the_step_class_set():
    loss = fed_loss([5, 1, 2, 8, 3], num_sample_classes=3, seed=0)
    z = torch.randn(6, 5, dtype=torch.float64)
    labels = torch.tensor([0, 5, 2, 5, 5, 0])
    value = loss(z, labels)
    mask = sample_federated_classes(labels.numpy(), loss.class_weights, 3,
                                    sampling_rng(0, 0, 0))
    torch.testing.assert_close(
        value, federated_loss(z, labels, torch.from_numpy(mask)),
        rtol=0, atol=1e-12)
    assert loss(z, labels, reduction_override='none').shape == (6, )


def test_statistics_come_from_the_train_file(synthetic_root):
    ann_file = osp.join(synthetic_root, 'annotations', 'lvis_v1_train.json')
    with open(ann_file) as f:
        cats = sorted(json.load(f)['categories'], key=lambda c: c['id'])
    loss = FederatedLoss(num_classes=len(cats), class_statistics=ann_file)
    np.testing.assert_allclose(
        loss.class_weights, np.sqrt([c['image_count'] for c in cats]))


def test_head_scores_are_sigmoid_with_background_last():
    head = shared_2fc_head(
        dict(type='FederatedLoss', num_classes=3,
             class_statistics=dict(image_count=[9, 1, 4])))
    assert head.fc_cls.out_features == 3
    logits = 4 * torch.randn(6, 3)
    scores = raw_head_scores(head, logits)
    assert scores.shape == (6, 4)
    assert ((scores >= 0) & (scores <= 1)).all()
    torch.testing.assert_close(scores[:, :3], logits.sigmoid())
    assert (scores[:, 3] == 0).all()
    losses = head_losses(head, logits, torch.tensor([0, 3, 2, 3, 1, 3]))
    assert torch.isfinite(losses['loss_cls']) and 'acc_classes' in losses


@pytest.mark.parametrize('counts, match', [
    ([3, 0, 2], r'classes \(labels\) \[1\]'),
    ([3, -1, 2], r'image count >= 1'),
])
def test_zero_count_classes_rejected(counts, match):
    with pytest.raises(ValueError, match=match):
        FederatedLoss(
            num_classes=3,
            class_statistics=dict(image_count=counts, num_images=5))


def test_bad_input_rejected():
    loss = fed_loss([3, 1, 2])
    with pytest.raises(ValueError, match=r'cls_score must be \(N, 3\)'):
        loss(torch.zeros(2, 4), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match='not finite'):
        loss(torch.tensor([[0., float('nan'), 0.]]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 3\]'):
        loss(torch.zeros(1, 3), torch.tensor([4]))
    with pytest.raises(ValueError, match='num_sample_classes'):
        fed_loss([3, 1, 2], num_sample_classes=0)
    with pytest.raises(ValueError, match='freq_weight_power'):
        fed_loss([3, 1, 2], freq_weight_power=float('nan'))
    with pytest.raises(ValueError, match='needs class_statistics'):
        FederatedLoss(num_classes=3)
    with pytest.raises(ValueError, match='num_classes=4 does not match'):
        FederatedLoss(num_classes=4, class_statistics=dict(image_count=[1]))
