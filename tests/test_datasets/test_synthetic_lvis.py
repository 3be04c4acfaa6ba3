"""The synthetic long-tailed LVIS generator: format, statistics,
determinism, and loading through mmdet's own ``LVISV1Dataset``."""
import hashlib
import json
import os.path as osp

import numpy as np
import pytest

from conftest import SMALL_SYNTHETIC
from mmdet_longtail.datasets import (ClassStatistics, get_class_statistics,
                                     make_synthetic_lvis)
from mmdet_longtail.datasets.synthetic_lvis import (SyntheticLVISOptions,
                                                    _place_objects,
                                                    objects_per_image,
                                                    synthetic_lvis_exists,
                                                    zipf_image_counts)


def load(root, split):
    with open(osp.join(root, 'annotations', f'lvis_v1_{split}.json')) as f:
        return json.load(f)


def test_categories_record_hand_counted_statistics(synthetic_root):
    train = load(synthetic_root, 'train')
    image_sets, instances = {}, {}
    for ann in train['annotations']:
        image_sets.setdefault(ann['category_id'], set()).add(ann['image_id'])
        instances[ann['category_id']] = instances.get(ann['category_id'],
                                                      0) + 1
    thresholds = train['info']['frequency_thresholds']
    # thresholds scaled to the dataset size: 1% / 8% of the train images
    n_train = SMALL_SYNTHETIC['num_train_images']
    assert thresholds == dict(
        rare_max_images=max(1, round(0.01 * n_train)),
        common_max_images=max(2, round(0.08 * n_train)))
    assert len(train['categories']) == SMALL_SYNTHETIC['num_classes']
    for cat in train['categories']:
        n_img = len(image_sets.get(cat['id'], ()))
        assert cat['image_count'] == n_img
        assert cat['instance_count'] == instances.get(cat['id'], 0)
        letter = ('r' if n_img <= thresholds['rare_max_images'] else
                  'c' if n_img <= thresholds['common_max_images'] else 'f')
        assert cat['frequency'] == letter, cat
    # the shared utility reads the same numbers from the file
    stats = get_class_statistics(
        osp.join(synthetic_root, 'annotations', 'lvis_v1_train.json'))
    assert stats.image_count.tolist() == [
        c['image_count'] for c in train['categories']
    ]
    assert ''.join(stats.frequency) == ''.join(
        c['frequency'] for c in train['categories'])


def test_default_split_is_long_tailed(tmp_path):
    """The default set has all three frequency groups and a Zipf-like tail."""
    opts = SyntheticLVISOptions()
    counts = zipf_image_counts(opts)
    assert counts[0] == opts.max_class_images
    assert counts[-1] == opts.min_class_images
    assert np.all(np.diff(counts) <= 0)
    paths = make_synthetic_lvis(str(tmp_path), num_val_images=10)
    stats = get_class_statistics(paths['train'])
    letters = ''.join(stats.frequency)
    assert letters.count('r') >= 5 and letters.count('c') >= 5 and \
        letters.count('f') >= 5, letters
    # frequent classes come first: the head of the tail has most images
    assert stats.image_count[0] > 20 * stats.image_count[-1]


def test_images_annotations_and_federated_fields(synthetic_root):
    for split in ('train', 'val'):
        data = load(synthetic_root, split)
        cat_ids = {c['id'] for c in data['categories']}
        present = {}
        for ann in data['annotations']:
            present.setdefault(ann['image_id'], set()).add(ann['category_id'])
            x, y, w, h = ann['bbox']
            assert w > 0 and h > 0 and ann['area'] > 0
            poly = np.asarray(ann['segmentation'][0]).reshape(-1, 2)
            assert len(poly) >= 3
            assert poly[:, 0].min() == pytest.approx(x, abs=0.01)
            assert poly[:, 1].max() == pytest.approx(y + h, abs=0.01)
        for img in data['images']:
            url = img['coco_url']
            assert url.startswith('http://images.cocodataset.org/')
            rel = url.replace('http://images.cocodataset.org/', '')
            assert osp.isfile(osp.join(synthetic_root, rel)), rel
            pos = present.get(img['id'], set())
            assert not set(img['neg_category_ids']) & pos
            assert set(img['neg_category_ids']) <= cat_ids
            assert set(img['not_exhaustive_category_ids']) <= pos
    val = load(synthetic_root, 'val')
    # as in LVIS v1, some val images live in train2017/
    dirs = {img['coco_url'].split('/')[-2] for img in val['images']}
    assert dirs == {'train2017', 'val2017'}


def test_generation_is_deterministic(tmp_path):
    options = dict(SMALL_SYNTHETIC, num_train_images=12, num_val_images=4,
                   max_class_images=6)

    def digest(root):
        h = hashlib.sha1()
        for split in ('train', 'val'):
            with open(osp.join(root, 'annotations',
                               f'lvis_v1_{split}.json'), 'rb') as f:
                h.update(f.read())
        with open(osp.join(root, 'train2017', '000000000001.jpg'), 'rb') as f:
            h.update(f.read())
        return h.hexdigest()

    make_synthetic_lvis(str(tmp_path / 'a'), **options)
    make_synthetic_lvis(str(tmp_path / 'b'), **options)
    make_synthetic_lvis(str(tmp_path / 'c'), **dict(options, seed=1))
    assert digest(tmp_path / 'a') == digest(tmp_path / 'b')
    assert digest(tmp_path / 'a') != digest(tmp_path / 'c')


def test_unknown_option_is_refused(tmp_path):
    with pytest.raises(TypeError, match='num_clases'):
        make_synthetic_lvis(str(tmp_path), num_clases=3)


@pytest.mark.parametrize('dataset_type', ['LVISV1Dataset', 'LVISV1LTDataset'])
def test_loads_through_mmdet_lvis_v1(synthetic_root, dataset_type):
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    import mmdet_longtail  # noqa: F401
    register_all_modules()
    train = load(synthetic_root, 'train')
    names = tuple(c['name'] for c in train['categories'])
    dataset = DATASETS.build(
        dict(
            type=dataset_type,
            data_root=synthetic_root,
            ann_file='annotations/lvis_v1_train.json',
            data_prefix=dict(img=''),
            metainfo=dict(classes=names),
            filter_cfg=dict(filter_empty_gt=True, min_size=4),
            pipeline=[]))
    assert len(dataset) == len(train['images'])
    assert dataset.metainfo['classes'] == names
    info = dataset.get_data_info(0)
    assert osp.isfile(info['img_path'])
    assert info['img_path'].startswith(synthetic_root)
    stats = ClassStatistics.from_dataset(dataset)
    assert stats.image_count.tolist() == [
        c['image_count'] for c in train['categories']
    ]
    if dataset_type == 'LVISV1LTDataset':
        first = train['images'][0]
        assert info['neg_category_ids'] == first['neg_category_ids']
        assert info['not_exhaustive_category_ids'] == \
            first['not_exhaustive_category_ids']


def train_image_counts(root, version='v1'):
    with open(osp.join(root, 'annotations',
                       f'lvis_{version}_train.json')) as f:
        train = json.load(f)
    images = {}
    for ann in train['annotations']:
        images.setdefault(ann['category_id'], set()).add(ann['image_id'])
    return train, {
        c['id']: len(images.get(c['id'], ()))
        for c in train['categories']
    }


def test_class_minimum_kept_in_crowded_tiny_images(tmp_path):
    """Many classes in 48 px images (4 grid cells each): the random
    placement drops objects, the grid keeps every assigned class."""
    opts = dict(num_classes=50, num_train_images=40, num_val_images=4,
                image_size=48, max_class_images=6, min_class_images=2)
    assert objects_per_image(SyntheticLVISOptions(**opts)) == 4
    make_synthetic_lvis(str(tmp_path), **opts)
    train, counts = train_image_counts(str(tmp_path))
    assert min(counts.values()) >= 2, counts
    for cat in train['categories']:
        assert cat['image_count'] == counts[cat['id']]
    for ann in train['annotations']:
        x, y, w, h = ann['bbox']
        assert x >= 0 and y >= 0 and x + w <= 47 and y + h <= 47


def test_place_objects_keeps_every_distinct_label():
    opts = SyntheticLVISOptions(num_classes=30, image_size=71)
    capacity = objects_per_image(opts)  # 3 x 3 cells of 23 px
    assert capacity == 9
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = rng.choice(30, size=capacity, replace=False).tolist()
        placed = _place_objects(labels + labels[:3], opts, rng)
        assert {label for label, _ in placed} == set(labels)
        boxes = [(p.min(0), p.max(0)) for _, p in placed]
        for i, (lo1, hi1) in enumerate(boxes):
            for lo2, hi2 in boxes[i + 1:]:  # no two boxes overlap
                assert (lo1 > hi2).any() or (lo2 > hi1).any()


@pytest.mark.parametrize(
    'options, message',
    [(dict(num_classes=50, num_train_images=10, image_size=48,
           max_class_images=6, min_class_images=2),
      r'class \d+ \(\w+\) needs \d+ train images \(min_class_images=2.*'
      r'Raise image_size or num_train_images'),
     (dict(num_classes=3, num_train_images=4, min_class_images=5),
      'min_class_images=5 is more than num_train_images=4'),
     (dict(num_classes=3, num_train_images=4, image_size=20),
      'image_size=20 px cannot hold .* raise image_size to at least 25'),
     (dict(lvis_version='v2'), 'lvis_version')])
def test_impossible_options_fail_clearly(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        make_synthetic_lvis(str(tmp_path), num_val_images=2, **options)


@pytest.mark.parametrize('dataset_type',
                         ['LVISV05Dataset', 'LVISV05LTDataset'])
def test_v05_layout_loads_through_mmdet(tmp_path, dataset_type):
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    import mmdet_longtail  # noqa: F401
    register_all_modules()
    root = str(tmp_path)
    make_synthetic_lvis(root, lvis_version='v0.5', **SMALL_SYNTHETIC)
    assert synthetic_lvis_exists(root, 'v0.5')
    assert not synthetic_lvis_exists(root, 'v1')
    train, counts = train_image_counts(root, 'v0.5')
    assert min(counts.values()) >= SMALL_SYNTHETIC['min_class_images']
    with open(osp.join(root, 'annotations', 'lvis_v0.5_val.json')) as f:
        val = json.load(f)
    assert all('/val2017/' in img['coco_url'] for img in val['images'])
    assert train['images'][0]['file_name'].startswith('COCO_train2014_')
    names = tuple(c['name'] for c in train['categories'])
    for split, ann in (('train', train), ('val', val)):
        dataset = DATASETS.build(
            dict(
                type=dataset_type,
                data_root=root + '/',
                ann_file=f'annotations/lvis_v0.5_{split}.json',
                data_prefix=dict(img=f'{split}2017/'),
                metainfo=dict(classes=names),
                pipeline=[]))
        assert len(dataset) == len(ann['images'])
        for i in range(len(dataset)):
            assert osp.isfile(dataset.get_data_info(i)['img_path'])
