"""LongTailClassAwareSampler: a class drawn uniformly (in random rounds),
then an image of that class (in random cycles); DDP shards; epochs."""
from unittest import mock

import numpy as np
import pytest

from mmdet.datasets.base_det_dataset import BaseDetDataset
from mmdet_longtail.datasets.samplers.class_aware_sampler import (
    LongTailClassAwareSampler, class_aware_sequence)

# image: labels. Class 0 is in images 0, 1; class 1 in image 1; class 2 in
# images 2, 3; class 3 only as an ignored box (no image to draw); image 4
# has no label.
IMAGES = {0: [0], 1: [0, 1, 1], 2: [2], 3: [2], 4: []}


class FiveImages(BaseDetDataset):
    METAINFO = dict(classes=('a', 'b', 'c', 'd'))

    def __init__(self, **kwargs) -> None:
        super().__init__(ann_file='', data_root='', pipeline=[], **kwargs)

    def load_data_list(self):
        data_list = []
        for img, labels in IMAGES.items():
            instances = [
                dict(bbox=[0, 0, 4, 4], bbox_label=label, ignore_flag=0)
                for label in labels
            ]
            if img == 3:
                instances.append(
                    dict(bbox=[0, 0, 4, 4], bbox_label=3, ignore_flag=1))
            data_list.append(
                dict(img_id=img, width=8, height=8, instances=instances))
        return data_list


def make_sampler(rank=0, world_size=1, **kwargs):
    with mock.patch(
            'mmdet_longtail.datasets.samplers.class_aware_sampler.'
            'get_dist_info',
            return_value=(rank, world_size)):
        return LongTailClassAwareSampler(FiveImages(), **kwargs)


def test_image_counts_by_hand():
    """6 draws = 2 rounds over the 3 classes with images. Class 0 (images
    0, 1) gives each image once, class 1 (image 1) gives image 1 twice,
    class 2 (images 2, 3) each once: counts (1, 3, 1, 1, 0), whatever the
    seed. Per draw, P(image) = (1/K) sum_{c in image} 1/m_c =
    (1/6, 1/2, 1/6, 1/6, 0)."""
    sampler = make_sampler(seed=0, num_samples_per_epoch=6)
    assert sampler.class_offsets.tolist() == [0, 2, 3, 5, 5]
    assert sampler.class_images.tolist() == [0, 1, 1, 2, 3]
    for epoch in range(5):
        counts = np.bincount(sampler.epoch_sequence(epoch), minlength=5)
        assert counts.tolist() == [1, 3, 1, 1, 0]


def test_class_rounds_and_image_cycles():
    rng = np.random.default_rng(0)
    num_classes, num_images = 40, 300
    # a long tail: class c in about 150 / (c + 1) random images
    per_class = [
        np.sort(
            rng.choice(num_images, size=max(1, 150 // (c + 1)), replace=False))
        for c in range(num_classes)
    ]
    per_class[7] = np.zeros(0, dtype=np.int64)  # a class without images
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in per_class])])
    images = np.concatenate(per_class).astype(np.int64)
    valid = [c for c in range(num_classes) if len(per_class[c])]

    classes, drawn = class_aware_sequence(offsets, images, 5000,
                                          np.random.default_rng(1))
    assert len(classes) == len(drawn) == 5000
    # every round of K draws visits each class with images exactly once
    k = len(valid)
    for start in range(0, 5000 - k + 1, k):
        assert sorted(classes[start:start + k].tolist()) == valid
    counts = np.bincount(classes, minlength=num_classes)[valid]
    assert counts.max() - counts.min() <= 1
    # each drawn image contains its class, and each class cycles through
    # all of its images before repeating one
    for c in valid:
        mine = drawn[classes == c]
        assert set(mine.tolist()) <= set(per_class[c].tolist())
        m = len(per_class[c])
        for start in range(0, len(mine) - m + 1, m):
            assert sorted(mine[start:start + m].tolist()) == \
                per_class[c].tolist()


def test_epochs_and_seeds():
    sampler = make_sampler(seed=3, num_samples_per_epoch=50)
    again = make_sampler(seed=3, num_samples_per_epoch=50)
    other = make_sampler(seed=4, num_samples_per_epoch=50)
    assert len(sampler) == 50
    first = list(sampler)
    assert first == list(again)
    assert first != list(other)
    sampler.set_epoch(1)
    assert list(sampler) != first
    again.set_epoch(1)
    assert list(sampler) == list(again)
    # image 4 (no label) and the ignored-only class are never drawn
    assert 4 not in set(first)
    assert len(make_sampler(seed=0)) == 5  # default: the dataset length


@pytest.mark.parametrize('total', [41, 42])
def test_two_ranks_get_disjoint_shards_of_the_same_sequence(total):
    samplers = [
        make_sampler(rank, 2, seed=9, num_samples_per_epoch=total)
        for rank in range(2)
    ]
    for sampler in samplers:
        sampler.set_epoch(2)
    shards = [list(s) for s in samplers]
    assert len(shards[0]) == len(shards[1]) == len(samplers[0]) == 21
    # interleaving the shards gives back the one sequence of the epoch
    sequence = samplers[0].epoch_sequence()
    assert sequence.tolist() == samplers[1].epoch_sequence().tolist()
    assert len(sequence) == 42
    merged = [None] * 42
    merged[0::2], merged[1::2] = shards
    assert merged == sequence.tolist()


def test_built_from_config_and_bad_input():
    from mmdet.registry import DATA_SAMPLERS
    from mmdet.utils import register_all_modules
    import mmdet_longtail  # noqa: F401
    register_all_modules()
    dataset = FiveImages()
    sampler = DATA_SAMPLERS.build(
        dict(type='LongTailClassAwareSampler', seed=0),
        default_args=dict(dataset=dataset, seed=None))
    assert isinstance(sampler, LongTailClassAwareSampler)
    assert sampler.seed == 0
    # mmdet's own ClassAwareSampler is left in place
    assert DATA_SAMPLERS.get('ClassAwareSampler') is not \
        LongTailClassAwareSampler

    with pytest.raises(ValueError, match='num_samples_per_epoch must be > 0'):
        LongTailClassAwareSampler(dataset, seed=0, num_samples_per_epoch=0)

    class Unlabelled(FiveImages):

        def load_data_list(self):
            return [dict(img_id=0, width=8, height=8, instances=[])]

    with pytest.raises(ValueError, match='no image with a labelled'):
        LongTailClassAwareSampler(Unlabelled(), seed=0)

    class NoClasses(FiveImages):
        METAINFO = dict()

    with pytest.raises(ValueError, match=r'metainfo\["classes"\]'):
        LongTailClassAwareSampler(NoClasses(), seed=0)
