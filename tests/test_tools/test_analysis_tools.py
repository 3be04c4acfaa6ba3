"""tools/analysis_tools: per-class AP tables and plots, and the classifier
weight norm of every head layout (asked from the heads of the checkpoint's
config).

The tables are checked against the registered metric on the same result
files (the metric writes them with ``outfile_prefix``); the weight-norm
tool against synthetic state dicts whose class rows have known norms.
"""
import csv
import json
import math
import os.path as osp

import numpy as np
import pytest
import torch

from conftest import build_config_model
from mmdet_longtail.datasets import get_class_statistics
from mmdet_longtail.evaluation import LongTailLVISMetric
from mmdet_longtail.evaluation.analysis import bin_labels, instance_bins
from synthetic_detections import make_detections


def read_csv(path: str) -> list:
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def assert_png(path: str) -> None:
    import matplotlib.image as mpimg
    assert osp.getsize(path) > 1000
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0  # something is drawn


def data_samples(dets: dict, gt: dict) -> list:
    """Generated detections as mmdet data samples (boxes, scores, labels,
    masks); labels follow the ascending category ids."""
    import pycocotools.mask as mask_utils
    label_of = {c['id']: k for k, c in enumerate(
        sorted(gt['categories'], key=lambda c: c['id']))}
    samples = []
    for img in gt['images']:
        boxes = [d for d in dets['bbox'] if d['image_id'] == img['id']]
        masks = [d for d in dets['segm'] if d['image_id'] == img['id']]
        xyxy = [[x, y, x + w, y + h] for x, y, w, h in
                (d['bbox'] for d in boxes)]
        bitmaps = mask_utils.decode([
            dict(m['segmentation'], counts=m['segmentation']['counts']
                 .encode()) for m in masks
        ])
        samples.append(
            dict(
                img_id=img['id'],
                ori_shape=(img['height'], img['width']),
                pred_instances=dict(
                    bboxes=torch.tensor(xyxy),
                    scores=torch.tensor([d['score'] for d in boxes]),
                    labels=torch.tensor(
                        [label_of[d['category_id']] for d in boxes]),
                    masks=torch.from_numpy(bitmaps).permute(2, 0,
                                                            1).bool())))
    return samples


@pytest.fixture(scope='module')
def metric_run(synthetic_root, tmp_path_factory):
    """The metric evaluates generated detections and writes result files."""
    ann = osp.join(synthetic_root, 'annotations', 'lvis_v1_val.json')
    with open(ann) as f:
        gt = json.load(f)
    dets = make_detections(gt, dets_per_image=40, with_masks=True, seed=2)
    prefix = str(tmp_path_factory.mktemp('metric_run') / 'results')
    metric = LongTailLVISMetric(
        ann_file=ann, metric=['bbox', 'segm'], outfile_prefix=prefix)
    metric.process({}, data_samples(dets, gt))
    numbers = metric.evaluate(size=len(gt['images']))
    return prefix, numbers, metric.last_per_class_ap


def test_per_class_ap_tables_equal_the_metric(run_tool, synthetic_root,
                                              metric_run, tmp_path):
    prefix, numbers, per_class = metric_run
    out = str(tmp_path / 'analysis')
    run_tool(
        'analysis_tools/lvis_per_class_ap.py', prefix, '--ann',
        osp.join(synthetic_root, 'annotations', 'lvis_v1_val.json'),
        '--train-ann',
        osp.join(synthetic_root, 'annotations', 'lvis_v1_train.json'),
        '--out-dir', out, '--backend', 'fast')
    groups = read_csv(osp.join(out, 'ap_by_group.csv'))
    rows = read_csv(osp.join(out, 'per_class_ap.csv'))
    assert len(rows) == 30
    stats = get_class_statistics(
        osp.join(synthetic_root, 'annotations', 'lvis_v1_train.json'))
    for iou_type in ('bbox', 'segm'):
        ap = {(g['grouping'], g['group']): float(g['AP'])
              for g in groups if g['iou_type'] == iou_type}
        for name, key in (('all', 'AP'), ('rare', 'APr'),
                          ('common', 'APc'), ('frequent', 'APf')):
            grouping = 'all' if name == 'all' else 'frequency'
            assert ap[grouping, name] == pytest.approx(
                numbers[f'lvis/{iou_type}_{key}'], abs=1e-12), (iou_type,
                                                                name)
        # per class: the metric's per-class AP; bins: their mean
        column = np.array([
            float(r[f'AP_{iou_type}']) if r[f'AP_{iou_type}'] else np.nan
            for r in rows
        ])
        np.testing.assert_allclose(column, per_class[iou_type], atol=1e-12)
        bins = instance_bins(stats.instance_count)
        for b, label in enumerate(bin_labels()):
            members = column[(bins == b) & ~np.isnan(column)]
            expected = members.mean() if members.size else -1.0
            assert ap['instances', label] == pytest.approx(expected,
                                                           abs=1e-12)
    assert numbers['lvis/segm_AP'] > 0.05
    # the bins hold the classes the BAGS rule puts there
    for r in rows:
        count = int(r['train_instances'])
        assert r['instance_bin'] == bin_labels()[
            sum(count >= b for b in (10, 100, 1000))]
    assert_png(osp.join(out, 'ap_by_group.png'))

    scatter = str(tmp_path / 'scatter')
    run_tool('analysis_tools/ap_vs_instances.py', '--per-class-csv',
             osp.join(out, 'per_class_ap.csv'), '--out-dir', scatter)
    for iou_type in ('bbox', 'segm'):
        assert_png(osp.join(scatter, f'ap_vs_instances_{iou_type}.png'))


def test_unknown_ids_give_a_clear_error(run_tool, synthetic_root, tmp_path):
    bad = str(tmp_path / 'bad.bbox.json')
    with open(bad, 'w') as f:
        json.dump([dict(image_id=50, category_id=99, bbox=[0, 0, 5, 5],
                        score=.5)], f)
    ann = osp.join(synthetic_root, 'annotations')
    proc = run_tool('analysis_tools/lvis_per_class_ap.py', bad, '--ann',
                    osp.join(ann, 'lvis_v1_val.json'), '--train-ann',
                    osp.join(ann, 'lvis_v1_train.json'), '--out-dir',
                    str(tmp_path / 'out'), check=False)
    assert proc.returncode == 1
    assert f'{bad}: result #0 has category_id=99, which is not a category ' \
        'of the annotation file' in proc.stdout


# ---------------------------------------------------------------- norms
C = 30
WIDTH = 8


def rows_with_norms(num_rows: int, class_rows: np.ndarray) -> torch.Tensor:
    """A weight whose class c row has norm c + 1 (any direction) and every
    other row (background, objectness, "others") norm 1000."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(num_rows, WIDTH))
    weight /= np.linalg.norm(weight, axis=1, keepdims=True)
    weight *= 1000.0
    weight[class_rows] *= (np.arange(C) + 1)[:, None] / 1000.0
    return torch.from_numpy(weight).float()


def save(path, state_dict, cfg_text=None) -> str:
    checkpoint = dict(state_dict=state_dict)
    if cfg_text is not None:
        checkpoint['meta'] = dict(cfg=cfg_text)
    torch.save(checkpoint, path)
    return str(path)


def config_text(config: str) -> str:
    """The config as mmengine saves it in checkpoints (``meta['cfg']``);
    needs MMLT_SYNTHETIC_ROOT set (the synthetic train annotation file)."""
    from mmengine.config import Config
    return Config.fromfile(config).pretty_text


def bags_class_rows(train: str, bounds=(3, 8, 20)) -> np.ndarray:
    """Rows of the classes in a BAGS classifier with ``bounds``."""
    from mmdet_longtail.models.losses.group_softmax_loss import (
        GroupLayout, assign_groups)
    counts = get_class_statistics(train).instance_count
    return GroupLayout(assign_groups(counts, bounds),
                       len(bounds) + 1).class_columns


HEAD_CONFIGS = {
    'softmax': 'configs/lvis/mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py',
    'sigmoid': 'configs/eql/mask-rcnn_r18-tiny_fpn_eql_12e_synthetic-lvis.py',
    'seesaw':
    'configs/seesaw/mask-rcnn_r18-tiny_fpn_seesaw_12e_synthetic-lvis.py',
    # group_bounds=(3, 8, 20)
    'bags':
    'configs/bags/cascade-mask-rcnn_r18-tiny_fpn_bags_12e_synthetic-lvis.py',
    'tde': 'configs/tde/mask-rcnn_r18-tiny_fpn_tde_12e_synthetic-lvis.py',
}


def test_weight_norm_of_every_layout(run_tool, synthetic_root, tmp_path,
                                     monkeypatch):
    monkeypatch.setenv('MMLT_SYNTHETIC_ROOT', synthetic_root)
    train = osp.join(synthetic_root, 'annotations', 'lvis_v1_train.json')
    counts = get_class_statistics(train).instance_count
    key = 'roi_head.bbox_head.fc_cls.weight'
    bags_rows = bags_class_rows(train)
    # the groups of (3, 8, 20) put the "others" columns between classes
    assert sorted(bags_rows) != list(range(C))
    checkpoints = {
        'softmax': save(tmp_path / 'softmax.pth',
                        {key: rows_with_norms(C + 1, np.arange(C))},
                        config_text(HEAD_CONFIGS['softmax'])),
        'sigmoid': save(tmp_path / 'sigmoid.pth',
                        {key: rows_with_norms(C, np.arange(C))},
                        config_text(HEAD_CONFIGS['sigmoid'])),
        'seesaw': save(tmp_path / 'seesaw.pth',
                       {key: rows_with_norms(C + 2, np.arange(C))},
                       config_text(HEAD_CONFIGS['seesaw'])),
        'bags': save(
            tmp_path / 'bags.pth', {
                f'roi_head.bbox_head.{s}.fc_cls.weight':
                rows_with_norms(C + 6, bags_rows)
                for s in range(2)
            }, config_text(HEAD_CONFIGS['bags'])),
        'tde': save(tmp_path / 'tde.pth',
                    {key: rows_with_norms(C + 1, np.arange(C))},
                    config_text(HEAD_CONFIGS['tde'])),
    }
    out = str(tmp_path / 'norms')
    proc = run_tool('analysis_tools/classifier_weight_norm.py',
                    *checkpoints.values(), '--train-ann', train,
                    '--out-dir', out, '--num-heads', '2', '--labels',
                    *checkpoints)
    assert 'bags:bbox_head.1 (bags, 36 rows)' in proc.stdout
    assert 'seesaw:bbox_head (seesaw, 32 rows)' in proc.stdout
    assert 'sigmoid:bbox_head (sigmoid, 30 rows)' in proc.stdout
    rows = read_csv(osp.join(out, 'weight_norm.csv'))
    assert len(rows) == C
    names = ['softmax:bbox_head', 'sigmoid:bbox_head', 'seesaw:bbox_head',
             'bags:bbox_head.0', 'bags:bbox_head.1', 'tde:bbox_head']
    for c, row in enumerate(rows):
        assert int(row['train_instances']) == counts[c]
        for name in names:
            assert float(row[f'norm[{name}]']) == pytest.approx(c + 1,
                                                                rel=1e-5)
        heads = [float(row[f'norm[tde:bbox_head][head{k}]'])
                 for k in range(2)]
        assert math.hypot(*heads) == pytest.approx(c + 1, rel=1e-5)
    assert_png(osp.join(out, 'weight_norm.png'))


def test_weight_norm_with_a_stated_layout(run_tool, synthetic_root,
                                          tmp_path):
    """Checkpoints without a config: --layout states the layout, and
    --group-bounds the BAGS groups."""
    train = osp.join(synthetic_root, 'annotations', 'lvis_v1_train.json')
    key = 'roi_head.bbox_head.fc_cls.weight'
    bags = save(tmp_path / 'bags.pth',
                {key: rows_with_norms(C + 6, bags_class_rows(train))})
    out = str(tmp_path / 'stated')
    proc = run_tool('analysis_tools/classifier_weight_norm.py', bags,
                    '--train-ann', train, '--out-dir', out, '--layout',
                    'bags', '--group-bounds', '3', '8', '20')
    assert 'bags:bbox_head (bags, 36 rows)' in proc.stdout
    norms = [float(r['norm[bags:bbox_head]'])
             for r in read_csv(osp.join(out, 'weight_norm.csv'))]
    np.testing.assert_allclose(norms, np.arange(C) + 1, rtol=1e-5)

    proc = run_tool('analysis_tools/classifier_weight_norm.py', bags,
                    '--train-ann', train, '--out-dir', out, check=False)
    assert proc.returncode == 1
    assert "bags.pth: the checkpoint does not carry its config" in \
        proc.stdout
    proc = run_tool('analysis_tools/classifier_weight_norm.py', bags,
                    '--train-ann', train, '--out-dir', out, '--layout',
                    'softmax', check=False)
    assert proc.returncode == 1
    assert f'{key} has shape (36, {WIDTH}), but the config describes a ' \
        f'classifier of shape (31, {WIDTH})' in proc.stdout


def test_weight_norm_of_a_real_model_and_errors(run_tool, synthetic_root,
                                                tmp_path):
    """A freshly built tiny Mask R-CNN (softmax, C + 1 rows)."""
    from mmengine.config import Config

    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(
        'configs/lvis/mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py')
    model = build_config_model(cfg)
    ckpt = save(tmp_path / 'real.pth', model.state_dict(), cfg.pretty_text)
    train = osp.join(synthetic_root, 'annotations', 'lvis_v1_train.json')
    out = str(tmp_path / 'real')
    proc = run_tool('analysis_tools/classifier_weight_norm.py', ckpt,
                    '--train-ann', train, '--out-dir', out)
    assert 'real:bbox_head (softmax, 31 rows)' in proc.stdout
    expected = model.state_dict()[
        'roi_head.bbox_head.fc_cls.weight'][:C].norm(dim=1)
    got = [float(r['norm[real:bbox_head]'])
           for r in read_csv(osp.join(out, 'weight_norm.csv'))]
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-6)

    wrong = save(tmp_path / 'wrong.pth', {
        'roi_head.bbox_head.fc_cls.weight': torch.ones(C + 3, WIDTH)},
        cfg.pretty_text)
    proc = run_tool('analysis_tools/classifier_weight_norm.py', wrong,
                    '--train-ann', train, '--out-dir', out, check=False)
    assert proc.returncode == 1
    assert f'{wrong}: roi_head.bbox_head.fc_cls.weight has shape (33, ' \
        f'{WIDTH}), but the config describes a classifier of shape (31, ' \
        f'{WIDTH})' in proc.stdout
    none = save(tmp_path / 'none.pth', {'backbone.conv1.weight':
                                        torch.ones(4, 4)})
    proc = run_tool('analysis_tools/classifier_weight_norm.py', none,
                    '--train-ann', train, '--out-dir', out, check=False)
    assert proc.returncode == 1
    assert 'no key of the checkpoint matches' in proc.stdout
