"""RFSDataset: repeat factors by hand, stochastic rounding, equality with
mmengine's ClassBalancedDataset in 'ceil' mode, rank shards, dataloader
workers, resumption and the epoch hook.

LVIS paper (Gupta et al., CVPR 2019, App. B.2), with f(c) the fraction of
the N images of the wrapped dataset that contain class c::

    r(c) = max(1, sqrt(t / f(c))),   r(I) = max_{c in I} r(c)  (1 if no label)
"""
import math
from unittest import mock

import numpy as np
import pytest
import torch
from mmengine.dataset import (BaseDataset, ClassBalancedDataset,
                              DefaultSampler)
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
from torch.utils.data import DataLoader, SequentialSampler

from mmdet.datasets.base_det_dataset import BaseDetDataset
from mmdet.datasets.samplers import AspectRatioBatchSampler
from mmdet_longtail.datasets.rfs_dataset import (RFSDataset,
                                                 draw_repeat_counts)
from mmdet_longtail.engine.hooks.rfs_epoch_hook import (RFSEpochHook,
                                                        refresh_sampler_length)

# Six images, three classes; image 4 holds only an ignored (crowd) box of
# class 2 and image 5 nothing: both stay in the dataset (no filtering).
SIX_IMAGES = [[0], [0, 1, 0], [0, 1], [0, 2], [], []]
IGNORED = {4: [2]}


class SixImages(BaseDetDataset):
    METAINFO = dict(classes=('a', 'b', 'c'))

    def __init__(self, ignored=True, **kwargs) -> None:
        self.ignored = ignored
        super().__init__(ann_file='', data_root='', pipeline=[], **kwargs)

    def load_data_list(self):
        data_list = []
        for img, labels in enumerate(SIX_IMAGES):
            instances = [
                dict(bbox=[0, 0, 8, 8], bbox_label=label, ignore_flag=0)
                for label in labels
            ]
            if self.ignored:
                instances += [
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


def synthetic_cfg(synthetic_root, **kwargs):
    cfg = dict(
        type='LVISV1LTDataset',
        data_root=synthetic_root,
        ann_file='annotations/lvis_v1_train.json',
        data_prefix=dict(img=''),
        filter_cfg=dict(filter_empty_gt=True, min_size=4),
        pipeline=[])
    cfg.update(kwargs)
    return cfg


@pytest.fixture(autouse=True)
def registered():
    from mmdet.utils import register_all_modules
    import mmdet_longtail  # noqa: F401
    register_all_modules()


# ------------------------------------------------------------ the factors
def test_factors_by_hand_on_six_images():
    """t = 0.5, N = 6 (the two unlabelled images count in N; the ignored
    box does not count). Image counts: a 4, b 2, c 1 (image 3 only).

    f = (4/6, 2/6, 1/6); t / f = (0.75, 1.5, 3)
    r(c) = (max(1, sqrt .75), sqrt 1.5, sqrt 3) = (1, 1.2247, 1.7321)
    r(I) = (1, sqrt 1.5, sqrt 1.5, sqrt 3, 1, 1)
    """
    rfs = RFSDataset(SixImages(), threshold=0.5, mode='ceil')
    expected = [1, math.sqrt(1.5), math.sqrt(1.5), math.sqrt(3), 1, 1]
    np.testing.assert_allclose(rfs.repeat_factors, expected, rtol=1e-12)
    assert rfs.repeat_factors.dtype == np.float64
    # ceil: 1, 2, 2, 2, 1, 1 copies -> 9 samples, in image order
    assert len(rfs) == 9
    assert [rfs.get_data_info(i)['img_id']
            for i in range(9)] == [0, 1, 1, 2, 2, 3, 3, 4, 5]
    assert rfs.get_cat_ids(8) == []
    assert rfs[3]['img_id'] == 2

    # without the square root: r(c) = (1, 1.5, 3)
    linear = RFSDataset(
        SixImages(), threshold=0.5, mode='ceil', use_sqrt=False)
    np.testing.assert_allclose(linear.repeat_factors, [1, 1.5, 1.5, 3, 1, 1])
    # a threshold below every f(c) repeats nothing
    assert len(RFSDataset(SixImages(), threshold=0.1, mode='ceil')) == 6


def test_stochastic_counts_are_floor_plus_bernoulli():
    rfs = RFSDataset(SixImages(), threshold=0.5, seed=7)
    r = rfs.repeat_factors
    epochs = 4000
    counts = np.stack([rfs.repeat_counts(e) for e in range(epochs)])
    # every epoch: floor(r) or floor(r) + 1 copies, never more
    assert np.all((counts == np.floor(r)) | (counts == np.floor(r) + 1))
    # E[count] = r exactly: the mean is within 5 standard errors of r
    frac = r - np.floor(r)
    stderr = np.sqrt(frac * (1 - frac) / epochs)
    assert np.all(np.abs(counts.mean(0) - r) <= 5 * stderr + 1e-12)
    assert np.abs(counts.mean(0) - r).max() < 0.03
    # the epoch length follows the draw
    lengths = counts.sum(1)
    assert len(set(lengths.tolist())) > 1
    assert abs(lengths.mean() - r.sum()) < 0.05
    for epoch in (0, 5):
        rfs.set_epoch(epoch)
        assert len(rfs) == counts[epoch].sum()
        np.testing.assert_array_equal(rfs.epoch_indices(),
                                      np.repeat(np.arange(6), counts[epoch]))


def test_draws_depend_only_on_seed_and_epoch():
    a = RFSDataset(SixImages(), threshold=0.5, seed=3)
    b = RFSDataset(SixImages(), threshold=0.5, seed=3)
    c = RFSDataset(SixImages(), threshold=0.5, seed=4)
    draws = lambda d: [d.epoch_indices(e).tolist() for e in range(20)]  # noqa
    assert draws(a) == draws(b)
    assert draws(a) != draws(c)
    # a run resumed at epoch 3 lists what an uninterrupted run lists
    for epoch in range(4):
        a.set_epoch(epoch)
    b.set_epoch(3)
    assert a.epoch_indices().tolist() == b.epoch_indices().tolist()
    assert [a.get_data_info(i)['img_id'] for i in range(len(a))] == \
        [b.get_data_info(i)['img_id'] for i in range(len(b))]
    np.testing.assert_array_equal(
        draw_repeat_counts(a.repeat_factors, 'stochastic', 3, 3),
        a.repeat_counts())


# ------------------------------------------------- ClassBalancedDataset
@pytest.mark.parametrize('threshold', [1e-3, 0.08, 0.3])
def test_ceil_equals_class_balanced_dataset(synthetic_root, threshold):
    cfg = synthetic_cfg(synthetic_root)
    rfs = RFSDataset(cfg, threshold=threshold, mode='ceil')
    cbd = ClassBalancedDataset(cfg, oversample_thr=threshold)
    assert np.array_equal(
        rfs.repeat_factors,
        np.asarray(cbd._get_repeat_factors(cbd.dataset, threshold)))
    assert rfs.epoch_indices().tolist() == cbd.repeat_indices
    assert len(rfs) == len(cbd)
    assert [rfs.get_data_info(i)['img_id'] for i in range(len(rfs))] == \
        [cbd.get_data_info(i)['img_id'] for i in range(len(cbd))]
    # the labels were read before serialisation; the dataset is serialised
    assert rfs.dataset.serialize_data and len(rfs.dataset.data_list) == 0
    assert rfs.metainfo == cbd.metainfo


def test_ceil_equals_cbd_with_unlabelled_images_kept():
    """Unlabelled images count in f(c)'s denominator and get r(I) = 1."""
    dataset = SixImages(ignored=False)
    rfs = RFSDataset(dataset, threshold=0.5, mode='ceil')
    cbd = ClassBalancedDataset(dataset, oversample_thr=0.5)
    assert rfs.epoch_indices().tolist() == cbd.repeat_indices
    assert np.array_equal(rfs.repeat_factors,
                          cbd._get_repeat_factors(dataset, 0.5))


# ----------------------------------------------------------- bad input
@pytest.mark.parametrize('threshold', [0, -1e-3, float('nan'), 'a', True])
def test_bad_threshold_is_refused(threshold):
    with pytest.raises(
            ValueError, match='threshold must be a finite number '
            '> 0'):
        RFSDataset(SixImages(), threshold=threshold)


def test_bad_mode_and_datasets_without_categories_are_refused():
    with pytest.raises(ValueError, match="mode must be one of"):
        RFSDataset(SixImages(), mode='round')

    class NoClasses(SixImages):
        METAINFO = dict()

    with pytest.raises(
            ValueError, match=r'NoClasses has no '
            r'metainfo\["classes"\]'):
        RFSDataset(NoClasses())

    class NoLabels(BaseDataset):  # no instances, no get_cat_ids
        METAINFO = dict(classes=('a', 'b'))

        def load_data_list(self):
            return [dict(img_path='0.jpg', gt_label=1)]

    with pytest.raises(
            ValueError,
            match="no 'instances' and the dataset "
            'has no get_cat_ids'):
        RFSDataset(NoLabels(ann_file='', pipeline=[]))


# ------------------------------------------------- samplers, ranks, workers
def shards_of_two_ranks(seed, epoch):
    """Each simulated rank builds its own RFSDataset and DefaultSampler."""
    shards = []
    for rank in range(2):
        rfs = RFSDataset(SixImages(), threshold=0.5, seed=seed)
        with mock.patch(
                'mmengine.dataset.sampler.get_dist_info',
                return_value=(rank, 2)):
            sampler = DefaultSampler(rfs, seed=1)
        rfs.set_epoch(epoch)
        sampler.set_epoch(epoch)
        refresh_sampler_length(sampler)
        positions = list(sampler)
        assert len(positions) == len(sampler)
        shards.append((rfs, positions))
    return shards


@pytest.mark.parametrize('epoch', range(6))
def test_two_ranks_get_disjoint_shards_of_the_same_list(epoch):
    (rfs0, pos0), (rfs1, pos1) = shards_of_two_ranks(seed=11, epoch=epoch)
    assert rfs0.epoch_indices().tolist() == rfs1.epoch_indices().tolist()
    length = len(rfs0)
    assert len(pos0) == len(pos1) == math.ceil(length / 2)
    if length % 2 == 0:
        # disjoint and complete: every listed copy is seen exactly once
        assert sorted(pos0 + pos1) == list(range(length))
        images = [rfs0.get_data_info(p)['img_id'] for p in pos0] + \
            [rfs1.get_data_info(p)['img_id'] for p in pos1]
        assert sorted(images) == rfs0.epoch_indices().tolist()
    else:
        # DefaultSampler pads the odd list with one repeated position
        assert set(pos0) | set(pos1) == set(range(length))
        assert len(set(pos0) & set(pos1)) <= 1
    assert {len(rfs0)} == {len(rfs1)}


def test_epoch_lengths_differ_so_samplers_must_be_resized():
    lengths = {len(shards_of_two_ranks(11, e)[0][0]) for e in range(6)}
    assert len(lengths) > 1


def test_persistent_workers_follow_the_epoch():
    """Dataloader workers hold copies of the dataset; they read (seed,
    epoch) from shared memory and rebuild their list."""
    rfs = RFSDataset(SixImages(), threshold=0.5, seed=5)
    assert rfs.epoch_indices(1).tolist() != rfs.epoch_indices(0).tolist()
    loader = DataLoader(
        rfs,
        batch_size=None,
        sampler=SequentialSampler(rfs),
        num_workers=1,
        persistent_workers=True,
        collate_fn=lambda item: item['img_id'])
    for epoch in (0, 1, 2, 0):
        rfs.set_epoch(epoch)
        assert list(loader) == rfs.epoch_indices(epoch).tolist()
    rfs.set_seed(6)
    rfs.set_epoch(4)
    assert list(loader) == rfs.epoch_indices(4).tolist()


# ------------------------------------------------------------- the hook
class FakeLoop(EpochBasedTrainLoop):

    def __init__(self, dataloader):  # no runner: only what the hook reads
        self.dataloader = dataloader
        self._max_epochs = 5
        self._max_iters = 0


class FakeIterLoop(IterBasedTrainLoop):

    def __init__(self, dataloader):
        self.dataloader = dataloader
        self._max_epochs = 1
        self._max_iters = 1000


class FakeRunner:

    def __init__(self, dataloader, seed):
        self.train_dataloader = dataloader
        self.train_loop = FakeLoop(dataloader)
        self.seed = seed
        self.epoch = 0
        self.iter = 0


def aspect_ratio_loader(dataset):
    sampler = DefaultSampler(dataset, seed=0)
    return DataLoader(
        dataset,
        batch_sampler=AspectRatioBatchSampler(sampler, batch_size=2),
        collate_fn=lambda batch: [item['img_id'] for item in batch])


def test_hook_sets_run_seed_epoch_and_sampler_length():
    rfs = RFSDataset(SixImages(), threshold=0.5)
    assert not rfs.seed_given
    loader = aspect_ratio_loader(rfs)
    runner = FakeRunner(loader, seed=1234)
    hook = RFSEpochHook()
    hook.before_train(runner)
    assert rfs.seed == 1234
    for epoch in range(5):
        runner.epoch = epoch
        hook.before_train_epoch(runner)
        hook.before_train_epoch(runner)  # twice: harmless
        assert rfs.epoch == epoch
        expected = rfs.epoch_indices(epoch).tolist()
        # every copy of the epoch's list is loaded exactly once
        seen = [img for batch in loader for img in batch]
        assert sorted(seen) == expected
        assert len(loader.batch_sampler.sampler) == len(expected)
        # the loop's total (for the ETA) follows the epoch length
        assert runner.train_loop._max_iters == \
            runner.iter + (5 - epoch) * len(loader)
        runner.iter += len(loader)

    given = RFSDataset(SixImages(), threshold=0.5, seed=9)
    hook.before_train(FakeRunner(aspect_ratio_loader(given), seed=1234))
    assert given.seed == 9

    # an iteration-based loop keeps its number of iterations
    iter_runner = FakeRunner(aspect_ratio_loader(given), seed=1)
    iter_runner.train_loop = FakeIterLoop(iter_runner.train_dataloader)
    hook.before_train(iter_runner)
    assert iter_runner.train_loop.max_iters == 1000


def test_missing_hook_is_reported():
    from mmengine.logging import MessageHub
    rfs = RFSDataset(SixImages(), threshold=0.5, seed=1)
    hub = MessageHub.get_current_instance()
    previous = hub.get_info('epoch')
    try:
        hub.update_info('epoch', 0)
        len(rfs)
        assert not rfs._warned_stale_epoch
        hub.update_info('epoch', 2)  # training moved on, nobody told rfs
        len(rfs)
        assert rfs._warned_stale_epoch
    finally:
        hub.update_info('epoch', previous if previous is not None else 0)


def test_refresh_refuses_samplers_that_cannot_follow():

    class FixedSampler(torch.utils.data.Sampler):

        def __init__(self, dataset):
            self.dataset = dataset

    with pytest.raises(TypeError, match='FixedSampler cannot follow'):
        refresh_sampler_length(FixedSampler(SixImages()))
