"""Inverse Image Frequency loss (Alexandridis et al., TIP 2023): the
weights from the train statistics, value and gradient of a hand-computed
example (float64 to 1e-12), gradcheck, the reduction of mmdet's
CrossEntropyLoss, the test-time scores through a real Shared2FCBBoxHead and
clear errors."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmdet_longtail.datasets.class_stats import get_class_statistics
from mmdet_longtail.models.losses.iif_loss import IIFLoss, iif_weights
from heads import raw_head_scores, shared_2fc_head

# 8 annotated train images; classes in 1, 2 and 4 of them. With log base 2
# the weights are w = [log2(8/1), log2(8/2), log2(8/4), bg 1] = [3, 2, 1, 1]
STATS = dict(image_count=[1, 2, 4], num_images=8)
W = [3., 2., 1., 1.]
LN2, LN3 = math.log(2), math.log(3)
# logits z chosen so that the scaled logits z' = w * z are simple:
#   RoI 0 (class 0): z' = [ln 2, 0, 0, 0]     exp = [2, 1, 1, 1] / 5
#   RoI 1 (class 1): z' = [0, ln 3, 0, ln 2]  exp = [1, 3, 1, 2] / 7
#   RoI 2 (bg = 3):  z' = [ln 4, 0, ln 2, 0]  exp = [4, 1, 2, 1] / 8
LOGITS = [[LN2 / 3, 0., 0., 0.], [0., LN3 / 2, 0., LN2],
          [2 * LN2 / 3, 0., LN2, 0.]]
LABELS = [0, 1, 3]
PROBS = [[2 / 5, 1 / 5, 1 / 5, 1 / 5], [1 / 7, 3 / 7, 1 / 7, 2 / 7],
         [1 / 2, 1 / 8, 1 / 4, 1 / 8]]
# CE = -log p_label: ln(5/2), ln(7/3), ln(8)
ROW_LOSSES = [math.log(5 / 2), math.log(7 / 3), math.log(8)]
# = (0.916291 + 0.847298 + 2.079442) / 3 = 1.281010, the mean over 3 RoIs
HAND_LOSS = sum(ROW_LOSSES) / 3
# dL/dz_ij = w_j (p_ij - y_ij) / N:
#   RoI 0: [3 (2/5 - 1), 2/5, 1/5, 1/5] / 3
#   RoI 1: [3/7, 2 (3/7 - 1), 1/7, 2/7] / 3
#   RoI 2: [3/2, 2/8, 1/4, 1/8 - 1] / 3
HAND_GRAD = [[-9 / 5, 2 / 5, 1 / 5, 1 / 5], [3 / 7, -8 / 7, 1 / 7, 2 / 7],
             [3 / 2, 1 / 4, 1 / 4, -7 / 8]]


def make_iif(**kwargs) -> IIFLoss:
    kwargs.setdefault('log_base', 2)
    return IIFLoss(3, class_statistics=STATS, **kwargs)


def test_weights_from_the_counts_in_each_log_base():
    assert make_iif().logit_weights.tolist() == W
    natural = IIFLoss(3, class_statistics=STATS).logit_weights
    torch.testing.assert_close(
        natural,
        torch.tensor([math.log(8), math.log(4), math.log(2), 1.],
                     dtype=torch.float64), rtol=0, atol=1e-15)
    ten = iif_weights([1, 10, 100], 1000, log_base=10)
    np.testing.assert_allclose(ten, [3, 2, 1, 1], rtol=0, atol=1e-15)
    # derived from the data set, so not saved in checkpoints
    assert 'logit_weights' not in make_iif().state_dict()


def test_float64_value_and_gradient_equal_hand_computation():
    logits = torch.tensor(LOGITS, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor(LABELS)
    iif = make_iif()
    torch.testing.assert_close(
        iif.get_activation(logits),
        torch.tensor(PROBS, dtype=torch.float64), rtol=0, atol=1e-12)
    loss = iif(logits, labels)
    assert loss.dtype == torch.float64
    assert HAND_LOSS == pytest.approx(1.281010, abs=1e-6)
    assert loss.item() == pytest.approx(HAND_LOSS, rel=0, abs=1e-12)
    torch.testing.assert_close(
        iif(logits, labels, reduction_override='none'),
        torch.tensor(ROW_LOSSES, dtype=torch.float64), rtol=0, atol=1e-12)
    assert iif(logits, labels, reduction_override='sum').item() == \
        pytest.approx(sum(ROW_LOSSES), rel=0, abs=1e-12)
    loss.backward()
    torch.testing.assert_close(
        logits.grad, torch.tensor(HAND_GRAD, dtype=torch.float64) / 3,
        rtol=0, atol=1e-12)


def test_float32_and_half_precision():
    loss = make_iif()(torch.tensor(LOGITS), torch.tensor(LABELS))
    assert loss.item() == pytest.approx(HAND_LOSS, abs=1e-6)
    half = torch.tensor(LOGITS).half().requires_grad_()
    loss = make_iif()(half, torch.tensor(LABELS))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(HAND_LOSS, abs=2e-3)
    loss.backward()
    assert half.grad.dtype == torch.float16


def test_gradcheck_float64():
    logits = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 3, 1])
    iif = IIFLoss(3, class_statistics=STATS)
    for reduction in ('mean', 'sum', 'none'):
        assert torch.autograd.gradcheck(
            lambda z: iif(z, labels, reduction_override=reduction),
            (logits, ))


def test_reduced_as_mmdet_cross_entropy_of_the_scaled_logits():
    """label_weights and avg_factor as mmdet's CrossEntropyLoss, which the
    softmax baseline uses: IIF is that loss of w * z."""
    from mmdet.models.losses import CrossEntropyLoss
    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(10, 4, generator=gen)
    labels = torch.randint(0, 4, (10, ), generator=gen)
    weights = torch.rand(10, generator=gen)
    iif = IIFLoss(3, class_statistics=STATS, loss_weight=2.)
    expected = CrossEntropyLoss(loss_weight=2.)(
        logits * torch.tensor([math.log(8), math.log(4), math.log(2), 1.]),
        labels, weights, avg_factor=7.)
    torch.testing.assert_close(
        iif(logits, labels, weights, avg_factor=7.), expected)


def test_weights_from_the_train_annotation_file(synthetic_root):
    ann_file = synthetic_root + 'annotations/lvis_v1_train.json'
    stats = get_class_statistics(ann_file)
    iif = IIFLoss(30, class_statistics=ann_file)
    expected = np.log(stats.num_images / stats.image_count)
    np.testing.assert_allclose(iif.logit_weights.numpy()[:30], expected)
    assert iif.logit_weights[30] == 1
    # rare classes get the largest weights
    order = np.argsort(stats.image_count)
    assert iif.logit_weights[order[0]] > iif.logit_weights[order[-1]] > 0


def test_scores_through_a_shared_2fc_head():
    """The head builds C + 1 outputs and scores with softmax(w * z), not the
    softmax of the raw logits; probabilities with the background last."""
    head = shared_2fc_head(dict(type='IIFLoss', num_classes=3,
                                class_statistics=STATS, log_base=2))
    assert head.custom_cls_channels and head.fc_cls.out_features == 4
    logits = 3 * torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    scores = raw_head_scores(head, logits)
    expected = F.softmax(logits * torch.tensor(W), dim=-1)
    torch.testing.assert_close(scores, expected)
    assert bool(((scores >= 0) & (scores <= 1)).all())
    torch.testing.assert_close(scores.sum(1), torch.ones(5))
    assert not torch.allclose(scores, F.softmax(logits, dim=-1))
    acc = head.loss_cls.get_accuracy(torch.tensor(LOGITS),
                                     torch.tensor(LABELS))
    # arg-max of w * z: RoI 0 -> 0, RoI 1 -> 1, RoI 2 -> 0 (label 3)
    assert acc['acc'].item() == pytest.approx(200 / 3, abs=1e-4)


# ------------------------------------------------------------ bad input
def test_class_without_training_images_raises():
    with pytest.raises(ValueError, match=r'IIFLoss needs a training image '
                       r'count >= 1.*classes \(labels\) \[1\]'):
        IIFLoss(3, class_statistics=dict(image_count=[3, 0, 2],
                                         num_images=5))


def test_missing_statistics_and_bad_options_raise():
    with pytest.raises(ValueError, match='IIFLoss needs class_statistics'):
        IIFLoss(3)
    with pytest.raises(ValueError, match='log_base must be one of'):
        make_iif(log_base=3)
    with pytest.raises(ValueError, match='num_classes=4 does not match'):
        IIFLoss(4, class_statistics=STATS)


def test_wrong_width_and_non_finite_logits_raise():
    iif = make_iif()
    with pytest.raises(ValueError, match=r'IIFLoss: expects 4 logits .*'
                       r'got \(3, 3\)'):
        iif(torch.zeros(3, 3), torch.tensor(LABELS))
    logits = torch.tensor(LOGITS)
    logits[1, 2] = float('nan')
    with pytest.raises(ValueError, match='IIFLoss: cls_score is not finite'):
        iif(logits, torch.tensor(LABELS))
    with pytest.raises(ValueError, match='IIFLoss: cls_score is not finite'):
        iif.get_activation(logits)
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 3\]'):
        iif(torch.tensor(LOGITS), torch.tensor([0, 1, 4]))
