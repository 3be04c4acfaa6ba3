"""IterativeRoIHead (PCB's iterative learning): one shared box head run K
times on re-modulated features, the iterations' losses combined with the
stage weights and the box loss of the last iteration, the iteration index
given to PCBLoss (a_k), prediction from the last iteration, clear errors."""
import math

import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData

from mmdet.models.task_modules.assigners import MaxIoUAssigner
from mmdet.models.task_modules.samplers import PseudoSampler
from mmdet.structures.bbox import bbox2roi
from mmdet_longtail.models.roi_heads.iterative_roi_head import (
    IterativeRoIHead, combine_iteration_losses)

C = 3
CHANNELS = 4
M = [[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.1, 0.1, 0.8]]


def head_cfg(**kwargs):
    cfg = dict(
        type='IterativeRoIHead',
        num_iterations=3,
        iteration_loss_weights=[0.2, 0.2, 0.6],
        mlp_hidden=8,
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
            out_channels=CHANNELS,
            featmap_strides=[4]),
        bbox_head=dict(
            type='Shared2FCBBoxHead',
            in_channels=CHANNELS,
            fc_out_channels=16,
            roi_feat_size=7,
            num_classes=C,
            bbox_coder=dict(
                type='DeltaXYWHBBoxCoder',
                target_means=[0., 0., 0., 0.],
                target_stds=[0.1, 0.1, 0.2, 0.2]),
            loss_cls=dict(
                type='PCBLoss',
                base_loss=dict(type='CrossEntropyLoss'),
                num_classes=C,
                alpha=0.4,
                pcb_enabled=True)),
        train_cfg=ConfigDict(
            assigner=dict(
                type='MaxIoUAssigner',
                pos_iou_thr=0.5,
                neg_iou_thr=0.5,
                min_pos_iou=0.5),
            sampler=dict(type='PseudoSampler'),
            pos_weight=-1,
            debug=False))
    cfg.update(kwargs)
    return cfg


def build(**kwargs):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    torch.manual_seed(0)
    return MODELS.build(head_cfg(**kwargs)).double()


def sampling_results():
    """One image: 2 ground-truth boxes (classes 0 and 2), 5 proposals."""
    gt = InstanceData(
        bboxes=torch.tensor([[4., 4., 20., 20.], [24., 8., 40., 30.]]),
        labels=torch.tensor([0, 2]))
    proposals = InstanceData(priors=torch.tensor(
        [[4., 4., 20., 21.], [25., 8., 40., 30.], [0., 30., 10., 40.],
         [5., 5., 19., 19.], [30., 0., 44., 6.]]))
    assign = MaxIoUAssigner(0.5, 0.5, min_pos_iou=0.5).assign(proposals, gt)
    return [PseudoSampler().sample(assign, proposals, gt)]


def features():
    gen = torch.Generator().manual_seed(1)
    return (torch.randn(1, CHANNELS, 12, 12, generator=gen,
                        dtype=torch.float64), )


def test_modulation_by_hand():
    head = build()
    feats = torch.randn(2, CHANNELS, 7, 7, dtype=torch.float64)
    scores = torch.randn(2, C + 1, dtype=torch.float64)
    deltas = torch.randn(2, 4 * C, dtype=torch.float64)
    channel = head.cls_modulation(scores)  # (2, CHANNELS)
    spatial = head.loc_modulation(deltas)  # (2, 49)
    got = head.modulate(feats, scores, deltas)
    for n in range(2):
        for ch in range(CHANNELS):
            for loc in (0, 17, 48):
                y, x = divmod(loc, 7)
                assert got[n, ch, y, x].item() == pytest.approx(
                    feats[n, ch, y, x].item() * spatial[n, loc].item() +
                    channel[n, ch].item(), rel=1e-12)
    # two linear layers with a ReLU; the MLPs see s (C + 1) and t (4C)
    assert [type(m).__name__ for m in head.cls_modulation] == [
        'Linear', 'ReLU', 'Linear']
    assert head.cls_modulation[0].in_features == C + 1
    assert head.loc_modulation[0].in_features == 4 * C
    assert head.loc_modulation[-1].out_features == 49
    layer_norm = build(use_layer_norm=True)
    assert type(layer_norm.cls_modulation[0]).__name__ == 'LayerNorm'


def test_iterations_share_one_box_head():
    head = build()
    x = features()
    rois = bbox2roi([r.priors for r in sampling_results()])
    results = head._bbox_forward(x, rois)
    assert len(results['iterations']) == 3
    feats = head.bbox_roi_extractor(x, rois)
    torch.testing.assert_close(results['bbox_feats'], feats)
    for k, (scores, deltas) in enumerate(results['iterations']):
        expected = head.bbox_head(feats)
        torch.testing.assert_close(scores, expected[0])
        torch.testing.assert_close(deltas, expected[1])
        feats = head.modulate(feats, *expected)
    # the prediction is the last iteration's
    assert results['cls_score'] is results['iterations'][-1][0]
    assert sum(1 for n, _ in head.named_modules()
               if n.endswith('fc_cls')) == 1


def test_loss_combines_the_iterations_with_a_k():
    head = build()
    pcb = head.bbox_head.loss_cls
    pcb.confusion.copy_(torch.tensor(M, dtype=torch.float64))
    pcb.class_count.fill_(1)
    pcb.eval()  # no update of M, so the calls below see the same M
    x, results = features(), sampling_results()
    losses = head.bbox_loss(x, results)['loss_bbox']
    assert pcb.iteration == 2 and pcb.num_iterations == 3
    # by hand: every iteration's loss on the same targets with a_k
    rois = bbox2roi([r.priors for r in results])
    iterations = head._bbox_forward(x, rois)['iterations']
    labels, label_weights, bbox_targets, bbox_weights = \
        head.bbox_head.get_targets(results, head.train_cfg)
    assert labels.tolist() == [0, 2, 0, 3, 3]  # positives first
    eps = torch.finfo(torch.float32).eps
    per_iteration = []
    for k, (scores, deltas) in enumerate(iterations):
        a_k = 0.4 * k / 2
        total = 0.0
        for row, y in zip(scores.tolist(), labels.tolist()):
            exps = [math.exp(v) for v in row]
            p = [e / sum(exps) for e in exps]
            ce = -math.log(p[y])
            total += ce / (5 + eps)
            if y < C:
                col = [M[j][y] for j in range(C)]
                q = [v / sum(col) for v in col]
                kl = sum(qj * math.log(qj / p[j]) for j, qj in enumerate(q))
                total += a_k * (kl - ce) / 5
        per_iteration.append(total)
        pcb.set_iteration(k, 3)
        own = head.bbox_head.loss(scores, deltas, rois, labels,
                                  label_weights, bbox_targets, bbox_weights)
        assert own['loss_cls'].item() == pytest.approx(total, rel=1e-12)
    assert losses['loss_cls'].item() == pytest.approx(
        0.2 * per_iteration[0] + 0.2 * per_iteration[1] +
        0.6 * per_iteration[2], rel=1e-12)
    # the box loss of the last iteration, unweighted
    torch.testing.assert_close(losses['loss_bbox'], own['loss_bbox'])
    torch.testing.assert_close(losses['acc'], own['acc'])


def test_combine_iteration_losses_by_hand():
    losses = [dict(loss_cls=torch.tensor(1.), loss_bbox=torch.tensor(10.),
                   acc=torch.tensor(50.)),
              dict(loss_cls=torch.tensor(2.), loss_bbox=torch.tensor(20.),
                   acc=torch.tensor(60.)),
              dict(loss_cls=torch.tensor(4.), loss_bbox=torch.tensor(40.),
                   acc=torch.tensor(70.))]
    weights = [0.2, 0.2, 0.6]
    got = combine_iteration_losses(losses, weights, 2)
    assert got['loss_cls'].item() == pytest.approx(0.2 + 0.4 + 2.4)
    assert got['loss_bbox'].item() == 40.0
    assert got['acc'].item() == 70.0
    weighted = combine_iteration_losses(losses, weights, None)
    assert weighted['loss_bbox'].item() == pytest.approx(2 + 4 + 24)


def test_training_updates_the_matrix_once_per_iteration():
    head = build()
    head.bbox_loss(features(), sampling_results())
    # 3 foreground RoIs (classes 0, 2, 0), 3 iterations
    assert head.bbox_head.loss_cls.class_count.tolist() == [6, 0, 3]


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_iterations=0), 'num_iterations must be an integer >= 1'),
    (dict(num_iterations=2), r'iteration_loss_weights must be 2 numbers'),
    (dict(iteration_loss_weights=[0.2, -0.2, 0.6]),
     r'iteration_loss_weights must be 3 numbers >= 0'),
    (dict(regression_iteration=3), r'regression_iteration must lie in'),
    (dict(mlp_layers=0), 'mlp_layers must be >= 1, got 0'),
    (dict(shared_head=dict(type='ResLayer', depth=50, stage=3)),
     'a shared_head is not supported'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=f'IterativeRoIHead: {match}'):
        build(**kwargs)


def test_registered():
    from mmdet.registry import MODELS
    assert MODELS.get('IterativeRoIHead') is IterativeRoIHead
