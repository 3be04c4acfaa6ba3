"""Equalized Focal Loss (Li et al., CVPR 2022): value and gradient on a
hand-computed case, the gradient statistics against a hand-rolled recurrence
over several steps and FPN levels, checkpoint round trip, 2-process CPU DDP,
the inference activation, LVIS-scale use without a detector, clear errors.

    gamma_j = gamma_b + s (1 - g_j),  weighting_j = gamma_j / gamma_b
    L = sum_ij w_i alpha_t weighting_j (1 - p_t)^gamma_j (-log p_t) / avg
    g_j = clamp(G+_j / G-_j, 0, 1),  G+-_j = accumulated |dL/dx_ij| over
          the positive / negative targets of class j
"""
import math
import os.path as osp

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn

from mmdet.models.losses import FocalLoss
from ddp import run_ddp
from mmdet_longtail.models.losses.efl_loss import (EFL,
                                                   efl_gradient_magnitudes,
                                                   equalized_focal_loss)

GAMMA_B, SCALE, ALPHA = 2.0, 8.0, 0.25

# ------------------------------------------------------- hand-computed case
# 3 classes, 4 anchors: class 0, class 2, background (label 3), and an
# anchor of class 1 with label weight 0 (ignored by loss and statistics).
LOGITS = [[1.0, -2.0, 0.5], [-1.0, 0.0, 2.0], [0.3, -0.4, -1.5],
          [2.0, 3.0, -1.0]]
LABELS = [0, 2, 3, 1]
WEIGHTS = [1.0, 1.0, 1.0, 0.0]
AVG_FACTOR = 2.0
# g = (1, 0.5, 0.25) -> gamma = 2 + 8 (0, 0.5, 0.75) = (2, 6, 8),
# weighting = gamma / 2 = (1, 3, 4)
RATIO = [1.0, 0.5, 0.25]
GAMMA = [2.0, 6.0, 8.0]
WEIGHTING = [1.0, 3.0, 4.0]

def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def hand_element(x: float, y: int, gamma: float, weighting: float):
    """Loss of one logit and its derivative d/dx, written out.

    y = 1: p_t = p,     l = a w (1-p)^g (-log p),
           dl/dx = a w (1-p)^g (g p log p - (1 - p))
    y = 0: p_t = 1 - p, l = (1-a) w p^g (-log(1-p)),
           dl/dx = (1-a) w p^g (p - g (1-p) log(1-p))
    """
    p = sigmoid(x)
    if y:
        value = ALPHA * weighting * (1 - p)**gamma * -math.log(p)
        grad = ALPHA * weighting * (1 - p)**gamma * (
            gamma * p * math.log(p) - (1 - p))
    else:
        value = (1 - ALPHA) * weighting * p**gamma * -math.log(1 - p)
        grad = (1 - ALPHA) * weighting * p**gamma * (
            p - gamma * (1 - p) * math.log(1 - p))
    return value, grad


def hand_case(normaliser: float = AVG_FACTOR, dtype=torch.float32):
    """Loss, gradient (4 x 3) and per-class positive / negative gradient
    sums of the hand case, the loss divided by ``normaliser``."""
    total, grads = 0.0, []
    pos, neg = [0.0] * 3, [0.0] * 3
    for row, label, w in zip(LOGITS, LABELS, WEIGHTS):
        grads.append([])
        for j, x in enumerate(row):
            y = int(label == j)
            value, grad = hand_element(x, y, GAMMA[j], WEIGHTING[j])
            total += w * value / normaliser
            grads[-1].append(w * grad / normaliser)
            if w > 0:
                (pos if y else neg)[j] += abs(w * grad / normaliser)
    return total, torch.tensor(grads, dtype=dtype), torch.tensor(
        pos, dtype=dtype), torch.tensor(neg, dtype=dtype)


def make_efl(num_classes: int = 3, ratio=None) -> EFL:
    efl = EFL(num_classes, gamma_b=GAMMA_B, scale_factor=SCALE, alpha=ALPHA)
    if ratio is not None:
        efl.pos_neg.copy_(torch.tensor(ratio))
    return efl


def test_defaults_and_buffers():
    efl = EFL(5)
    assert (efl.gamma_b, efl.scale_factor, efl.alpha, efl.loss_weight) == (
        2.0, 8.0, 0.25, 1.0)
    state = efl.state_dict()
    assert set(state) == {'pos_grad', 'neg_grad', 'pos_neg'}
    assert torch.equal(state['pos_neg'], torch.ones(5))  # initial ratio 1
    assert torch.equal(state['pos_grad'], torch.zeros(5))
    assert torch.equal(state['neg_grad'], torch.zeros(5))
    assert efl.fuse_on_cuda  # the compiled sum on CUDA logits


def test_value_and_gradient_match_hand_computation():
    # one element written out: x = 1, class 0 (gamma 2, weighting 1),
    # p = 0.731059, (1 - p)^2 = 0.072329, -log p = 0.313262
    # -> 0.25 * 1 * 0.072329 * 0.313262 = 0.0056645
    assert hand_element(1.0, 1, 2.0, 1.0)[0] == pytest.approx(
        0.0056645, abs=1e-7)
    expected, expected_grad, _, _ = hand_case()

    efl = make_efl(ratio=RATIO)
    logits = torch.tensor(LOGITS, requires_grad=True)
    loss = efl(logits, torch.tensor(LABELS), torch.tensor(WEIGHTS),
               avg_factor=AVG_FACTOR)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    torch.testing.assert_close(logits.grad, expected_grad, rtol=1e-5,
                               atol=1e-8)
    assert torch.all(logits.grad[3] == 0)  # ignored anchor


def test_statistics_of_one_step_are_the_true_gradient_magnitudes():
    _, _, pos, neg = hand_case()
    efl = make_efl(ratio=RATIO)
    logits = torch.tensor(LOGITS, requires_grad=True)
    loss = efl(logits, torch.tensor(LABELS), torch.tensor(WEIGHTS),
               avg_factor=AVG_FACTOR)
    # not before the backward pass of the returned loss ...
    assert torch.equal(efl.pos_grad, torch.zeros(3))
    assert torch.equal(efl.pos_neg, torch.tensor(RATIO))
    (loss * 1.0).backward()
    # ... but right after it
    torch.testing.assert_close(efl.pos_grad, pos, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(efl.neg_grad, neg, rtol=1e-5, atol=1e-9)
    # class 1's only positive anchor is ignored: G+ = 0 -> g = 0
    assert efl.pos_grad[1] == 0
    torch.testing.assert_close(
        efl.pos_neg, (pos / (neg + 1e-10)).clamp(0, 1), rtol=1e-5, atol=0)


def masked_magnitudes(grad: torch.Tensor,
                      labels: torch.Tensor) -> torch.Tensor:
    """[G+, G-] (2, C) as the definition reads: |g| times the one-hot
    targets, |g| times their complement, summed over the anchors."""
    num_classes = grad.size(1)
    target = torch.eye(num_classes + 1, dtype=grad.dtype)[labels.long()]
    target = target[:, :num_classes]
    return torch.stack([(grad.abs() * target).sum(0),
                        (grad.abs() * (1 - target)).sum(0)])


@pytest.mark.parametrize('label_dtype', [torch.int64, torch.int32])
def test_gradient_magnitudes_are_the_masked_sums(label_dtype):
    """G+_j sums |g_ij| over the anchors labelled j, G-_j over every other
    anchor (background rows, label C, are negative for every class)."""
    gen = torch.Generator().manual_seed(0)
    grad = torch.randn(50, 7, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 8, (50, ), generator=gen)
    torch.testing.assert_close(
        efl_gradient_magnitudes(grad, labels.to(label_dtype)),
        masked_magnitudes(grad, labels), rtol=0, atol=1e-12)


def test_gradient_magnitudes_keep_negatives_far_below_the_positives():
    """EFL's regime for a rare class: float32 negatives of 1e-13 against
    positives of 0.3. G- is summed directly, not as a column total minus
    G+ (which would round it to 0), so it equals the masked sum."""
    grad = torch.full((100000, 8), 1e-13)
    labels = torch.full((100000, ), 8)
    labels[:48] = torch.arange(48) % 8
    grad[torch.arange(48), labels[:48]] = 0.3
    magnitudes = efl_gradient_magnitudes(grad, labels)
    expected = masked_magnitudes(grad, labels)
    assert float(expected[1].min()) > 9e-9
    torch.testing.assert_close(magnitudes, expected, rtol=1e-6, atol=0)


def test_fused_sum_under_autocast_equals_eager():
    """Under autocast (what ``--amp`` runs the head in) the half-precision
    logits are summed in float32 by the compiled function as eagerly."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 5, generator=gen).bfloat16()
    labels = torch.randint(0, 6, (64, ), generator=gen)
    gamma = 2 + 8 * torch.rand(5, generator=gen)
    results = []
    for fused in (False, True):
        x = logits.clone().requires_grad_()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            loss = equalized_focal_loss(x, labels, gamma, gamma / 2, 0.25,
                                        avg_factor=9.0, fused=fused)
        loss.backward()
        assert loss.dtype == torch.float32
        results.append((loss.detach(), x.grad.float()))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5,
                               atol=0)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-2,
                               atol=1e-6)


def test_float64_equals_hand_computation_to_1e_12():
    """float64 logits are computed in float64, and with float64 buffers so
    are the statistics: loss, gradient and one step's statistics equal the
    hand computation to 1e-12. The normaliser is mmdet's, avg_factor plus
    float32's eps (``weight_reduce_loss``)."""
    exact = dict(rtol=0, atol=1e-12)
    normaliser = AVG_FACTOR + torch.finfo(torch.float32).eps
    expected, expected_grad, pos, neg = hand_case(normaliser, torch.float64)
    labels = torch.tensor(LABELS)
    weights = torch.tensor(WEIGHTS, dtype=torch.float64)
    # float32 buffers (the ratios are exact in float32): a float64 loss
    logits = torch.tensor(LOGITS, dtype=torch.float64)
    loss = make_efl(ratio=RATIO).eval()(logits, labels, weights,
                                        avg_factor=AVG_FACTOR)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(expected, rel=0, abs=1e-12)

    efl = make_efl(ratio=RATIO).double()
    logits.requires_grad_()
    loss = efl(logits, labels, weights, avg_factor=AVG_FACTOR)
    assert loss.item() == pytest.approx(expected, rel=0, abs=1e-12)
    loss.backward()
    torch.testing.assert_close(logits.grad, expected_grad, **exact)
    assert efl.pos_grad.dtype == torch.float64
    torch.testing.assert_close(efl.pos_grad, pos, **exact)
    torch.testing.assert_close(efl.neg_grad, neg, **exact)
    torch.testing.assert_close(efl.pos_neg,
                               (pos / (neg + 1e-10)).clamp(0, 1), **exact)
    # the summed loss has no normaliser
    summed = make_efl(ratio=RATIO).double()(logits, labels, weights,
                                            reduction_override='sum')
    assert summed.item() == pytest.approx(
        hand_case(1.0)[0], rel=0, abs=1e-12)


def test_fused_sum_equals_hand_computation_to_1e_12():
    """The compiled sum (``fused=True``: EFL's default on CUDA; compiled
    here for the CPU) is the same equation: in float64 its loss and
    gradient, with per-anchor and per-logit weights, equal the hand
    computation and the eager loss to 1e-12."""
    exact = dict(rtol=0, atol=1e-12)
    normaliser = AVG_FACTOR + torch.finfo(torch.float32).eps
    expected, expected_grad, _, _ = hand_case(normaliser, torch.float64)
    labels = torch.tensor(LABELS)
    gamma = torch.tensor(GAMMA, dtype=torch.float64)
    weighting = torch.tensor(WEIGHTING, dtype=torch.float64)
    weights = torch.tensor(WEIGHTS, dtype=torch.float64)
    per_logit = torch.rand(4, 3, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(0))
    for weight in (weights, per_logit):
        results = []
        for fused in (False, True):
            logits = torch.tensor(LOGITS, dtype=torch.float64,
                                  requires_grad=True)
            loss = equalized_focal_loss(logits, labels, gamma, weighting,
                                        ALPHA, weight=weight,
                                        avg_factor=AVG_FACTOR, fused=fused)
            loss.backward()
            results.append((loss.detach(), logits.grad))
        (eager, eager_grad), (fused, fused_grad) = results
        torch.testing.assert_close(fused, eager, **exact)
        torch.testing.assert_close(fused_grad, eager_grad, **exact)
        if weight is weights:
            assert fused.item() == pytest.approx(expected, rel=0, abs=1e-12)
            torch.testing.assert_close(fused_grad, expected_grad, **exact)


def test_gradcheck_float64_module():
    """The module's loss (statistics fixed in eval mode) against finite
    differences, per-anchor and per-logit label weights, every reduction."""
    efl = make_efl(ratio=RATIO).double().eval()
    labels = torch.tensor(LABELS)
    logits = torch.tensor(LOGITS, dtype=torch.float64, requires_grad=True)
    per_logit = torch.rand(4, 3, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(0))
    for weights in (torch.tensor(WEIGHTS, dtype=torch.float64), per_logit):
        for reduction in ('mean', 'sum', 'none'):
            assert torch.autograd.gradcheck(
                lambda z: efl(z, labels, weights, avg_factor=AVG_FACTOR,
                              reduction_override=reduction), (logits, ))


def test_half_precision_logits_are_computed_in_float32():
    efl = make_efl(ratio=RATIO)
    logits = torch.tensor(LOGITS).half().requires_grad_()
    loss = efl(logits, torch.tensor(LABELS), torch.tensor(WEIGHTS),
               avg_factor=AVG_FACTOR)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(hand_case()[0], rel=1e-3)
    loss.backward()
    assert logits.grad.dtype == torch.float16
    assert efl.pos_grad.dtype == torch.float32 and efl.pos_grad.sum() > 0


def test_loss_weight_and_reductions():
    efl = make_efl(ratio=RATIO)
    args = (torch.tensor(LOGITS), torch.tensor(LABELS), torch.tensor(WEIGHTS))
    base = efl(*args, avg_factor=AVG_FACTOR)
    efl.loss_weight = 3.0
    assert efl(*args, avg_factor=AVG_FACTOR).item() == pytest.approx(
        3 * base.item(), rel=1e-6)
    efl.loss_weight = 1.0
    summed = efl(*args, reduction_override='sum')
    assert summed.item() == pytest.approx(AVG_FACTOR * base.item(), rel=1e-5)
    per_logit = efl(*args, reduction_override='none')
    assert per_logit.shape == (4, 3)
    assert per_logit[3].abs().sum() == 0
    # no avg_factor: the mean over every logit, like mmdet's FocalLoss
    assert efl(*args).item() == pytest.approx(summed.item() / 12, rel=1e-5)


def test_gradcheck_float64():
    torch.manual_seed(0)
    logits = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    target = torch.zeros(6, 4, dtype=torch.float64)
    target[0, 1] = target[2, 3] = target[3, 0] = 1
    gamma = torch.tensor([2.0, 3.5, 6.0, 10.0], dtype=torch.float64)
    weight = torch.tensor([1., 1., 0., 2., 1., 1.], dtype=torch.float64)

    def loss(x):
        return equalized_focal_loss(x, target, gamma, gamma / 2, 0.25,
                                    weight=weight, avg_factor=3.0)

    assert torch.autograd.gradcheck(loss, (logits, ))


def test_analytic_derivative_is_exact_for_extreme_logits():
    """float32 loss and analytic gradient against float64 autograd of the
    plain formula, for logits up to |x| = 40 and gamma up to 10."""
    x = torch.linspace(-40, 40, 81, dtype=torch.float64).repeat(2, 1).t()
    target = torch.zeros(81, 2, dtype=torch.float64)
    target[:, 0] = 1
    gamma = torch.tensor([10.0, 2.0], dtype=torch.float64)
    weighting = gamma / 2

    ref_x = x.clone().requires_grad_()
    p = torch.sigmoid(ref_x)
    p_t = torch.where(target > 0, p, 1 - p)
    alpha_t = torch.where(target > 0, 0.25, 0.75)
    # -log p_t from the logits (log(p_t) itself underflows at |x| = 40)
    nll = torch.nn.functional.softplus(torch.where(target > 0, -ref_x,
                                                   ref_x))
    reference = (alpha_t * weighting * (1 - p_t)**gamma * nll).sum()
    reference.backward()

    ours_x = x.float().requires_grad_()
    ours = equalized_focal_loss(ours_x, target.float(), gamma.float(),
                                weighting.float(), reduction='sum')
    ours.backward()
    assert torch.isfinite(ours_x.grad).all()
    torch.testing.assert_close(ours.double(), reference.detach(),
                               rtol=1e-5, atol=0)
    torch.testing.assert_close(ours_x.grad.double(), ref_x.grad, rtol=1e-4,
                               atol=1e-7)


def test_focusing_below_one_keeps_gradients_finite_where_p_t_is_one():
    """gamma_j < 1 (gamma_b = 0.5): where 1 - p_t rounds to 0 the power's
    derivative is infinite, the exp-log form's is the true (tiny) one."""
    x = torch.tensor([[40.0, -40.0], [0.3, -0.2]], dtype=torch.float64,
                     requires_grad=True)
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    gamma = torch.tensor([0.5, 0.75], dtype=torch.float64)
    loss = equalized_focal_loss(x, target, gamma, gamma / 0.5,
                                reduction='none')
    loss.sum().backward()
    assert torch.isfinite(x.grad).all()
    # the well-conditioned row equals the formula written with p_t
    p = torch.sigmoid(x.detach()[1])
    p_t = torch.where(target[1] > 0, p, 1 - p)
    alpha_t = torch.where(target[1] > 0, 0.25, 0.75)
    expected = alpha_t * gamma / 0.5 * (1 - p_t)**gamma * -torch.log(p_t)
    torch.testing.assert_close(loss[1].detach(), expected, rtol=1e-12,
                               atol=0)


def test_equals_mmdet_focal_loss_at_initial_ratio():
    """g = 1 everywhere (the start of training): gamma_j = gamma_b and the
    weighting is 1, so EFL is mmdet's sigmoid focal loss."""
    torch.manual_seed(1)
    logits = (3 * torch.randn(50, 7)).requires_grad_()
    labels = torch.randint(0, 8, (50, ))
    weights = (torch.rand(50) > 0.2).float()
    efl_loss = make_efl(7)(logits, labels, weights, avg_factor=9.0)
    focal = FocalLoss(gamma=2.0, alpha=0.25)(logits, labels, weights,
                                              avg_factor=9.0)
    torch.testing.assert_close(efl_loss, focal)
    g_efl, = torch.autograd.grad(efl_loss, logits)
    g_focal, = torch.autograd.grad(focal, logits)
    torch.testing.assert_close(g_efl, g_focal)


# --------------------------------------------- recurrence over N steps
NUM_CLASSES = 5
FEATURES = 4


class TwoLevelHead(nn.Module):
    """A shared linear classifier applied to two "FPN levels", each level's
    loss computed by a separate call, as in mmdet's dense heads."""

    def __init__(self) -> None:
        super().__init__()
        self.cls = nn.Linear(FEATURES, NUM_CLASSES)
        # p = 0.27 at the start: G- and G+ are of the same order, so some
        # classes' g stay clamped at 1 and others fall below it
        nn.init.constant_(self.cls.bias, -1.0)
        self.loss_cls = make_efl(NUM_CLASSES)

    def forward(self, levels) -> torch.Tensor:
        avg = float(sum(int((lab < NUM_CLASSES).sum())
                        for _, lab, _ in levels))
        return sum(
            self.loss_cls(self.cls(feat), lab, w, avg_factor=max(avg, 1.0))
            for feat, lab, w in levels)


def random_levels(gen: torch.Generator, sizes=(12, 5)):
    levels = []
    for n in sizes:
        feat = torch.randn(n, FEATURES, generator=gen)
        labels = torch.randint(0, NUM_CLASSES + 1, (n, ), generator=gen)
        weights = (torch.rand(n, generator=gen) > 0.25).float()
        levels.append((feat, labels, weights))
    return levels


def true_gradient_increments(head: TwoLevelHead, levels,
                             ratio: torch.Tensor) -> torch.Tensor:
    """[G+ (C,), G- (C,)] of one step, from dL/dlogits computed here with
    autograd on a detached copy of every level's logits."""
    gamma = GAMMA_B + SCALE * (1 - ratio)
    avg = float(sum(int((lab < NUM_CLASSES).sum()) for _, lab, _ in levels))
    logits = [head.cls(feat).detach().requires_grad_()
              for feat, _, _ in levels]
    targets = [torch.eye(NUM_CLASSES + 1)[lab][:, :NUM_CLASSES]
               for _, lab, _ in levels]
    total = sum(
        equalized_focal_loss(z, t, gamma, gamma / GAMMA_B, ALPHA, weight=w,
                             avg_factor=max(avg, 1.0))
        for z, t, (_, _, w) in zip(logits, targets, levels))
    grads = torch.autograd.grad(total, logits)
    pos = sum(((g.abs() * t) * (w > 0)[:, None]).sum(0)
              for g, t, (_, _, w) in zip(grads, targets, levels))
    neg = sum(((g.abs() * (1 - t)) * (w > 0)[:, None]).sum(0)
              for g, t, (_, _, w) in zip(grads, targets, levels))
    return torch.cat([pos, neg])


def test_statistics_after_n_steps_follow_the_recurrence():
    torch.manual_seed(0)
    head = TwoLevelHead()
    optim = torch.optim.SGD(head.parameters(), lr=0.5)
    gen = torch.Generator().manual_seed(3)
    pos = torch.zeros(NUM_CLASSES)
    neg = torch.zeros(NUM_CLASSES)
    ratio = torch.ones(NUM_CLASSES)
    for _ in range(6):
        levels = random_levels(gen)
        before = head.loss_cls.pos_neg.clone()
        increment = true_gradient_increments(head, levels, ratio)
        loss = head(levels)
        # both levels' forward passes ran, the statistics did not move yet
        assert torch.equal(head.loss_cls.pos_neg, before)
        optim.zero_grad()
        loss.backward()
        optim.step()
        # hand-rolled recurrence
        pos = pos + increment[:NUM_CLASSES]
        neg = neg + increment[NUM_CLASSES:]
        ratio = torch.clamp(pos / (neg + 1e-10), 0, 1)
        torch.testing.assert_close(head.loss_cls.pos_grad, pos)
        torch.testing.assert_close(head.loss_cls.neg_grad, neg)
        torch.testing.assert_close(head.loss_cls.pos_neg, ratio)
    # the recurrence exercised both branches of the clamp
    assert float(ratio.max()) == 1.0 and float(ratio.min()) < 0.9


def test_no_statistics_without_a_backward_pass_or_in_eval():
    efl = make_efl(ratio=RATIO)
    logits = torch.tensor(LOGITS, requires_grad=True)
    args = (torch.tensor(LABELS), torch.tensor(WEIGHTS))
    with torch.no_grad():
        efl(logits, *args)
    efl.eval()
    efl(logits, *args).backward()
    efl.train()
    efl(logits, *args)  # graph dropped without backward
    assert torch.equal(efl.pos_grad, torch.zeros(3))
    assert torch.equal(efl.pos_neg, torch.tensor(RATIO))


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    head = TwoLevelHead()
    head(random_levels(torch.Generator().manual_seed(0))).backward()
    assert head.loss_cls.pos_grad.abs().sum() > 0
    path = str(tmp_path / 'ckpt.pth')
    torch.save(head.state_dict(), path)

    restored = TwoLevelHead()
    restored.load_state_dict(torch.load(path))
    for name in ('pos_grad', 'neg_grad', 'pos_neg'):
        assert torch.equal(
            getattr(restored.loss_cls, name), getattr(head.loss_cls, name))
    # and training continues from the restored statistics
    levels = random_levels(torch.Generator().manual_seed(1))
    head(levels).backward()
    restored(levels).backward()
    torch.testing.assert_close(restored.loss_cls.pos_neg,
                               head.loss_cls.pos_neg)


# ------------------------------------------------------- 2-process DDP
DDP_STEPS = 3


def _ddp_worker(rank: int, world_size: int, out_dir: str) -> None:
    from torch.nn.parallel import DistributedDataParallel
    torch.manual_seed(0)  # same weights on every rank
    head = TwoLevelHead()
    # as mmengine wraps models: buffers are not broadcast
    model = DistributedDataParallel(head, broadcast_buffers=False)
    optim = torch.optim.SGD(model.parameters(), lr=0.5)
    gen = torch.Generator().manual_seed(100 + rank)  # different data
    local, summed = [], []
    for _ in range(DDP_STEPS):
        levels = random_levels(gen)
        increment = true_gradient_increments(head, levels,
                                             head.loss_cls.pos_neg.clone())
        everyone = [torch.zeros_like(increment) for _ in range(world_size)]
        dist.all_gather(everyone, increment)
        local.append(increment)
        summed.append(sum(everyone))
        optim.zero_grad()
        model(levels).backward()
        optim.step()
    torch.save(
        dict(
            buffers={k: v.clone()
                     for k, v in head.loss_cls.state_dict().items()},
            local=torch.stack(local),
            summed=torch.stack(summed)), osp.join(out_dir, f'{rank}.pth'))
    # free the DDP reducer while its process group is alive (freeing it
    # afterwards can hang at exit)
    del model, optim


def test_ddp_two_processes_keep_identical_summed_statistics(tmp_path):
    run_ddp(_ddp_worker, 2, str(tmp_path))
    ranks = [torch.load(str(tmp_path / f'{r}.pth')) for r in range(2)]
    # each rank saw different data ...
    assert not torch.allclose(ranks[0]['local'][0], ranks[1]['local'][0])
    # ... yet both hold the same statistics
    for name in ('pos_grad', 'neg_grad', 'pos_neg'):
        assert torch.equal(ranks[0]['buffers'][name],
                           ranks[1]['buffers'][name]), name
    # which follow the recurrence on the increments summed over the ranks
    pos = neg = torch.zeros(NUM_CLASSES)
    for increment in ranks[0]['summed']:
        pos = pos + increment[:NUM_CLASSES]
        neg = neg + increment[NUM_CLASSES:]
    buffers = ranks[0]['buffers']
    torch.testing.assert_close(buffers['pos_grad'], pos)
    torch.testing.assert_close(buffers['neg_grad'], neg)
    torch.testing.assert_close(buffers['pos_neg'],
                               torch.clamp(pos / (neg + 1e-10), 0, 1))


# ------------------------------------------------------------ inference
def test_get_activation_is_sigmoid_with_background_last():
    efl = make_efl()
    logits = torch.tensor(LOGITS)
    scores = efl.get_activation(logits)
    assert scores.shape == (4, 4)
    torch.testing.assert_close(scores[:, :3], logits.sigmoid())
    # background: probability that no class is present, prod_j (1 - p_j);
    # row 0: (1 - 0.731059) (1 - 0.119203) (1 - 0.622459) = 0.089433
    assert scores[0, 3].item() == pytest.approx(0.089433, abs=1e-6)
    torch.testing.assert_close(scores[:, 3], (1 - logits.sigmoid()).prod(1))
    assert bool(((scores >= 0) & (scores <= 1)).all())


def test_retina_head_scores_with_sigmoid():
    """mmdet's dense head, built with EFL, has C outputs and its detection
    scores are sigmoid(logit) (EFL leaves ``custom_cls_channels`` unset)."""
    from mmengine.config import ConfigDict
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    head = MODELS.build(
        dict(
            type='RetinaHead',
            num_classes=3,
            in_channels=8,
            feat_channels=8,
            stacked_convs=1,
            anchor_generator=dict(
                type='AnchorGenerator',
                octave_base_scale=4,
                scales_per_octave=1,
                ratios=[1.0],
                strides=[8, 16]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder'),
            loss_cls=dict(type='EFL', use_sigmoid=True, num_classes=3),
            loss_bbox=dict(type='L1Loss')))
    assert head.cls_out_channels == 3 and isinstance(head.loss_cls, EFL)
    torch.manual_seed(0)
    feats = [torch.randn(1, 8, 4, 4), torch.randn(1, 8, 2, 2)]
    cls_scores, bbox_preds = head(feats)
    cfg = ConfigDict(nms_pre=1000, score_thr=0.0, max_per_img=1000,
                     nms=dict(type='nms', iou_threshold=1.0))
    result = head.predict_by_feat(
        cls_scores, bbox_preds, batch_img_metas=[dict(img_shape=(32, 32))],
        cfg=cfg, rescale=False)[0]
    logits = torch.cat([s.permute(0, 2, 3, 1).reshape(-1, 3)
                        for s in cls_scores])
    assert result.scores.max().item() == pytest.approx(
        logits.sigmoid().max().item(), rel=1e-6)
    assert result.scores.max().item() != pytest.approx(
        logits.softmax(-1).max().item(), rel=1e-3)


# ---------------------------------------------------------- LVIS scale
def test_lvis_scale_standalone_like_focal_loss():
    """1024 anchors x 1203 classes, called as the classification-loss
    benchmark calls mmdet's FocalLoss: no detector needed."""
    torch.manual_seed(0)
    efl = EFL(1203)
    logits = (2 * torch.randn(1024, 1203)).requires_grad_()
    labels = torch.randint(0, 1204, (1024, ))
    weights = torch.ones(1024)
    loss = efl(logits, labels, weights, avg_factor=64.0)
    focal = FocalLoss()(logits, labels, weights, avg_factor=64.0)
    torch.testing.assert_close(loss, focal)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert efl.neg_grad.min() > 0 and bool((efl.pos_neg <= 1).all())
    second = efl(logits, labels, weights, avg_factor=64.0)
    assert second.item() != pytest.approx(loss.item())  # gammas moved


# ---------------------------------------------------------- bad input
@pytest.mark.parametrize('bad, message', [
    (float('nan'), 'not finite'),
    (float('inf'), 'not finite'),
])
def test_non_finite_logits_raise(bad, message):
    logits = torch.tensor(LOGITS)
    logits[1, 2] = bad
    with pytest.raises(ValueError, match=message):
        make_efl()(logits, torch.tensor(LABELS))


@pytest.mark.parametrize('labels', [[0, 2, 4, 1], [0, -1, 3, 1]])
def test_labels_out_of_range_raise(labels):
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 3\]'):
        make_efl()(torch.tensor(LOGITS), torch.tensor(labels))


def test_shape_and_config_errors():
    efl = make_efl()
    with pytest.raises(ValueError, match='use_sigmoid=True'):
        efl(torch.zeros(4, 4), torch.tensor(LABELS))  # C + 1 logits
    with pytest.raises(ValueError, match=r'labels must be \(4,\)'):
        efl(torch.tensor(LOGITS), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match='integers'):
        efl(torch.tensor(LOGITS), torch.tensor([0., 1., 2., 3.]))
    with pytest.raises(ValueError, match='label_weights'):
        efl(torch.tensor(LOGITS), torch.tensor(LABELS), torch.ones(5))
    with pytest.raises(ValueError, match='use_sigmoid=True'):
        EFL(3, use_sigmoid=False)
    with pytest.raises(ValueError, match='num_classes'):
        EFL(0)
    with pytest.raises(ValueError, match='gamma_b'):
        EFL(3, gamma_b=0)
