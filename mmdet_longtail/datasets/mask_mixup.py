"""``MaskMixUp``: mmdet's ``MixUp`` that mixes instance masks too.

Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018
(https://arxiv.org/abs/1710.09412), in the detection form of Zhang et al.,
"Bag of Freebies for Training Object Detection Neural Networks", 2019
(https://arxiv.org/abs/1902.04103): the image becomes ``0.5 * I_1 + 0.5 *
I_2`` and keeps the instances of both images.

mmdet 3.3's ``MixUp`` moves the second image's boxes but leaves ``gt_masks``
of the first image only, so boxes and masks stop pairing up (Mask R-CNN
cannot use it). ``MaskMixUp`` draws the same random numbers in the same
order, places the second image exactly as ``MixUp`` does (keep-ratio resize
into the ``img_scale`` canvas, scale jitter, optional horizontal flip, pad
and random crop to the first image's size) and applies the same steps to
its masks, then keeps the instances whose boxes stay inside the image.
"""
import mmcv
import numpy as np
from numpy import random  # mmdet's MixUp draws from numpy's global RNG

from mmdet.datasets.transforms import MixUp
from mmdet.registry import TRANSFORMS
from mmdet.structures.bbox import autocast_box_type


@TRANSFORMS.register_module()
class MaskMixUp(MixUp):
    """``MixUp`` (same arguments) that also mixes ``gt_masks``
    (``BitmapMasks``); both images must have masks."""

    @autocast_box_type()
    def transform(self, results: dict) -> dict:
        if len(results.get('mix_results', ())) != 1:
            raise ValueError('MaskMixUp mixes 2 images: use it in '
                             'MultiImageMixDataset')
        other = results['mix_results'][0]
        if 'gt_masks' not in results or 'gt_masks' not in other:
            raise ValueError("MaskMixUp needs 'gt_masks' in both images: "
                             'LoadAnnotations(with_mask=True)')
        if other['gt_bboxes'].shape[0] == 0:
            return results
        # the draws of MixUp, in its order
        jit_factor = random.uniform(*self.ratio_range)
        is_flip = random.uniform(0, 1) > self.flip_ratio
        canvas_w, canvas_h = self.dynamic_scale
        img = other['img']
        scale = min(canvas_h / img.shape[0], canvas_w / img.shape[1])
        size = (int(img.shape[1] * scale), int(img.shape[0] * scale))
        canvas = np.full((canvas_h, canvas_w) + img.shape[2:], self.pad_val,
                         dtype=img.dtype)
        canvas[:size[1], :size[0]] = mmcv.imresize(img, size)
        jit_size = (int(canvas_w * jit_factor), int(canvas_h * jit_factor))
        canvas = mmcv.imresize(canvas, jit_size)
        masks = other['gt_masks'].resize(size[::-1]).pad(
            (canvas_h, canvas_w)).resize(jit_size[::-1])
        if is_flip:
            canvas = canvas[:, ::-1]
            masks = masks.flip('horizontal')
        (jit_h, jit_w), (h, w) = canvas.shape[:2], results['img'].shape[:2]
        padded_h, padded_w = max(jit_h, h), max(jit_w, w)
        y0 = random.randint(0, padded_h - h) if padded_h > h else 0
        x0 = random.randint(0, padded_w - w) if padded_w > w else 0
        padded = np.full((padded_h, padded_w, 3), self.pad_val,
                         dtype=np.uint8)
        padded[:jit_h, :jit_w] = canvas
        crop = padded[y0:y0 + h, x0:x0 + w]
        masks = masks.pad((padded_h, padded_w)).crop(
            np.array([x0, y0, x0 + w, y0 + h]))

        boxes = other['gt_bboxes'].clone()
        boxes.rescale_([scale * jit_factor] * 2)
        if self.bbox_clip_border:
            boxes.clip_([jit_h, jit_w])
        if is_flip:
            boxes.flip_([jit_h, jit_w], direction='horizontal')
        boxes.translate_([-x0, -y0])
        if self.bbox_clip_border:
            boxes.clip_([h, w])

        all_boxes = boxes.cat((results['gt_bboxes'], boxes), dim=0)
        inside = all_boxes.is_inside([h, w]).numpy()
        mixed = 0.5 * results['img'].astype(np.float32) + \
            0.5 * crop.astype(np.float32)
        results['img'] = mixed.astype(np.uint8)
        results['img_shape'] = mixed.shape[:2]
        results['gt_bboxes'] = all_boxes[inside]
        results['gt_bboxes_labels'] = np.concatenate(
            (results['gt_bboxes_labels'], other['gt_bboxes_labels']))[inside]
        results['gt_ignore_flags'] = np.concatenate(
            (results['gt_ignore_flags'], other['gt_ignore_flags']))[inside]
        results['gt_masks'] = results['gt_masks'].cat(
            [results['gt_masks'], masks])[np.flatnonzero(inside)]
        return results
