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
from itertools import chain
from operator import itemgetter
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .lvis_checks import check_lvis_annotations

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


def positive_image_counts(image_count: Sequence[int], owner: str, why: str,
                          source: str) -> np.ndarray:
    """``image_count`` as float64 (C,) when every class is in a training
    image; else an error naming ``owner``, ``why`` it divides by the counts
    and the classes without one (in ``source``)."""
    counts = np.asarray(image_count, dtype=np.float64)
    if counts.ndim != 1:
        raise ValueError(f'{owner}: image_count must be one number per '
                         f'class, got shape {counts.shape}')
    missing = np.flatnonzero(~(counts >= 1))
    if missing.size:
        raise ValueError(
            f'{owner} needs a training image count >= 1 for every class '
            f'({why}); classes (labels) {missing[:10].tolist()} have no '
            f'training image in {source}')
    return counts


@dataclass(frozen=True)
class InstanceLabels:
    """Labels of the instances of every image of a dataset, image by image.

    Compressed-row layout: image ``i`` (in dataset order) owns
    ``labels[offsets[i]:offsets[i + 1]]``. Ignored instances
    (``ignore_flag=1``, e.g. crowd boxes) are left out, as in
    :meth:`ClassStatistics.from_dataset`. All counting is vectorised, so
    LVIS-sized datasets (100k images, 1.27M instances) take milliseconds once
    the labels are read (:func:`dataset_instance_labels`).

    Attributes:
        labels (np.ndarray): int64 (M,), contiguous labels in ``[0, C)``.
        offsets (np.ndarray): int64 (N + 1,), non-decreasing, ``offsets[0]
            == 0`` and ``offsets[-1] == M``.
        num_classes (int): C.
        source (str): where the labels came from, used in error messages.
    """
    labels: np.ndarray
    offsets: np.ndarray
    num_classes: int
    source: str = 'labels'

    def __post_init__(self) -> None:
        offsets = self.offsets
        if offsets.ndim != 1 or len(offsets) == 0 or offsets[0] != 0 or \
                offsets[-1] != len(self.labels) or \
                np.any(np.diff(offsets) < 0):
            raise ValueError(f'{self.source}: offsets must start at 0, be '
                             f'non-decreasing and end at the number of '
                             f'labels ({len(self.labels)})')
        bad = (self.labels < 0) | (self.labels >= self.num_classes)
        if bad.any():
            position = int(np.flatnonzero(bad)[0])
            image = int(np.searchsorted(offsets, position, side='right')) - 1
            raise ValueError(
                f'{self.source}: image {image} has an instance with label '
                f'{int(self.labels[position])}, outside [0, '
                f'{self.num_classes}) (the dataset has {self.num_classes} '
                f'classes)')

    @classmethod
    def from_lists(cls,
                   per_image: Sequence[Sequence[int]],
                   num_classes: int,
                   source: str = 'labels') -> 'InstanceLabels':
        """From one list of labels per image (tests, explicit input)."""
        counts = np.fromiter(map(len, per_image), np.int64, len(per_image))
        labels = np.fromiter(
            chain.from_iterable(per_image), np.int64, int(counts.sum()))
        return cls(labels, _offsets(counts), num_classes, source)

    @property
    def num_images(self) -> int:
        return len(self.offsets) - 1

    @property
    def instances_per_image(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def image_index(self) -> np.ndarray:
        """int64 (M,), the image of each label."""
        return np.repeat(
            np.arange(self.num_images, dtype=np.int64),
            self.instances_per_image)

    def image_label_pairs(self) -> Tuple[np.ndarray, np.ndarray]:
        """Distinct (image, label) pairs, sorted by image then label."""
        codes = np.unique(self.image_index * self.num_classes + self.labels)
        return codes // self.num_classes, codes % self.num_classes

    def image_count(self) -> np.ndarray:
        """int64 (C,), images containing each class."""
        _, labels = self.image_label_pairs()
        return np.bincount(labels, minlength=self.num_classes)

    def instance_count(self) -> np.ndarray:
        """int64 (C,), instances of each class."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def num_labelled_images(self) -> int:
        """Images with at least one (non-ignored) instance."""
        return int(np.count_nonzero(self.instances_per_image))

    def images_of_class(self) -> Tuple[np.ndarray, np.ndarray]:
        """Images containing each class, as ``(class_offsets, images)``.

        Class ``c`` is in the images ``images[class_offsets[c]:
        class_offsets[c + 1]]`` (ascending, each once).
        """
        images, labels = self.image_label_pairs()
        # a stable sort by label keeps each class's images ascending
        order = np.argsort(labels, kind='stable')
        counts = np.bincount(labels, minlength=self.num_classes)
        return _offsets(counts), images[order]

    def image_max(self, class_values: np.ndarray,
                  empty_value: float) -> np.ndarray:
        """Per image, the largest ``class_values[label]`` over its
        instances; ``empty_value`` for images without instances."""
        class_values = np.asarray(class_values)
        if class_values.shape != (self.num_classes, ):
            raise ValueError(f'class_values must have shape '
                             f'({self.num_classes},), got '
                             f'{class_values.shape}')
        out = np.full(
            self.num_images,
            empty_value,
            dtype=np.result_type(class_values, np.float64))
        nonempty = self.instances_per_image > 0
        if nonempty.any():
            out[nonempty] = np.maximum.reduceat(class_values[self.labels],
                                                self.offsets[:-1][nonempty])
        return out


def _offsets(counts: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


def describe_dataset(dataset) -> str:
    """``TypeName(ann_file)`` for error messages."""
    ann_file = getattr(dataset, 'ann_file', None)
    name = type(dataset).__name__
    return f'{name}({ann_file})' if ann_file else name


def dataset_classes(dataset) -> Tuple[str, ...]:
    """``metainfo['classes']`` of a dataset, with a clear error if absent."""
    metainfo = getattr(dataset, 'metainfo', None) or {}
    classes = metainfo.get('classes')
    if not classes:
        raise ValueError(
            f'{describe_dataset(dataset)} has no metainfo["classes"]; class '
            f'statistics need the category list')
    return tuple(classes)


def _labels_from_data_list(
        data_list: List[dict]) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(labels, per-image counts) of the non-ignored instances of an
    in-memory data list, or None if a data info has no ``instances``.

    Every instance dict is visited once, by C-level iteration (``map`` /
    ``itemgetter``): at LVIS scale the cost is the memory traffic of reading
    1.27M scattered dicts, so the label and the ignore flag are fetched
    together.
    """
    try:
        per_image = list(map(itemgetter('instances'), data_list))
    except KeyError:
        return None
    counts = np.fromiter(map(len, per_image), np.int64, len(per_image))
    num_instances = int(counts.sum())
    try:
        label_flag = np.fromiter(
            chain.from_iterable(
                map(
                    itemgetter('bbox_label', 'ignore_flag'),
                    chain.from_iterable(per_image))), np.int64,
            2 * num_instances).reshape(num_instances, 2)
    except KeyError:  # mmdet always sets ignore_flag; other datasets may not
        label_flag = np.array([(inst['bbox_label'], inst.get('ignore_flag', 0))
                               for inst in chain.from_iterable(per_image)],
                              dtype=np.int64).reshape(num_instances, 2)
    labels, ignored = label_flag[:, 0], label_flag[:, 1] != 0
    if ignored.any():
        image_index = np.repeat(np.arange(len(per_image)), counts)
        counts = np.bincount(image_index[~ignored], minlength=len(per_image))
        labels = labels[~ignored]
    return np.ascontiguousarray(labels), counts


def dataset_instance_labels(dataset) -> InstanceLabels:
    """Labels of every image of an mmengine dataset, read once.

    Reads ``data_info['instances'][k]['bbox_label']`` (mmdet datasets; ignored
    instances dropped) or, for datasets whose data infos have no
    ``instances``, ``dataset.get_cat_ids(idx)``. An initialised
    :class:`mmengine.dataset.BaseDataset` that keeps its ``data_list`` (not
    serialised) is read in place; otherwise every image is read once through
    ``get_data_info``.
    """
    classes = dataset_classes(dataset)
    source = describe_dataset(dataset)
    num_images = len(dataset)
    if num_images == 0:
        return InstanceLabels(
            np.zeros(0, np.int64), np.zeros(1, np.int64), len(classes), source)
    data_list = getattr(dataset, 'data_list', None)
    if not getattr(dataset, 'serialize_data', True) and isinstance(
            data_list, list) and len(data_list) == num_images:
        read = _labels_from_data_list(data_list)
        if read is not None:
            labels, counts = read
            return InstanceLabels(labels, _offsets(counts), len(classes),
                                  source)
    if 'instances' in dataset.get_data_info(0):
        # one image at a time: the data infos (with masks) are not all kept
        per_image = [[
            inst['bbox_label']
            for inst in dataset.get_data_info(idx).get('instances', ())
            if not inst.get('ignore_flag', 0)
        ] for idx in range(num_images)]
    else:
        no_labels = ValueError(
            f"{source}: data infos have no 'instances' and the dataset has "
            f'no get_cat_ids(); class statistics need per-image labels')
        if not hasattr(dataset, 'get_cat_ids'):
            raise no_labels
        try:
            per_image = [
                list(dataset.get_cat_ids(idx)) for idx in range(num_images)
            ]
        except NotImplementedError as e:  # mmengine's BaseDataset default
            raise no_labels from e
    return InstanceLabels.from_lists(per_image, len(classes), source)


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
        """Count statistics from a loaded LVIS annotation dict, after
        :func:`check_lvis_annotations` (malformed entries raise)."""
        check_lvis_annotations(ann, source)
        annotations = ann['annotations']
        categories = sorted(ann['categories'], key=lambda c: c['id'])
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
    def from_instance_labels(
            cls,
            instance_labels: InstanceLabels,
            class_names: Sequence[str],
            cat_ids: Optional[Sequence[int]] = None) -> 'ClassStatistics':
        """Count statistics from per-image labels; ``num_images`` counts the
        images with at least one instance, frequency letters use the LVIS
        thresholds."""
        num_images = instance_labels.num_labelled_images()
        if num_images == 0:
            raise ValueError(f'{instance_labels.source} has no image with a '
                             f'labelled instance')
        image_count = instance_labels.image_count()
        return cls(
            image_count=image_count,
            instance_count=instance_labels.instance_count(),
            num_images=num_images,
            frequency=tuple(frequency_letters(image_count)),
            cat_ids=tuple(
                cat_ids if cat_ids is not None else range(instance_labels.
                                                          num_classes)),
            class_names=tuple(class_names),
            source=instance_labels.source)

    @classmethod
    def from_dataset(cls, dataset) -> 'ClassStatistics':
        """Count statistics over the images an mmengine dataset really uses.

        Works on mmdet detection datasets (``data_info['instances']`` with
        ``bbox_label``) after their ``filter_cfg`` was applied, so the counts
        match what the loader sees.
        """
        classes = dataset_classes(dataset)
        return cls.from_instance_labels(
            dataset_instance_labels(dataset),
            class_names=classes,
            cat_ids=getattr(dataset, 'cat_ids', None))


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


def file_key(ann_file: str) -> Tuple[str, int, int]:
    """Cache key of a file: its real path, size and modification time, so a
    regenerated file is read again."""
    path = osp.realpath(ann_file)
    if not osp.isfile(path):
        raise FileNotFoundError(f'LVIS annotation file not found: {ann_file}')
    st = os.stat(path)
    return path, st.st_size, st.st_mtime_ns


def _cache_statistics(key: Tuple[str, int, int], ann: dict,
                      ann_file: str) -> ClassStatistics:
    if key not in _CACHE:
        stats = ClassStatistics.from_lvis_dict(ann, source=ann_file)
        # every caller shares the cached arrays: an in-place edit by one
        # component must fail instead of changing the others' statistics
        stats.image_count.setflags(write=False)
        stats.instance_count.setflags(write=False)
        _CACHE[key] = stats
    return _CACHE[key]


def get_class_statistics(ann_file: str) -> ClassStatistics:
    """Statistics of an LVIS (v0.5 or v1) annotation file, cached by the
    file's path, size and modification time."""
    key = file_key(ann_file)
    if key in _CACHE:
        return _CACHE[key]
    return _cache_statistics(key, load_lvis_json(key[0]), ann_file)


def load_lvis_with_statistics(ann_file: str) -> Tuple[dict, ClassStatistics]:
    """The parsed file and its (cached) statistics, from one parse: for the
    LVIS datasets, which need both."""
    key = file_key(ann_file)  # before the parse: a later rewrite is read
    ann = load_lvis_json(key[0])
    return ann, _cache_statistics(key, ann, ann_file)


StatisticsSource = Union[str, 'ClassStatistics', Mapping]


def load_class_statistics(source: Optional[StatisticsSource],
                          num_classes: int, owner: str) -> ClassStatistics:
    """The class statistics of a component's ``class_statistics`` argument.

    ``source`` is the LVIS train annotation file (what
    :class:`~mmdet_longtail.engine.LongTailRunner` passes, from
    ``train_dataloader.dataset``), a :class:`ClassStatistics`, or a dict of
    :meth:`ClassStatistics.from_counts` arguments (hand-made priors, tests).
    The statistics must have ``num_classes`` classes.
    """
    if source is None:
        raise ValueError(
            f'{owner} needs class_statistics (the LVIS train annotation '
            f'file). The LongTailRunner (runner_type=\'LongTailRunner\', set '
            f'in configs/_base_/default_runtime.py) gives it from '
            f'train_dataloader.dataset; a model built without that runner '
            f'must pass it')
    if isinstance(source, ClassStatistics):
        stats = source
    elif isinstance(source, str):
        stats = get_class_statistics(source)
    elif isinstance(source, Mapping):
        stats = ClassStatistics.from_counts(**source)
    else:
        raise TypeError(f'{owner}: class_statistics must be an annotation '
                        f'file path, a ClassStatistics or a dict of counts, '
                        f'got {type(source).__name__}')
    if stats.num_classes != num_classes:
        raise ValueError(
            f'{owner}: num_classes={num_classes} does not match the '
            f'{stats.num_classes} categories in {stats.source}')
    return stats
