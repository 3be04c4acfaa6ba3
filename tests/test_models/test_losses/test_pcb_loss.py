"""PCBLoss (He et al., CVPR 2022): the confusion-matrix update and the loss
after the switch by hand (C = 3, float64), the loss before the switch is
the base loss, background RoIs have no pairwise term, gradcheck, state after
N steps, checkpoint round trip, 2-process DDP, through mmdet's
Shared2FCBBoxHead with CE, Seesaw and EQLv2 bases, clear errors."""
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ddp import run_ddp
from heads import head_losses, shared_2fc_head
from mmdet.models.losses import CrossEntropyLoss
from mmdet_longtail.models.losses.pcb_loss import PCBLoss

C = 3
CE = dict(type='CrossEntropyLoss')
SEESAW = dict(type='SeesawLoss', p=0.8, q=2.0, num_classes=C)
EQLV2 = dict(type='EQLv2', num_classes=C)

# 4 RoIs, C + 1 = 4 softmax logits (background last)
Z = torch.tensor([[2.0, -1.0, 0.5, 0.0],   # class 0
                  [0.0, 1.0, -2.0, 3.0],   # background
                  [1.0, 0.5, -0.5, 0.2],   # class 0
                  [-1.0, 0.0, 2.0, 0.5]],  # class 2
                 dtype=torch.float64)
LABELS = torch.tensor([0, 3, 0, 2])
# a full confusion matrix (rows: ground truth, sum 1) for the loss tests
M = [[0.7, 0.2, 0.1],
     [0.3, 0.6, 0.1],
     [0.1, 0.1, 0.8]]


def softmax(row):
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def make(base=CE, **kwargs):
    from mmdet.utils import register_all_modules
    register_all_modules()
    return PCBLoss(base_loss=base, num_classes=C, **kwargs).double()


def with_matrix(loss, matrix=M):
    """``loss`` in eval mode (no update) with M set and every class
    seen."""
    loss.confusion.copy_(torch.tensor(matrix, dtype=torch.float64))
    loss.class_count.fill_(1)
    return loss.eval()


def fightback(matrix, y):
    """Column y of M, normalised."""
    column = [matrix[j][y] for j in range(C)]
    return [v / sum(column) for v in column]


def ce_pcb_by_hand(z, labels, alpha, matrix=M, base_norm=None):
    """CE_bg + (1 - a) CE_fg + a KL(q_y || p), over N; with ``base_norm``
    the CE of every RoI over it instead (mmdet's avg_factor + eps)."""
    base_norm = base_norm or len(labels)
    base = pairwise = 0.0
    for row, y in zip(z.tolist(), labels.tolist()):
        p = softmax(row)
        ce = -math.log(p[y])
        base += ce
        if y == C:
            continue
        q = fightback(matrix, y)
        kl = sum(qj * math.log(qj / p[j]) for j, qj in enumerate(q)
                 if qj > 0)
        pairwise += alpha * (kl - ce)
    return base / base_norm + pairwise / len(labels)


# ------------------------------------------------------- the update of M
def test_confusion_update_by_hand():
    loss = make(momentum=0.9).train()
    loss(Z, LABELS)
    # class 0: mean softmax over the 3 class logits of RoIs 0 and 2
    p0, p2 = softmax(Z[0, :C].tolist()), softmax(Z[2, :C].tolist())
    row0 = [(a + b) / 2 for a, b in zip(p0, p2)]
    row2 = softmax(Z[3, :C].tolist())
    expected = [row0, [0.0] * C, row2]  # a row's first batch sets it
    assert loss.confusion.tolist() == [
        pytest.approx(r, rel=1e-12, abs=1e-15) for r in expected]
    assert loss.class_count.tolist() == [2, 0, 1]
    # second step: class 1 first seen; class 0 moves by 1 - m = 0.1
    z2 = torch.tensor([[0.3, 0.2, 0.1, 0.0], [1.0, -1.0, 0.0, 0.0]],
                      dtype=torch.float64)
    loss(z2, torch.tensor([1, 0]))
    b0 = softmax(z2[1, :C].tolist())
    expected = [[0.9 * m + 0.1 * b for m, b in zip(row0, b0)],
                softmax(z2[0, :C].tolist()), row2]
    assert loss.confusion.tolist() == [
        pytest.approx(r, rel=1e-12) for r in expected]
    assert loss.class_count.tolist() == [3, 1, 1]
    # rows of softmax classes stay distributions
    torch.testing.assert_close(loss.confusion.sum(1),
                               torch.ones(C, dtype=torch.float64))


def test_no_update_in_eval_mode_or_from_background():
    loss = make().eval()
    loss(Z, LABELS)
    assert not loss.confusion.any() and not loss.class_count.any()
    loss.train()
    loss(Z[[1]], LABELS[[1]])  # background only
    assert not loss.confusion.any() and not loss.class_count.any()


def reference_steps(batches, momentum):
    """M and the counts by a plain loop over classes."""
    matrix = [[0.0] * C for _ in range(C)]
    counts = [0] * C
    for z, labels in batches:
        for j in range(C):
            rows = [softmax(z[i, :C].tolist()) for i in range(len(labels))
                    if labels[i] == j]
            if not rows:
                continue
            batch = [sum(r[c] for r in rows) / len(rows) for c in range(C)]
            matrix[j] = batch if counts[j] == 0 else [
                momentum * m + (1 - momentum) * b
                for m, b in zip(matrix[j], batch)]
            counts[j] += len(rows)
    return matrix, counts


def random_batch(gen, num=6):
    z = torch.randn(num, C + 1, generator=gen, dtype=torch.float64) * 2
    labels = torch.randint(0, C + 1, (num, ), generator=gen)
    return z, labels


def test_state_after_n_steps_follows_the_recurrence():
    gen = torch.Generator().manual_seed(0)
    batches = [random_batch(gen) for _ in range(8)]
    loss = make().train()
    for z, labels in batches:
        loss(z, labels)
    matrix, counts = reference_steps(batches, 0.99)
    assert loss.class_count.tolist() == counts
    for got, want in zip(loss.confusion.tolist(), matrix):
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15)


# ------------------------------------------------------------- the loss
def test_loss_before_the_switch_is_the_base_loss():
    base = CrossEntropyLoss()
    gen = torch.Generator().manual_seed(1)
    loss = make().train()
    for _ in range(3):
        z, labels = random_batch(gen)
        assert torch.equal(loss(z, labels), base(z, labels))
    # switched on, but class counts incomplete: still the base loss
    loss = make(pcb_enabled=True).train()
    z, labels = Z, torch.tensor([0, 3, 0, 0])  # classes 1, 2 never seen
    assert torch.equal(loss(z, labels), base(z, labels))
    # the first iteration of three has a_0 = 0
    loss = with_matrix(make(pcb_enabled=True))
    loss.set_iteration(0, 3)
    assert torch.equal(loss(Z, LABELS), base(Z, LABELS))


@pytest.mark.parametrize('iteration, num_iterations, factor', [
    (2, 3, 1.0), (1, 3, 0.5), (0, 1, 1.0), (1, 2, 1.0)])
def test_loss_after_the_switch_by_hand(iteration, num_iterations, factor):
    loss = with_matrix(make(alpha=0.4, pcb_enabled=True))
    loss.set_iteration(iteration, num_iterations)
    got = loss(Z, LABELS)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(
        ce_pcb_by_hand(Z, LABELS, 0.4 * factor), rel=1e-12)


def test_loss_after_the_switch_in_training_uses_the_updated_matrix():
    loss = make(alpha=0.4, pcb_enabled=True, momentum=0.5).train()
    loss.confusion.copy_(torch.tensor(M, dtype=torch.float64))
    loss.class_count.fill_(1)
    got = loss(Z, LABELS)
    updated = loss.confusion.tolist()
    assert updated != M
    assert got.item() == pytest.approx(
        ce_pcb_by_hand(Z, LABELS, 0.4, updated), rel=1e-12)


def test_reductions_and_label_weights():
    loss = with_matrix(make(alpha=0.4, pcb_enabled=True))
    weights = torch.tensor([1.0, 0.5, 2.0, 0.0], dtype=torch.float64)
    per_roi = loss(Z, LABELS, reduction_override='none')
    assert per_roi.shape == (4, )
    mean = loss(Z, LABELS)
    torch.testing.assert_close(per_roi.mean(), mean, rtol=1e-12, atol=0)
    torch.testing.assert_close(loss(Z, LABELS, reduction_override='sum'),
                               per_roi.sum(), rtol=1e-12, atol=0)
    # mmdet's CE divides by avg_factor + eps; the pairwise term by
    # avg_factor, both with the label weights
    weighted = loss(Z, LABELS, weights, avg_factor=3.0)
    term = loss.pairwise_term(Z, LABELS)
    expected = CrossEntropyLoss()(Z, LABELS, weights, avg_factor=3.0) + \
        0.4 * (term * weights).sum() / 3.0
    torch.testing.assert_close(weighted, expected, rtol=1e-12, atol=0)


def test_background_rois_have_no_pairwise_term():
    loss = with_matrix(make(alpha=0.4, pcb_enabled=True))
    term = loss.pairwise_term(Z, LABELS)
    assert term[1] == 0
    # the pairwise part (loss minus base) does not see the background row
    z = Z.clone().requires_grad_(True)
    (loss(z, LABELS) - CrossEntropyLoss()(z, LABELS)).backward()
    assert z.grad[1].abs().max() == 0
    assert z.grad[0].abs().max() > 0
    other = Z.clone()
    other[1] = torch.tensor([5.0, -3.0, 1.0, 0.0])
    torch.testing.assert_close(loss.pairwise_term(other, LABELS), term,
                               rtol=0, atol=0)


@pytest.mark.parametrize('base, width', [(CE, C + 1), (SEESAW, C + 2),
                                         (EQLV2, C + 1)])
def test_gradcheck_float64(base, width):
    loss = with_matrix(make(base, alpha=0.4, pcb_enabled=True))
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(5, width, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 1, 3, 2, 0])

    def total(x):
        out = loss(x, labels)
        # Seesaw's own factors move with every call and use detached
        # scores: check the pairwise term
        return out['loss_pcb'] if isinstance(out, dict) else out

    assert torch.autograd.gradcheck(total, (z.requires_grad_(True), ))


def test_half_precision_pairwise_term_in_float32():
    loss = with_matrix(make(alpha=0.4, pcb_enabled=True)).float()
    term = loss.pairwise_term(Z.half(), LABELS)
    assert term.dtype == torch.float32
    torch.testing.assert_close(
        term, loss.double().pairwise_term(Z.half().double(), LABELS).float(),
        rtol=1e-5, atol=1e-6)


# ------------------------------------------------------- checkpoints
def test_checkpoint_round_trip(tmp_path):
    gen = torch.Generator().manual_seed(3)
    head = nn.ModuleDict(dict(loss_cls=make(pcb_enabled=True).train()))
    for _ in range(4):
        head.loss_cls(*random_batch(gen, 12))
    assert {'loss_cls.confusion', 'loss_cls.class_count'} <= set(
        head.state_dict())
    path = str(tmp_path / 'ckpt.pth')
    torch.save(head.state_dict(), path)
    restored = nn.ModuleDict(dict(loss_cls=make(pcb_enabled=True).train()))
    restored.load_state_dict(torch.load(path))
    for _ in range(3):
        batch = random_batch(gen, 12)
        assert torch.equal(restored.loss_cls(*batch), head.loss_cls(*batch))
    assert torch.equal(restored.loss_cls.confusion, head.loss_cls.confusion)


# ------------------------------------------------------ 2-process DDP
DDP_STEPS = 3


def rank_batch(rank, step):
    gen = torch.Generator().manual_seed(100 * step + rank)
    return random_batch(gen, 10)


def _ddp_worker(rank, world_size, out_dir):
    loss = make().train()
    for step in range(DDP_STEPS):
        loss(*rank_batch(rank, step))
    torch.save({k: v.clone() for k, v in loss.state_dict().items()},
               osp.join(out_dir, f'{rank}.pth'))


def test_ddp_two_processes_hold_the_matrix_of_both_ranks(tmp_path):
    run_ddp(_ddp_worker, 2, str(tmp_path))
    ranks = [torch.load(str(tmp_path / f'{r}.pth')) for r in range(2)]
    assert not torch.equal(rank_batch(0, 0)[0], rank_batch(1, 0)[0])
    for name in ('confusion', 'class_count'):
        assert torch.equal(ranks[0][name], ranks[1][name]), name
    # one process with both ranks' RoIs of each step
    batches = [(torch.cat([rank_batch(r, s)[0] for r in range(2)]),
                torch.cat([rank_batch(r, s)[1] for r in range(2)]))
               for s in range(DDP_STEPS)]
    matrix, counts = reference_steps(batches, 0.99)
    assert ranks[0]['class_count'].tolist() == counts
    for got, want in zip(ranks[0]['confusion'].tolist(), matrix):
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15)


# ---------------------------------------- through mmdet's Shared2FCBBoxHead
def build_head(base, alpha):
    head = shared_2fc_head(
        dict(type='PCBLoss', base_loss=base, num_classes=C, alpha=alpha,
             pcb_enabled=True),
        num_classes=C).double()
    with_matrix(head.loss_cls)
    return head


def test_through_bbox_head_with_ce():
    head = build_head(CE, 0.4)
    assert head.fc_cls.out_features == C + 1
    losses = head_losses(head, Z, LABELS)
    # BBoxHead: avg_factor = 4 RoIs with a label weight; mmdet's CE adds
    # float32's eps to it
    eps = torch.finfo(torch.float32).eps
    assert losses['loss_cls'].item() == pytest.approx(
        ce_pcb_by_hand(Z, LABELS, 0.4, base_norm=4 + eps), rel=1e-12)
    assert 'acc' in losses


def test_through_bbox_head_with_seesaw():
    head = build_head(SEESAW, 0.05)
    assert head.fc_cls.out_features == C + 2
    gen = torch.Generator().manual_seed(4)
    z = torch.randn(4, C + 2, generator=gen, dtype=torch.float64)
    losses = head_losses(head, z, LABELS)
    assert {'loss_cls_classes', 'loss_cls_objectness', 'loss_pcb',
            'acc_classes'} <= set(losses)
    # a (1/N) sum_fg [KL(q_y || p) - (-log p_y)], p: softmax of the C
    # class logits
    total = 0.0
    for row, y in zip(z.tolist(), LABELS.tolist()):
        if y == C:
            continue
        p, q = softmax(row[:C]), fightback(M, y)
        total += sum(qj * math.log(qj / p[j]) for j, qj in enumerate(q)) \
            + math.log(p[y])
    assert losses['loss_pcb'].item() == pytest.approx(0.05 * total / 4,
                                                      rel=1e-12)
    # the Seesaw terms are the base loss's own
    seesaw = head.loss_cls.base
    seesaw.cum_samples.zero_()
    plain = seesaw(z, LABELS, torch.ones(4).double(), avg_factor=4)
    for key in ('loss_cls_classes', 'loss_cls_objectness'):
        torch.testing.assert_close(losses[key], plain[key])


def test_through_bbox_head_with_eqlv2():
    head = build_head(EQLV2, 0.2)
    assert head.fc_cls.out_features == C + 1
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(4, C + 1, generator=gen, dtype=torch.float64)
    base = head.loss_cls.base
    plain = base(z, LABELS).item()  # eval: no statistics update
    losses = head_losses(head, z, LABELS)
    # sigmoid classifier: q_y = column y of M, not normalised; per class
    # KL_b(q || s) - KL_b(e_y || s)
    total = 0.0
    for row, y in zip(z.tolist(), LABELS.tolist()):
        if y == C:
            continue
        for c in range(C):
            s = 1 / (1 + math.exp(-row[c]))
            q, e = M[c][y], float(c == y)
            total += q * math.log(q / s) + (1 - q) * math.log(
                (1 - q) / (1 - s)) + e * math.log(s) + (1 - e) * math.log(
                    1 - s)
    assert losses['loss_cls'].item() == pytest.approx(
        plain + 0.2 * total / 4, rel=1e-12)
    assert 'acc_objectness' in losses


# --------------------------------------------------------------- errors
@pytest.mark.parametrize('kwargs, match', [
    (dict(momentum=1.0), r'momentum must lie in \[0, 1\), got 1.0'),
    (dict(momentum=-0.1), r'momentum must lie in \[0, 1\), got -0.1'),
    (dict(momentum=float('nan')), 'momentum must lie in'),
    (dict(alpha=1.5), r'alpha must lie in \[0, 1\], got 1.5'),
    (dict(alpha=-0.1), r'alpha must lie in \[0, 1\], got -0.1'),
    (dict(num_classes=0), 'num_classes must be >= 1, got 0'),
    (dict(base_loss='CrossEntropyLoss'), 'base_loss must be a loss config'),
    (dict(base_loss=dict(type='FocalLoss')),
     'base_loss FocalLoss does not describe its foreground class logits'),
    (dict(base_loss=dict(type='CrossEntropyLoss', use_mask=True)),
     'use_mask=True is a mask loss'),
    (dict(base_loss=dict(type='EQLv2', num_classes=4)),
     'num_classes=3 but base_loss EQLv2 has 4'),
    (dict(base_loss=dict(type='GroupSoftmaxLoss', num_classes=C,
                         class_statistics=dict(
                             image_count=[1, 20, 200],
                             instance_count=[1, 20, 200]))),
     "GroupSoftmaxLoss has a 'bags' classifier"),
])
def test_bad_arguments(kwargs, match):
    from mmdet.utils import register_all_modules
    register_all_modules()
    args = dict(base_loss=CE, num_classes=C)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        PCBLoss(**args)


def test_bad_inputs_and_iterations():
    loss = make()
    with pytest.raises(ValueError, match=r'PCBLoss: expects 4 logits'):
        loss(Z[:, :3], LABELS)
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 3\]'):
        loss(Z, torch.tensor([0, 4, 0, 1]))
    with pytest.raises(ValueError, match=r'reduction must be one of'):
        loss(Z, LABELS, reduction_override='max')
    with pytest.raises(ValueError, match=r'iteration must lie in \[0, 3\)'):
        loss.set_iteration(3, 3)


def test_protocol_is_the_base_loss():
    from mmdet.utils import register_all_modules
    register_all_modules()
    seesaw = make(SEESAW)
    assert seesaw.custom_cls_channels and seesaw.custom_activation
    assert seesaw.get_cls_channels(C) == C + 2
    assert seesaw.classifier_layout().kind == 'seesaw'
    z = torch.randn(2, C + 2, dtype=torch.float64)
    torch.testing.assert_close(seesaw.get_activation(z),
                               seesaw.base.get_activation(z))
    ce = make()
    assert not ce.custom_cls_channels and not ce.custom_activation
    assert ce.classifier_layout().kind == 'softmax'
    softmax_of_fg = F.softmax(Z[:, :C], dim=1)
    torch.testing.assert_close(ce.class_probabilities(Z), softmax_of_fg)
