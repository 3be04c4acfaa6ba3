"""Box-counting (fractal) dimension of where each class appears in images.

FRACAL (Alexandridis et al., "Fractal Calibration for long-tailed object
detection", CVPR 2025; code: https://github.com/kostas1515/FRACAL) measures how
uniformly a class is spread over image space by the box-counting dimension of
the centres of its training boxes, each centre normalised by its image's
size to ``[0, 1]^2``.

Estimator (exactly what :func:`box_counting_slopes` computes). For a grid of
``g x g`` cells over the unit square (cell ``(floor(g x), floor(g y))``, a
centre on the right / bottom edge counted in the last cell), ``N(g)`` is the
number of cells holding at least one centre. The dimension is the
least-squares slope of ``log N(g)`` against ``log g``::

    D = sum_g (u_g - mean u) (v_g - mean v) / sum_g (u_g - mean u) ** 2,
    u_g = log g,  v_g = log N(g)

over the grid sizes ``g = 1 .. max_grid`` (64 in FRACAL) with, when
``saturation_cutoff`` is set (the authors' release), only the ``g`` with
``g * g <= n`` for a class with n centres: a finer grid has more cells than
points, so its count saturates at n and would bias the slope down. With
fewer than two grid sizes the slope is undefined and D = 0 (a single point
has dimension 0). Points on a line give D = 1, a filled square D = 2.

:func:`class_fractal_dimensions` adds the authors' conventions for the
calibration: a class with fewer than 4 boxes gets D = 1, and D is at least 1.
"""
from typing import Dict, Tuple

import numpy as np

from .class_stats import file_key, load_lvis_with_statistics

FRACAL_MAX_GRID = 64
FRACAL_MIN_INSTANCES = 4
FRACAL_MIN_DIMENSION = 1.0


def _check_centres(centres: np.ndarray, source: str) -> np.ndarray:
    centres = np.asarray(centres, dtype=np.float64)
    if centres.ndim != 2 or centres.shape[1] != 2:
        raise ValueError(f'{source}: box centres must be (n, 2), got shape '
                         f'{centres.shape}')
    if not np.isfinite(centres).all() or (centres < 0).any() or \
            (centres > 1).any():
        raise ValueError(f'{source}: box centres must be finite and lie in '
                         f'[0, 1] (normalised by the image size)')
    return centres


def class_box_counts(centres: np.ndarray,
                     labels: np.ndarray,
                     num_classes: int,
                     max_grid: int = FRACAL_MAX_GRID,
                     source: str = 'centres') -> np.ndarray:
    """``N_c(g)``: cells of a ``g x g`` grid holding a centre of class c.

    Args:
        centres (np.ndarray): (n, 2) box centres (x, y) in ``[0, 1]``.
        labels (np.ndarray): (n,) class of each centre in ``[0, C)``.
        num_classes (int): C.
        max_grid (int): largest grid side; grids 1..max_grid.
        source (str): where the centres come from, for error messages.

    Returns:
        np.ndarray: int64 (C, max_grid), column ``g - 1`` is grid ``g``.
    """
    if max_grid < 1:
        raise ValueError(f'{source}: max_grid must be >= 1, got {max_grid}')
    centres = _check_centres(centres, source)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(centres), ) or (labels < 0).any() or \
            (labels >= num_classes).any():
        raise ValueError(f'{source}: labels must be ({len(centres)},) in '
                         f'[0, {num_classes})')
    counts = np.zeros((num_classes, max_grid), dtype=np.int64)
    for g in range(1, max_grid + 1):
        cells = np.minimum((centres * g).astype(np.int64), g - 1)
        codes = np.unique((labels * g + cells[:, 1]) * g + cells[:, 0])
        counts[:, g - 1] = np.bincount(codes // (g * g), minlength=num_classes)
    return counts


def box_counting_slopes(counts: np.ndarray,
                        num_points: np.ndarray,
                        saturation_cutoff: bool = True) -> np.ndarray:
    """Least-squares slope of ``log N(g)`` on ``log g`` per row (float64).

    Args:
        counts (np.ndarray): (C, G) ``N_c(g)`` for ``g = 1..G``.
        num_points (np.ndarray): (C,) centres of each class.
        saturation_cutoff (bool): fit only the ``g`` with ``g * g <= n``.

    Returns:
        np.ndarray: (C,) slopes; 0 where fewer than two grids are fitted
        (no or one point, or fewer than 4 with the cut-off).
    """
    counts = np.asarray(counts, dtype=np.float64)
    grids = np.arange(1, counts.shape[1] + 1, dtype=np.float64)
    use = counts > 0
    if saturation_cutoff:
        use &= grids[None] ** 2 <= np.asarray(num_points)[:, None]
    u = np.where(use, np.log(grids)[None], 0.0)
    v = np.where(use, np.log(np.where(use, counts, 1.0)), 0.0)
    n = use.sum(1)
    safe_n = np.maximum(n, 1)
    du = np.where(use, u - (u.sum(1) / safe_n)[:, None], 0.0)
    dv = np.where(use, v - (v.sum(1) / safe_n)[:, None], 0.0)
    suu = (du * du).sum(1)
    fitted = n >= 2
    slopes = np.zeros(len(counts))
    slopes[fitted] = (du * dv).sum(1)[fitted] / suu[fitted]
    return slopes


def box_counting_dimension(centres: np.ndarray,
                           max_grid: int = FRACAL_MAX_GRID,
                           saturation_cutoff: bool = True) -> float:
    """Box-counting dimension of one set of centres in ``[0, 1]^2`` (see the
    module docstring for the estimator)."""
    centres = _check_centres(centres, 'box_counting_dimension')
    counts = class_box_counts(centres, np.zeros(len(centres), np.int64), 1,
                              max_grid, 'box_counting_dimension')
    return float(
        box_counting_slopes(counts, np.array([len(centres)]),
                            saturation_cutoff)[0])


def class_fractal_dimensions(centres: np.ndarray,
                             labels: np.ndarray,
                             num_classes: int,
                             max_grid: int = FRACAL_MAX_GRID,
                             min_instances: int = FRACAL_MIN_INSTANCES,
                             min_dimension: float = FRACAL_MIN_DIMENSION,
                             source: str = 'centres') -> np.ndarray:
    """FRACAL's D_c of every class (float64 (C,)): the box-counting slope
    with the saturation cut-off, ``1`` for a class with fewer than
    ``min_instances`` boxes, and at least ``min_dimension``."""
    counts = class_box_counts(centres, labels, num_classes, max_grid, source)
    num_points = np.bincount(
        np.asarray(labels, np.int64), minlength=num_classes)
    dims = np.maximum(box_counting_slopes(counts, num_points, True),
                      min_dimension)
    dims[num_points < min_instances] = 1.0
    return dims


def lvis_box_centres(ann: dict,
                     source: str) -> Tuple[np.ndarray, np.ndarray, int]:
    """Normalised centres ``((x + w / 2) / width, (y + h / 2) / height)``
    and labels (ascending category id order, as mmdet's LVIS datasets) of
    every box of an LVIS annotation dict checked by the one reader, and the
    number of classes."""
    cat_ids = np.array(sorted(c['id'] for c in ann['categories']), np.int64)
    images = ann['images']
    img_ids = np.array([im['id'] for im in images], dtype=np.int64)
    sizes = np.array([(im.get('width', 0), im.get('height', 0))
                      for im in images], dtype=np.float64).reshape(-1, 2)
    order = np.argsort(img_ids)
    annotations = ann['annotations']
    if not annotations:
        return np.zeros((0, 2)), np.zeros(0, np.int64), len(cat_ids)
    boxes = np.array([a['bbox'] for a in annotations], dtype=np.float64)
    ann_img = np.array([a['image_id'] for a in annotations], dtype=np.int64)
    ann_cat = np.array([a['category_id'] for a in annotations], np.int64)
    pos = order[np.searchsorted(img_ids[order], ann_img)]
    wh = sizes[pos]
    if (wh <= 0).any():
        bad = int(ann_img[np.flatnonzero((wh <= 0).any(1))[0]])
        raise ValueError(f'{source}: image {bad} has no positive width / '
                         f'height; FRACAL normalises box centres by them')
    centres = (boxes[:, :2] + boxes[:, 2:4] / 2) / wh
    return np.clip(centres, 0.0, 1.0), np.searchsorted(cat_ids,
                                                       ann_cat), len(cat_ids)


_CACHE: Dict[Tuple[str, int, int, int], np.ndarray] = {}


def get_fractal_dimensions(ann_file: str,
                           max_grid: int = FRACAL_MAX_GRID) -> np.ndarray:
    """FRACAL's D_c of every class of an LVIS annotation file (read-only
    float64 (C,), label order), cached per (path, size, mtime, max_grid)
    like :func:`~mmdet_longtail.datasets.get_class_statistics`."""
    key = file_key(ann_file) + (int(max_grid), )
    if key not in _CACHE:
        # the one reader: checks the file unless its statistics are cached
        ann, _ = load_lvis_with_statistics(ann_file)
        centres, labels, num_classes = lvis_box_centres(ann, ann_file)
        dims = class_fractal_dimensions(
            centres, labels, num_classes, max_grid, source=ann_file)
        dims.setflags(write=False)
        _CACHE[key] = dims
    return _CACHE[key]
