"""MaskMixUp: the boxes, labels and image of mmdet's MixUp (same random
draws), plus masks that stay paired with the boxes; bad input."""
import copy

import numpy as np
import pytest
import torch

from mmdet.datasets.transforms import MixUp
from mmdet.structures.bbox import HorizontalBoxes
from mmdet.structures.mask import BitmapMasks
from mmdet_longtail.datasets.mask_mixup import MaskMixUp


def sample(h, w, boxes, labels):
    masks = np.zeros((len(boxes), h, w), dtype=np.uint8)
    for m, (x1, y1, x2, y2) in zip(masks, boxes):
        m[y1:y2, x1:x2] = 1
    return dict(
        img=np.random.randint(0, 255, (h, w, 3), dtype=np.uint8),
        img_shape=(h, w),
        gt_bboxes=HorizontalBoxes(torch.tensor(boxes, dtype=torch.float32)),
        gt_bboxes_labels=np.array(labels),
        gt_ignore_flags=np.zeros(len(labels), dtype=bool),
        gt_masks=BitmapMasks(masks, h, w))


@pytest.mark.parametrize('seed', range(6))
def test_same_as_mixup_with_paired_masks(seed):
    np.random.seed(seed)
    first = sample(60, 80, [[5, 5, 30, 40], [40, 10, 70, 50]], [0, 1])
    second = sample(50, 40, [[2, 3, 20, 30], [10, 20, 38, 48]], [2, 3])
    first['mix_results'] = [second]
    kwargs = dict(img_scale=(64, 64), ratio_range=(0.5, 1.5))
    np.random.seed(seed)
    ours = MaskMixUp(**kwargs).transform(copy.deepcopy(first))
    after = np.random.random()
    np.random.seed(seed)
    theirs = MixUp(**kwargs).transform(copy.deepcopy(first))
    assert np.random.random() == after  # the same draws
    torch.testing.assert_close(ours['gt_bboxes'].tensor,
                               theirs['gt_bboxes'].tensor)
    np.testing.assert_array_equal(ours['gt_bboxes_labels'],
                                  theirs['gt_bboxes_labels'])
    assert np.abs(ours['img'].astype(int) - theirs['img'].astype(int)).max(
    ) <= 1
    masks, boxes = ours['gt_masks'], ours['gt_bboxes'].tensor
    assert len(masks) == len(boxes) and masks.height == 60
    for mask, box in zip(masks.masks, boxes.numpy()):
        ys, xs = np.nonzero(mask)
        if len(xs):  # the mask's extent is its box (nearest resizing)
            assert abs(xs.min() - box[0]) <= 2 and abs(ys.min() - box[1]) <= 2
            assert abs(xs.max() + 1 - box[2]) <= 2
            assert abs(ys.max() + 1 - box[3]) <= 2


def test_bad_input():
    first = sample(20, 20, [[1, 1, 5, 5]], [0])
    with pytest.raises(ValueError, match='mixes 2 images'):
        MaskMixUp().transform(first)
    second = sample(20, 20, [[1, 1, 5, 5]], [1])
    del second['gt_masks']
    first['mix_results'] = [second]
    with pytest.raises(ValueError, match="needs 'gt_masks' in both"):
        MaskMixUp().transform(first)
