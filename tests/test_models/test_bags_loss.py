"""Balanced Group Softmax (Li et al., CVPR 2020): group assignment, layout,
loss and gradient on a hand-computed example, "others" sampling, inference
scores, and clear errors."""
import json
import math
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmdet_longtail.datasets.class_stats import get_class_statistics
from mmdet_longtail.models.losses.group_softmax_loss import (
    GroupSoftmaxLoss, assign_groups, group_softmax_loss, sample_group_weights)

# 5 classes, default bounds (10, 100, 1000):
#   class 0:    5 instances -> G1      class 3: 5000 -> G4
#   class 1:   50           -> G2      class 4:   20 -> G2
#   class 2:  500           -> G3
# layout [G1 | G2 | G3 | G4 | G_bg], "others" first in each group:
#   col 0 1 | 2 3 4 | 5 6 | 7 8 | 9 10
#   G1 = [others, c0], G2 = [others, c1, c4], G3 = [others, c2],
#   G4 = [others, c3], G_bg = [foreground, background]
COUNTS = [5, 50, 500, 5000, 20]
COLUMNS = [1, 3, 6, 8, 4]
WIDTHS = (2, 3, 2, 2, 2)

# 3 RoIs: class 4 (in G2), class 0 (in G1), background (label 5)
LOGITS = [
    [0., 1., 0., 1., 2., 0., 0., 0., 0., 1., 0.],
    [1., 2., 0., 0., 0., 1., 0., 0., 3., 2., 0.],
    [0., 0., 1., 0., 0., 0., 0., 0., 0., 0., 1.],
]
LABELS = [4, 0, 5]


def instances(counts) -> dict:
    """class_statistics with these per-class instance (and image)
    counts."""
    return dict(image_count=counts, instance_count=counts)


def make_loss(**kwargs) -> GroupSoftmaxLoss:
    kwargs.setdefault('seed', 0)
    return GroupSoftmaxLoss(num_classes=5, class_statistics=instances(COUNTS), **kwargs)


def test_bisect_right_at_the_boundaries():
    counts = [1, 9, 10, 99, 100, 999, 1000, 123456]
    assert assign_groups(counts).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert assign_groups(counts, (5, 50)).tolist() == [0, 1, 1, 2, 2, 2, 2, 2]


@pytest.mark.parametrize('sizes,num_channels', [
    ((200, 412, 334, 257), 1203 + 6),  # LVIS v1 (reference notes, sec. 0)
    ((294, 453, 302, 181), 1230 + 6),  # LVIS v0.5; BAGS code: 1231 + 5
])
def test_lvis_group_sizes(sizes, num_channels):
    """Counts with the published group sizes, one class on each side of every
    boundary, in shuffled label order."""
    ranges = [(1, 9), (10, 99), (100, 999), (1000, 50000)]
    counts = np.concatenate([
        np.linspace(lo, hi, n).round().astype(int)
        for (lo, hi), n in zip(ranges, sizes)
    ])
    rng = np.random.default_rng(0)
    counts = counts[rng.permutation(len(counts))]
    loss = GroupSoftmaxLoss(num_classes=len(counts), class_statistics=instances(counts))
    assert loss.layout.group_sizes == sizes
    assert loss.get_cls_channels(len(counts)) == num_channels
    # each group lists its classes in ascending label order
    columns = loss.layout.class_columns
    for k in range(4):
        members = np.flatnonzero(loss.layout.group_of_class == k)
        assert (np.diff(columns[members]) == 1).all()
        assert columns[members[0]] == loss.layout.group_starts[k] + 1


def test_layout_of_the_five_class_example():
    loss = make_loss()
    assert loss.group_widths == WIDTHS
    assert loss.layout.class_columns.tolist() == COLUMNS
    assert loss.get_cls_channels(5) == 5 + 1 + 5
    assert loss.layout.background_column == 10


def test_statistics_come_from_the_annotation_file(synthetic_root):
    ann_file = synthetic_root + 'annotations/lvis_v1_train.json'
    with open(ann_file) as f:
        ann = json.load(f)
    per_cat = Counter(a['category_id'] for a in ann['annotations'])
    cat_ids = sorted(c['id'] for c in ann['categories'])
    expected = [
        sum(1 for cid in cat_ids if lo <= per_cat[cid] < hi)
        for lo, hi in [(1, 3), (3, 8), (8, 20), (20, 10**9)]
    ]
    loss = GroupSoftmaxLoss(
        30, class_statistics=ann_file, group_bounds=(3, 8, 20))
    assert loss.layout.group_sizes == tuple(expected)


def test_loss_equals_hand_computation():
    """L = sum_k sum_i w_ik (-log softmax_k(z_i)[t_ik]) / n_k, every RoI kept
    (beta * n_in >= n_others), G3 and G4 have no RoI and add nothing."""
    e = math.e
    # G1 = cols 0..1, targets: RoI0 others, RoI1 c0 (pos 1), RoI2 others
    g1 = (math.log(1 + e) - 0) + (math.log(e + e**2) - 2) + math.log(2)
    # G2 = cols 2..4, targets: RoI0 c4 (pos 2), RoI1 others, RoI2 others
    g2 = (math.log(1 + e + e**2) - 2) + math.log(3) + (math.log(e + 2) - 1)
    # G_bg = cols 9..10, targets: fg, fg, bg
    g_bg = (math.log(e + 1) - 1) + (math.log(e**2 + 1) - 2) + \
        (math.log(1 + e) - 1)
    expected = (g1 + g2 + g_bg) / 3

    loss = make_loss(loss_weight=2.0)
    value = loss(torch.tensor(LOGITS, dtype=torch.float64),
                 torch.tensor(LABELS))
    assert value.dtype == torch.float64
    assert value.item() == pytest.approx(2 * expected, rel=0, abs=1e-12)
    value32 = loss(torch.tensor(LOGITS), torch.tensor(LABELS))
    assert value32.item() == pytest.approx(2 * expected, rel=1e-6)


def test_gradient_equals_analytic_form():
    """dL/dz_i on group k's columns = w_ik / n_k (softmax_k(z_i) - onehot)."""
    logits = torch.tensor(LOGITS, dtype=torch.float64, requires_grad=True)
    make_loss()(logits, torch.tensor(LABELS)).backward()

    z = torch.tensor(LOGITS, dtype=torch.float64)
    expected = torch.zeros_like(z)
    targets = {0: [0, 1, 0], 1: [2, 0, 0], 4: [0, 0, 1]}  # groups with RoIs
    starts = np.cumsum((0, ) + WIDTHS[:-1])
    for k, t in targets.items():
        cols = slice(starts[k], starts[k] + WIDTHS[k])
        onehot = F.one_hot(torch.tensor(t), WIDTHS[k]).double()
        expected[:, cols] = (z[:, cols].softmax(1) - onehot) / 3
    assert torch.allclose(logits.grad, expected, atol=1e-12)
    # the empty groups G3 (cols 5, 6) and G4 (cols 7, 8) get no gradient
    assert (logits.grad[:, 5:9] == 0).all()


def test_gradcheck_with_sampling_fixed():
    targets = torch.tensor([[0, 1, 0, 0], [2, 0, 1, 0], [0, 0, 0, 1],
                            [0, 0, 0, 0], [0, 0, 0, 1]])
    weights = torch.tensor([[1., 1., 0., 1.], [1., 1., 1., 0.],
                            [1., 1., 1., 1.], [0., 0., 0., 0.],
                            [1., 1., 1., 1.]])
    columns = targets + torch.tensor([0, 2, 5, 7, 9])[:, None]  # starts
    avg = torch.tensor([3., 3., 4., 1., 4.], dtype=torch.float64)
    z = torch.randn(4, 11, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: group_softmax_loss(x, columns, weights, WIDTHS, avg), (z, ))


def test_far_apart_groups_stay_finite():
    """Groups 1000 logits apart: every group's normaliser is exact."""
    logits = torch.tensor(LOGITS, dtype=torch.float64)
    logits[:, :2] -= 1000.  # G1
    logits[:, 9:] += 1000.  # G_bg
    value = make_loss()(logits, torch.tensor(LABELS))
    ref = make_loss()(torch.tensor(LOGITS, dtype=torch.float64),
                      torch.tensor(LABELS))
    # a shift of a whole group does not change its softmax
    assert value.item() == pytest.approx(ref.item(), rel=1e-9)


def test_empty_group_contributes_zero():
    """No in-group RoI: whatever its logits, the group adds no loss."""
    loss = make_loss()
    logits = torch.tensor(LOGITS)
    base = loss(logits, torch.tensor(LABELS))
    moved = logits.clone()
    moved[:, 5:9] = torch.tensor([9., -4., 3., 7.])  # G3 and G4 columns
    assert loss(moved, torch.tensor(LABELS)).item() == pytest.approx(
        base.item(), rel=1e-7)


def test_ignored_rois_count_nowhere():
    """A RoI with label weight 0 is neither in-group nor "others"."""
    logits = torch.tensor(LOGITS + [[5.] * 11])
    labels = torch.tensor(LABELS + [0])
    value = make_loss()(logits, labels, torch.tensor([1., 1., 1., 0.]))
    ref = make_loss()(torch.tensor(LOGITS), torch.tensor(LABELS))
    assert value.item() == pytest.approx(ref.item(), rel=1e-7)


def _others_setup(num_others=10):
    """1 RoI of class 0 (G1) and ``num_others`` background RoIs."""
    labels = np.array([0] + [5] * num_others)
    table = make_loss().target_table_np
    return table[:, labels], np.ones(len(labels), dtype=np.float32)


def test_others_subsampled_to_beta_times_in_group():
    targets, lw = _others_setup()
    rng = np.random.default_rng(0)
    weights = sample_group_weights(targets, lw, 3.0, rng)
    # G1: the in-group RoI + int(3 * 1) of the 10 "others"
    assert weights[0, 0] == 1 and weights[0, 1:].sum() == 3
    assert (weights[1:4] == 0).all()  # no in-group RoI: nothing
    assert (weights[4] == 1).all()  # background group: every RoI
    # beta * n_in >= n_others keeps every "others" RoI
    all_kept = sample_group_weights(targets, lw, 10.0, rng)
    assert (all_kept[0] == 1).all()
    # RoIs with label weight 0 are never drawn
    lw[1:6] = 0
    weights = sample_group_weights(targets, lw, 3.0, rng)
    assert weights[0, 1:6].sum() == 0 and weights[0, 6:].sum() == 3


def test_others_sampling_is_uniform():
    targets, lw = _others_setup()
    rng = np.random.default_rng(1)
    hits = np.zeros(10)
    draws = 3000
    for _ in range(draws):
        hits += sample_group_weights(targets, lw, 3.0, rng)[0, 1:]
    # each "others" RoI is kept with probability 3/10: 900 +- 6 sigma (25)
    assert np.abs(hits - draws * 0.3).max() < 150


def test_seeded_sampling_reproduces():
    targets_logits = torch.randn(40, 11)
    labels = torch.tensor([0] + [5] * 39)

    def run(**kwargs):
        loss = make_loss(beta=2.0, **kwargs)
        return [loss(targets_logits, labels).item() for _ in range(4)]

    assert run(seed=7) == run(seed=7)
    assert run(seed=7) != run(seed=8)
    # default: the run's seed (mmengine seeds torch with randomness.seed)
    torch.manual_seed(123)
    a = run(seed=None)
    torch.manual_seed(123)
    assert run(seed=None) == a


def test_sampling_resumes_from_the_state_dict():
    logits, labels = torch.randn(40, 11), torch.tensor([0] + [5] * 39)
    first = make_loss(beta=2.0)
    values = [first(logits, labels).item() for _ in range(4)]
    assert first.sampling_step.item() == 4

    halfway = make_loss(beta=2.0)
    [halfway(logits, labels) for _ in range(2)]
    resumed = make_loss(beta=2.0)
    resumed(logits, labels)  # a step of its own, then the checkpoint's
    resumed.load_state_dict(halfway.state_dict())
    assert [resumed(logits, labels).item() for _ in range(2)] == values[2:]


def test_inference_hand_example():
    """p(c) = P_bg(fg) * in-group probability, p(bg) = P_bg(bg)."""
    scores = make_loss().get_activation(torch.tensor(LOGITS))
    e = math.e
    p_fg = e / (e + 1)  # RoI 0: bg group logits (1, 0)
    expected = [
        p_fg * e / (1 + e),  # c0: G1 = (0, 1)
        p_fg * e / (1 + e + e**2),  # c1: G2 = (0, 1, 2)
        p_fg * 1 / 2,  # c2: G3 = (0, 0)
        p_fg * 1 / 2,  # c3: G4 = (0, 0)
        p_fg * e**2 / (1 + e + e**2),  # c4
        1 / (e + 1),  # background
    ]
    assert scores[0].tolist() == pytest.approx(expected, rel=1e-6)


def test_inference_invariants():
    counts = np.random.default_rng(0).integers(1, 3000, size=60)
    loss = GroupSoftmaxLoss(60, class_statistics=instances(counts), seed=0)
    logits = torch.randn(200, loss.layout.num_channels) * 4
    scores = loss.get_activation(logits)
    assert scores.shape == (200, 61)
    assert (scores >= 0).all() and (scores <= 1).all()
    bg = logits[:, -2:].softmax(1)
    assert torch.allclose(scores[:, -1], bg[:, 1])
    for k in range(4):
        members = torch.from_numpy(loss.layout.group_of_class == k)
        kept = scores[:, :-1][:, members].sum(1)
        assert (kept <= bg[:, 0] + 1e-6).all()


def test_accuracy_uses_merged_scores():
    acc = make_loss().get_accuracy(torch.tensor(LOGITS), torch.tensor(LABELS))
    # RoI 0 (label 4): c0 = 0.731 * e / (1 + e) = 0.534 beats
    #   c4 = 0.731 * e^2 / (1 + e + e^2) = 0.486 -> wrong
    # RoI 1 (label 0): c3 = 0.881 * e^3 / (1 + e^3) = 0.839 beats
    #   c0 = 0.881 * e^2 / (e + e^2) = 0.644 -> wrong
    # RoI 2 (background): bg = e / (1 + e) = 0.731 -> right
    assert acc['acc'].item() == pytest.approx(100 / 3)


@pytest.mark.parametrize('bounds', [(10, 10, 1000), (100, 10), (), (0, 5),
                                    (10.5, 100)])
def test_bad_group_bounds(bounds):
    with pytest.raises(ValueError, match='group_bounds'):
        make_loss(group_bounds=bounds)


def test_zero_instance_class_is_an_error():
    with pytest.raises(ValueError, match=r"class 1 \('1'\) has 0 training"):
        GroupSoftmaxLoss(3, class_statistics=instances([5, 0, 7]))


def test_zero_instance_class_in_annotation_file(tmp_path):
    ann = dict(
        images=[dict(id=1, width=10, height=10)],
        annotations=[dict(id=1, image_id=1, category_id=1, bbox=[0, 0, 2, 2],
                          area=4)],
        categories=[dict(id=1, name='cat'), dict(id=2, name='never_seen')])
    path = tmp_path / 'train.json'
    path.write_text(json.dumps(ann))
    with pytest.raises(ValueError, match=r"train.json: class 1 \('never_seen"):
        GroupSoftmaxLoss(2, class_statistics=str(path))
    with pytest.raises(ValueError, match='num_classes=3 does not match'):
        GroupSoftmaxLoss(3, class_statistics=str(path))
    assert get_class_statistics(str(path)).num_classes == 2


def test_other_bad_input():
    with pytest.raises(ValueError, match='needs class_statistics'):
        GroupSoftmaxLoss(5)
    with pytest.raises(ValueError, match='beta'):
        make_loss(beta=0)
    with pytest.raises(ValueError, match='expects 11 logits.*bags_convert'):
        make_loss()(torch.zeros(2, 6), torch.tensor([0, 5]))
