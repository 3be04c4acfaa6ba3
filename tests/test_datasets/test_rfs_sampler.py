"""RFSSampler: repeat factors by hand, ceil and stochastic rounding, seeds
and epochs, equality with mmengine's ClassBalancedDataset, rank shards,
mmengine's loops (epoch- and iteration-based) and resumption.

LVIS paper (Gupta et al., CVPR 2019, App. B.2), with f(c) the fraction of the
labelled training images that contain class c (ClassStatistics.image_freq)::

    r(c) = max(1, sqrt(t / f(c))),   r(I) = max_{c in I} r(c)  (1 if no label)
"""
import math
from unittest import mock

import numpy as np
import pytest
from mmengine.dataset import BaseDataset, ClassBalancedDataset
from mmengine.runner.loops import _InfiniteDataloaderIterator
from torch.utils.data import BatchSampler, DataLoader

from mmdet.datasets.base_det_dataset import BaseDetDataset
from mmdet.datasets.samplers import AspectRatioBatchSampler
from mmdet_longtail.datasets.class_stats import ClassStatistics
from mmdet_longtail.datasets.samplers.rfs_sampler import RFSSampler

# Six images, three classes; image 4 holds only an ignored (crowd) box of
# class 2 and image 5 nothing: both stay in the dataset (no filtering) but
# are not labelled images.
SIX_IMAGES = [[0], [0, 1, 0], [0, 1], [0, 2], [], []]
IGNORED = {4: [2]}
SQRT2 = math.sqrt(2)


class SixImages(BaseDetDataset):
    METAINFO = dict(classes=('a', 'b', 'c'))

    def __init__(self, images=SIX_IMAGES, **kwargs) -> None:
        self.images = images
        super().__init__(ann_file='', data_root='', pipeline=[], **kwargs)

    def load_data_list(self):
        data_list = []
        for img, labels in enumerate(self.images):
            instances = [
                dict(bbox=[0, 0, 8, 8], bbox_label=label, ignore_flag=0)
                for label in labels
            ] + [
                dict(bbox=[0, 0, 8, 8], bbox_label=label, ignore_flag=1)
                for label in IGNORED.get(img, [])
            ]
            data_list.append(
                dict(
                    img_id=img,
                    img_path=f'{img}.jpg',
                    width=16 if img % 2 else 8,
                    height=8,
                    instances=instances))
        return data_list


def make_sampler(rank=0, world_size=1, dataset=None, **kwargs):
    kwargs.setdefault('threshold', 1.0)
    kwargs.setdefault('seed', 0)
    with mock.patch(
            'mmdet_longtail.datasets.samplers.rfs_sampler.get_dist_info',
            return_value=(rank, world_size)):
        return RFSSampler(
            SixImages() if dataset is None else dataset, **kwargs)


def synthetic_cfg(synthetic_root):
    return dict(
        type='LVISV1LTDataset',
        data_root=synthetic_root,
        ann_file='annotations/lvis_v1_train.json',
        data_prefix=dict(img=''),
        filter_cfg=dict(filter_empty_gt=True, min_size=4),
        pipeline=[])


@pytest.fixture(autouse=True)
def registered():
    from mmdet.utils import register_all_modules
    import mmdet_longtail  # noqa: F401
    register_all_modules()


# ------------------------------------------------------------ the factors
def test_factors_by_hand_on_six_images():
    """t = 1. N = 4 labelled images (images 4 and 5 have no non-ignored
    instance); image counts a 4, b 2, c 1.

    f = (1, 1/2, 1/4); t / f = (1, 2, 4); r(c) = (1, sqrt 2, 2)
    r(I) = (1, sqrt 2, sqrt 2, 2, 1, 1); ceil: 1, 2, 2, 2, 1, 1 copies
    """
    stats = ClassStatistics.from_dataset(SixImages())
    assert stats.num_images == 4
    np.testing.assert_array_equal(stats.image_freq, [1, 0.5, 0.25])

    sampler = make_sampler(rounding='ceil', shuffle=False)
    assert sampler.repeat_factors.dtype == np.float64
    np.testing.assert_allclose(sampler.repeat_factors,
                               [1, SQRT2, SQRT2, 2, 1, 1], rtol=0, atol=0)
    assert sampler.epoch_indices().tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 5]
    assert len(sampler) == 9
    assert list(sampler) == [0, 1, 1, 2, 2, 3, 3, 4, 5]

    # without the square root: r(c) = (1, 2, 4)
    linear = make_sampler(rounding='ceil', use_sqrt=False)
    np.testing.assert_array_equal(linear.repeat_factors, [1, 2, 2, 4, 1, 1])
    assert len(linear) == 11
    # a threshold below every f(c) repeats nothing
    assert len(make_sampler(threshold=0.2, rounding='ceil')) == 6


def test_ceil_counts_are_exact_every_epoch():
    sampler = make_sampler(rounding='ceil', seed=3)
    lists = []
    for epoch in range(6):
        sampler.set_epoch(epoch)
        lists.append(list(sampler))
        assert np.bincount(lists[-1]).tolist() == [1, 2, 2, 2, 1, 1]
        assert len(sampler) == 9
    # the same copies, shuffled differently each epoch
    assert len({tuple(order) for order in lists}) > 1


def test_stochastic_counts_are_floor_plus_bernoulli():
    sampler = make_sampler(seed=7, shuffle=False)
    r = sampler.repeat_factors
    epochs = 4000
    counts = np.stack([
        np.bincount(sampler.epoch_indices(e), minlength=6)
        for e in range(epochs)
    ])
    assert np.all((counts == np.floor(r)) | (counts == np.floor(r) + 1))
    # E[count] = r: the mean is within 5 standard errors of r
    frac = r - np.floor(r)
    stderr = np.sqrt(frac * (1 - frac) / epochs)
    assert np.all(np.abs(counts.mean(0) - r) <= 5 * stderr + 1e-12)
    # image 3 has r = 2 exactly: always 2 copies
    assert set(counts[:, 3].tolist()) == {2}
    lengths = counts.sum(1)
    assert set(lengths.tolist()) == {7, 8, 9}
    for epoch in (0, 5):
        sampler.set_epoch(epoch)
        assert len(sampler) == lengths[epoch]
        assert list(sampler) == np.repeat(np.arange(6),
                                          counts[epoch]).tolist()


def test_lists_depend_only_on_seed_and_epoch():
    a, b, c = (make_sampler(seed=s) for s in (3, 3, 4))
    lists = lambda s: [s.epoch_indices(e).tolist() for e in range(20)]  # noqa
    assert lists(a) == lists(b)
    assert lists(a) != lists(c)
    # a run resumed at epoch 3 lists what an uninterrupted run lists
    straight = []
    for epoch in range(4):
        a.set_epoch(epoch)
        straight.append(list(a))
    b.set_epoch(3)
    assert list(b) == straight[3]
    # going back to an epoch gives its list again
    a.set_epoch(1)
    assert list(a) == straight[1]


def test_seed_none_uses_the_shared_seed():
    with mock.patch(
            'mmdet_longtail.datasets.samplers.rfs_sampler.sync_random_seed',
            return_value=1234):
        sampler = make_sampler(seed=None)
    assert sampler.seed == 1234
    assert sampler.epoch_indices(2).tolist() == make_sampler(
        seed=1234).epoch_indices(2).tolist()


# ------------------------------------------------- ClassBalancedDataset
@pytest.mark.parametrize('threshold', [1e-3, 0.08, 0.3])
def test_ceil_equals_class_balanced_dataset(synthetic_root, threshold):
    """With filter_empty_gt every image is labelled, so f(c) has the
    denominator of ClassBalancedDataset."""
    from mmdet.registry import DATASETS
    dataset = DATASETS.build(synthetic_cfg(synthetic_root))
    sampler = make_sampler(
        dataset=dataset, threshold=threshold, rounding='ceil', shuffle=False)
    cbd = ClassBalancedDataset(dataset, oversample_thr=threshold)
    np.testing.assert_array_equal(
        sampler.repeat_factors,
        np.asarray(cbd._get_repeat_factors(dataset, threshold)))
    assert sampler.epoch_indices().tolist() == cbd.repeat_indices
    stats = ClassStatistics.from_dataset(dataset)
    assert stats.num_images == len(dataset)


# ----------------------------------------------------------- bad input
@pytest.mark.parametrize('threshold', [0, -1e-3, float('nan'), 'a', True])
def test_bad_threshold_is_refused(threshold):
    with pytest.raises(ValueError, match='threshold must be a finite number '
                       f'> 0 .*got {threshold!r}'):
        make_sampler(threshold=threshold)


def test_bad_rounding_and_datasets_without_labels_are_refused():
    with pytest.raises(ValueError, match="rounding must be one of .*'round'"):
        make_sampler(rounding='round')

    class NoClasses(SixImages):
        METAINFO = dict()

    with pytest.raises(ValueError, match=r'NoClasses has no '
                       r'metainfo\["classes"\]'):
        make_sampler(dataset=NoClasses())

    class NoLabels(BaseDataset):  # no instances, no get_cat_ids
        METAINFO = dict(classes=('a', 'b'))

        def load_data_list(self):
            return [dict(img_path='0.jpg', gt_label=1)]

    with pytest.raises(ValueError, match="no 'instances' and the dataset "
                       'has no get_cat_ids'):
        make_sampler(dataset=NoLabels(ann_file='', pipeline=[]))

    with pytest.raises(ValueError, match='SixImages has no image with a '
                       'labelled instance'):
        make_sampler(dataset=SixImages(images=[[], []]))


def test_old_config_names_give_the_new_config():
    from mmdet.registry import DATASETS, HOOKS
    with pytest.raises(TypeError, match=r"sampler=dict\(_delete_=True, "
                       r"type='RFSSampler', threshold=0.5, "
                       r"rounding='ceil'\)"):
        DATASETS.build(
            dict(type='RFSDataset', dataset=dict(), threshold=0.5,
                 mode='ceil'))
    with pytest.raises(TypeError, match='RFSEpochHook was removed'):
        HOOKS.build(dict(type='RFSEpochHook'))


# ------------------------------------------------------ ranks and loops
@pytest.mark.parametrize('epoch', range(6))
def test_two_ranks_get_disjoint_shards_of_the_same_list(epoch):
    samplers = [make_sampler(rank, 2, seed=11) for rank in range(2)]
    for sampler in samplers:
        sampler.set_epoch(epoch)
    full = samplers[0].epoch_indices().tolist()
    assert samplers[1].epoch_indices().tolist() == full
    shards = [list(sampler) for sampler in samplers]
    assert len(shards[0]) == len(shards[1]) == len(samplers[0]) == \
        len(samplers[1]) == math.ceil(len(full) / 2)
    # rank k takes entries k, k + 2, ... of the list padded by wrapping
    padded = full + full[:len(full) % 2]
    assert shards[0] == padded[0::2] and shards[1] == padded[1::2]
    assert sorted(shards[0] + shards[1]) == sorted(padded)


def test_epoch_lengths_differ_between_epochs():
    sampler = make_sampler(seed=11)
    assert len({len(sampler.epoch_indices(e)) for e in range(6)}) > 1


def test_aspect_ratio_batches_follow_the_epoch():
    """mmdet's batch sampler reads the sampler's length and list anew each
    epoch, as the DataLoader the runner builds."""
    sampler = make_sampler(seed=5)
    loader = DataLoader(
        sampler.dataset,
        batch_sampler=AspectRatioBatchSampler(sampler, batch_size=2),
        collate_fn=lambda batch: [item['img_id'] for item in batch])
    for epoch in range(5):
        sampler.set_epoch(epoch)
        seen = [img for batch in loader for img in batch]
        assert sorted(seen) == sorted(sampler.epoch_indices(epoch).tolist())
        assert len(loader) == math.ceil(len(sampler) / 2)


def test_iteration_based_loop_moves_to_the_next_epoch():
    """IterBasedTrainLoop restarts the dataloader at the end of the list and
    calls set_epoch(1), set_epoch(2), ... on the batch sampler's sampler."""
    sampler = make_sampler(seed=2)
    loader = DataLoader(
        sampler.dataset,
        batch_sampler=BatchSampler(sampler, batch_size=2, drop_last=False),
        collate_fn=lambda batch: [item['img_id'] for item in batch])
    expected = [sampler.epoch_indices(e).tolist() for e in range(3)]
    with mock.patch('mmengine.runner.loops.time.sleep'):
        iterator = _InfiniteDataloaderIterator(loader)
        batches = [next(iterator) for _ in range(sum(
            math.ceil(len(e) / 2) for e in expected))]
    assert sampler.epoch == 2
    for epoch, listed in enumerate(expected):
        num = math.ceil(len(listed) / 2)
        got, batches = batches[:num], batches[num:]
        assert [img for batch in got for img in batch] == listed
