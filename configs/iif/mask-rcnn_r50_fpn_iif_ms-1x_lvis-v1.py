# Inverse Image Frequency (IIF) in Mask R-CNN: softmax cross-entropy of the
# logits scaled by w_c = ln(N / n_img,c) (background 1), the same scaling at
# test time. No re-sampling.
_base_ = [
    '../lvis/mask-rcnn_r50_fpn_ms-1x_lvis-v1.py',
    './_base_/iif-cls-init.py'
]

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='IIFLoss',
                num_classes=_base_.num_classes),
            init_cfg=_base_.iif_bbox_head_init_cfg)))
