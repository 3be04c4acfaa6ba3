"""A tiny LVIS case where the per-image cap and fixed AP disagree, with
AP, AP-fixed and AP-pool computed by hand (Dave et al., "Evaluating
Large-Vocabulary Object Detectors: The Devil is in the Details", 2021).

Three 100 x 100 images, four categories (1: rare, 2: frequent, 3: common,
4: frequent without ground truth). Boxes are [x, y, w, h]; every detection
that matches a ground truth has the same box (IoU 1), so every IoU
threshold gives the same numbers.

Ground truth::

    A  img 1  cat 1  [10, 10, 20, 20]
    B  img 1  cat 2  [50, 50, 20, 20]
    C  img 1  cat 2  [10, 60, 20, 20]
    D  img 2  cat 2  [ 0,  0, 30, 30]
    E  img 3  cat 3  [40, 40, 20, 20]
    F  img 3  cat 3  [ 0, 60, 20, 20]   never detected

    img 1: neg_category_ids []   img 2: [1]   img 3: [2]
    (no not-exhaustive category)

Detections (score)::

    d1  img 1  cat 2  = B               0.9   TP
    d2  img 1  cat 2  = C               0.8   TP
    d3  img 1  cat 1  = A               0.3   TP
    d4  img 2  cat 2  = D               0.7   TP
    d5  img 2  cat 1  [60, 60, 10, 10]  0.6   FP (cat 1 negative in img 2)
    d6  img 3  cat 3  = E               0.5   TP
    d7  img 3  cat 2  [ 0,  0, 10, 10]  0.4   FP (cat 2 negative in img 3)

AP of a category as lvis-api computes it (see ``lvis_hand_case.py``):
precision made non-increasing from the right, read at the 101 recall
thresholds r = 0, 0.01, ..., 1 (0 beyond the last recall), averaged.

Case 1, small caps: per-image cap 2 (``max_dets=2``) against fixed AP with
2 detections per category (``dets_per_cat=2``).

    Per-image cap 2: img 1 keeps d1 d2 and drops d3 (the rare class is
    hidden behind the frequent one); imgs 2 and 3 have 2 detections.
      cat 1: d5 FP only, recall 0                               AP = 0
      cat 2: d1 d2 d4 TP, then d7 FP; recall 1 at precision 1    AP = 1
      cat 3: d6 TP, 2 ground truths: recall 1/2 at precision 1,
             the 51 thresholds r <= 0.50                  AP = 51/101
      AP = (0 + 1 + 51/101) / 3, APr = 0, APc = 51/101, APf = 1
    Fixed AP, 2 per category: cat 2 keeps d1 d2 (drops d4 and d7); all
    of cat 1 and cat 3 are kept.
      cat 1: d5 FP, d3 TP: precision 1/2 at recall 1            AP = 1/2
      cat 2: d1 d2 TP, 3 ground truths: recall 2/3 at precision 1,
             the 67 thresholds r <= 0.66                  AP = 67/101
      cat 3: as above                                      AP = 51/101
      AP = (1/2 + 67/101 + 51/101) / 3, APr = 1/2, APc = 51/101,
      APf = 67/101
    Pooled AP on the fixed-AP detections: d1 TP, d2 TP, d5 FP, d6 TP,
    d3 TP against the 6 ground truths:
      precision 1, 1, 2/3, 3/4, 4/5 -> interpolated 1, 1, 4/5, 4/5, 4/5
      recall    1/6, 2/6, 2/6, 3/6, 4/6
      r <= 1/6 (17 thresholds) and r <= 2/6 (17 more): 1
      r in (2/6, 4/6]: 0.34 .. 0.66 (33 thresholds): 4/5; 34 others: 0
      AP-pool = (34 + 33 * 4/5) / 101 = 302/505

Case 2, LVIS's defaults (``max_dets=300``, 10,000 per category): 300 more
detections of cat 4 in img 1 with score 0.99 ([0, 0, 1, 1]; cat 4 is
neither positive nor negative there, so lvis-api drops them, but only after
the per-image cap has counted them).

    Per-image cap 300: img 1 keeps the 300 cat-4 detections, d1 d2 d3 are
    cut.
      cat 1: d5 FP only                                         AP = 0
      cat 2: d4 TP, d7 FP, 3 ground truths: recall 1/3 at precision 1,
             the 34 thresholds r <= 0.33                  AP = 34/101
      cat 3: 51/101
      AP = (0 + 34/101 + 51/101) / 3 = 85/303, APr = 0
    Fixed AP: nothing is cut.
      cat 1: 1/2; cat 2: d1 d2 d4 TP before d7 FP                AP = 1
      cat 3: 51/101
      AP = (1/2 + 1 + 51/101) / 3, APr = 1/2, APc = 51/101, APf = 1
    Pooled AP: d1 TP, d2 TP, d4 TP, d5 FP, d6 TP, d7 FP, d3 TP
      precision 1, 1, 1, 3/4, 4/5, 4/6, 5/7
        -> interpolated 1, 1, 1, 4/5, 4/5, 5/7, 5/7
      recall    1/6, 2/6, 3/6, 3/6, 4/6, 4/6, 5/6
      r <= 0.50: 51 thresholds at 1; 0.51 .. 0.66: 16 at 4/5;
      0.67 .. 0.83: 17 at 5/7; 0.84 .. 1: 17 at 0
      AP-pool = (51 + 16 * 4/5 + 17 * 5/7) / 101 = 2658/3535

Every precision carries lvis-api's eps (1 / (1 + eps)), hence the 1e-12
tolerance of the tests.
"""
from fractions import Fraction as F

GT_BOXES = {
    # ann id: (image id, category id, box)
    1: (1, 1, [10, 10, 20, 20]),
    2: (1, 2, [50, 50, 20, 20]),
    3: (1, 2, [10, 60, 20, 20]),
    4: (2, 2, [0, 0, 30, 30]),
    5: (3, 3, [40, 40, 20, 20]),
    6: (3, 3, [0, 60, 20, 20]),
}
NEGATIVE = {1: [], 2: [1], 3: [2]}
DETECTIONS = [
    # (image id, category id, box, score)
    (1, 2, [50, 50, 20, 20], 0.9),
    (1, 2, [10, 60, 20, 20], 0.8),
    (1, 1, [10, 10, 20, 20], 0.3),
    (2, 2, [0, 0, 30, 30], 0.7),
    (2, 1, [60, 60, 10, 10], 0.6),
    (3, 3, [40, 40, 20, 20], 0.5),
    (3, 2, [0, 0, 10, 10], 0.4),
]
FILLERS = 300  # case 2: cat-4 detections in img 1

# case 1: per-image cap 2, fixed AP with 2 per category
SMALL_MAX_DETS = 2
SMALL_DETS_PER_CAT = 2
CAPPED_SMALL = {
    'AP': (0 + 1 + F(51, 101)) / 3,
    'APr': F(0),
    'APc': F(51, 101),
    'APf': F(1),
}
FIXED_SMALL = {
    'AP': (F(1, 2) + F(67, 101) + F(51, 101)) / 3,
    'APr': F(1, 2),
    'APc': F(51, 101),
    'APf': F(67, 101),
}
POOL_SMALL = F(302, 505)

# case 2: LVIS's defaults with 300 fillers
CAPPED_DEFAULT = {
    'AP': F(85, 303),
    'APr': F(0),
    'APc': F(51, 101),
    'APf': F(34, 101),
}
FIXED_DEFAULT = {
    'AP': (F(1, 2) + 1 + F(51, 101)) / 3,
    'APr': F(1, 2),
    'APc': F(51, 101),
    'APf': F(1),
}
POOL_DEFAULT = F(2658, 3535)


def box_polygon(box):
    x, y, w, h = box
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def fixed_gt() -> dict:
    """The ground truth above as an LVIS v1 annotation dict."""
    images = [
        dict(
            id=i,
            width=100,
            height=100,
            neg_category_ids=NEGATIVE[i],
            not_exhaustive_category_ids=[]) for i in (1, 2, 3)
    ]
    categories = [
        dict(id=i, name=f'cat{i}', frequency=f, image_count=0,
             instance_count=0)
        for i, f in ((1, 'r'), (2, 'f'), (3, 'c'), (4, 'f'))
    ]
    annotations = [
        dict(
            id=ann_id,
            image_id=img,
            category_id=cat,
            bbox=list(map(float, box)),
            area=float(box[2] * box[3]),
            segmentation=box_polygon(box)) for ann_id, (img, cat, box)
        in GT_BOXES.items()
    ]
    return dict(images=images, categories=categories, annotations=annotations)


def fixed_results(fillers: int = 0) -> list:
    """The detections (bbox); ``fillers`` cat-4 detections in img 1 first."""
    dets = [
        dict(image_id=1, category_id=4, bbox=[0.0, 0.0, 1.0, 1.0],
             score=0.99) for _ in range(fillers)
    ]
    dets += [
        dict(image_id=img, category_id=cat, bbox=list(map(float, box)),
             score=score) for img, cat, box, score in DETECTIONS
    ]
    return dets


def fixed_segm_results(fillers: int = 0) -> list:
    """The same detections as masks (RLE of the boxes), with their box."""
    from pycocotools import mask as mask_utils
    dets = []
    for det in fixed_results(fillers):
        x, y, w, h = det['bbox']
        rle = mask_utils.frPyObjects(box_polygon([x, y, w, h]), 100, 100)[0]
        rle['counts'] = rle['counts'].decode('ascii')
        dets.append(dict(det, segmentation=rle))
    return dets
