"""EFL inside mmdet's one-stage heads through tools/train.py and
tools/test.py: RetinaNet and ATSS train with it, the statistics land in the
checkpoint and survive ``--resume`` exactly, and the test scores are the
sigmoid of the logits (probed against the model's raw outputs)."""
import os.path as osp
import pickle

import pytest
import torch

from conftest import build_config_model, last_checkpoint

TINY_EFL = {
    'retinanet':
    'configs/efl/retinanet_r18-tiny_fpn_efl_12e_synthetic-lvis.py',
    'atss': 'configs/efl/atss_r18-tiny_fpn_efl_12e_synthetic-lvis.py',
}
STATS = tuple(f'bbox_head.loss_cls.{name}'
              for name in ('pos_grad', 'neg_grad', 'pos_neg'))
# 16 training images: 4 iterations per epoch
SHORT = ['train_cfg.val_interval=10', 'train_dataloader.dataset.indices=16']
DETERMINISTIC = SHORT + ['randomness.seed=0', 'randomness.deterministic=True']
# every (anchor, class) pair above score_thr reaches NMS, so the best
# detection is the best score over all anchors
TEST_OPTIONS = ['model.test_cfg.nms_pre=100000']


def load_state(path: str) -> dict:
    return torch.load(path, map_location='cpu', weights_only=False)[
        'state_dict']


def check_statistics(state: dict, num_classes: int = 30) -> None:
    pos, neg, ratio = (state[k] for k in STATS)
    assert pos.shape == neg.shape == ratio.shape == (num_classes, )
    assert torch.isfinite(pos).all() and torch.isfinite(neg).all()
    assert float(pos.sum()) > 0 and float(neg.min()) > 0
    torch.testing.assert_close(ratio, (pos / (neg + 1e-10)).clamp(0, 1))


def probe_best_scores(config: str, checkpoint: str, data_root: str,
                      monkeypatch) -> tuple:
    """(img_id, best sigmoid score, best softmax score) of the first val
    image, from the raw head outputs of the trained model (ATSS multiplies
    its class scores by the sigmoid of the centerness, as mmdet scores it)."""
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.runner import load_checkpoint
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    import mmdet_longtail  # noqa: F401
    register_all_modules()
    monkeypatch.setenv('MMLT_SYNTHETIC_ROOT', data_root)
    cfg = Config.fromfile(config)
    model = build_config_model(cfg)
    load_checkpoint(model, checkpoint, map_location='cpu')
    model.eval()
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    item = dataset[0]
    data = model.data_preprocessor(pseudo_collate([item]), False)
    with torch.no_grad():
        outs = model.bbox_head(model.extract_feat(data['inputs']))
    num_classes = model.bbox_head.num_classes
    logits = torch.cat([s.permute(0, 2, 3, 1).reshape(-1, num_classes)
                        for s in outs[0]])
    factor = 1.0
    if len(outs) == 3:  # ATSS centerness
        factor = torch.cat([c.permute(0, 2, 3, 1).reshape(-1, 1)
                            for c in outs[2]]).sigmoid()
    return (item['data_samples'].img_id,
            float((logits.sigmoid() * factor).max()),
            float((logits.softmax(-1) * factor).max()))


def assert_scored_with_sigmoid(preds_file: str, config: str, ckpt: str,
                               data_root: str, monkeypatch) -> None:
    with open(preds_file, 'rb') as f:
        preds = {p['img_id']: p['pred_instances'] for p in pickle.load(f)}
    img_id, best_sigmoid, best_softmax = probe_best_scores(
        config, ckpt, data_root, monkeypatch)
    best = float(preds[img_id]['scores'].max())
    assert best == pytest.approx(best_sigmoid, rel=1e-4)
    assert best != pytest.approx(best_softmax, rel=1e-2)


def test_retinanet_efl_trains_resumes_exactly_and_tests(
        run_tool, tmp_path, monkeypatch):
    config = TINY_EFL['retinanet']
    # 1 epoch, as if interrupted, then --resume to 2 epochs
    resumed = str(tmp_path / 'resumed')
    train = run_tool.train(config, resumed,
                           cfg_options=DETERMINISTIC +
                           ['train_cfg.max_epochs=1'])
    assert 'loss_cls' in train.stdout
    first = load_state(osp.join(resumed, 'epoch_1.pth'))
    check_statistics(first)

    proc = run_tool.train(config, resumed, '--resume',
                          cfg_options=DETERMINISTIC +
                          ['train_cfg.max_epochs=2'])
    assert 'resumed epoch: 1, iter: 4' in proc.stdout
    straight = str(tmp_path / 'straight')
    run_tool.train(config, straight,
                   cfg_options=DETERMINISTIC + ['train_cfg.max_epochs=2'])
    a = load_state(osp.join(straight, 'epoch_2.pth'))
    b = load_state(osp.join(resumed, 'epoch_2.pth'))
    for key in STATS:
        # epoch 2 added to the statistics, and the resumed run added to the
        # restored ones: without them it would hold epoch 2 alone
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)
    assert bool((a[STATS[1]] >= first[STATS[1]]).all())
    assert float(a[STATS[1]].sum()) > float(first[STATS[1]].sum())
    check_statistics(a)

    ckpt = last_checkpoint(straight)
    preds = str(tmp_path / 'preds.pkl')
    test = run_tool.test(config, ckpt, str(tmp_path / 'test'), '--out',
                         preds, cfg_options=TEST_OPTIONS)
    assert 'lvis/bbox_APr:' in test.stdout
    assert_scored_with_sigmoid(preds, config, ckpt, run_tool.data_root,
                               monkeypatch)


def test_atss_efl_trains_and_tests(run_tool, tmp_path, monkeypatch):
    config = TINY_EFL['atss']
    work = str(tmp_path / 'work')
    train = run_tool.train(config, work, cfg_options=SHORT)
    assert 'loss_centerness' in train.stdout
    ckpt = last_checkpoint(work)
    check_statistics(load_state(ckpt))

    preds = str(tmp_path / 'preds.pkl')
    test = run_tool.test(config, ckpt, str(tmp_path / 'test'), '--out',
                         preds, cfg_options=TEST_OPTIONS)
    assert 'lvis/bbox_APr:' in test.stdout
    assert_scored_with_sigmoid(preds, config, ckpt, run_tool.data_root,
                               monkeypatch)
