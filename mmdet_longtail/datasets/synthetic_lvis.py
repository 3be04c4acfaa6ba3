"""A deterministic synthetic long-tailed dataset in LVIS v1 format.

It lets the whole pipeline (train, test, LVIS metrics, analysis) run on a
laptop CPU in minutes, without the COCO images. Each class has a distinct
appearance (shape x colour), so a detector can learn it. The training split
follows a Zipf-like distribution of per-class image counts, so rare classes
get only a handful of images, as in LVIS. The validation split draws classes
uniformly, so every class can be evaluated.

The files mirror LVIS v1 exactly:

* ``annotations/lvis_v1_{train,val}.json`` with ``categories`` carrying
  ``frequency`` / ``image_count`` / ``instance_count``, images carrying
  ``coco_url`` / ``neg_category_ids`` / ``not_exhaustive_category_ids``, and
  polygon segmentations;
* images under ``train2017/`` and ``val2017/``. As in LVIS v1, some
  validation images live in ``train2017/``. mmdet's ``LVISV1Dataset`` resolves
  the path from ``coco_url``, so the data root needs both folders.

With ``lvis_version='v0.5'`` the files are ``lvis_v0.5_{train,val}.json``,
images also carry a COCO 2014 ``file_name`` (as in LVIS v0.5; mmdet's
``LVISV05Dataset`` maps it to the 2017 name) and all validation images live
in ``val2017/``.

Every class gets at least ``min_class_images`` train images at any image
size: an image never gets more classes than a grid of ``min_object_size``
cells holds, a class that finds no room at a random position goes to a free
grid cell, and options that cannot keep the minimum raise a clear error.

Frequency letters come from the training image counts. The LVIS thresholds
(10 and 100 images out of about 100k) are scaled to the dataset size: rare is
at most ``rare_fraction`` of the training images, common at most
``common_fraction``. The thresholds used are recorded in ``info``.
"""
import json
import math
import os
import os.path as osp
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from .class_stats import frequency_letters

COCO_URL_PREFIX = 'http://images.cocodataset.org/'
LVIS_VERSIONS = ('v1', 'v0.5')

SHAPES = ('square', 'circle', 'triangle', 'diamond', 'cross', 'hexagon',
          'star')


@dataclass
class SyntheticLVISOptions:
    """Options of :func:`make_synthetic_lvis` (recorded in the files)."""
    num_classes: int = 30
    num_train_images: int = 600
    num_val_images: int = 150
    image_size: int = 128
    # train image count of the most frequent / least frequent class
    max_class_images: int = 300
    min_class_images: int = 2
    # Zipf-Mandelbrot offset q: count ~ (rank + q) ** -s; q > 0 flattens the
    # head so that the frequent group is not a single class
    zipf_offset: float = 8.0
    min_object_size: int = 20
    max_object_size: int = 44
    val_objects_per_image: Tuple[int, int] = (1, 3)
    neg_categories_per_image: int = 3
    not_exhaustive_prob: float = 0.05
    # fraction of validation images stored under train2017/ (as in LVIS v1)
    val_in_train_dir_fraction: float = 0.2
    rare_fraction: float = 0.01
    common_fraction: float = 0.08
    seed: int = 0
    # 'v1' or 'v0.5': file names and image records of that LVIS version
    lvis_version: str = 'v1'


def class_appearance(label: int, num_classes: int) -> Tuple[str, Tuple]:
    """Shape name and BGR colour identifying a class."""
    shape = SHAPES[label % len(SHAPES)]
    num_colors = int(math.ceil(num_classes / len(SHAPES)))
    hue = (label // len(SHAPES)) * 180.0 / num_colors  # OpenCV hue: 0..180
    import cv2
    hsv = np.uint8([[[int(hue) % 180, 220, 230]]])
    bgr = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return shape, tuple(int(v) for v in bgr)


def shape_polygon(shape: str, cx: float, cy: float, size: float,
                  angle: float) -> np.ndarray:
    """Vertices (K, 2) of a shape of diameter ``size`` centred at (cx, cy)."""
    r = size / 2.0
    if shape == 'square':
        pts = [(-r, -r), (r, -r), (r, r), (-r, r)]
    elif shape == 'circle':
        t = np.linspace(0, 2 * np.pi, 20, endpoint=False)
        pts = list(zip(r * np.cos(t), r * np.sin(t)))
    elif shape == 'triangle':
        t = np.array([-90, 30, 150]) * np.pi / 180
        pts = list(zip(r * np.cos(t), r * np.sin(t)))
    elif shape == 'diamond':
        pts = [(0, -r), (0.6 * r, 0), (0, r), (-0.6 * r, 0)]
    elif shape == 'cross':
        a = r / 3.0
        pts = [(-a, -r), (a, -r), (a, -a), (r, -a), (r, a), (a, a), (a, r),
               (-a, r), (-a, a), (-r, a), (-r, -a), (-a, -a)]
    elif shape == 'hexagon':
        t = np.arange(6) * np.pi / 3
        pts = list(zip(r * np.cos(t), r * np.sin(t)))
    elif shape == 'star':
        t = np.arange(10) * np.pi / 5 - np.pi / 2
        radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        pts = list(zip(radii * np.cos(t), radii * np.sin(t)))
    else:
        raise ValueError(f'unknown shape {shape!r}')
    pts = np.asarray(pts, dtype=np.float64)
    c, s = np.cos(angle), np.sin(angle)
    rot = pts @ np.array([[c, s], [-s, c]])
    return rot + np.array([cx, cy])


def polygon_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) -
                           np.dot(y, np.roll(x, 1))))


def zipf_image_counts(opts: SyntheticLVISOptions) -> np.ndarray:
    """Target train image count per class (Zipf-Mandelbrot).

    count(c) = max * ((c + 1 + q) / (1 + q)) ** -s, with s chosen so that the
    last class gets ``min_class_images``.
    """
    n = opts.num_classes
    if n == 1:
        return np.array([opts.max_class_images])
    q = opts.zipf_offset
    s = math.log(opts.max_class_images / opts.min_class_images) / math.log(
        (n + q) / (1 + q))
    counts = opts.max_class_images * (
        (np.arange(1, n + 1) + q) / (1 + q))**-s
    counts = np.maximum(np.round(counts).astype(np.int64),
                        opts.min_class_images)
    return np.minimum(counts, opts.num_train_images)


# gap kept between object boxes (strictly more than this many pixels)
BOX_MARGIN = 2


def grid_pitch(opts: SyntheticLVISOptions) -> int:
    """Cell size of the fallback grid: one object of ``min_object_size``
    (unrotated, so its box is at most that size) plus the box margin."""
    return opts.min_object_size + BOX_MARGIN + 1


def objects_per_image(opts: SyntheticLVISOptions) -> int:
    """How many objects an image is guaranteed to hold (fallback grid)."""
    return max(0, (opts.image_size - 2) // grid_pitch(opts))**2


def _class_name(label: int) -> str:
    return f'{SHAPES[label % len(SHAPES)]}_{label // len(SHAPES)}'


def _assign_train_classes(opts: SyntheticLVISOptions,
                          rng: np.random.Generator) -> List[List[int]]:
    """Classes present in each train image, meeting the Zipf image counts.

    Images with fewer objects are preferred, which spreads the load. No image
    gets more classes than :func:`objects_per_image`, so every assigned class
    can be drawn; when the images cannot hold a class's count, this raises
    instead of writing fewer images of it.
    """
    capacity = objects_per_image(opts)
    load = np.zeros(opts.num_train_images)
    image_classes: List[List[int]] = [[] for _ in range(opts.num_train_images)]
    for label, count in enumerate(zipf_image_counts(opts)):
        free = load < capacity
        if count > free.sum():
            raise ValueError(
                f'synthetic LVIS: class {label} ({_class_name(label)}) needs '
                f'{int(count)} train images (min_class_images='
                f'{opts.min_class_images}, max_class_images='
                f'{opts.max_class_images}) but only {int(free.sum())} of the '
                f'{opts.num_train_images} train images have room left: a '
                f'{opts.image_size} px image holds at most {capacity} '
                f'objects of min_object_size={opts.min_object_size} px. '
                'Raise image_size or num_train_images, or lower '
                'min_object_size, max_class_images, min_class_images or '
                'num_classes.')
        weights = np.where(free, 1.0 / (1.0 + load)**3, 0.0)
        chosen = rng.choice(
            opts.num_train_images,
            size=int(count),
            replace=False,
            p=weights / weights.sum())
        for img in chosen:
            image_classes[img].append(label)
            load[img] += 1
    return image_classes


def _fits(box: np.ndarray, boxes: List[np.ndarray]) -> bool:
    m = BOX_MARGIN
    return all(box[0] > b[2] + m or box[2] < b[0] - m or box[1] > b[3] + m
               or box[3] < b[1] - m for b in boxes)


def _box(poly: np.ndarray) -> np.ndarray:
    return np.array([*poly.min(0), *poly.max(0)])


def _place_randomly(labels: List[int], opts: SyntheticLVISOptions,
                    rng: np.random.Generator
                    ) -> List[Tuple[int, np.ndarray]]:
    """Non-overlapping polygons of random size and position (objects that
    find no room in 50 tries are dropped)."""
    placed: List[Tuple[int, np.ndarray]] = []
    boxes: List[np.ndarray] = []
    size = opts.image_size
    for label in labels:
        shape, _ = class_appearance(label, opts.num_classes)
        for _ in range(50):
            obj = rng.uniform(opts.min_object_size, opts.max_object_size)
            cx, cy = rng.uniform(obj / 2 + 1, size - obj / 2 - 1, size=2)
            angle = rng.uniform(-0.3, 0.3)
            poly = shape_polygon(shape, cx, cy, obj, angle)
            poly = np.clip(poly, 0, size - 1)
            box = _box(poly)
            if _fits(box, boxes):
                placed.append((label, poly))
                boxes.append(box)
                break
    return placed


def _place_on_grid(labels: List[int],
                   placed: List[Tuple[int, np.ndarray]],
                   opts: SyntheticLVISOptions,
                   rng: np.random.Generator
                   ) -> Optional[List[Tuple[int, np.ndarray]]]:
    """Add ``labels`` to ``placed`` as unrotated ``min_object_size`` objects
    on free cells of the fallback grid; None when the cells run out."""
    pitch = grid_pitch(opts)
    n = (opts.image_size - 2) // pitch
    boxes = [_box(poly) for _, poly in placed]
    result = list(placed)
    cells = rng.permutation(n * n)
    k = 0
    for label in labels:
        shape, _ = class_appearance(label, opts.num_classes)
        while True:
            if k == len(cells):
                return None
            row, col = divmod(int(cells[k]), n)
            k += 1
            half = opts.min_object_size / 2
            cx = 2 + col * pitch + half
            cy = 2 + row * pitch + half
            poly = shape_polygon(shape, cx, cy, opts.min_object_size, 0.0)
            box = _box(poly)
            if _fits(box, boxes):
                result.append((label, poly))
                boxes.append(box)
                break
    return result


def _place_objects(labels: List[int], opts: SyntheticLVISOptions,
                   rng: np.random.Generator) -> List[Tuple[int, np.ndarray]]:
    """Non-overlapping polygons for ``labels``: every distinct label is
    drawn at least once; repeated labels may be dropped when the image is
    crowded.

    Objects get a random size and position; a label that finds no room goes
    to a free cell of a grid of ``min_object_size`` cells, and if none is
    free the image is laid out on that grid (which holds
    :func:`objects_per_image` objects).
    """
    distinct = list(dict.fromkeys(labels))
    if len(distinct) > objects_per_image(opts):
        raise ValueError(
            f'synthetic LVIS: {len(distinct)} classes in one image, but a '
            f'{opts.image_size} px image holds at most '
            f'{objects_per_image(opts)} objects of min_object_size='
            f'{opts.min_object_size} px')
    placed = _place_randomly(labels, opts, rng)
    present = {label for label, _ in placed}
    missing = [label for label in distinct if label not in present]
    if not missing:
        return placed
    result = _place_on_grid(missing, placed, opts, rng)
    if result is None:
        result = _place_on_grid(distinct, [], opts, rng)
    assert result is not None  # the grid holds every distinct label
    return result


def _render(objects: List[Tuple[int, np.ndarray]], opts: SyntheticLVISOptions,
            rng: np.random.Generator) -> np.ndarray:
    import cv2
    size = opts.image_size
    base = rng.uniform(70, 170)
    # low-frequency clutter so the background is not a flat colour
    noise = rng.normal(0, 18, size=(size // 8, size // 8, 3))
    noise = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    img = np.clip(base + noise + rng.normal(0, 6, size=(size, size, 3)), 0,
                  255)
    img = img.astype(np.uint8)
    for label, poly in objects:
        _, color = class_appearance(label, opts.num_classes)
        jitter = rng.integers(-20, 21, size=3)
        color = tuple(
            int(np.clip(c + j, 0, 255)) for c, j in zip(color, jitter))
        cv2.fillPoly(img, [np.round(poly).astype(np.int32)], color)
    return img


def _image_record(img_id: int, split_dir: str, opts: SyntheticLVISOptions,
                  present: List[int], rng: np.random.Generator,
                  cat_ids: List[int]) -> dict:
    absent = [c for c in cat_ids if c not in present]
    k = min(opts.neg_categories_per_image, len(absent))
    neg = sorted(int(c) for c in rng.choice(absent, size=k, replace=False))
    not_exhaustive = sorted(
        int(c) for c in present if rng.random() < opts.not_exhaustive_prob)
    file_name = f'{img_id:012d}.jpg'
    extra = {}
    if opts.lvis_version == 'v0.5':
        # v0.5 records carry COCO 2014 names; loaders map them to 2017 ones
        split = 'train' if split_dir == 'train2017' else 'val'
        extra['file_name'] = f'COCO_{split}2014_{file_name}'
    return dict(
        id=img_id,
        width=opts.image_size,
        height=opts.image_size,
        coco_url=f'{COCO_URL_PREFIX}{split_dir}/{file_name}',
        flickr_url='',
        date_captured='2026-01-01 00:00:00',
        license=1,
        neg_category_ids=neg,
        not_exhaustive_category_ids=not_exhaustive,
        **extra)


def _write_split(out_dir: str, split: str, image_classes: List[List[int]],
                 first_img_id: int, opts: SyntheticLVISOptions,
                 rng: np.random.Generator, split_dirs: List[str],
                 first_ann_id: int,
                 progress: bool = False) -> Tuple[List[dict], List[dict]]:
    import cv2
    from tqdm import tqdm
    images, annotations = [], []
    cat_ids = list(range(1, opts.num_classes + 1))
    for i, labels in enumerate(
            tqdm(image_classes, desc=f'data ({split})', unit='img',
                 disable=not progress)):
        img_id = first_img_id + i
        objects = []
        for label in labels:
            # a few classes appear twice in an image: instance > image count
            repeats = 2 if rng.random() < 0.15 else 1
            objects.extend([label] * repeats)
        placed = _place_objects(objects, opts, rng)
        present = sorted({label + 1 for label, _ in placed})
        record = _image_record(img_id, split_dirs[i], opts, present, rng,
                               cat_ids)
        images.append(record)
        img = _render(placed, opts, rng)
        path = osp.join(out_dir, split_dirs[i], f'{img_id:012d}.jpg')
        cv2.imwrite(path, img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        for label, poly in placed:
            # round once, then derive bbox and area from the rounded polygon
            poly = np.round(poly, 2)
            x0, y0 = poly.min(0)
            x1, y1 = poly.max(0)
            annotations.append(
                dict(
                    id=first_ann_id + len(annotations),
                    image_id=img_id,
                    category_id=label + 1,
                    bbox=[
                        float(x0),
                        float(y0),
                        round(float(x1 - x0), 2),
                        round(float(y1 - y0), 2)
                    ],
                    area=round(polygon_area(poly), 2),
                    segmentation=[[float(v) for v in poly.reshape(-1)]]))
    return images, annotations


def _categories(opts: SyntheticLVISOptions, train_images: List[dict],
                train_anns: List[dict]) -> Tuple[List[dict], Dict[str, int]]:
    n = opts.num_classes
    image_count = np.zeros(n, dtype=np.int64)
    instance_count = np.zeros(n, dtype=np.int64)
    seen = set()
    for ann in train_anns:
        label = ann['category_id'] - 1
        instance_count[label] += 1
        if (ann['image_id'], label) not in seen:
            seen.add((ann['image_id'], label))
            image_count[label] += 1
    thresholds = dict(
        rare_max_images=max(1, int(round(opts.rare_fraction *
                                         opts.num_train_images))),
        common_max_images=max(2, int(round(opts.common_fraction *
                                           opts.num_train_images))))
    letters = frequency_letters(image_count, thresholds['rare_max_images'],
                                thresholds['common_max_images'])
    categories = []
    for label in range(n):
        shape, color = class_appearance(label, n)
        name = _class_name(label)
        categories.append({
            'id': label + 1,
            'name': name,
            'synset': f'{name}.n.01',
            'synonyms': [name],
            'def': f'a {shape} of colour {color} (BGR)',
            'frequency': letters[label],
            'image_count': int(image_count[label]),
            'instance_count': int(instance_count[label]),
        })
    return categories, thresholds


def _check_room(opts: SyntheticLVISOptions) -> None:
    """Refuse options whose per-class minimum cannot be met."""
    if opts.min_class_images > opts.num_train_images:
        raise ValueError(
            f'synthetic LVIS: min_class_images={opts.min_class_images} is '
            f'more than num_train_images={opts.num_train_images}: raise '
            'num_train_images or lower min_class_images')
    if objects_per_image(opts) == 0:
        raise ValueError(
            f'synthetic LVIS: image_size={opts.image_size} px cannot hold an '
            f'object of min_object_size={opts.min_object_size} px: raise '
            f'image_size to at least {grid_pitch(opts) + 2} or lower '
            'min_object_size')
    if opts.min_object_size > opts.max_object_size:
        raise ValueError(
            f'synthetic LVIS: min_object_size={opts.min_object_size} > '
            f'max_object_size={opts.max_object_size}')


def _check_class_minimum(opts: SyntheticLVISOptions,
                         categories: List[dict]) -> None:
    """The written train split keeps the per-class minimum (by construction;
    checked so that a regression cannot go unnoticed)."""
    for cat in categories:
        if cat['image_count'] < opts.min_class_images:
            raise RuntimeError(
                f'synthetic LVIS: class {cat["id"] - 1} ({cat["name"]}) has '
                f'{cat["image_count"]} train images, fewer than '
                f'min_class_images={opts.min_class_images}')


def make_synthetic_lvis(out_dir: str,
                        options: Optional[SyntheticLVISOptions] = None,
                        progress: bool = False,
                        **kwargs) -> Dict[str, str]:
    """Write a synthetic long-tailed LVIS v1 (or v0.5) dataset to ``out_dir``.

    Every class gets at least ``min_class_images`` train images, at any image
    size; options that cannot keep that promise raise a ``ValueError`` that
    names the class and what to change.

    Args:
        out_dir: data root; receives ``annotations/``, ``train2017/`` and
            ``val2017/``.
        options: generator options; keyword arguments override fields.
        progress: show a progress bar per split (stderr).

    Returns:
        dict with the paths of the ``train`` and ``val`` annotation files.
    """
    opts = options or SyntheticLVISOptions()
    for key, value in kwargs.items():
        if not hasattr(opts, key):
            raise TypeError(f'unknown synthetic LVIS option {key!r}')
        setattr(opts, key, value)
    if opts.lvis_version not in LVIS_VERSIONS:
        raise ValueError(f'synthetic LVIS: lvis_version must be one of '
                         f'{LVIS_VERSIONS}, not {opts.lvis_version!r}')
    if opts.num_classes < 1 or opts.num_train_images < 1:
        raise ValueError('num_classes and num_train_images must be >= 1')
    if opts.max_class_images > opts.num_train_images:
        opts.max_class_images = opts.num_train_images
    _check_room(opts)
    rng = np.random.default_rng(opts.seed)

    train_classes = _assign_train_classes(opts, rng)  # may refuse: first
    for sub in ('annotations', 'train2017', 'val2017'):
        os.makedirs(osp.join(out_dir, sub), exist_ok=True)

    train_images, train_anns = _write_split(
        out_dir, 'train', train_classes, 1, opts, rng,
        ['train2017'] * opts.num_train_images, first_ann_id=1,
        progress=progress)

    lo, hi = opts.val_objects_per_image
    val_classes = [
        sorted(
            rng.choice(
                opts.num_classes,
                size=min(
                    int(rng.integers(lo, hi + 1)), opts.num_classes,
                    objects_per_image(opts)),
                replace=False).tolist()) for _ in range(opts.num_val_images)
    ]
    val_dirs = [
        'train2017' if rng.random() < opts.val_in_train_dir_fraction else
        'val2017' for _ in range(opts.num_val_images)
    ]
    if opts.lvis_version == 'v0.5':  # v0.5 val is COCO val2017 only
        val_dirs = ['val2017'] * opts.num_val_images
    # val ids continue after train ids: images under train2017/ never clash
    val_images, val_anns = _write_split(out_dir, 'val', val_classes,
                                        opts.num_train_images + 1, opts, rng,
                                        val_dirs, first_ann_id=10_000_001,
                                        progress=progress)

    categories, thresholds = _categories(opts, train_images, train_anns)
    _check_class_minimum(opts, categories)
    options_record = asdict(opts)
    options_record['val_objects_per_image'] = list(opts.val_objects_per_image)
    info = dict(
        description='mmdet_longtail synthetic long-tailed LVIS '
        f'{opts.lvis_version}',
        version='1.0' if opts.lvis_version == 'v1' else '0.5',
        year=2026,
        frequency_thresholds=thresholds,
        generator_options=options_record)
    licenses = [dict(id=1, name='CC0', url='')]
    paths = {}
    for split, images, anns in (('train', train_images, train_anns),
                                ('val', val_images, val_anns)):
        path = annotation_path(out_dir, split, opts.lvis_version)
        with open(path, 'w') as f:
            json.dump(
                dict(
                    info=info,
                    licenses=licenses,
                    images=images,
                    annotations=anns,
                    categories=categories), f)
        paths[split] = path
    return paths


def annotation_path(out_dir: str, split: str, lvis_version: str = 'v1') -> str:
    """``<out_dir>/annotations/lvis_<version>_<split>.json``."""
    return osp.join(out_dir, 'annotations',
                    f'lvis_{lvis_version}_{split}.json')


def synthetic_lvis_exists(out_dir: str, lvis_version: str = 'v1') -> bool:
    return all(
        osp.isfile(annotation_path(out_dir, s, lvis_version))
        for s in ('train', 'val'))
