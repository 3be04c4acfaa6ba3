"""A tiny LVIS ground truth + detections whose numbers are computed by hand.

Two 100 x 100 images, four categories (1: rare, 2: common, 3 and 4:
frequent). Boxes are [x, y, w, h].

Ground truth::

    a1  img 1  cat 1  [10, 10, 20, 20]  area  400 (small)
    a2  img 2  cat 2  [ 0,  0, 30, 30]  area  900 (small)
    a3  img 1  cat 3  [50, 50, 40, 40]  area 1600 (medium)
    a4  img 1  cat 3  [10, 60, 30, 30]  area  900 (small)
    a5  img 2  cat 3  [40, 40, 20, 20]  area  400 (small)

    img 1: neg_category_ids [4], not_exhaustive_category_ids []
    img 2: neg_category_ids [1], not_exhaustive_category_ids [3]

Detections (score)::

    d1  img 2  cat 1  [60, 60, 10, 10]    0.95  cat 1 is negative in img 2: FP
    d2  img 1  cat 1  [10, 10, 20, 20]    0.90  = a1: TP at every IoU
    d3  img 1  cat 2  [ 0,  0, 30, 30]    0.99  cat 2 neither pos. nor neg.
                                                in img 1: dropped (federated)
    d4  img 2  cat 2  [ 0,  0, 30, 19]    0.50  IoU(a2) = 19/30 = 0.633
    d5  img 2  cat 3  [ 0, 80, 10, 10]    0.80  no match, but img 2 is not
                                                exhaustive for cat 3: ignored
    d6  img 1  cat 3  [50, 50, 40, 40]    0.70  = a3
    d7  img 1  cat 3  [10, 60, 30, 30]    0.65  = a4
    d8  img 2  cat 3  [40, 40, 20, 14.4]  0.60  IoU(a5) = 288/400 = 0.72
    d9  img 1  cat 4  [70, 10, 20, 20]    0.90  cat 4 has no ground truth

LVIS AP of a category (lvis-api ``accumulate``), for each IoU threshold
t in {0.50, 0.55, ..., 0.95}: sort the kept detections by score, drop the
ignored ones, precision p_i = TP_i / (TP_i + FP_i + eps) with cumulative
counts (eps = np.spacing(1)), make it non-increasing from the right
(p_i <- max_{j >= i} p_j), then read it at the 101 recall thresholds
r = 0, 0.01, ..., 1 (first detection reaching recall r; 0 if none):

    AP = mean over t and r of p(r).

cat 1 (rare), every t: d1 FP, d2 TP -> recall (0, 1), precision (0, 1/2)
    -> interpolated (1/2, 1/2) -> p(r) = 1/2 for all 101 r      AP = 1/2
cat 2 (common): d4 matches a2 for t <= 0.633, i.e. t in {.50, .55, .60}:
    p(r) = 1 for all r; the other 7 thresholds: p(r) = 0        AP = 3/10
cat 3 (frequent): 3 ground truths; d5 is ignored.
    t <= 0.72 (.50 .55 .60 .65 .70): d6 d7 d8 all TP -> p(r) = 1
    t >= 0.75: d8 misses and, img 2 being not exhaustive for cat 3, is
    ignored: recall reaches 2/3 with precision 1 -> p(r) = 1 for the 67
    thresholds r <= 0.66, 0 for the 34 others
    AP = (5 * 1 + 5 * 67/101) / 10 = 84/101
cat 4: no ground truth -> undefined (excluded from every mean)

    AP  = (1/2 + 3/10 + 84/101) / 3
    APr = 1/2,  APc = 3/10,  APf = 84/101 (cat 4 is excluded)
    AP50 = (1/2 + 1 + 1) / 3        (t = 0.5 only)
    AP75 = (1/2 + 0 + 67/101) / 3   (t = 0.75 only)

Area ranges (ground truth outside the range and unmatched detections
outside it are ignored): small [0, 32^2], medium [32^2, 96^2], large
[96^2, 1e10].

    APs: cat 1 and cat 2 unchanged (1/2, 3/10). cat 3: a3 (1600) ignored;
         d6 matches a3 -> ignored. t <= 0.72: d7, d8 TP -> 1.
         t >= 0.75: d8 ignored, recall 1/2 with precision 1 -> the 51
         thresholds r <= 0.50 -> 51/101. AP = (1 + 51/101) / 2 = 76/101
         APs = (1/2 + 3/10 + 76/101) / 3
    APm: only a3 is medium: cat 1 and 2 have no ground truth (excluded);
         cat 3: d6 TP, d5 d7 d8 ignored (small or matched to an ignored
         ground truth) -> APm = 1
    APl: no large ground truth -> -1 (lvis-api's "undefined")

Every precision carries the eps: 1 / (1 + eps) = 1 - 2.2e-16, hence the
1e-12 tolerance of the tests.

Evaluating only image 1 (``img_ids=[1]``): cat 1 d2 TP -> 1; cat 2 has no
ground truth in image 1 (d3 dropped) -> excluded; cat 3 d6, d7 TP -> 1.
AP = 1, APr = 1, APc = -1, APf = 1.
"""
from fractions import Fraction as F

GT_BOXES = {
    # ann id: (image id, category id, box)
    1: (1, 1, [10, 10, 20, 20]),
    2: (2, 2, [0, 0, 30, 30]),
    3: (1, 3, [50, 50, 40, 40]),
    4: (1, 3, [10, 60, 30, 30]),
    5: (2, 3, [40, 40, 20, 20]),
}
DETECTIONS = [
    # (image id, category id, box, score)
    (2, 1, [60, 60, 10, 10], 0.95),
    (1, 1, [10, 10, 20, 20], 0.90),
    (1, 2, [0, 0, 30, 30], 0.99),
    (2, 2, [0, 0, 30, 19], 0.50),
    (2, 3, [0, 80, 10, 10], 0.80),
    (1, 3, [50, 50, 40, 40], 0.70),
    (1, 3, [10, 60, 30, 30], 0.65),
    (2, 3, [40, 40, 20, 14.4], 0.60),
    (1, 4, [70, 10, 20, 20], 0.90),
]

AP_CAT = {1: F(1, 2), 2: F(3, 10), 3: F(84, 101)}
EXPECTED = {
    'AP': (AP_CAT[1] + AP_CAT[2] + AP_CAT[3]) / 3,
    'APr': AP_CAT[1],
    'APc': AP_CAT[2],
    'APf': AP_CAT[3],
    'AP50': (F(1, 2) + 1 + 1) / 3,
    'AP75': (F(1, 2) + 0 + F(67, 101)) / 3,
    'APs': (F(1, 2) + F(3, 10) + F(76, 101)) / 3,
    'APm': F(1),
    'APl': F(-1),
}
EXPECTED_PER_CLASS = [AP_CAT[1], AP_CAT[2], AP_CAT[3], None]
EXPECTED_IMAGE_1 = {'AP': F(1), 'APr': F(1), 'APc': F(-1), 'APf': F(1)}


def box_polygon(box):
    x, y, w, h = box
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def hand_gt() -> dict:
    """The ground truth above as an LVIS v1 annotation dict."""
    images = [
        dict(
            id=1,
            width=100,
            height=100,
            neg_category_ids=[4],
            not_exhaustive_category_ids=[]),
        dict(
            id=2,
            width=100,
            height=100,
            neg_category_ids=[1],
            not_exhaustive_category_ids=[3]),
    ]
    categories = [
        dict(id=i, name=f'cat{i}', frequency=f, image_count=0,
             instance_count=0)
        for i, f in ((1, 'r'), (2, 'c'), (3, 'f'), (4, 'f'))
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


def hand_results() -> list:
    return [
        dict(image_id=img, category_id=cat, bbox=list(map(float, box)),
             score=score) for img, cat, box, score in DETECTIONS
    ]
