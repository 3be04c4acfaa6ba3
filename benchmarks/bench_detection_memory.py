"""Memory of holding LVIS detections for fixed AP, measured per detection
and extrapolated to LVIS v1 val (19,809 images).

Fixed AP (Dave et al., "Evaluating Large-Vocabulary Object Detectors: The
Devil is in the Details", 2021) needs more than LVIS's 300 detections per
image from the model (``test_cfg.rcnn.max_per_img``). This script measures,
on generated predictions shaped like mmdet's, what the test run holds per
detection:

* ``collected``: what ``LVISMetric.process`` keeps per image until the end
  (numpy boxes / scores / labels, masks as RLE dicts) -- this is what every
  rank holds and what rank 0 gathers (``collect_device='cpu'``);
* ``json lists``: the per-detection dicts ``results2json`` builds from it
  (bbox and segm) before writing the files; ``lvis_eval.py`` holds the same
  lists after ``json.load``;
* ``files``: the ``.bbox.json`` / ``.segm.json`` bytes on disk.

Python allocations are measured with ``tracemalloc`` (numpy's buffers
included). Masks are filled ellipses in their boxes on 640 x 480 images
(LVIS's typical size), encoded with pycocotools as mmdet does; real masks
have more irregular outlines, so their RLE is somewhat longer. The
extrapolation to 19,809 images is linear in the number of detections.

Example:
    python benchmarks/bench_detection_memory.py
    python benchmarks/bench_detection_memory.py --images 20 --per-image 1000
"""
import argparse
import gc
import json
import tempfile
import tracemalloc
from typing import Dict, List, Tuple

import numpy as np
from pycocotools import mask as mask_utils

LVIS_V1_VAL_IMAGES = 19809
HEIGHT, WIDTH = 480, 640


def make_prediction(rng: np.random.Generator, num: int,
                    num_classes: int) -> dict:
    """One image's predictions as ``LVISMetric.process`` stores them."""
    x1 = rng.uniform(0, WIDTH - 20, num)
    y1 = rng.uniform(0, HEIGHT - 20, num)
    w = np.minimum(rng.lognormal(4.0, 0.8, num) + 4, WIDTH - x1)
    h = np.minimum(rng.lognormal(4.0, 0.8, num) + 4, HEIGHT - y1)
    boxes = np.stack([x1, y1, x1 + w, y1 + h], 1).astype(np.float32)
    masks = []
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    for bx1, by1, bx2, by2 in boxes.tolist():
        cx, cy = (bx1 + bx2) / 2, (by1 + by2) / 2
        rx, ry = max((bx2 - bx1) / 2, 1), max((by2 - by1) / 2, 1)
        y0, y1_, x0, x1_ = int(by1), int(by2) + 1, int(bx1), int(bx2) + 1
        canvas = np.zeros((HEIGHT, WIDTH), dtype=np.uint8, order='F')
        canvas[y0:y1_, x0:x1_] = (((xx[y0:y1_, x0:x1_] - cx) / rx)**2 + (
            (yy[y0:y1_, x0:x1_] - cy) / ry)**2) <= 1
        masks.append(mask_utils.encode(canvas))
    return dict(
        img_id=0,
        bboxes=boxes,
        scores=rng.random(num).astype(np.float32),
        labels=rng.integers(0, num_classes, num),
        masks=masks)


def json_lists(preds: List[dict],
               with_masks: bool = True) -> Tuple[list, list]:
    """``results2json``'s lists (as mmdet's CocoMetric builds them)."""
    bbox, segm = [], []
    for idx, pred in enumerate(preds):
        for i, label in enumerate(pred['labels']):
            x1, y1, x2, y2 = pred['bboxes'][i].tolist()
            det = dict(image_id=idx, bbox=[x1, y1, x2 - x1, y2 - y1],
                       score=float(pred['scores'][i]),
                       category_id=int(label) + 1)
            bbox.append(det)
            if not with_masks:
                continue
            rle = dict(pred['masks'][i])
            rle['counts'] = rle['counts'].decode()
            segm.append(dict(det, segmentation=rle))
    return bbox, segm


def traced(build):
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    value = build()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return value, after - before


def measure(images: int, per_image: int, seed: int = 0) -> Dict[str, float]:
    """Bytes per detection of each form (see the module docstring)."""
    rng = np.random.default_rng(seed)
    preds, collected = traced(
        lambda: [make_prediction(rng, per_image, 1203) for _ in range(images)])
    box_only, collected_boxes = traced(lambda: [
        dict(bboxes=p['bboxes'].copy(), scores=p['scores'].copy(),
             labels=p['labels'].copy()) for p in preds
    ])
    (bbox, segm), lists = traced(lambda: json_lists(preds))
    bbox_only, bbox_lists = traced(lambda: json_lists(preds, False))
    with tempfile.TemporaryFile('w+') as f:
        json.dump(bbox, f)
        bbox_file = f.tell()
    with tempfile.TemporaryFile('w+') as f:
        json.dump(segm, f)
        segm_file = f.tell()
    n = images * per_image
    del box_only, bbox_only
    return {
        'collected (boxes + masks)': collected / n,
        'collected (boxes only)': collected_boxes / n,
        'json lists (bbox + segm)': lists / n,
        'json list (bbox only)': bbox_lists / n,
        '.bbox.json file': bbox_file / n,
        '.segm.json file': segm_file / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', type=int, default=10)
    parser.add_argument('--per-image', type=int, default=1000)
    parser.add_argument('--extrapolate', type=int, nargs='+',
                        default=[300, 1000, 10000],
                        help='detections per image to extrapolate to')
    args = parser.parse_args()
    per_det = measure(args.images, args.per_image)
    print(f'measured on {args.images} images x {args.per_image} detections '
          f'({HEIGHT} x {WIDTH} masks)\n')
    header = '| form | bytes / detection | ' + ' | '.join(
        f'{LVIS_V1_VAL_IMAGES} img x {d}' for d in args.extrapolate) + ' |'
    print(header)
    print('|---|---|' + '---|' * len(args.extrapolate))
    for name, value in per_det.items():
        cells = [
            f'{value * LVIS_V1_VAL_IMAGES * d / 2**30:.1f} GiB'
            for d in args.extrapolate
        ]
        print(f'| {name} | {value:.0f} | ' + ' | '.join(cells) + ' |')


if __name__ == '__main__':
    main()
