"""Every tiny synthetic framework x method, in process: the config builds,
one training step on two images of the synthetic set (through the config's
own train pipeline) gives finite losses whose gradients reach the
classifier and updates the method's state, and one prediction on two val
images (through the test pipeline) gives valid detections.

This is the framework matrix that used to train and test each config in
tools/train.py and tools/test.py subprocesses; those tools keep one
subprocess smoke each (tests/test_tools/test_train_test.py). The probes
also check how each method scores at test time:

* EQL / EQLv2: the classifier weights set to zero and the biases to chosen
  logits ``b`` give every RoI the logits ``b`` (Cascade / HTC average equal
  stage logits), so each detection of class c carries ``activation(b)_c``:
  ``sigmoid(b_c)`` for EQL, ``sigmoid(b_c) (1 - sigmoid(b_bg))`` for EQLv2,
  neither the softmax of mmdet's heads. Likewise IIF scores
  ``softmax(w * b)`` with its inverse image frequencies w, ECM
  ``sigmoid(b_c) (1 - sigmoid(b_bg))`` and GOL ``exp(-exp(-b_c))``.
* EFL (RetinaNet, ATSS): the best score equals the best sigmoid of the raw
  head outputs (ATSS times the sigmoid of its centerness), not the softmax.
"""
import os.path as osp
import random

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT, build_config_model

NUM_CLASSES = 30
TWO_STAGE = ('faster-rcnn', 'mask-rcnn', 'cascade-mask-rcnn',
             'htc-without-semantic')
CONFIGS = {
    **{('baseline', f): f'configs/lvis/{f}_r18-tiny_fpn_12e_synthetic-lvis.py'
       for f in TWO_STAGE},
    **{(m, f): f'configs/{m}/{f}_r18-tiny_fpn_{m}_12e_synthetic-lvis.py'
       for m in ('eql', 'eqlv2', 'bags', 'tde', 'federated', 'fracal', 'iif',
                 'ecm', 'gol')
       for f in TWO_STAGE},
    # re-weighting, DRW and DRS: Mask R-CNN
    **{(f'reweighting-{v}', 'mask-rcnn'):
       f'configs/reweighting/mask-rcnn_r18-tiny_fpn_{v}_12e_synthetic-lvis.py'
       for v in ('cb-ce', 'cost-sensitive-ce', 'cb-sigmoid', 'cb-ce_drw-9')},
    **{(f'drs-{v}', 'mask-rcnn'):
       f'configs/drs/mask-rcnn_r18-tiny_fpn_drs-{v}_12e_synthetic-lvis.py'
       for v in ('rfs-8e-2-9', 'cas-9')},
    # PCB (iterative RoI head, CE + pairwise term): Mask R-CNN
    ('pcb', 'mask-rcnn'):
    'configs/pcb/mask-rcnn_r18-tiny_fpn_pcb_12e_synthetic-lvis.py',
    **{('acsl', f): f'configs/acsl/{f}_r18-tiny_fpn_acsl_12e_synthetic-lvis.py'
       for f in ('faster-rcnn', 'mask-rcnn')},
    **{(f'augmentation-{v}', f):
       f'configs/augmentation/{f}_r18-tiny_fpn_{v}_12e_synthetic-lvis.py'
       for f, v in (('mask-rcnn', 'lsj-copy-paste'),
                    ('mask-rcnn', 'lsj-copy-paste_rfs-8e-2'),
                    ('mask-rcnn', 'mixup'))},
    ('efl', 'retinanet'):
    'configs/efl/retinanet_r18-tiny_fpn_efl_12e_synthetic-lvis.py',
    ('efl', 'atss'): 'configs/efl/atss_r18-tiny_fpn_efl_12e_synthetic-lvis.py',
}
CLASSIFIERS = ('fc_cls', 'retina_cls', 'atss_cls')
EFL_STATS = ('pos_grad', 'neg_grad', 'pos_neg')


def seed_everything(seed: int = 0) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build(config: str, data_root: str, monkeypatch, **test_cfg):
    from mmengine.config import Config
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    import mmdet_longtail  # noqa: F401
    register_all_modules()
    monkeypatch.setenv('MMLT_SYNTHETIC_ROOT', data_root)
    cfg = Config.fromfile(osp.join(REPO_ROOT, config))
    for key, value in test_cfg.items():
        cfg.merge_from_dict({f'model.test_cfg.{key}': value})
    seed_everything()
    model = build_config_model(cfg)
    model.init_weights()
    train = DATASETS.build(cfg.train_dataloader.dataset)
    test = DATASETS.build(cfg.test_dataloader.dataset)
    return model, train, test


def batch(model, dataset, training: bool, indices=(0, 1)) -> dict:
    from mmengine.dataset import pseudo_collate
    return model.data_preprocessor(
        pseudo_collate([dataset[i] for i in indices]), training)


def classifiers(model) -> list:
    return [(name, m) for name, m in model.named_modules()
            if name.rsplit('.', 1)[-1] in CLASSIFIERS]


def train_step(model, dataset) -> dict:
    """One SGD step on two training images; the losses."""
    seed_everything()
    model.train()
    losses = model(**batch(model, dataset, True), mode='loss')
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(v)
                for k, v in losses.items() if 'loss' in k)
    for key, value in losses.items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            assert torch.isfinite(torch.as_tensor(v)).all(), (key, value)
    optim = torch.optim.SGD(model.parameters(), lr=0.01)
    optim.zero_grad()
    total.backward()
    found = classifiers(model)
    assert found, 'no classifier layer'
    for name, layer in found:
        grad = layer.weight.grad
        assert grad is not None, f'no gradient reached {name}'
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    optim.step()
    return losses


def predict(model, dataset, indices=(0, 1)) -> list:
    model.eval()
    with torch.no_grad():
        results = model(**batch(model, dataset, False, indices),
                        mode='predict')
    assert len(results) == len(indices)
    for res in results:
        pred = res.pred_instances
        n = len(pred.labels)
        assert pred.bboxes.shape == (n, 4) and pred.scores.shape == (n, )
        assert torch.isfinite(pred.bboxes).all()
        if n:
            assert 0 <= int(pred.labels.min()) and \
                int(pred.labels.max()) < NUM_CLASSES
            assert 0 <= float(pred.scores.min()) and \
                float(pred.scores.max()) <= 1
        if 'masks' in pred:
            assert pred.masks.shape[0] == n
    return results


def stages(framework: str) -> int:
    return 3 if framework in ('cascade-mask-rcnn',
                              'htc-without-semantic') else 1


@pytest.mark.parametrize('method,framework', sorted(CONFIGS),
                         ids=lambda v: v)
def test_one_train_step_and_one_prediction(synthetic_root, monkeypatch,
                                           method, framework):
    model, train, test = build(CONFIGS[method, framework], synthetic_root,
                               monkeypatch)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    losses = train_step(model, train)
    assert any(k.split('.')[-1] == 'loss_cls' for k in losses), sorted(losses)
    if framework in ('mask-rcnn', 'cascade-mask-rcnn',
                     'htc-without-semantic'):
        assert any(k.endswith('loss_mask') for k in losses), sorted(losses)
    after = model.state_dict()
    n = stages(framework)
    # the loss's own accuracy
    if method in ('eql', 'federated', 'gol', 'acsl'):
        assert any('acc_classes' in k for k in losses), sorted(losses)
    if method in ('eqlv2', 'ecm'):
        assert any('acc_objectness' in k for k in losses), sorted(losses)
    if method == 'eqlv2':
        buffers = {k: v for k, v in after.items()
                   if k.rsplit('.', 1)[-1] in EFL_STATS}
        assert len(buffers) == 3 * n
        for name, value in buffers.items():
            if name.endswith('pos_neg'):  # no ratio at its initial 100
                assert bool((value < 100).all()), name
            elif name.endswith('neg_grad'):
                assert bool((value > 0).all()), name
    if method == 'bags':
        weights = [k for k in after if k.endswith('fc_cls.weight')]
        assert len(weights) == n
        # C + 1 + number of groups
        assert all(after[k].shape[0] == NUM_CLASSES + 1 + 5 for k in weights)
        # one "others" draw per iteration and stage
        steps = [k for k in after if k.endswith('loss_cls.sampling_step')]
        assert [int(after[k]) for k in steps] == [1] * n
    if method == 'tde':
        averages = [v for k, v in sorted(after.items())
                    if k.endswith('fc_cls.moving_average_feature')]
        assert len(averages) == n
        for e in averages:  # updated from the foreground RoIs
            assert e.shape == (128, ) and e.norm() > 0
    if method == 'efl':
        assert ('loss_centerness' in losses) == (framework == 'atss')
        pos, neg, ratio = (after[f'bbox_head.loss_cls.{s}']
                           for s in EFL_STATS)
        assert pos.shape == neg.shape == ratio.shape == (NUM_CLASSES, )
        assert torch.isfinite(pos).all() and torch.isfinite(neg).all()
        assert float(pos.sum()) > 0 and float(neg.min()) > 0
        torch.testing.assert_close(ratio,
                                   (pos / (neg + 1e-10)).clamp(0, 1))
    if method == 'pcb':
        # M after one step: each class with a foreground RoI has a row of
        # its mean class probabilities (3 iterations' updates)
        confusion = after['roi_head.bbox_head.loss_cls.confusion']
        count = after['roi_head.bbox_head.loss_cls.class_count']
        assert confusion.shape == (NUM_CLASSES, NUM_CLASSES)
        seen = count > 0
        assert bool(seen.any()) and float(count.sum()) % 3 == 0
        torch.testing.assert_close(confusion[seen].sum(1),
                                   torch.ones(int(seen.sum())))
        assert bool((confusion[~seen] == 0).all())
    # the step changed the classifier
    for name, _ in classifiers(model):
        assert not torch.equal(after[name + '.weight'],
                               state[name + '.weight']), name
    predict(model, test)


def test_pcb_switched_on_changes_only_the_classification_loss(
        synthetic_root, monkeypatch):
    """Through the tiny Mask R-CNN: with PCB on (every class seen) the
    classification loss of the iterative head changes, the box and mask
    losses and the update of M do not."""
    import copy
    model, train, _ = build(CONFIGS['pcb', 'mask-rcnn'], synthetic_root,
                            monkeypatch)
    pcb = model.roi_head.bbox_head.loss_cls
    pcb.class_count.fill_(1)
    pcb.confusion.copy_(0.5 * torch.eye(NUM_CLASSES) + 0.5 / NUM_CLASSES)
    switched = copy.deepcopy(model)
    switched.roi_head.bbox_head.loss_cls.pcb_enabled = True
    losses = []
    for m in (model, switched):
        seed_everything()
        m.train()
        losses.append(m(**batch(m, train, True), mode='loss'))
    off, on = losses
    assert set(off) == set(on)
    assert float(on['loss_cls']) != float(off['loss_cls'])
    for key in ('loss_bbox', 'loss_mask', 'loss_rpn_cls'):
        value = off[key][0] if isinstance(off[key], list) else off[key]
        other = on[key][0] if isinstance(on[key], list) else on[key]
        assert torch.equal(value, other), key
    assert torch.equal(pcb.confusion,
                       switched.roi_head.bbox_head.loss_cls.confusion)


@pytest.mark.parametrize('method,framework',
                         [('eqlv2', 'faster-rcnn'), ('efl', 'retinanet')],
                         ids=lambda v: v)
def test_loss_statistics_resume_with_the_state_dict(synthetic_root,
                                                    monkeypatch, method,
                                                    framework):
    """The statistics are part of the checkpoint: a fresh model loading it
    continues exactly as the model that never stopped (what --resume needs;
    tests/test_tools/test_train_test.py resumes EQLv2 through train.py)."""
    config = CONFIGS[method, framework]
    model, train, _ = build(config, synthetic_root, monkeypatch)
    train_step(model, train)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    names = sorted(k for k in saved if k.rsplit('.', 1)[-1] in EFL_STATS)
    assert len(names) == 3
    restored, _, _ = build(config, synthetic_root, monkeypatch)
    assert not torch.equal(restored.state_dict()[names[1]], saved[names[1]])
    restored.load_state_dict(saved)
    train_step(model, train)
    train_step(restored, train)
    for name in names:
        assert torch.equal(restored.state_dict()[name],
                           model.state_dict()[name]), name
        # the second step added to the restored statistics (EFL's ratio
        # is clamped to [0, 1], and may stay at its bounds)
        if method == 'eqlv2' or not name.endswith('pos_neg'):
            assert not torch.equal(model.state_dict()[name],
                                   saved[name]), name
    neg = next(n for n in names if n.endswith('neg_grad'))
    assert bool((model.state_dict()[neg] >= saved[neg]).all())


# ----------------------------------------------------- test-time scoring
WITH_BACKGROUND_LOGIT = ('eqlv2', 'ecm', 'iif')
SCORED_BY_THE_LOSS = ('eql', 'eqlv2', 'iif', 'ecm', 'gol')


def probe_logits(loss: str) -> torch.Tensor:
    """Distinct logits per class (in a shuffled order) and, for EQLv2, ECM
    and IIF, a background logit of 0.4."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.linspace(-5., 1., NUM_CLASSES)[torch.randperm(
        NUM_CLASSES, generator=gen)]
    if loss in WITH_BACKGROUND_LOGIT:
        logits = torch.cat([logits, torch.tensor([0.4])])
    return logits


def expected_scores(loss: str, logits: torch.Tensor,
                    model) -> torch.Tensor:
    """Each method's test score of the probe logits, from its formula."""
    if loss == 'eql':
        return logits.sigmoid()
    if loss == 'gol':  # Gumbel of the logits clamped to [-4, 10]
        return torch.exp(-torch.exp(-logits.clamp(-4, 10)))
    if loss == 'iif':  # softmax of w * z, w_c = ln(N / n_c), w_bg = 1
        loss_cls = next(m for m in model.modules()
                        if type(m).__name__ == 'IIFLoss')
        weights = loss_cls.logit_weights.float()
        assert weights[-1] == 1 and bool((weights[:-1] > 0).all())
        return torch.softmax(weights * logits, dim=0)[:-1]
    # EQLv2, ECM: sigmoid(z_c) (1 - sigmoid(z_bg))
    return logits[:-1].sigmoid() * (1 - logits[-1].sigmoid())


@pytest.mark.parametrize(
    'method,framework',
    sorted(k for k in CONFIGS if k[0] in SCORED_BY_THE_LOSS),
    ids=lambda v: v)
def test_eql_scores_with_the_loss_activation(synthetic_root, monkeypatch,
                                             method, framework):
    # the probe scores every RoI high for every class: cap the detections
    # (and the masks computed for them)
    model, train, test = build(CONFIGS[method, framework], synthetic_root,
                               monkeypatch, **{'rcnn.max_per_img': 20})
    logits = probe_logits(method)
    layers = [m for _, m in classifiers(model)]
    assert len(layers) == stages(framework)
    with torch.no_grad():
        for layer in layers:
            assert layer.bias.shape == logits.shape
            layer.weight.zero_()
            layer.bias.copy_(logits)
    expected = expected_scores(method, logits, model)
    results = predict(model, test, indices=(0, 1, 2, 3))
    num_dets = 0
    for res in results:
        labels, scores = res.pred_instances.labels, res.pred_instances.scores
        num_dets += len(labels)
        torch.testing.assert_close(scores, expected[labels])
    assert num_dets > 0


@pytest.mark.parametrize('framework', ['retinanet', 'atss'])
def test_efl_scores_with_the_sigmoid(synthetic_root, monkeypatch,
                                     framework):
    """Every (anchor, class) pair above score_thr reaches NMS, so the best
    detection is the best score over all anchors."""
    model, train, test = build(CONFIGS['efl', framework], synthetic_root,
                               monkeypatch, nms_pre=100000)
    train_step(model, train)
    (result, ) = predict(model, test, indices=(0, ))
    model.eval()
    with torch.no_grad():
        outs = model.bbox_head(model.extract_feat(
            batch(model, test, False, (0, ))['inputs']))
    logits = torch.cat([s.permute(0, 2, 3, 1).reshape(-1, NUM_CLASSES)
                        for s in outs[0]])
    factor = 1.0
    if len(outs) == 3:  # ATSS centerness
        factor = torch.cat([c.permute(0, 2, 3, 1).reshape(-1, 1)
                            for c in outs[2]]).sigmoid()
    best = float(result.pred_instances.scores.max())
    assert best == pytest.approx(float((logits.sigmoid() * factor).max()),
                                 rel=1e-4)
    assert best != pytest.approx(float((logits.softmax(-1) * factor).max()),
                                 rel=1e-2)


def test_every_config_of_the_matrix_exists():
    for key, path in CONFIGS.items():
        assert osp.isfile(osp.join(REPO_ROOT, path)), (key, path)
