"""Repeat factors at LVIS v1 scale: RFSSampler's vectorised statistics
against mmengine's ``ClassBalancedDataset``, measured in the same run.

The script generates an LVIS-v1-shaped detection dataset in memory (by
default 100,000 images, 1,270,000 instances, 1,203 classes with a Zipf-like
long tail; every instance carries a box, a label, an ignore flag and a
polygon, like the data infos of mmdet's LVIS datasets; every image has an
instance, as the train set after ``filter_empty_gt``) and computes the
repeat factors with t = 1e-3 on that same dataset object three ways:

* ``ClassBalancedDataset``: building the wrapper around the initialised,
  serialised dataset (mmengine's default): its repeat factors and its
  repeat-index list. This is the baseline.
* RFS statistics: read the labels from the in-memory data list
  (``class_stats.dataset_instance_labels``), then ``ClassStatistics``,
  r(c), r(I), ``ceil`` counts and the index list, all vectorised.
* ``RFSSampler`` on the serialised dataset, as mmengine's runner builds it
  (labels read once per image through ``get_data_info``).

It checks that the factors and index lists of ``'ceil'`` mode are identical
to ``ClassBalancedDataset``'s. Each timing is the best of ``--repeat`` runs.
The last line is the summary, e.g. ``speedup vs ClassBalancedDataset: 2.5x
(RFSSampler as the runner builds it)``.

Example:
    python benchmarks/bench_rfs.py
    python benchmarks/bench_rfs.py --num-images 20000 --num-instances 254000
"""
import argparse
import time
from typing import Callable, List, Tuple

import numpy as np
from mmengine.dataset import ClassBalancedDataset

from mmdet.datasets.base_det_dataset import BaseDetDataset
from mmdet_longtail.datasets.class_stats import (ClassStatistics,
                                                dataset_instance_labels)
from mmdet_longtail.datasets.samplers.rfs_sampler import (
    RFSSampler, image_repeat_factors)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--num-images', type=int, default=100_000)
    parser.add_argument('--num-instances', type=int, default=1_270_000)
    parser.add_argument('--num-classes', type=int, default=1203)
    parser.add_argument(
        '--polygon-coords',
        type=int,
        default=32,
        help='coordinates per instance polygon (0: no masks); real LVIS '
        'polygons are usually longer')
    parser.add_argument('--threshold', type=float, default=1e-3)
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args()


class LVISShapedDataset(BaseDetDataset):
    """In-memory stand-in for LVIS v1 train: the label of every instance is
    drawn from a Zipf-like class distribution, images get a Poisson-like
    number of instances, at least one (the train set after
    ``filter_empty_gt``)."""

    def __init__(self, num_images: int, num_instances: int, num_classes: int,
                 polygon_coords: int, seed: int, **kwargs) -> None:
        self.shape = (num_images, num_instances, num_classes, polygon_coords,
                      seed)
        super().__init__(
            ann_file='',
            data_root='',
            pipeline=[],
            metainfo=dict(classes=tuple(f'c{i}' for i in range(num_classes))),
            **kwargs)

    def load_data_list(self) -> List[dict]:
        num_images, num_instances, num_classes, coords, seed = self.shape
        rng = np.random.default_rng(seed)
        weights = (np.arange(num_classes) + 10.0)**-1.6
        labels = rng.choice(
            num_classes, size=num_instances,
            p=weights / weights.sum()).tolist()
        image_of = np.sort(
            np.concatenate([
                np.arange(num_images),
                rng.integers(0, num_images, size=num_instances - num_images)
            ]))
        starts = np.searchsorted(image_of, np.arange(num_images + 1)).tolist()
        # each instance gets its own polygon list (as parsed from the JSON),
        # so pickling does not collapse them; the float objects are shared
        # to keep the generator's memory down
        polygon = [float(k) for k in range(coords)]
        data_list = []
        for img in range(num_images):
            instances = []
            for k in range(starts[img], starts[img + 1]):
                instance = dict(
                    bbox=[1.0, 2.0, 30.0, 40.0],
                    bbox_label=labels[k],
                    ignore_flag=0)
                if coords:
                    instance['mask'] = [polygon.copy()]
                instances.append(instance)
            data_list.append(
                dict(
                    img_id=img,
                    img_path=f'{img:012d}.jpg',
                    width=640,
                    height=480,
                    instances=instances))
        return data_list


def best_time(fn: Callable, repeat: int) -> Tuple[float, object]:
    best, result = float('inf'), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def rfs_statistics(dataset, threshold: float):
    """RFS statistics once the data list is loaded ('ceil' rounding)."""
    labels = dataset_instance_labels(dataset)
    stats = ClassStatistics.from_instance_labels(labels,
                                                 dataset.metainfo['classes'])
    factors = image_repeat_factors(labels, stats.image_freq, threshold)
    counts = np.ceil(factors).astype(np.int64)
    indices = np.repeat(np.arange(len(factors)), counts)
    return factors, indices


def cbd_statistics(dataset, threshold: float):
    wrapper = ClassBalancedDataset(dataset, oversample_thr=threshold)
    return wrapper


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    dataset = LVISShapedDataset(
        args.num_images,
        args.num_instances,
        args.num_classes,
        args.polygon_coords,
        args.seed,
        lazy_init=True)
    # the dataset's own loading, paid by both wrappers (not timed)
    dataset.serialize_data = False
    dataset.full_init()
    print(f'generated {len(dataset)} images, {args.num_instances} instances, '
          f'{args.num_classes} classes in {time.perf_counter() - start:.1f} s')

    rfs_time, (factors, indices) = best_time(
        lambda: rfs_statistics(dataset, args.threshold), args.repeat)
    dataset.data_bytes, dataset.data_address = dataset._serialize_data()
    dataset.serialize_data = True

    cbd_time, cbd = best_time(lambda: cbd_statistics(dataset, args.threshold),
                              args.repeat)
    cbd_factors = np.asarray(
        cbd._get_repeat_factors(dataset, args.threshold), dtype=np.float64)
    if not np.array_equal(factors, cbd_factors):
        raise AssertionError('repeat factors differ from ClassBalancedDataset')
    if indices.tolist() != cbd.repeat_indices:
        raise AssertionError('ceil index list differs from '
                             'ClassBalancedDataset')

    serialized_time, sampler = best_time(
        lambda: RFSSampler(
            dataset, args.threshold, rounding='ceil', seed=0, shuffle=False),
        1)
    if not np.array_equal(sampler.repeat_factors, cbd_factors) or \
            sampler.epoch_indices().tolist() != cbd.repeat_indices:
        raise AssertionError('RFSSampler on the serialised dataset differs')

    repeated = int(np.count_nonzero(factors > 1))
    print(f'threshold {args.threshold:g}: {repeated} of {len(factors)} '
          f'images have r(I) > 1, ceil epoch length {len(indices)}; '
          f'factors and index list identical to ClassBalancedDataset')
    print(f'ClassBalancedDataset (serialised dataset): {cbd_time:.3f} s')
    print(f'RFS statistics (labels read from the data list): '
          f'{rfs_time:.3f} s')
    print(f'RFSSampler on the serialised dataset (one get_data_info per '
          f'image): {serialized_time:.3f} s')
    print(f'speedup vs ClassBalancedDataset: '
          f'{cbd_time / serialized_time:.1f}x (RFSSampler as the runner '
          f'builds it)')


if __name__ == '__main__':
    main()
