"""Effective Class-Margin loss (Cho and Kraehenbuehl, ECCV 2022): margins
and weights from the train statistics, value and gradient of a
hand-computed example (float64 to 1e-12), gradcheck, the test-time scores
through a real Shared2FCBBoxHead and clear errors."""
import math

import numpy as np
import pytest
import torch

from mmdet_longtail.datasets.class_stats import get_class_statistics
from mmdet_longtail.models.losses.ecm_loss import ECMLoss, ecm_sample_counts
from heads import raw_head_scores, shared_2fc_head

LN2, LN3 = math.log(2), math.log(3)
# 3 classes in 1, 16 and 81 train images; with fg_bg_ratio = 1 the
# background count is 1 + 16 + 81 = 98, so n = [1, 16, 81, 98] and
# sum(n) = 196, n- = 196 - n = [195, 180, 115, 98]:
#   column  n+   n-   m+        m-        m+ - m-    w = a log((1 + a) / a)
#   0        1  195   0.237128  1.555378  -1.318250  0.997445
#   1       16  180   0.435687  1.040779  -0.605092  0.958025
#   2       81  115   0.650296  0.737917  -0.087621  0.756988
#   bg      98   98   ln 2      ln 2       0         ln 2
STATS = dict(image_count=[1, 16, 81], num_images=100)
COUNTS = [1, 16, 81, 98]


def hand_column(j: int):
    """(m+, m-, w) of column j, written out from the paper's Theorem 2."""
    pos = COUNTS[j]
    neg = sum(COUNTS) - pos
    m_pos = math.log((pos**0.25 + neg**0.25) / neg**0.25)
    m_neg = math.log((pos**0.25 + neg**0.25) / pos**0.25)
    a = neg / pos
    return m_pos, m_neg, a * math.log((1 + a) / a)


COLUMNS = [hand_column(j) for j in range(4)]
SHIFT = [m_pos - m_neg for m_pos, m_neg, _ in COLUMNS]
WEIGHT = [w for _, _, w in COLUMNS]
# logits z = (-shift + d) / 2 make 2 z + m+ - m- = d, so that
# p = e^(z + m+) / (e^(z + m+) + e^(-z + m-)) = sigmoid(d):
#   RoI 0 (class 0): d = [ln 3, 0, 0, 0]       p = [3/4, 1/2, 1/2, 1/2]
#   RoI 1 (class 1): d = 0                     p = 1/2 everywhere
#   RoI 2 (bg = 3):  d = [0, 0, -ln 3, ln 3]   p = [1/2, 1/2, 1/4, 3/4]
D = [[LN3, 0., 0., 0.], [0., 0., 0., 0.], [0., 0., -LN3, LN3]]
LOGITS = [[(-s + d) / 2 for s, d in zip(SHIFT, row)] for row in D]
LABELS = [0, 1, 3]
P = [[3 / 4, 1 / 2, 1 / 2, 1 / 2], [1 / 2] * 4, [1 / 2, 1 / 2, 1 / 4, 3 / 4]]
Y = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]]
# BCE(p, y): -log(3/4) = 0.287682 for the confident right answers,
# ln 2 = 0.693147 for p = 1/2; row loss = sum_j w_j BCE_ij
BCE = [[-math.log(3 / 4), LN2, LN2, LN2], [LN2] * 4,
       [LN2, LN2, -math.log(3 / 4), -math.log(3 / 4)]]
ROW_LOSSES = [sum(w * b for w, b in zip(WEIGHT, row)) for row in BCE]
HAND_LOSS = sum(ROW_LOSSES) / 3
# dL/dz_ij = 2 w_j (p_ij - y_ij) / N
HAND_GRAD = [[2 * w * (p - y) / 3 for w, p, y in zip(WEIGHT, prow, yrow)]
             for prow, yrow in zip(P, Y)]


def make_ecm(**kwargs) -> ECMLoss:
    kwargs.setdefault('fg_bg_ratio', 1.0)
    return ECMLoss(3, class_statistics=STATS, **kwargs)


def test_margins_and_weights_from_the_counts():
    ecm = make_ecm()
    expected = torch.tensor(COLUMNS, dtype=torch.float64)
    torch.testing.assert_close(ecm.pos_margin, expected[:, 0], rtol=0,
                               atol=1e-12)
    torch.testing.assert_close(ecm.neg_margin, expected[:, 1], rtol=0,
                               atol=1e-12)
    torch.testing.assert_close(ecm.class_weights, expected[:, 2], rtol=0,
                               atol=1e-12)
    assert WEIGHT[0] == pytest.approx(0.997445, abs=1e-6)
    assert SHIFT[0] == pytest.approx(-1.318250, abs=1e-6)
    # n+ = n- for the background column: equal margins ln 2, weight ln 2
    assert COLUMNS[3] == pytest.approx((LN2, LN2, LN2), abs=1e-15)
    # the margin difference is a quarter of the log count ratio
    for j, shift in enumerate(SHIFT):
        assert shift == pytest.approx(
            0.25 * math.log(COUNTS[j] / (196 - COUNTS[j])), abs=1e-12)
    # the authors' background ratio by default
    default = ECMLoss(3, class_statistics=STATS)
    assert default.fg_bg_ratio == 6.3313
    np.testing.assert_allclose(
        ecm_sample_counts([1, 16, 81]), [1, 16, 81, 6.3313 * 98])
    assert 'class_weights' not in ecm.state_dict()


def test_float64_value_and_gradient_equal_hand_computation():
    logits = torch.tensor(LOGITS, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor(LABELS)
    ecm = make_ecm()
    loss = ecm(logits, labels)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(HAND_LOSS, rel=0, abs=1e-12)
    torch.testing.assert_close(
        ecm(logits, labels, reduction_override='none'),
        torch.tensor(ROW_LOSSES, dtype=torch.float64), rtol=0, atol=1e-12)
    assert ecm(logits, labels, reduction_override='sum').item() == \
        pytest.approx(sum(ROW_LOSSES), rel=0, abs=1e-12)
    loss.backward()
    torch.testing.assert_close(
        logits.grad, torch.tensor(HAND_GRAD, dtype=torch.float64), rtol=0,
        atol=1e-12)


def test_normalised_by_rois_and_half_precision():
    logits, labels = torch.tensor(LOGITS), torch.tensor(LABELS)
    ecm = make_ecm()
    # the authors divide by the number of RoIs: label_weights and
    # avg_factor do not change the loss
    weighted = ecm(logits, labels, torch.tensor([2., 0., 5.]), avg_factor=9.)
    assert weighted.item() == pytest.approx(HAND_LOSS, abs=1e-6)
    assert make_ecm(loss_weight=2.)(logits, labels).item() == \
        pytest.approx(2 * HAND_LOSS, abs=1e-6)
    half = logits.half().requires_grad_()
    loss = ecm(half, labels)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(HAND_LOSS, abs=2e-3)
    loss.backward()
    assert half.grad.dtype == torch.float16


def test_gradcheck_float64():
    logits = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 3, 1])
    ecm = ECMLoss(3, class_statistics=STATS)
    for reduction in ('mean', 'sum', 'none'):
        assert torch.autograd.gradcheck(
            lambda z: ecm(z, labels, reduction_override=reduction),
            (logits, ))


def test_large_logits_stay_finite():
    logits = torch.tensor([[200., -200., 90., -90.]], requires_grad=True)
    loss = make_ecm()(logits, torch.tensor([1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_margins_from_the_train_annotation_file(synthetic_root):
    ann_file = synthetic_root + 'annotations/lvis_v1_train.json'
    stats = get_class_statistics(ann_file)
    ecm = ECMLoss(30, class_statistics=ann_file)
    n = np.append(stats.image_count, 6.3313 * stats.image_count.sum())
    shift = 0.25 * np.log(n / (n.sum() - n))
    np.testing.assert_allclose(
        (ecm.pos_margin - ecm.neg_margin).numpy(), shift, atol=1e-12)
    # rarer classes: a harder positive, a larger weight
    order = np.argsort(stats.image_count)
    assert ecm.pos_margin[order[0]] < ecm.pos_margin[order[-1]]
    assert ecm.class_weights[order[0]] > ecm.class_weights[order[-1]]


def test_scores_through_a_shared_2fc_head():
    """C + 1 outputs; scores sigmoid(z_c) (1 - sigmoid(z_bg)), background
    sigmoid(z_bg) last, all in [0, 1]."""
    head = shared_2fc_head(dict(type='ECMLoss', num_classes=3,
                                class_statistics=STATS))
    assert head.custom_cls_channels and head.fc_cls.out_features == 4
    logits = 3 * torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    scores = raw_head_scores(head, logits)
    sig = logits.sigmoid()
    torch.testing.assert_close(scores[:, :3], sig[:, :3] * (1 - sig[:, 3:]))
    torch.testing.assert_close(scores[:, 3], sig[:, 3])
    assert bool(((scores >= 0) & (scores <= 1)).all())
    assert bool((scores[:, :3].sum(1) <= 3 * (1 - sig[:, 3]) + 1e-6).all())
    acc = head.loss_cls.get_accuracy(torch.tensor(LOGITS),
                                     torch.tensor(LABELS))
    assert set(acc) == {'acc_objectness', 'acc_classes'}


# ------------------------------------------------------------ bad input
def test_class_without_training_images_raises():
    with pytest.raises(ValueError, match=r'ECMLoss needs a training image '
                       r'count >= 1.*classes \(labels\) \[2\]'):
        ECMLoss(3, class_statistics=dict(image_count=[3, 1, 0],
                                         num_images=5))


def test_missing_statistics_and_bad_options_raise():
    with pytest.raises(ValueError, match='ECMLoss needs class_statistics'):
        ECMLoss(3)
    with pytest.raises(ValueError, match='fg_bg_ratio must be a finite'):
        make_ecm(fg_bg_ratio=0)


def test_wrong_width_and_non_finite_logits_raise():
    ecm = make_ecm()
    with pytest.raises(ValueError, match=r'ECMLoss: expects 4 logits .*'
                       r'got \(3, 3\)'):
        ecm(torch.zeros(3, 3), torch.tensor(LABELS))
    logits = torch.tensor(LOGITS)
    logits[0, 3] = float('inf')
    with pytest.raises(ValueError, match='ECMLoss: cls_score is not finite'):
        ecm(logits, torch.tensor(LABELS))
    with pytest.raises(ValueError, match='ECMLoss: cls_score is not finite'):
        ecm.get_activation(logits)
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 3\]'):
        ecm(torch.tensor(LOGITS), torch.tensor([0, -1, 3]))
