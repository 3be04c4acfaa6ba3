"""EQL and EQLv2 through tools/train.py and tools/test.py in every
framework (tiny Faster, Mask, Cascade Mask R-CNN and HTC on the synthetic
set), and EQLv2's statistics across a --resume.

tools/test.py is shown to score with the loss's activation by a probe
checkpoint: the trained checkpoint with every stage's classifier weights set
to zero and its bias to chosen logits ``b``. Every RoI then has the logits
``b`` (Cascade / HTC average equal stage logits), so every detection of
class c must carry the score ``activation(b)_c``: ``sigmoid(b_c)`` for EQL,
``sigmoid(b_c) (1 - sigmoid(b_bg))`` for EQLv2, neither of which is the
softmax that mmdet's heads apply to a plain loss.
"""
import os.path as osp
import pickle

import pytest
import torch

from conftest import last_checkpoint

FRAMEWORKS = ('faster-rcnn', 'mask-rcnn', 'cascade-mask-rcnn',
              'htc-without-semantic')
NUM_CLASSES = 30
# 16 training images, 4 iterations of 4 images; deterministic for --resume
TRAIN_OPTIONS = [
    'train_dataloader.dataset.indices=16', 'train_cfg.val_interval=10',
    'randomness.seed=0', 'randomness.deterministic=True'
]
# 8 val images; the probe scores every RoI high for every class, so cap the
# detections (and the masks computed for them)
NUM_TEST_IMAGES = 8
TEST_OPTIONS = [
    f'test_dataloader.dataset.indices={NUM_TEST_IMAGES}',
    'model.test_cfg.rcnn.max_per_img=20'
]


def tiny_config(loss: str, framework: str) -> str:
    return (f'configs/{loss}/{framework}_r18-tiny_fpn_{loss}_12e_'
            f'synthetic-lvis.py')


def probe_logits(loss: str) -> torch.Tensor:
    """Distinct logits per class (in a shuffled order) and, for EQLv2, an
    objectness logit of 0.4."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.linspace(-5., 1., NUM_CLASSES)[torch.randperm(
        NUM_CLASSES, generator=gen)]
    if loss == 'eqlv2':
        logits = torch.cat([logits, torch.tensor([0.4])])
    return logits


def expected_scores(loss: str, logits: torch.Tensor) -> torch.Tensor:
    """The activation written out: the class scores, (C,)."""
    if loss == 'eql':
        return logits.sigmoid()
    return logits[:-1].sigmoid() * (1 - logits[-1].sigmoid())


def write_probe_checkpoint(checkpoint: str, loss: str, out: str) -> None:
    ckpt = torch.load(checkpoint, map_location='cpu', weights_only=False)
    state = ckpt['state_dict']
    classifiers = [k[:-len('.weight')] for k in state
                   if k.endswith('fc_cls.weight')]
    assert classifiers, 'no fc_cls in the checkpoint'
    logits = probe_logits(loss)
    for name in classifiers:
        assert state[name + '.bias'].shape == logits.shape
        state[name + '.weight'].zero_()
        state[name + '.bias'].copy_(logits)
    torch.save(ckpt, out)


def loss_buffers(checkpoint: str) -> dict:
    state = torch.load(
        checkpoint, map_location='cpu', weights_only=False)['state_dict']
    return {
        k: v
        for k, v in state.items()
        if k.rsplit('.', 1)[-1] in ('pos_grad', 'neg_grad', 'pos_neg')
    }


@pytest.mark.parametrize('framework', FRAMEWORKS)
@pytest.mark.parametrize('loss', ['eql', 'eqlv2'])
def test_train_then_test_scores_with_the_activation(run_tool, tmp_path, loss,
                                                    framework):
    config = tiny_config(loss, framework)
    work = str(tmp_path / 'train')
    train = run_tool.train(config, work, cfg_options=TRAIN_OPTIONS)
    assert 'Epoch(train) [1][4/4]' in train.stdout
    # the head logs the loss's own accuracies
    assert 'acc_classes' in train.stdout
    if loss == 'eqlv2':
        assert 'acc_objectness' in train.stdout
        buffers = loss_buffers(last_checkpoint(work))
        num_stages = 1 if framework in ('faster-rcnn', 'mask-rcnn') else 3
        assert len(buffers) == 3 * num_stages
        for name, value in buffers.items():
            if name.endswith('pos_neg'):
                # 4 steps of statistics: no ratio is at its initial 100
                assert bool((value < 100).all()), name
            elif name.endswith('neg_grad'):
                assert bool((value > 0).all()), name

    probe = str(tmp_path / 'probe.pth')
    write_probe_checkpoint(last_checkpoint(work), loss, probe)
    out = str(tmp_path / 'preds.pkl')
    run_tool.test(
        config, probe, str(tmp_path / 'test'), '--out', out,
        cfg_options=TEST_OPTIONS)
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == NUM_TEST_IMAGES
    expected = expected_scores(loss, probe_logits(loss))
    num_dets = 0
    for pred in preds:
        labels = pred['pred_instances']['labels']
        scores = pred['pred_instances']['scores']
        num_dets += len(labels)
        torch.testing.assert_close(scores, expected[labels])
    assert num_dets > 0


def test_eqlv2_statistics_survive_resume(run_tool, tmp_path):
    """2 epochs straight == 1 epoch, stop, --resume, 1 more epoch, down to
    the last bit of the statistics; a resume that dropped them would end
    elsewhere."""
    config = tiny_config('eqlv2', 'faster-rcnn')
    options = TRAIN_OPTIONS + ['train_cfg.max_epochs=2']
    straight = str(tmp_path / 'straight')
    run_tool.train(config, straight, cfg_options=options)

    resumed = str(tmp_path / 'resumed')
    run_tool.train(
        config, resumed, cfg_options=options + ['train_cfg.max_epochs=1'])
    first_half = loss_buffers(osp.join(resumed, 'epoch_1.pth'))
    proc = run_tool.train(config, resumed, '--resume', cfg_options=options)
    assert 'resumed epoch: 1, iter: 4' in proc.stdout

    final, expected = loss_buffers(last_checkpoint(resumed)), loss_buffers(
        last_checkpoint(straight))
    assert set(final) == {
        f'roi_head.bbox_head.loss_cls.{name}'
        for name in ('pos_grad', 'neg_grad', 'pos_neg')
    }
    for name, value in expected.items():
        assert torch.equal(final[name], value), name
        # the second epoch added to the restored statistics
        assert not torch.equal(value, first_half[name]), name
