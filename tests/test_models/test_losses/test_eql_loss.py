"""Equalization Loss (Tan et al., CVPR 2020): value and gradient of a
hand-computed example (float32, and float64 to 1e-12), gradcheck, the dense
formula at LVIS scale, class statistics, inference scores and clear
errors."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmdet_longtail.datasets.class_stats import get_class_statistics
from mmdet_longtail.models.losses.eql_loss import EQLoss, eql_loss

# a = ln 3: sigmoid(a) = 0.75, sigmoid(-a) = 0.25, sigmoid(0) = 0.5
A = math.log(3)
BCE_A_POS = -math.log(0.75)  # BCE(a, 1) = BCE(-a, 0) = 0.2876821
BCE_A_NEG = -math.log(0.25)  # BCE(a, 0) = BCE(-a, 1) = 1.3862944
BCE_ZERO = math.log(2)  # BCE(0, y) = 0.6931472

# 3 classes; image frequencies f = [0.5, 0.001, 0.0005] and lambda = 1.1e-3
# make classes 1 and 2 tail classes: T = [0, 1, 1]
FREQ = [0.5, 0.001, 0.0005]


def freq_stats(freq, num_images: int = 10000) -> dict:
    """class_statistics whose image frequencies are ``freq``."""
    return dict(image_count=[round(f * num_images) for f in freq],
                num_images=num_images)


LAMBDA = 1.1e-3
# RoI 0: class 0 (head), RoI 1: class 1 (tail), RoI 2: background (label 3)
LOGITS = [[A, A, -A], [0., A, A], [-A, 0., A]]
LABELS = [0, 1, 3]
# w_ij = 1 - E(i) T_j (1 - y_ij):
#   RoI 0 (fg): y = [1, 0, 0], w = [1, 0, 0]   (tail classes not suppressed)
#   RoI 1 (fg): y = [0, 1, 0], w = [1, 1, 0]   (class 0 is no tail class)
#   RoI 2 (bg): y = [0, 0, 0], w = [1, 1, 1]   (E = 0: suppresses all)
WEIGHTS = [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
ROW_LOSSES = [
    BCE_A_POS,  # RoI 0: BCE(a, 1)                        = 0.2876821
    BCE_ZERO + BCE_A_POS,  # RoI 1: BCE(0, 0) + BCE(a, 1) = 0.9808293
    BCE_A_POS + BCE_ZERO + BCE_A_NEG,  # RoI 2            = 2.3671237
]
# L = (0.2876821 + 0.9808293 + 2.3671237) / 3 = 1.2118784
HAND_LOSS = sum(ROW_LOSSES) / 3
# dL/dz_ij = w_ij (sigmoid(z_ij) - y_ij) / N:
#   RoI 0: [(0.75 - 1) / 3, 0, 0]
#   RoI 1: [0.5 / 3, (0.75 - 1) / 3, 0]
#   RoI 2: [0.25 / 3, 0.5 / 3, 0.75 / 3]
HAND_GRAD = [[-0.25 / 3, 0, 0], [0.5 / 3, -0.25 / 3, 0],
             [0.25 / 3, 0.5 / 3, 0.75 / 3]]


def make_eql(**kwargs) -> EQLoss:
    return EQLoss(3, LAMBDA, class_statistics=freq_stats(FREQ), **kwargs)


def dense_eql(logits: torch.Tensor, labels: torch.Tensor,
              tail: torch.Tensor) -> torch.Tensor:
    """The equation written out with dense (N, C) matrices."""
    num_classes = logits.size(1)
    y = F.one_hot(labels, num_classes + 1)[:, :num_classes].to(logits)
    fg = (labels < num_classes).to(logits)[:, None]
    w = 1 - fg * tail.to(logits)[None] * (1 - y)
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction='none')
    return (w * bce).sum() / logits.size(0)


def test_value_matches_hand_computation():
    loss = make_eql()(torch.tensor(LOGITS), torch.tensor(LABELS))
    assert HAND_LOSS == pytest.approx(1.2118784, abs=1e-7)
    assert loss.item() == pytest.approx(HAND_LOSS, abs=1e-6)


def test_gradient_matches_analytic_form():
    expected = torch.tensor([[-0.25, 0, 0], [0.5, -0.25, 0],
                             [0.25, 0.5, 0.75]]) / 3
    logits = torch.tensor(LOGITS, requires_grad=True)
    make_eql()(logits, torch.tensor(LABELS)).backward()
    torch.testing.assert_close(logits.grad, expected)


def test_float64_equals_hand_computation_to_1e_12():
    """float64 logits are computed in float64: loss, per-RoI losses and
    gradient equal the hand computation to 1e-12."""
    logits = torch.tensor(LOGITS, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor(LABELS)
    eql = make_eql()
    loss = eql(logits, labels)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(HAND_LOSS, rel=0, abs=1e-12)
    per_roi = eql(logits, labels, reduction_override='none')
    torch.testing.assert_close(
        per_roi, torch.tensor(ROW_LOSSES, dtype=torch.float64), rtol=0,
        atol=1e-12)
    loss.backward()
    torch.testing.assert_close(
        logits.grad, torch.tensor(HAND_GRAD, dtype=torch.float64), rtol=0,
        atol=1e-12)


def test_gradcheck_float64():
    logits = torch.tensor(LOGITS, dtype=torch.float64, requires_grad=True)
    eql = make_eql()
    for reduction in ('mean', 'sum', 'none'):
        assert torch.autograd.gradcheck(
            lambda z: eql(z, torch.tensor(LABELS),
                          reduction_override=reduction), (logits, ))


def test_reductions_loss_weight_and_ignored_normalisers():
    logits, labels = torch.tensor(LOGITS), torch.tensor(LABELS)
    eql = make_eql()
    per_roi = eql(logits, labels, reduction_override='none')
    torch.testing.assert_close(per_roi, torch.tensor(ROW_LOSSES))
    assert eql(logits, labels, reduction_override='sum').item() == \
        pytest.approx(sum(ROW_LOSSES), abs=1e-6)
    # normalised by the number of RoIs, as the authors: label_weights and
    # avg_factor do not change the loss
    weighted = eql(logits, labels, torch.tensor([2., 0., 5.]), avg_factor=7.)
    assert weighted.item() == pytest.approx(HAND_LOSS, abs=1e-6)
    doubled = make_eql(loss_weight=2.)(logits, labels)
    assert doubled.item() == pytest.approx(2 * HAND_LOSS, abs=1e-6)


def test_lambda_zero_is_plain_sigmoid_cross_entropy():
    logits = torch.randn(20, 6)
    labels = torch.randint(0, 7, (20, ))
    plain = F.binary_cross_entropy_with_logits(
        logits, F.one_hot(labels, 7)[:, :6].float(), reduction='sum') / 20
    eql = EQLoss(6, 0.0, class_statistics=freq_stats([0.1] * 6))
    assert eql.tail_classes.sum() == 0
    torch.testing.assert_close(eql(logits, labels), plain)


@pytest.mark.parametrize('scale', [1.0, 4.0, 40.0])
def test_lvis_scale_equals_dense_formula(scale):
    """1024 RoIs x 1203 classes, 815 of them tail classes (LVIS v1 at
    lambda = 1.1e-3), 25% foreground: the float32 loss equals the dense
    equation in float64, in value and gradient, including logits beyond
    exp's float32 range (|z| up to ~170 at scale 40)."""
    gen = torch.Generator().manual_seed(0)
    num_classes = 1203
    freq = torch.full((num_classes, ), 0.01)
    freq[torch.randperm(num_classes, generator=gen)[:815]] = 1e-4
    eql = EQLoss(num_classes, 1.1e-3,
                 class_statistics=freq_stats(freq.tolist()))
    assert int(eql.tail_classes.sum()) == 815
    labels = torch.full((1024, ), num_classes)
    labels[:256] = torch.randint(0, num_classes, (256, ), generator=gen)
    logits = scale * torch.randn(1024, num_classes, generator=gen)
    z64 = logits.double().requires_grad_()
    expected = dense_eql(z64, labels, eql.tail_classes)
    expected.backward()
    z32 = logits.clone().requires_grad_()
    loss = eql(z32, labels)
    loss.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(z32.grad, z64.grad.float(), atol=1e-8,
                               rtol=1e-4)


def test_half_precision_logits_are_computed_in_float32():
    logits = torch.tensor(LOGITS).half().requires_grad_()
    loss = make_eql()(logits, torch.tensor(LABELS))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(HAND_LOSS, abs=1e-3)
    loss.backward()
    assert logits.grad.dtype == torch.float16


# ---------------------------------------------------- class statistics
def test_tail_classes_from_the_annotation_file(synthetic_root):
    ann_file = synthetic_root + 'annotations/lvis_v1_train.json'
    stats = get_class_statistics(ann_file)
    lam = float(np.median(stats.image_freq))
    eql = EQLoss(30, lam, class_statistics=ann_file)
    expected = stats.image_count / stats.num_images < lam
    assert eql.tail_classes.numpy().tolist() == expected.tolist()
    assert 0 < expected.sum() < 30
    # derived from the data set, so not saved in checkpoints
    assert 'tail_classes' not in eql.state_dict()


def test_lvis_v05_lambda_at_the_common_frequent_boundary(tmp_path):
    """A v0.5-sized file (56,740 annotated images): at lambda = 1.76e-3 a
    class with 99 images (f = 0.001745) is a tail class, one with 101
    images (f = 0.001780, frequent) is not."""
    annotations = []

    def add(image_id: int, category_id: int) -> None:
        annotations.append(
            dict(id=len(annotations) + 1, image_id=image_id,
                 category_id=category_id, bbox=[0, 0, 4, 4], area=16))

    for label, num_images in enumerate([101, 99, 10, 1]):
        for image_id in range(1, num_images + 1):
            add(image_id, label + 1)
    # class 4 fills the other annotated images
    for image_id in range(102, 56741):
        add(image_id, 5)
    path = tmp_path / 'lvis_v0.5_train.json'
    path.write_text(json.dumps(dict(
        images=[dict(id=i, width=10, height=10) for i in range(1, 56741)],
        annotations=annotations,
        categories=[dict(id=c + 1, name=f'c{c}') for c in range(5)])))
    assert get_class_statistics(str(path)).num_images == 56740
    eql = EQLoss(5, 1.76e-3, class_statistics=str(path))
    assert eql.tail_classes.tolist() == [False, True, True, True, False]


# ------------------------------------------------------------ inference
def test_bbox_head_protocol_and_scores():
    eql = make_eql()
    assert eql.custom_cls_channels and eql.custom_activation
    assert eql.custom_accuracy
    assert eql.get_cls_channels(3) == 3  # no background logit
    scores = eql.get_activation(torch.tensor(LOGITS))
    # sigmoid of each class, a zero background column appended:
    # RoI 0: [0.75, 0.75, 0.25, 0]
    torch.testing.assert_close(scores[0], torch.tensor([0.75, 0.75, 0.25,
                                                        0.]))
    torch.testing.assert_close(scores[:, :3], torch.tensor(LOGITS).sigmoid())
    assert scores.shape == (3, 4) and bool((scores[:, 3] == 0).all())


def test_accuracy_on_foreground_rois():
    # RoI 0: argmax of [a, a, -a] is class 0 (first maximum) = label 0;
    # RoI 1: argmax of [0, a, a] is class 1 = label 1; RoI 2 is background
    acc = make_eql().get_accuracy(torch.tensor(LOGITS), torch.tensor(LABELS))
    assert acc['acc_classes'].item() == pytest.approx(100.)


# ------------------------------------------------------------ bad input
@pytest.mark.parametrize('bad', [float('nan'), float('inf'), float('-inf')])
def test_non_finite_logits_raise(bad):
    logits = torch.tensor(LOGITS)
    logits[2, 1] = bad
    with pytest.raises(ValueError, match='EQLoss: cls_score is not finite'):
        make_eql()(logits, torch.tensor(LABELS))


@pytest.mark.parametrize('labels', [[0, 1, 4], [-1, 1, 3]])
def test_labels_out_of_range_raise(labels):
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 3\]'):
        make_eql()(torch.tensor(LOGITS), torch.tensor(labels))


def test_shape_and_config_errors(synthetic_root):
    eql = make_eql()
    with pytest.raises(ValueError, match=r'must be \(N, 3\)'):
        eql(torch.zeros(3, 4), torch.tensor(LABELS))  # C + 1 logits
    with pytest.raises(ValueError, match=r'labels must be \(3,\)'):
        eql(torch.tensor(LOGITS), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match='integers'):
        eql(torch.tensor(LOGITS), torch.tensor([0., 1., 3.]))
    with pytest.raises(ValueError, match='reduction'):
        eql(torch.tensor(LOGITS), torch.tensor(LABELS),
            reduction_override='avg')
    with pytest.raises(ValueError, match='num_classes=3 but the head has 4'):
        eql.get_cls_channels(4)
    with pytest.raises(ValueError, match='EQLoss needs class_statistics'):
        EQLoss(3, LAMBDA)
    with pytest.raises(ValueError, match='does not match the 2 categories'):
        EQLoss(3, LAMBDA, class_statistics=freq_stats([0.1, 0.2]))
    with pytest.raises(ValueError, match=r'in \[0, 1\]'):
        EQLoss(3, LAMBDA, class_statistics=freq_stats([0.1, 2.0, 0.1]))
    with pytest.raises(ValueError, match='lambda_threshold'):
        EQLoss(3, -1.0, class_statistics=freq_stats(FREQ))
    with pytest.raises(ValueError, match='does not match the 30 categories'):
        EQLoss(3, LAMBDA,
               class_statistics=synthetic_root +
               'annotations/lvis_v1_train.json')
    with pytest.raises(FileNotFoundError, match='missing.json'):
        EQLoss(3, LAMBDA, class_statistics='/nonexistent/missing.json')
    with pytest.raises(TypeError, match='got list'):
        EQLoss(3, LAMBDA, class_statistics=[1, 2, 3])


def test_functional_form_matches_module():
    tail = torch.tensor([False, True, True])
    value = eql_loss(torch.tensor(LOGITS), torch.tensor(LABELS), tail)
    assert value.item() == pytest.approx(HAND_LOSS, abs=1e-6)
