"""The one route of the class statistics: the train set's annotation file,
read after the command-line overrides, reaches every model component that
takes ``class_statistics``."""
import json
import os.path as osp
import shutil

import pytest

from conftest import REPO_ROOT
from mmdet_longtail.engine.long_tail_runner import (fill_class_statistics,
                                                    give_class_statistics,
                                                    train_annotation_file)

BAGS_CONFIG = osp.join(
    REPO_ROOT, 'configs', 'bags',
    'cascade-mask-rcnn_r18-tiny_fpn_bags_12e_synthetic-lvis.py')
NORCAL_CONFIG = osp.join(
    REPO_ROOT, 'configs', 'norcal',
    'faster-rcnn_r18-tiny_fpn_norcal_12e_synthetic-lvis.py')


def test_train_annotation_file_joins_and_looks_through_wrappers():
    plain = dict(data_root='data/lvis_v1/', ann_file='annotations/t.json')
    assert train_annotation_file(plain) == 'data/lvis_v1/annotations/t.json'
    assert train_annotation_file(
        dict(type='ClassBalancedDataset',
             dataset=dict(type='RepeatDataset', dataset=plain))) == \
        'data/lvis_v1/annotations/t.json'
    assert train_annotation_file(
        dict(data_root='data/', ann_file='/abs/t.json')) == '/abs/t.json'
    assert train_annotation_file(dict(ann_file='t.json')) == 't.json'
    assert train_annotation_file(dict(type='Anything')) is None
    assert train_annotation_file(None) is None
    assert train_annotation_file(
        dict(type='ConcatDataset', datasets=[plain, dict(plain)])) == \
        'data/lvis_v1/annotations/t.json'
    with pytest.raises(ValueError, match='different annotation files'):
        train_annotation_file(
            dict(type='ConcatDataset',
                 datasets=[plain, dict(plain, ann_file='other.json')]))


def test_fill_reaches_every_stage_and_keeps_explicit_statistics():
    import mmdet_longtail  # noqa: F401
    model = dict(
        type='CascadeRCNN',
        roi_head=dict(bbox_head=[
            dict(type='BAGSBBoxHead',
                 loss_cls=dict(type='GroupSoftmaxLoss', num_classes=3)),
            dict(type='Shared2FCBBoxHead',
                 loss_cls=dict(type='EQLoss', num_classes=3,
                               class_statistics='given.json')),
            dict(type='Shared2FCBBoxHead',
                 loss_cls=dict(type='CrossEntropyLoss')),
        ]))
    assert fill_class_statistics(model, 'train.json') == ['GroupSoftmaxLoss']
    heads = model['roi_head']['bbox_head']
    assert heads[0]['loss_cls']['class_statistics'] == 'train.json'
    assert 'class_statistics' not in heads[0]  # the head takes none
    assert heads[1]['loss_cls']['class_statistics'] == 'given.json'
    assert 'class_statistics' not in heads[2]['loss_cls']
    assert give_class_statistics(model, None) == []


@pytest.mark.parametrize('loss_cfg, retired', [
    (dict(type='EQLoss', num_classes=3, lambda_threshold=1e-3,
          ann_file='train.json'), "['ann_file']"),
    (dict(type='EQLoss', num_classes=3, lambda_threshold=1e-3,
          image_freq=[0.1, 0.2, 0.3]), "['image_freq']"),
    (dict(type='GroupSoftmaxLoss', num_classes=3, ann_file='a.json',
          instance_count=[1, 2, 3]), "['ann_file', 'instance_count']"),
    (dict(type='CalibratedCrossEntropyLoss', num_classes=3,
          class_stats=dict(image_count=[1, 2, 3])), "['class_stats']"),
])
@pytest.mark.parametrize('train_file', ['train.json', None])
def test_retired_statistics_arguments_say_how_to_migrate(
        loss_cfg, retired, train_file):
    """A config from before class_statistics (or a checkpoint's saved
    config, which the tools rebuild through the same route) fails with the
    argument and the way to migrate, not a bare TypeError."""
    import mmdet_longtail  # noqa: F401
    model = dict(type='FasterRCNN',
                 roi_head=dict(bbox_head=dict(type='Shared2FCBBoxHead',
                                              loss_cls=loss_cfg)))
    with pytest.raises(ValueError) as error:
        fill_class_statistics(model, train_file)
    message = str(error.value)
    assert message.startswith(f"{loss_cfg['type']}: {retired} are no longer")
    assert 'train_dataloader.dataset' in message


def copy_train_file(synthetic_root: str, new_root: str) -> str:
    """The synthetic train file under another data root, with one class's
    instances doubled so that the copy's statistics differ."""
    with open(osp.join(synthetic_root, 'annotations',
                       'lvis_v1_train.json')) as f:
        ann = json.load(f)
    first = ann['categories'][0]['id']
    extra = [
        dict(a, id=10**6 + i) for i, a in enumerate(ann['annotations'])
        if a['category_id'] == first
    ]
    ann['annotations'] += extra
    path = osp.join(new_root, 'annotations', 'lvis_v1_train.json')
    shutil.os.makedirs(osp.dirname(path))
    with open(path, 'w') as f:
        json.dump(ann, f)
    return path


def build_runner(config: str, work_dir: str, cfg_options: dict):
    from mmengine.config import Config
    from mmengine.registry import RUNNERS
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(cfg_options)
    cfg.work_dir = work_dir
    assert cfg.runner_type == 'LongTailRunner'
    return RUNNERS.build(cfg)


def test_cfg_options_train_root_reaches_every_consumer(
        synthetic_root, tmp_path, monkeypatch):
    """``--cfg-options train_dataloader.dataset.data_root=...`` changes the
    statistics of every BAGS stage; the val set plays no part."""
    from mmdet_longtail.datasets import get_class_statistics
    from mmdet_longtail.models.losses.group_softmax_loss import assign_groups
    monkeypatch.setenv('MMLT_SYNTHETIC_ROOT', synthetic_root)
    new_root = str(tmp_path / 'moved') + '/'
    train_file = copy_train_file(synthetic_root, new_root)
    runner = build_runner(
        BAGS_CONFIG, str(tmp_path / 'work'), {
            'train_dataloader.dataset.data_root': new_root,
            # a val file with other statistics must not be read
            'val_dataloader.dataset.ann_file': 'annotations/lvis_v1_val.json'
        })
    stats = get_class_statistics(train_file)
    expected_groups = assign_groups(stats.instance_count, (3, 8, 20))
    losses = [head.loss_cls for head in runner.model.roi_head.bbox_head]
    assert len(losses) == 3
    for loss in losses:
        assert loss.stats.source == train_file
        assert loss.layout.group_of_class.tolist() == \
            expected_groups.tolist()
    # the copy differs from the original, so the route is really the new one
    original = get_class_statistics(synthetic_root +
                                    'annotations/lvis_v1_train.json')
    assert (stats.instance_count != original.instance_count).any()
    # the checkpoint's config records where the statistics came from
    assert runner.cfg.model.roi_head.bbox_head[0].loss_cls[
        'class_statistics'] == train_file


def test_cfg_options_train_ann_file_reaches_norcal(synthetic_root, tmp_path,
                                                   monkeypatch):
    monkeypatch.setenv('MMLT_SYNTHETIC_ROOT', synthetic_root)
    new_root = str(tmp_path / 'moved') + '/'
    train_file = copy_train_file(synthetic_root, new_root)
    runner = build_runner(
        NORCAL_CONFIG, str(tmp_path / 'work'),
        {'train_dataloader.dataset.ann_file': train_file})
    loss = runner.model.roi_head.bbox_head.loss_cls
    assert loss.stats_source == train_file
    from mmdet_longtail.datasets import get_class_statistics
    assert loss.image_count.tolist() == \
        get_class_statistics(train_file).image_count.tolist()


EQL_CONFIG = osp.join(REPO_ROOT, 'configs', 'eql',
                      'faster-rcnn_r18-tiny_fpn_eql_12e_synthetic-lvis.py')


def test_cfg_options_train_root_reaches_eql_and_the_rfs_sampler(
        synthetic_root, tmp_path, monkeypatch):
    """One override of the train data root reaches the loss (through
    class_statistics) and the sampler (through the dataset it samples):
    the copy's most frequent class is left in one image, so EQL's tail
    classes and RFS's repeat factors both change."""
    import numpy as np
    from mmdet.registry import DATASETS
    from mmdet_longtail.datasets import get_class_statistics
    from mmdet_longtail.datasets.samplers.rfs_sampler import RFSSampler
    from mmdet_longtail.models.losses.eql_loss import eql_tail_classes
    monkeypatch.setenv('MMLT_SYNTHETIC_ROOT', synthetic_root)
    original = get_class_statistics(synthetic_root +
                                    'annotations/lvis_v1_train.json')
    frequent = original.cat_ids[int(np.argmax(original.image_count))]
    new_root = str(tmp_path / 'moved') + '/'
    train_file = copy_train_file(synthetic_root, new_root)
    with open(train_file) as f:
        ann = json.load(f)
    kept_image = next(a['image_id'] for a in ann['annotations']
                      if a['category_id'] == frequent)
    ann['annotations'] = [
        a for a in ann['annotations']
        if a['category_id'] != frequent or a['image_id'] == kept_image
    ]
    with open(train_file, 'w') as f:
        json.dump(ann, f)
    shutil.os.symlink(synthetic_root + 'train2017', new_root + 'train2017')
    runner = build_runner(
        EQL_CONFIG, str(tmp_path / 'work'), {
            'train_dataloader.dataset.data_root': new_root,
            'train_dataloader.sampler.type': 'RFSSampler',
            'train_dataloader.sampler.threshold': 0.08,
            'train_dataloader.sampler.seed': 0,
        })
    stats = get_class_statistics(train_file)
    lam = runner.model.roi_head.bbox_head.loss_cls.lambda_threshold
    tail = runner.model.roi_head.bbox_head.loss_cls.tail_classes.numpy()
    assert tail.tolist() == eql_tail_classes(stats.image_freq, lam).tolist()
    assert tail.tolist() != eql_tail_classes(original.image_freq,
                                             lam).tolist()

    sampler = runner.train_dataloader.batch_sampler.sampler
    assert isinstance(sampler, RFSSampler)
    assert sampler.dataset.ann_file == train_file

    def factors(data_root):
        dataset = DATASETS.build(
            dict(runner.cfg.train_dataloader.dataset, data_root=data_root))
        return RFSSampler(dataset, threshold=0.08, seed=0).repeat_factors

    np.testing.assert_array_equal(sampler.repeat_factors, factors(new_root))
    assert not np.array_equal(sampler.repeat_factors,
                              factors(synthetic_root))
