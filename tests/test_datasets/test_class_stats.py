"""The shared class-statistics utility (``datasets/class_stats.py``).

Hand counts on the synthetic set and on small hand-written LVIS files
(v1 and v0.5 style), the LVIS facts that a small file can show (frequency
letters from the 10 / 100 image thresholds, the f(c) denominator = images
with at least one annotation, instance vs image counts at the BAGS group
boundaries), statistics of a dataset after its filtering, the vectorised
per-image label reader, and the cache.
"""
import json
import os
import os.path as osp
import time

import numpy as np
import pytest

from mmdet_longtail.datasets.class_stats import (
    ClassStatistics, InstanceLabels, dataset_instance_labels,
    frequency_letters, get_class_statistics)


def build(dataset_type='LVISV1LTDataset', **kwargs):
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    import mmdet_longtail  # noqa: F401
    register_all_modules()
    cfg = dict(
        type=dataset_type,
        ann_file='annotations/lvis_v1_train.json',
        data_prefix=dict(img=''),
        pipeline=[])
    cfg.update(kwargs)
    return DATASETS.build(cfg)


def write_json(path, data) -> str:
    with open(path, 'w') as f:
        json.dump(data, f)
    return str(path)


def lvis_file(path,
              image_classes,
              num_images=None,
              categories=None,
              **extra) -> str:
    """A minimal LVIS v1 train file: image i + 1 holds one annotation per
    entry of ``image_classes[i]`` (category ids)."""
    num_images = num_images or len(image_classes)
    annotations = []
    for img, cats in enumerate(image_classes):
        for cat in cats:
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=img + 1,
                    category_id=cat,
                    bbox=[1, 1, 8, 8],
                    area=64))
    if categories is None:
        ids = sorted({c for cats in image_classes for c in cats})
        categories = [dict(id=c, name=f'c{c}') for c in ids]
    images = [
        dict(id=i + 1, width=32, height=32, coco_url='')
        for i in range(num_images)
    ]
    return write_json(
        path,
        dict(
            images=images,
            annotations=annotations,
            categories=categories,
            **extra))


# ----------------------------------------------------------- hand counts
def test_hand_counts_on_synthetic_set(synthetic_root):
    path = osp.join(synthetic_root, 'annotations', 'lvis_v1_train.json')
    with open(path) as f:
        data = json.load(f)
    cat_ids = sorted(c['id'] for c in data['categories'])
    images_of, instances_of = {
        c: set()
        for c in cat_ids
    }, dict.fromkeys(cat_ids, 0)
    for ann in data['annotations']:
        images_of[ann['category_id']].add(ann['image_id'])
        instances_of[ann['category_id']] += 1
    annotated = {ann['image_id'] for ann in data['annotations']}

    stats = get_class_statistics(path)
    assert stats.cat_ids == tuple(cat_ids)
    assert stats.image_count.tolist() == [len(images_of[c]) for c in cat_ids]
    assert stats.instance_count.tolist() == [instances_of[c] for c in cat_ids]
    # f(c)'s denominator: images with at least one annotation
    assert stats.num_images == len(annotated)
    np.testing.assert_allclose(
        stats.image_freq,
        [len(images_of[c]) / len(annotated) for c in cat_ids])
    by_id = {c['id']: c for c in data['categories']}
    assert stats.frequency == tuple(by_id[c]['frequency'] for c in cat_ids)
    assert stats.class_names == tuple(by_id[c]['name'] for c in cat_ids)
    for letter in 'rcf':
        assert stats.labels_of(letter).tolist() == [
            i for i, c in enumerate(cat_ids) if by_id[c]['frequency'] == letter
        ]


def test_lvis_frequency_thresholds_from_a_small_file(tmp_path):
    """No 'frequency' in the file: letters come from the LVIS thresholds on
    the train image count, rare <= 10 < common <= 100 < frequent."""
    image_counts = {1: 10, 2: 11, 3: 100, 4: 101, 5: 1}
    num_images = 120  # 19 of them without annotations
    image_classes = [[] for _ in range(num_images)]
    for cat, count in image_counts.items():
        for img in range(count):
            image_classes[img].append(cat)
    path = lvis_file(tmp_path / 'lvis.json', image_classes)
    stats = get_class_statistics(path)
    assert stats.image_count.tolist() == [10, 11, 100, 101, 1]
    assert stats.frequency == ('r', 'c', 'c', 'f', 'r')
    assert frequency_letters([0, 10, 11, 100, 101]) == \
        ['r', 'r', 'c', 'c', 'f']
    # unannotated images are not in the denominator (LVIS v1: 99,388 of the
    # 100,170 train images have annotations)
    assert stats.num_images == 101
    np.testing.assert_allclose(stats.image_freq,
                               np.array([10, 11, 100, 101, 1]) / 101)


def test_file_thresholds_and_letters_take_precedence(tmp_path):
    image_classes = [[1], [1, 2], [1]]
    path = lvis_file(
        tmp_path / 'a.json',
        image_classes,
        info=dict(
            frequency_thresholds=dict(rare_max_images=1, common_max_images=2)))
    assert get_class_statistics(path).frequency == ('f', 'r')
    categories = [
        dict(id=1, name='a', frequency='c'),
        dict(id=2, name='b', frequency='f')
    ]
    path = lvis_file(tmp_path / 'b.json', image_classes, categories=categories)
    assert get_class_statistics(path).frequency == ('c', 'f')


def test_instance_counts_at_bags_group_boundaries(tmp_path):
    """BAGS groups by train *instance* count, [0,10) [10,100) [100,1000)
    [1000, inf): counts at each boundary are exact, and distinct from the
    image counts when an image holds several instances of a class."""
    instances = {1: 9, 2: 10, 3: 99, 4: 100, 5: 999, 6: 1000}
    image_classes = [[] for _ in range(50)]
    for cat, count in instances.items():
        for k in range(count):
            image_classes[k % 50].append(cat)  # many instances per image
    stats = get_class_statistics(lvis_file(tmp_path / 'l.json', image_classes))
    assert stats.instance_count.tolist() == [9, 10, 99, 100, 999, 1000]
    assert stats.image_count.tolist() == [9, 10, 50, 50, 50, 50]
    groups = np.digitize(stats.instance_count, [10, 100, 1000])
    assert groups.tolist() == [0, 1, 1, 2, 2, 3]


def test_v05_style_file(synthetic_root, tmp_path):
    """LVIS v0.5 files name images by ``file_name`` (no ``coco_url``): the
    statistics and mmdet's v0.5 loading agree with the hand counts."""
    with open(osp.join(synthetic_root, 'annotations',
                       'lvis_v1_train.json')) as f:
        data = json.load(f)
    for img in data['images']:
        name = img.pop('coco_url').rsplit('/', 1)[-1]
        img['file_name'] = 'COCO_train2014_' + name  # v0.5 convention
    root = tmp_path / 'v05'
    (root / 'annotations').mkdir(parents=True)
    os.symlink(osp.join(synthetic_root, 'train2017'), root / 'train2017')
    path = write_json(root / 'annotations' / 'lvis_v0.5_train.json', data)

    stats = get_class_statistics(path)
    images_of = {}
    for ann in data['annotations']:
        images_of.setdefault(ann['category_id'], set()).add(ann['image_id'])
    assert stats.image_count.tolist() == [
        len(images_of.get(c['id'], ()))
        for c in sorted(data['categories'], key=lambda c: c['id'])
    ]
    dataset = build(
        'LVISV05LTDataset',
        data_root=str(root) + '/',
        ann_file='annotations/lvis_v0.5_train.json',
        data_prefix=dict(img='train2017/'))
    assert osp.isfile(dataset.get_data_info(0)['img_path'])
    from_dataset = ClassStatistics.from_dataset(dataset)
    assert from_dataset.image_count.tolist() == stats.image_count.tolist()
    assert from_dataset.instance_count.tolist() == \
        stats.instance_count.tolist()


# ------------------------------------------------------------ from_counts
def test_from_counts_defaults_and_checks():
    stats = ClassStatistics.from_counts([3, 12, 150])
    assert stats.instance_count.tolist() == [3, 12, 150]
    assert stats.num_images == 150  # smallest consistent value
    assert stats.frequency == ('r', 'c', 'f')
    assert stats.cat_ids == (1, 2, 3)
    np.testing.assert_allclose(stats.image_freq, [3 / 150, 12 / 150, 1.0])

    stats = ClassStatistics.from_counts([2, 4],
                                        instance_count=[5, 9],
                                        num_images=8,
                                        frequency=['c', 'f'],
                                        class_names=['a', 'b'])
    assert stats.num_images == 8 and stats.frequency == ('c', 'f')
    np.testing.assert_allclose(stats.image_freq, [0.25, 0.5])
    assert stats.labels_of('f').tolist() == [1]

    with pytest.raises(ValueError, match='one entry per class'):
        ClassStatistics.from_counts([1, 2], instance_count=[1])
    with pytest.raises(ValueError, match='frequency letters'):
        ClassStatistics.from_counts([1, 2], frequency=['r', 'x'])
    with pytest.raises(ValueError, match='num_images must be > 0'):
        ClassStatistics.from_counts([0, 0])


# ------------------------------------------------ statistics of a dataset
def test_from_dataset_counts_what_the_loader_uses(synthetic_root, tmp_path):
    """After filter_empty_gt and a subset (``indices``), with an image whose
    only annotation is a crowd box (kept by mmdet's filter, ignored in
    training): hand counts over the images the dataset keeps."""
    with open(osp.join(synthetic_root, 'annotations',
                       'lvis_v1_train.json')) as f:
        data = json.load(f)
    next_id = max(img['id'] for img in data['images']) + 1
    base = data['images'][0]
    # an image without annotations (filtered) and one with a crowd box only
    for k in range(2):
        data['images'].append(
            dict(
                base,
                id=next_id + k,
                neg_category_ids=[],
                not_exhaustive_category_ids=[]))
    crowd_cat = data['categories'][-1]['id']
    data['annotations'].append(
        dict(
            id=10**6,
            image_id=next_id + 1,
            category_id=crowd_cat,
            bbox=[2, 2, 20, 20],
            area=400,
            iscrowd=1,
            segmentation=[[2, 2, 22, 2, 22, 22, 2, 22]]))
    root = tmp_path / 'root'
    (root / 'annotations').mkdir(parents=True)
    for sub in ('train2017', 'val2017'):
        os.symlink(osp.join(synthetic_root, sub), root / sub)
    write_json(root / 'annotations' / 'lvis_v1_train.json', data)

    dataset = build(
        data_root=str(root) + '/',
        filter_cfg=dict(filter_empty_gt=True, min_size=4),
        indices=40)
    kept = [dataset.get_data_info(i)['img_id'] for i in range(len(dataset))]
    assert next_id not in kept  # the empty image is filtered out
    cat_ids = sorted(c['id'] for c in data['categories'])
    images_of = {c: set() for c in cat_ids}
    instances = dict.fromkeys(cat_ids, 0)
    labelled = set()
    for ann in data['annotations']:
        if ann['image_id'] in kept and not ann.get('iscrowd'):
            images_of[ann['category_id']].add(ann['image_id'])
            instances[ann['category_id']] += 1
            labelled.add(ann['image_id'])

    stats = ClassStatistics.from_dataset(dataset)
    assert stats.image_count.tolist() == [len(images_of[c]) for c in cat_ids]
    assert stats.instance_count.tolist() == [instances[c] for c in cat_ids]
    assert stats.num_images == len(labelled) == 40

    full = build(
        data_root=str(root) + '/',
        filter_cfg=dict(filter_empty_gt=True, min_size=4))
    full_ids = [full.get_data_info(i)['img_id'] for i in range(len(full))]
    # the crowd-only image passes mmdet's filter but has no training label
    assert next_id + 1 in full_ids
    full_stats = ClassStatistics.from_dataset(full)
    assert full_stats.num_images == len(full) - 1
    assert full_stats.image_count[cat_ids.index(crowd_cat)] == \
        get_class_statistics(str(root / 'annotations' /
                                 'lvis_v1_train.json')).image_count[-1] - 1


def test_from_dataset_without_classes_is_refused():

    class NoClasses:
        metainfo = dict()

        def __len__(self):
            return 1

    with pytest.raises(
            ValueError, match=r'NoClasses has no metainfo\["classes"\]'):
        ClassStatistics.from_dataset(NoClasses())


# ------------------------------------------------- per-image label reader
def test_instance_labels_by_hand():
    # image: labels;  class 0 in images 0,1,2,3; class 1 in 1,2; class 2 in 3
    labels = InstanceLabels.from_lists([[0], [0, 1, 0], [0, 1], [0, 2], []],
                                       num_classes=4)
    assert labels.num_images == 5
    assert labels.instances_per_image.tolist() == [1, 3, 2, 2, 0]
    assert labels.image_count().tolist() == [4, 2, 1, 0]
    assert labels.instance_count().tolist() == [5, 2, 1, 0]
    assert labels.num_labelled_images() == 4
    offsets, images = labels.images_of_class()
    assert offsets.tolist() == [0, 4, 6, 7, 7]
    assert images.tolist() == [0, 1, 2, 3, 1, 2, 3]
    # per image, the largest value of its classes; 7 for the empty image
    assert labels.image_max(np.array([1.0, 2.0, 4.0, 8.0]),
                            7.0).tolist() == [1, 2, 2, 4, 7]
    stats = ClassStatistics.from_instance_labels(labels, 'abcd')
    assert stats.num_images == 4 and stats.class_names == tuple('abcd')

    with pytest.raises(
            ValueError, match='image 1 has an instance with '
            'label 3, outside'):
        InstanceLabels.from_lists([[0], [1, 3]], num_classes=3)


def test_label_reader_paths_agree(synthetic_root):
    """In-memory data list (fast path) and serialised dataset (one
    get_data_info per image) read the same labels."""
    kwargs = dict(
        data_root=synthetic_root,
        filter_cfg=dict(filter_empty_gt=True, min_size=4))
    serialised = build(**kwargs)
    in_memory = build(serialize_data=False, **kwargs)
    a = dataset_instance_labels(serialised)
    b = dataset_instance_labels(in_memory)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    # hand count of image 5's labels
    expected = [
        inst['bbox_label'] for inst in serialised.get_data_info(5)['instances']
    ]
    assert a.labels[a.offsets[5]:a.offsets[6]].tolist() == expected


def test_ignored_instances_are_dropped_on_both_paths():
    from mmdet.datasets.base_det_dataset import BaseDetDataset

    class Tiny(BaseDetDataset):
        METAINFO = dict(classes=('a', 'b'))

        def load_data_list(self):
            return [
                dict(
                    img_id=0,
                    instances=[
                        dict(bbox_label=0, ignore_flag=0),
                        dict(bbox_label=1, ignore_flag=1)
                    ]),
                dict(img_id=1, instances=[dict(bbox_label=1, ignore_flag=1)]),
                dict(img_id=2, instances=[dict(bbox_label=1, ignore_flag=0)]),
            ]

    for serialize in (True, False):
        labels = dataset_instance_labels(
            Tiny(ann_file='', pipeline=[], serialize_data=serialize))
        assert labels.labels.tolist() == [0, 1]
        assert labels.offsets.tolist() == [0, 1, 1, 2]


# ----------------------------------------------------------------- cache
def test_cache_reads_a_file_once_and_rereads_a_changed_file(tmp_path):
    path = lvis_file(tmp_path / 'c.json', [[1], [1, 2]])
    first = get_class_statistics(path)
    assert get_class_statistics(path) is first
    # the same file through another path spelling hits the same entry
    assert get_class_statistics(str(tmp_path / '.' / 'c.json')) is first
    # cached arrays are shared by every component: edits must fail
    with pytest.raises(ValueError, match='read-only'):
        first.image_count[0] = 5
    time.sleep(0.01)
    lvis_file(tmp_path / 'c.json', [[1], [2], [2]])
    second = get_class_statistics(path)
    assert second is not first
    assert second.image_count.tolist() == [1, 2]
