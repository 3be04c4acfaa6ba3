"""Equalization Loss v2 (Tan et al., CVPR 2021): value and gradient of a
hand-computed example, statistics against a hand-rolled recurrence and
against the true gradients, checkpoint round trip, 2-process DDP, inference
scores and clear errors."""
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdet.models.losses import EQLV2Loss
from ddp import run_ddp
from mmdet_longtail.models.losses.eqlv2_loss import EQLv2, eqlv2_weights

# a = ln 3: sigmoid(a) = 0.75, sigmoid(-a) = 0.25, sigmoid(0) = 0.5
A = math.log(3)
BCE_A_POS = -math.log(0.75)  # BCE(a, 1) = BCE(-a, 0) = 0.2876821
BCE_A_NEG = -math.log(0.25)  # BCE(a, 0) = BCE(-a, 1) = 1.3862944
BCE_ZERO = math.log(2)  # BCE(0, y) = 0.6931472

# 2 classes + the objectness column. Statistics pos = [0.8, 0.8 + ln3/12],
# neg = [1, 1] give the ratios g = [0.8, 0.8 + ln3/12], so with gamma = 12,
# mu = 0.8, alpha = 4:
#   neg_w = sigmoid(12 (g - 0.8)) = [sigmoid(0), sigmoid(ln 3)] = [0.5, 0.75]
#   pos_w = 1 + 4 (1 - neg_w)                                  = [3, 2]
# and 1, 1 for the objectness column.
POS_GRAD = [0.8, 0.8 + A / 12]
NEG_GRAD = [1.0, 1.0]
POS_W = [3.0, 2.0, 1.0]
NEG_W = [0.5, 0.75, 1.0]
# RoI 0: class 0; RoI 1: background (label 2 = C, target on the last column)
LOGITS = [[A, -A, 0.], [0., A, -A]]
LABELS = [0, 2]
ROW_LOSSES = [
    # RoI 0, y = [1, 0, 0]: 3 BCE(a, 1) + 0.75 BCE(-a, 0) + 1 BCE(0, 0)
    3 * BCE_A_POS + 0.75 * BCE_A_POS + BCE_ZERO,  # = 1.7719550
    # RoI 1, y = [0, 0, 1]: 0.5 BCE(0, 0) + 0.75 BCE(a, 0) + 1 BCE(-a, 1)
    0.5 * BCE_ZERO + 0.75 * BCE_A_NEG + BCE_A_NEG,  # = 2.7725887
]
HAND_LOSS = sum(ROW_LOSSES) / 2  # = 2.2722719
# gradient magnitudes |sigmoid(z) - y| w of this step, per class:
#   class 0: RoI 0 positive |0.75 - 1| * 3 = 0.75; RoI 1 negative 0.5 * 0.5
#   class 1: RoI 0 negative 0.25 * 0.75 = 0.1875; RoI 1 negative 0.75 * 0.75
POS_INCREMENT = [0.75, 0.0]
NEG_INCREMENT = [0.25, 0.1875 + 0.5625]

def loss_in_hand_state(**kwargs) -> EQLv2:
    eqlv2 = EQLv2(2, **kwargs)
    eqlv2.pos_grad.copy_(torch.tensor(POS_GRAD))
    eqlv2.neg_grad.copy_(torch.tensor(NEG_GRAD))
    eqlv2.pos_neg.copy_(eqlv2.pos_grad / (eqlv2.neg_grad + 1e-10))
    return eqlv2


def test_defaults_and_buffers():
    eqlv2 = EQLv2(5)
    assert (eqlv2.gamma, eqlv2.mu, eqlv2.alpha, eqlv2.loss_weight) == (12.0,
                                                                        0.8,
                                                                        4.0,
                                                                        1.0)
    state = eqlv2.state_dict()
    assert set(state) == {'pos_grad', 'neg_grad', 'pos_neg'}
    assert torch.equal(state['pos_neg'], torch.full((5, ), 100.))
    assert not state['pos_grad'].any() and not state['neg_grad'].any()
    # g = 100: f(g) = 1, so both weights start at 1 (plain sigmoid BCE)
    pos_w, neg_w = eqlv2.weights()
    assert torch.equal(pos_w, torch.ones(6))
    assert torch.equal(neg_w, torch.ones(6))


def test_weights_match_hand_computation():
    pos_w, neg_w = loss_in_hand_state().weights()
    torch.testing.assert_close(pos_w, torch.tensor(POS_W))
    torch.testing.assert_close(neg_w, torch.tensor(NEG_W))


def test_value_matches_hand_computation():
    loss = loss_in_hand_state()(torch.tensor(LOGITS), torch.tensor(LABELS))
    assert HAND_LOSS == pytest.approx(2.2722719, abs=1e-7)
    assert loss.item() == pytest.approx(HAND_LOSS, abs=1e-6)


def test_gradient_matches_analytic_form():
    # dL/dz_ij = w_ij (sigmoid(z_ij) - y_ij) / N, N = 2:
    #   RoI 0: [3 (0.75 - 1), 0.75 * 0.25, 1 * 0.5] / 2
    #   RoI 1: [0.5 * 0.5, 0.75 * 0.75, 1 (0.25 - 1)] / 2
    expected = torch.tensor([[-0.75, 0.1875, 0.5], [0.25, 0.5625, -0.75]]) / 2
    logits = torch.tensor(LOGITS, requires_grad=True)
    loss_in_hand_state()(logits, torch.tensor(LABELS)).backward()
    torch.testing.assert_close(logits.grad, expected)


def test_statistics_of_one_step_match_hand_computation():
    eqlv2 = loss_in_hand_state()
    eqlv2(torch.tensor(LOGITS), torch.tensor(LABELS))
    pos = torch.tensor(POS_GRAD) + torch.tensor(POS_INCREMENT)
    neg = torch.tensor(NEG_GRAD) + torch.tensor(NEG_INCREMENT)
    # pos = [1.55, 0.8915510], neg = [1.25, 1.75], g = [1.24, 0.5094577]
    torch.testing.assert_close(eqlv2.pos_grad, pos)
    torch.testing.assert_close(eqlv2.neg_grad, neg)
    torch.testing.assert_close(eqlv2.pos_neg,
                               torch.tensor([1.24, 0.8915510 / 1.75]))


def test_float64_equals_hand_computation_to_1e_12():
    """A float64 loss (buffers and logits) computes in float64: weights,
    loss, per-RoI losses, gradient and one step's statistics equal the hand
    computation to 1e-12. The ratios are set exactly (the hand weights are
    functions of g alone)."""
    eqlv2 = EQLv2(2).double()
    eqlv2.pos_grad.copy_(torch.tensor(POS_GRAD, dtype=torch.float64))
    eqlv2.neg_grad.copy_(torch.tensor(NEG_GRAD, dtype=torch.float64))
    eqlv2.pos_neg.copy_(torch.tensor([0.8, 0.8 + A / 12],
                                     dtype=torch.float64))
    exact = dict(rtol=0, atol=1e-12)
    pos_w, neg_w = eqlv2.weights()
    torch.testing.assert_close(
        pos_w, torch.tensor(POS_W, dtype=torch.float64), **exact)
    torch.testing.assert_close(
        neg_w, torch.tensor(NEG_W, dtype=torch.float64), **exact)
    logits = torch.tensor(LOGITS, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor(LABELS)
    per_roi = eqlv2.eval()(logits, labels, reduction_override='none')
    torch.testing.assert_close(
        per_roi, torch.tensor(ROW_LOSSES, dtype=torch.float64), **exact)
    loss = eqlv2.train()(logits, labels)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(HAND_LOSS, rel=0, abs=1e-12)
    loss.backward()
    # dL/dz_ij = w_ij (sigmoid(z_ij) - y_ij) / N, as in the test above
    expected = torch.tensor([[-0.75, 0.1875, 0.5], [0.25, 0.5625, -0.75]],
                            dtype=torch.float64) / 2
    torch.testing.assert_close(logits.grad, expected, **exact)
    pos = [p + i for p, i in zip(POS_GRAD, POS_INCREMENT)]
    neg = [n + i for n, i in zip(NEG_GRAD, NEG_INCREMENT)]
    torch.testing.assert_close(
        eqlv2.pos_grad, torch.tensor(pos, dtype=torch.float64), **exact)
    torch.testing.assert_close(
        eqlv2.neg_grad, torch.tensor(neg, dtype=torch.float64), **exact)
    torch.testing.assert_close(
        eqlv2.pos_neg,
        torch.tensor([p / (n + 1e-10) for p, n in zip(pos, neg)],
                     dtype=torch.float64), **exact)


def test_gradcheck_float64():
    logits = torch.tensor(LOGITS, dtype=torch.float64, requires_grad=True)
    eqlv2 = loss_in_hand_state().eval()  # eval: statistics stay fixed
    for reduction in ('mean', 'sum', 'none'):
        assert torch.autograd.gradcheck(
            lambda z: eqlv2(z, torch.tensor(LABELS),
                            reduction_override=reduction), (logits, ))


def test_reductions_loss_weight_and_ignored_normalisers():
    logits, labels = torch.tensor(LOGITS), torch.tensor(LABELS)
    eqlv2 = loss_in_hand_state().eval()
    torch.testing.assert_close(
        eqlv2(logits, labels, reduction_override='none'),
        torch.tensor(ROW_LOSSES))
    assert eqlv2(logits, labels, reduction_override='sum').item() == \
        pytest.approx(sum(ROW_LOSSES), abs=1e-6)
    # as the authors: the number of RoIs normalises, not avg_factor, and
    # label_weights do not rescale the loss
    weighted = eqlv2(logits, labels, torch.tensor([3., 0.]), avg_factor=9.)
    assert weighted.item() == pytest.approx(HAND_LOSS, abs=1e-6)
    doubled = loss_in_hand_state(loss_weight=2.).eval()(logits, labels)
    assert doubled.item() == pytest.approx(2 * HAND_LOSS, abs=1e-6)


def test_no_statistics_in_eval_mode():
    eqlv2 = loss_in_hand_state().eval()
    eqlv2(torch.tensor(LOGITS), torch.tensor(LABELS))
    torch.testing.assert_close(eqlv2.pos_grad, torch.tensor(POS_GRAD))
    torch.testing.assert_close(eqlv2.neg_grad, torch.tensor(NEG_GRAD))


# ------------------------------------------------ statistics over steps
NUM_CLASSES = 6


def random_batch(gen: torch.Generator, num_rois: int = 40) -> tuple:
    logits = 3 * torch.randn(num_rois, NUM_CLASSES + 1, generator=gen)
    # a long tail: class 5 never appears, class 0 often
    labels = torch.multinomial(
        torch.tensor([8., 4., 2., 1., 1., 0., 12.]), num_rois,
        replacement=True, generator=gen)
    return logits, labels


def reference_step(state: dict, logits: torch.Tensor,
                   labels: torch.Tensor) -> torch.Tensor:
    """One step of the published recurrence, dense and in float64."""
    z = logits.double()
    y = F.one_hot(labels, NUM_CLASSES + 1).double()
    neg_w = 1 / (1 + torch.exp(-12 * (state['pos_neg'] - 0.8)))
    pos_w = 1 + 4 * (1 - neg_w)
    one = torch.ones(1, dtype=torch.float64)
    w = torch.cat([pos_w, one]) * y + torch.cat([neg_w, one]) * (1 - y)
    loss = (w * F.binary_cross_entropy_with_logits(
        z, y, reduction='none')).sum() / z.size(0)
    grad = (torch.sigmoid(z) - y).abs() * w
    state['pos_grad'] += (grad * y).sum(0)[:NUM_CLASSES]
    state['neg_grad'] += (grad * (1 - y)).sum(0)[:NUM_CLASSES]
    state['pos_neg'] = state['pos_grad'] / (state['neg_grad'] + 1e-10)
    return loss


def test_statistics_after_n_steps_follow_the_recurrence():
    gen = torch.Generator().manual_seed(0)
    eqlv2 = EQLv2(NUM_CLASSES)
    state = dict(
        pos_grad=torch.zeros(NUM_CLASSES, dtype=torch.float64),
        neg_grad=torch.zeros(NUM_CLASSES, dtype=torch.float64),
        pos_neg=torch.full((NUM_CLASSES, ), 100., dtype=torch.float64))
    for _ in range(6):
        logits, labels = random_batch(gen)
        loss = eqlv2(logits.requires_grad_(), labels)
        loss.backward()
        expected = reference_step(state, logits, labels)
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for name in ('pos_grad', 'neg_grad', 'pos_neg'):
        torch.testing.assert_close(
            getattr(eqlv2, name), state[name].float(), rtol=1e-5, atol=1e-6)
    # class 5 never had a positive: ratio 0, its negatives are damped
    assert eqlv2.pos_neg[5] == 0
    assert eqlv2.weights()[1][5] < 1e-4


def test_statistics_are_the_true_gradient_magnitudes():
    """The increments equal |d/dz sum_ij w_ij BCE(z_ij, y_ij)| from
    autograd, with the step's weights held fixed, split by the target."""
    gen = torch.Generator().manual_seed(3)
    eqlv2 = EQLv2(NUM_CLASSES)
    for _ in range(2):  # move away from the initial weights of 1
        eqlv2(*random_batch(gen))
    logits, labels = random_batch(gen)
    pos_w, neg_w = eqlv2.weights()
    y = F.one_hot(labels, NUM_CLASSES + 1).float()
    w = pos_w * y + neg_w * (1 - y)
    z = logits.clone().requires_grad_()
    (w * F.binary_cross_entropy_with_logits(z, y, reduction='none')).sum(
    ).backward()
    before = (eqlv2.pos_grad.clone(), eqlv2.neg_grad.clone())
    eqlv2(logits, labels)
    magnitude = z.grad.abs()
    torch.testing.assert_close(eqlv2.pos_grad - before[0],
                               (magnitude * y).sum(0)[:NUM_CLASSES])
    torch.testing.assert_close(eqlv2.neg_grad - before[1],
                               (magnitude * (1 - y)).sum(0)[:NUM_CLASSES])


def test_same_math_as_mmdet_eqlv2_loss():
    """mmdet 3.3's EQLV2Loss computes the same loss, gradient and
    statistics; the difference is in how heads use it (see
    test_eql_heads.py)."""
    gen = torch.Generator().manual_seed(1)
    ours, theirs = EQLv2(NUM_CLASSES), EQLV2Loss(num_classes=NUM_CLASSES)
    for _ in range(4):
        logits, labels = random_batch(gen)
        z1, z2 = logits.clone().requires_grad_(), logits.clone(
        ).requires_grad_()
        a, b = ours(z1, labels), theirs(z2, labels)
        a.backward()
        b.backward()
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(z1.grad, z2.grad)
    torch.testing.assert_close(ours.pos_neg, theirs.pos_neg)


def test_lvis_scale_with_large_logits():
    """1024 RoIs x 1204 logits, some beyond exp's float32 range: finite
    loss and gradient equal to the dense float64 equation."""
    gen = torch.Generator().manual_seed(0)
    eqlv2 = EQLv2(1203)
    eqlv2.pos_neg.copy_(torch.rand(1203, generator=gen) * 2)
    labels = torch.full((1024, ), 1203)
    labels[:256] = torch.randint(0, 1203, (256, ), generator=gen)
    logits = 4 * torch.randn(1024, 1204, generator=gen)
    logits[0, 5] = 120.
    pos_w, neg_w = eqlv2.weights()
    y = F.one_hot(labels, 1204).double()
    w = pos_w.double() * y + neg_w.double() * (1 - y)
    z64 = logits.double().requires_grad_()
    dense = (w * F.binary_cross_entropy_with_logits(
        z64, y, reduction='none')).sum() / 1024
    dense.backward()
    z32 = logits.clone().requires_grad_()
    loss = eqlv2(z32, labels)
    loss.backward()
    assert loss.item() == pytest.approx(dense.item(), rel=1e-5)
    torch.testing.assert_close(z32.grad, z64.grad.float(), atol=1e-8,
                               rtol=1e-4)


# ------------------------------------------------------- checkpointing
def test_checkpoint_round_trip(tmp_path):
    gen = torch.Generator().manual_seed(0)
    head = nn.ModuleDict(dict(loss_cls=EQLv2(NUM_CLASSES)))
    for _ in range(3):
        head.loss_cls(*random_batch(gen))
    path = str(tmp_path / 'ckpt.pth')
    torch.save(head.state_dict(), path)

    restored = nn.ModuleDict(dict(loss_cls=EQLv2(NUM_CLASSES)))
    restored.load_state_dict(torch.load(path))
    for name in ('pos_grad', 'neg_grad', 'pos_neg'):
        assert torch.equal(
            getattr(restored.loss_cls, name), getattr(head.loss_cls, name))
    # and training continues from the restored statistics
    batch = random_batch(gen)
    torch.testing.assert_close(
        restored.loss_cls(*batch), head.loss_cls(*batch))
    torch.testing.assert_close(restored.loss_cls.pos_neg,
                               head.loss_cls.pos_neg)


# ------------------------------------------------------- 2-process DDP
DDP_STEPS = 3


class LinearWithEQLv2(nn.Module):
    """A classifier and its loss, wrapped as mmengine wraps a detector."""

    def __init__(self) -> None:
        super().__init__()
        self.fc_cls = nn.Linear(8, NUM_CLASSES + 1)
        self.loss_cls = EQLv2(NUM_CLASSES)

    def forward(self, feats: torch.Tensor,
                labels: torch.Tensor) -> torch.Tensor:
        return self.loss_cls(self.fc_cls(feats), labels)


def rank_batch(rank: int, step: int) -> tuple:
    gen = torch.Generator().manual_seed(1000 * step + rank)
    feats = torch.randn(24, 8, generator=gen)
    _, labels = random_batch(gen, 24)
    return feats, labels


def _ddp_worker(rank: int, world_size: int, out_dir: str) -> None:
    from torch.nn.parallel import DistributedDataParallel
    torch.manual_seed(0)  # same weights on every rank
    net = LinearWithEQLv2()
    model = DistributedDataParallel(net, broadcast_buffers=False)
    optim = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(DDP_STEPS):
        optim.zero_grad()
        model(*rank_batch(rank, step)).backward()
        optim.step()
    torch.save({k: v.clone()
                for k, v in net.loss_cls.state_dict().items()},
               osp.join(out_dir, f'{rank}.pth'))
    del model, optim


def test_ddp_two_processes_keep_identical_summed_statistics(tmp_path):
    run_ddp(_ddp_worker, 2, str(tmp_path))
    ranks = [torch.load(str(tmp_path / f'{r}.pth')) for r in range(2)]
    # the ranks saw different RoIs ...
    assert not torch.equal(rank_batch(0, 0)[0], rank_batch(1, 0)[0])
    # ... yet hold the same statistics
    for name in ('pos_grad', 'neg_grad', 'pos_neg'):
        assert torch.equal(ranks[0][name], ranks[1][name]), name

    # one process seeing both ranks' RoIs: the same statistics (sums over
    # RoIs) and, with the mean loss, the same averaged gradients
    torch.manual_seed(0)
    single = LinearWithEQLv2()
    optim = torch.optim.SGD(single.parameters(), lr=0.1)
    for step in range(DDP_STEPS):
        batches = [rank_batch(rank, step) for rank in range(2)]
        optim.zero_grad()
        single(torch.cat([b[0] for b in batches]),
               torch.cat([b[1] for b in batches])).backward()
        optim.step()
    for name in ('pos_grad', 'neg_grad', 'pos_neg'):
        torch.testing.assert_close(ranks[0][name],
                                   getattr(single.loss_cls, name))


# ------------------------------------------------------------ inference
def test_get_activation_hand_example():
    # logits [a, 0, -a]: sigmoid = [0.75, 0.5, 0.25], objectness 0.25:
    # scores = [0.75 (1 - 0.25), 0.5 (1 - 0.25), 0.25]
    scores = EQLv2(2).get_activation(torch.tensor([[A, 0., -A]]))
    torch.testing.assert_close(scores, torch.tensor([[0.5625, 0.375, 0.25]]))


def test_get_activation_invariants():
    logits = 5 * torch.randn(50, 8)
    scores = EQLv2(7).get_activation(logits)
    assert scores.shape == (50, 8)
    assert bool(((scores >= 0) & (scores <= 1)).all())
    torch.testing.assert_close(scores[:, -1], logits[:, -1].sigmoid())
    torch.testing.assert_close(
        scores[:, :-1],
        logits[:, :-1].sigmoid() * (1 - logits[:, -1:].sigmoid()))
    # not a softmax: the rows do not sum to 1
    assert not torch.allclose(scores.sum(1), torch.ones(50))


def test_protocol_and_accuracy():
    eqlv2 = EQLv2(2)
    assert eqlv2.custom_cls_channels and eqlv2.custom_activation
    assert eqlv2.custom_accuracy
    assert eqlv2.get_cls_channels(2) == 3
    # RoI 0: objectness logit 0 -> not background (correct), classes [a, -a]
    # -> class 0 (correct); RoI 1: objectness -a -> not background (wrong)
    acc = eqlv2.get_accuracy(torch.tensor(LOGITS), torch.tensor(LABELS))
    assert acc['acc_objectness'].item() == pytest.approx(50.)
    assert acc['acc_classes'].item() == pytest.approx(100.)


def test_weights_function_is_the_published_map():
    ratio = torch.tensor([0., 0.8, 2.])
    pos_w, neg_w = eqlv2_weights(ratio, gamma=12., mu=0.8, alpha=4.)
    f = 1 / (1 + torch.exp(-12 * (ratio - 0.8)))
    torch.testing.assert_close(neg_w, torch.cat([f, torch.ones(1)]))
    torch.testing.assert_close(pos_w,
                               torch.cat([1 + 4 * (1 - f), torch.ones(1)]))


# ------------------------------------------------------------ bad input
@pytest.mark.parametrize('bad', [float('nan'), float('inf'), float('-inf')])
def test_non_finite_logits_raise(bad):
    logits = torch.tensor(LOGITS)
    logits[1, 0] = bad
    eqlv2 = EQLv2(2)
    with pytest.raises(ValueError, match='EQLv2: cls_score is not finite'):
        eqlv2(logits, torch.tensor(LABELS))
    assert not eqlv2.pos_grad.any()  # nothing was accumulated


@pytest.mark.parametrize('labels', [[0, 3], [-1, 2]])
def test_labels_out_of_range_raise(labels):
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 2\]'):
        EQLv2(2)(torch.tensor(LOGITS), torch.tensor(labels))


def test_shape_and_config_errors():
    eqlv2 = EQLv2(2)
    with pytest.raises(ValueError, match=r'must be \(N, 3\)'):
        eqlv2(torch.zeros(2, 2), torch.tensor(LABELS))  # C logits
    with pytest.raises(ValueError, match=r'labels must be \(2,\)'):
        eqlv2(torch.tensor(LOGITS), torch.tensor([0]))
    with pytest.raises(ValueError, match='num_classes=2 but the head has 3'):
        eqlv2.get_cls_channels(3)
    with pytest.raises(ValueError, match='alpha must be >= 0'):
        EQLv2(2, alpha=-1.)
    with pytest.raises(ValueError, match='gamma must be finite'):
        EQLv2(2, gamma=float('nan'))
    with pytest.raises(ValueError, match='num_classes must be >= 1'):
        EQLv2(0)
