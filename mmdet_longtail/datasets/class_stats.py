"""Per-class training statistics of an LVIS-style dataset, read once.

Every long-tail component needs some statistic of the training set:

* RFS and EQL use the image frequency ``f(c) = image_count(c) / N`` where
  ``N`` is the number of training images with at least one annotation
  (Gupta et al., "LVIS", CVPR 2019, App. B.2; Tan et al., "Equalization
  Loss", CVPR 2020, Eq. 5);
* BAGS groups classes by training *instance* count (Li et al., CVPR 2020);
* NorCal divides by the training image count (Pan et al., NeurIPS 2021);
* the analysis tools bin classes by the LVIS frequency letter
  (rare ``<= 10`` images, common ``11..100``, frequent ``> 100``).

mmdet's ``LVISV1Dataset`` drops the categories' ``frequency`` /
``image_count`` fields, so the statistics come from the annotation file
itself. :func:`get_class_statistics` parses a file once per process (cached
by path, size and modification time) and every component calls it instead of
re-reading the JSON.

Labels are contiguous, in ascending category-id order, exactly as mmdet's
LVIS datasets map ``category_id -> label``.
"""
import json
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

# LVIS paper thresholds on the number of training images of a class.
LVIS_RARE_MAX_IMAGES = 10
LVIS_COMMON_MAX_IMAGES = 100


def frequency_letters(image_count: Sequence[int],
                      rare_max: int = LVIS_RARE_MAX_IMAGES,
                      common_max: int = LVIS_COMMON_MAX_IMAGES) -> List[str]:
    """LVIS frequency letter of each class from its training image count."""
    letters = []
    for count in image_count:
        if count <= rare_max:
            letters.append('r')
        elif count <= common_max:
            letters.append('c')
        else:
            letters.append('f')
    return letters


@dataclass(frozen=True)
class ClassStatistics:
    """Training statistics of C classes, indexed by contiguous label.

    Attributes:
        image_count (np.ndarray): int64 (C,), training images containing
            each class.
        instance_count (np.ndarray): int64 (C,), training instances of each
            class.
        num_images (int): training images with at least one annotation; the
            denominator of :attr:`image_freq`.
        frequency (tuple[str]): LVIS letter ``'r'``, ``'c'`` or ``'f'`` per
            class.
        cat_ids (tuple[int]): category id of each label.
        class_names (tuple[str]): category name of each label.
        source (str): where the numbers came from (file path or ``'counts'``),
            used in error messages.
    """
    image_count: np.ndarray
    instance_count: np.ndarray
    num_images: int
    frequency: Tuple[str, ...]
    cat_ids: Tuple[int, ...] = field(default=())
    class_names: Tuple[str, ...] = field(default=())
    source: str = 'counts'

    def __post_init__(self) -> None:
        num_classes = len(self.image_count)
        if len(self.instance_count) != num_classes or len(
                self.frequency) != num_classes:
            raise ValueError(
                f'class statistics from {self.source}: image_count '
                f'({num_classes}), instance_count '
                f'({len(self.instance_count)}) and frequency '
                f'({len(self.frequency)}) must have one entry per class')
        if self.num_images <= 0:
            raise ValueError(f'class statistics from {self.source}: '
                             f'num_images must be > 0, got {self.num_images}')
        bad = set(self.frequency) - {'r', 'c', 'f'}
        if bad:
            raise ValueError(f'class statistics from {self.source}: unknown '
                             f'frequency letters {sorted(bad)}')

    @property
    def num_classes(self) -> int:
        return len(self.image_count)

    @property
    def image_freq(self) -> np.ndarray:
        """f(c) = image_count(c) / num_images, float64 (C,)."""
        return self.image_count.astype(np.float64) / self.num_images

    def labels_of(self, letter: str) -> np.ndarray:
        """Labels whose frequency letter is ``letter`` ('r', 'c' or 'f')."""
        return np.array(
            [i for i, f in enumerate(self.frequency) if f == letter],
            dtype=np.int64)

    @classmethod
    def from_counts(cls,
                    image_count: Sequence[int],
                    instance_count: Optional[Sequence[int]] = None,
                    num_images: Optional[int] = None,
                    frequency: Optional[Sequence[str]] = None,
                    class_names: Optional[Sequence[str]] = None
                    ) -> 'ClassStatistics':
        """Statistics given as explicit lists (tests, hand-made priors).

        ``instance_count`` defaults to ``image_count``; ``num_images`` to
        ``max(image_count)`` (the smallest consistent value); ``frequency``
        to the LVIS thresholds applied to ``image_count``.
        """
        image_count = np.asarray(image_count, dtype=np.int64)
        instance_count = image_count if instance_count is None else \
            np.asarray(instance_count, dtype=np.int64)
        if num_images is None:
            num_images = int(image_count.max()) if image_count.size else 0
        if frequency is None:
            frequency = frequency_letters(image_count)
        names = tuple(class_names) if class_names is not None else tuple(
            str(i) for i in range(len(image_count)))
        return cls(
            image_count=image_count,
            instance_count=instance_count,
            num_images=int(num_images),
            frequency=tuple(frequency),
            cat_ids=tuple(range(1,
                                len(image_count) + 1)),
            class_names=names)

    @classmethod
    def from_lvis_dict(cls, ann: dict, source: str) -> 'ClassStatistics':
        """Count statistics from a loaded LVIS annotation dict."""
        categories = ann.get('categories')
        if not categories:
            raise ValueError(f"{source}: the annotation file has no "
                             f"'categories' field (or it is empty); "
                             f'class statistics need it')
        annotations = ann.get('annotations')
        if annotations is None:
            raise ValueError(
                f"{source}: the annotation file has no 'annotations' field")
        categories = sorted(categories, key=lambda c: c['id'])
        cat_ids = np.array([c['id'] for c in categories], dtype=np.int64)
        num_classes = len(cat_ids)

        if annotations:
            ann_cat = np.fromiter((a['category_id'] for a in annotations),
                                  dtype=np.int64,
                                  count=len(annotations))
            ann_img = np.fromiter((a['image_id'] for a in annotations),
                                  dtype=np.int64,
                                  count=len(annotations))
        else:
            ann_cat = ann_img = np.zeros(0, dtype=np.int64)
        labels = np.searchsorted(cat_ids, ann_cat)
        labels_clipped = np.minimum(labels, num_classes - 1)
        unknown = cat_ids[labels_clipped] != ann_cat
        if unknown.any():
            bad = int(ann_cat[unknown][0])
            raise ValueError(f'{source}: annotation with category_id={bad} '
                             f"which is not in 'categories'")
        instance_count = np.bincount(labels, minlength=num_classes)
        # one (image, class) pair per image containing the class
        pairs = np.unique(ann_img * num_classes + labels)
        image_count = np.bincount(pairs % num_classes, minlength=num_classes)
        num_images = int(np.unique(ann_img).size)

        if all('frequency' in c for c in categories):
            frequency = [c['frequency'] for c in categories]
        else:
            thresholds = (ann.get('info') or {}).get('frequency_thresholds',
                                                     {})
            frequency = frequency_letters(
                image_count,
                thresholds.get('rare_max_images', LVIS_RARE_MAX_IMAGES),
                thresholds.get('common_max_images', LVIS_COMMON_MAX_IMAGES))
        return cls(
            image_count=image_count.astype(np.int64),
            instance_count=instance_count.astype(np.int64),
            num_images=num_images,
            frequency=tuple(frequency),
            cat_ids=tuple(int(c) for c in cat_ids),
            class_names=tuple(c.get('name', str(c['id'])) for c in categories),
            source=source)

    @classmethod
    def from_dataset(cls, dataset) -> 'ClassStatistics':
        """Count statistics over the images an mmengine dataset really uses.

        Works on mmdet detection datasets (``data_info['instances']`` with
        ``bbox_label``) after their ``filter_cfg`` was applied, so the counts
        match what the loader sees.
        """
        classes = dataset.metainfo.get('classes')
        if not classes:
            raise ValueError(
                f'{type(dataset).__name__} has no metainfo["classes"]; '
                f'class statistics need the category list')
        num_classes = len(classes)
        image_count = np.zeros(num_classes, dtype=np.int64)
        instance_count = np.zeros(num_classes, dtype=np.int64)
        num_images = 0
        for idx in range(len(dataset)):
            labels = [
                inst['bbox_label']
                for inst in dataset.get_data_info(idx).get('instances', [])
                if not inst.get('ignore_flag', 0)
            ]
            if not labels:
                continue
            num_images += 1
            labels = np.asarray(labels, dtype=np.int64)
            instance_count += np.bincount(labels, minlength=num_classes)
            image_count[np.unique(labels)] += 1
        if num_images == 0:
            raise ValueError(f'{type(dataset).__name__} has no image with a '
                             f'labelled instance')
        return cls(
            image_count=image_count,
            instance_count=instance_count,
            num_images=num_images,
            frequency=tuple(frequency_letters(image_count)),
            cat_ids=tuple(getattr(dataset, 'cat_ids', range(num_classes))),
            class_names=tuple(classes),
            source=type(dataset).__name__)


_CACHE: Dict[Tuple[str, int, int], ClassStatistics] = {}


def load_lvis_json(ann_file: str) -> dict:
    """Load an LVIS annotation file with an error that names the file."""
    if not osp.isfile(ann_file):
        raise FileNotFoundError(f'LVIS annotation file not found: {ann_file}')
    try:
        with open(ann_file) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f'{ann_file} is not valid JSON: {e}') from e


def get_class_statistics(ann_file: str) -> ClassStatistics:
    """Statistics of an LVIS (v0.5 or v1) annotation file, cached.

    The cache key includes the file size and modification time, so a
    regenerated file is read again.
    """
    path = osp.realpath(ann_file)
    if not osp.isfile(path):
        raise FileNotFoundError(f'LVIS annotation file not found: {ann_file}')
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _CACHE:
        _CACHE[key] = ClassStatistics.from_lvis_dict(
            load_lvis_json(path), source=ann_file)
    return _CACHE[key]


def resolve_class_statistics(num_classes: int,
                             ann_file: Optional[str] = None,
                             stats: Optional[ClassStatistics] = None,
                             owner: str = 'component') -> ClassStatistics:
    """Statistics for a component configured with ``ann_file`` or explicit
    statistics, checked against its ``num_classes``."""
    if stats is None:
        if ann_file is None:
            raise ValueError(f'{owner} needs class statistics: pass ann_file='
                             f'<LVIS train annotation file> (or explicit '
                             f'counts)')
        stats = get_class_statistics(ann_file)
    if stats.num_classes != num_classes:
        raise ValueError(
            f'{owner}: num_classes={num_classes} does not match the '
            f'{stats.num_classes} categories in {stats.source}')
    return stats
