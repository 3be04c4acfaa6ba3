"""Test fixture (not part of the package): generated LVIS ground truth and
detections for the evaluation tests and benchmarks/bench_lvis_eval.py (no
images are rendered).

* :func:`make_lvis_eval_gt` writes an LVIS-val-shaped annotation dict: a
  few positive categories per image (Zipf-distributed, so some categories
  are frequent and many rare), 1-3 instances each with polygon masks over
  the small / medium / large area ranges, ``neg_category_ids`` and
  ``not_exhaustive_category_ids``, categories with ``frequency`` letters;
* :func:`make_detections` draws detections for any LVIS annotation dict
  (e.g. the synthetic set's val file) in the result format of mmdet's
  ``results2json``: jittered true positives, mislocalised boxes, detections
  of negative, not-exhaustive and unknown categories (which lvis-api drops),
  some images with more than ``max_dets`` detections and some whose
  detections are all dropped. With ``with_masks`` each detection also gets a
  compressed-RLE mask (a jittered polygon) as mmdet writes them.
"""
from typing import Dict, List, Optional, Tuple

import numpy as np


def _polygon(box: np.ndarray, rng: np.random.Generator) -> List[float]:
    """An octagon inscribed in ``box`` (x, y, w, h), corners cut randomly."""
    x, y, w, h = box
    cx, cy = rng.uniform(0.1, 0.3, size=2) * (w, h)
    pts = [(x + cx, y), (x + w - cx, y), (x + w, y + cy), (x + w, y + h - cy),
           (x + w - cx, y + h), (x + cx, y + h), (x, y + h - cy), (x, y + cy)]
    return [round(float(v), 2) for p in pts for v in p]


def _random_box(rng: np.random.Generator, width: int,
                height: int) -> np.ndarray:
    """A box whose area spans the small / medium / large ranges."""
    side = float(np.exp(rng.uniform(np.log(8), np.log(min(width, height)))))
    w = side * rng.uniform(0.6, 1.4)
    h = side * rng.uniform(0.6, 1.4)
    w, h = min(w, width - 1), min(h, height - 1)
    x = rng.uniform(0, width - w)
    y = rng.uniform(0, height - h)
    return np.round(np.array([x, y, w, h]), 2)


def make_lvis_eval_gt(num_images: int = 2000,
                      num_classes: int = 1203,
                      image_size: Tuple[int, int] = (640, 480),
                      pos_categories: Tuple[int, int] = (1, 6),
                      neg_categories: Tuple[int, int] = (4, 12),
                      not_exhaustive_prob: float = 0.1,
                      seed: int = 0) -> dict:
    """An LVIS-val-shaped annotation dict (LVIS v1 format).

    Args:
        num_images: images.
        num_classes: categories; frequency letters r / c / f in the LVIS v1
            proportions (337 / 461 / 405).
        image_size: (width, height) of every image.
        pos_categories: range of positive categories per image.
        neg_categories: range of ``neg_category_ids`` per image.
        not_exhaustive_prob: chance that a positive category is also listed
            in ``not_exhaustive_category_ids``.
        seed: random seed.
    """
    rng = np.random.default_rng(seed)
    width, height = image_size
    # Zipf-like popularity: frequent categories are positive more often
    popularity = 1.0 / (np.arange(num_classes) + 5.0)
    popularity /= popularity.sum()
    n_rare = round(num_classes * 337 / 1203)
    n_common = round(num_classes * 461 / 1203)
    # the most popular categories are frequent, the least popular rare
    letters = ['f'] * (num_classes - n_rare - n_common) + ['c'] * n_common + \
        ['r'] * n_rare
    categories = [
        dict(id=k + 1, name=f'category_{k + 1}', synset=f'c{k + 1}.n.01',
             frequency=letters[k], image_count=0, instance_count=0)
        for k in range(num_classes)
    ]
    images, annotations = [], []
    for img_id in range(1, num_images + 1):
        n_pos = int(rng.integers(pos_categories[0], pos_categories[1] + 1))
        pos = rng.choice(num_classes, size=n_pos, replace=False,
                         p=popularity) + 1
        for cat in pos:
            for _ in range(int(rng.integers(1, 4))):
                box = _random_box(rng, width, height)
                annotations.append(
                    dict(
                        id=len(annotations) + 1,
                        image_id=img_id,
                        category_id=int(cat),
                        bbox=box.tolist(),
                        area=round(float(box[2] * box[3]), 2),
                        segmentation=[_polygon(box, rng)]))
        others = np.setdiff1d(np.arange(1, num_classes + 1), pos)
        n_neg = int(rng.integers(neg_categories[0], neg_categories[1] + 1))
        neg = rng.choice(others, size=min(n_neg, others.size), replace=False)
        not_exhaustive = [
            int(c) for c in pos if rng.random() < not_exhaustive_prob
        ]
        images.append(
            dict(
                id=img_id,
                width=width,
                height=height,
                coco_url=f'http://images.cocodataset.org/val2017/'
                f'{img_id:012d}.jpg',
                neg_category_ids=sorted(int(c) for c in neg),
                not_exhaustive_category_ids=sorted(not_exhaustive)))
    return dict(
        info=dict(description='generated LVIS-val-shaped ground truth'),
        licenses=[],
        images=images,
        annotations=annotations,
        categories=categories)


def _jitter(box: np.ndarray, scale: float, rng: np.random.Generator,
            width: int, height: int) -> np.ndarray:
    x, y, w, h = box
    dx, dy, dw, dh = rng.normal(0, scale, size=4) * (w, h, w, h)
    x0 = float(np.clip(x + dx, 0, width - 2))
    y0 = float(np.clip(y + dy, 0, height - 2))
    w = float(np.clip(w + dw, 1, width - x0))
    h = float(np.clip(h + dh, 1, height - y0))
    return np.round(np.array([x0, y0, w, h]), 2)


def make_detections(gt: dict,
                    dets_per_image: int = 300,
                    max_dets: int = 300,
                    over_cap_fraction: float = 0.1,
                    all_dropped_fraction: float = 0.05,
                    with_masks: bool = False,
                    seed: int = 0) -> Dict[str, List[dict]]:
    """Detections for every image of ``gt`` (an LVIS annotation dict).

    Args:
        gt: LVIS annotation dict.
        dets_per_image: detections of an ordinary image.
        max_dets: the evaluation's per-image cap; ``over_cap_fraction`` of
            the images get ``max_dets + 50`` detections, so the cap matters.
        over_cap_fraction: share of images above the cap.
        all_dropped_fraction: share of images whose detections are all of
            categories that are neither positive nor negative there (lvis-api
            drops all of them).
        with_masks: also return segm results (compressed RLE).
        seed: random seed.

    Returns:
        ``{'bbox': [...]}`` and, with masks, ``'segm'``: the same detections
        with a ``segmentation`` (and the box, as mmdet writes them).
    """
    import pycocotools.mask as mask_utils
    rng = np.random.default_rng(seed)
    cat_ids = np.array(sorted(c['id'] for c in gt['categories']))
    anns_of: Dict[int, List[dict]] = {}
    for ann in gt['annotations']:
        anns_of.setdefault(ann['image_id'], []).append(ann)
    bbox_results: List[dict] = []
    segm_results: Optional[List[dict]] = [] if with_masks else None
    for img in gt['images']:
        img_id, width, height = img['id'], img['width'], img['height']
        anns = anns_of.get(img_id, [])
        pos = sorted({a['category_id'] for a in anns})
        neg = list(img.get('neg_category_ids', []))
        unknown = np.setdiff1d(cat_ids, pos + neg)
        n = dets_per_image
        if rng.random() < over_cap_fraction:
            n = max_dets + 50
        all_dropped = rng.random() < all_dropped_fraction and unknown.size
        boxes, cats = [], []
        for _ in range(n):
            kind = rng.random()
            if all_dropped:
                cats.append(int(rng.choice(unknown)))
                boxes.append(_random_box(rng, width, height))
            elif anns and kind < 0.3:
                # near a ground truth: true positive or mislocalised
                ann = anns[int(rng.integers(len(anns)))]
                scale = 0.05 if kind < 0.2 else 0.3
                cats.append(ann['category_id'])
                boxes.append(
                    _jitter(np.array(ann['bbox']), scale, rng, width, height))
            elif neg and kind < 0.5:
                cats.append(int(rng.choice(neg)))
                boxes.append(_random_box(rng, width, height))
            elif pos and kind < 0.6:
                cats.append(int(rng.choice(pos)))
                boxes.append(_random_box(rng, width, height))
            else:
                cats.append(int(rng.choice(cat_ids)))
                boxes.append(_random_box(rng, width, height))
        scores = rng.uniform(0.0001, 1.0, size=n)
        rles = None
        if with_masks:
            polygons = [[_polygon(b, rng)] for b in boxes]
            rles = [
                mask_utils.merge(mask_utils.frPyObjects(p, height, width))
                for p in polygons
            ]
        for i in range(n):
            det = dict(
                image_id=img_id,
                bbox=[float(v) for v in boxes[i]],
                score=float(scores[i]),
                category_id=cats[i])
            bbox_results.append(det)
            if rles is not None:
                rle = dict(rles[i])
                rle['counts'] = rle['counts'].decode()
                segm_results.append(dict(det, segmentation=rle))
    out = dict(bbox=bbox_results)
    if segm_results is not None:
        out['segm'] = segm_results
    return out
