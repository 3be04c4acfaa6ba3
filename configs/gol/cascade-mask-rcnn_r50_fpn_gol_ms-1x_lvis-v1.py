# Gumbel Optimised Loss (GOL) in every stage of Cascade Mask R-CNN: Gumbel
# activation exp(-exp(-z)) in training and at test time, with the drop loss on
# the tail classes (training image frequency < lambda; 815 classes). No re-
# sampling.
_base_ = [
    '../lvis/cascade-mask-rcnn_r50_fpn_ms-1x_lvis-v1.py',
    './_base_/gumbel-cls-init.py'
]

model = dict(
    roi_head=dict(bbox_head=[
        dict(
            head,
            loss_cls=dict(
                type='GOLoss',
                num_classes=_base_.num_classes,
                lambda_threshold=1.1e-3),
            init_cfg=_base_.gumbel_bbox_head_init_cfg)
        for head in _base_.model.roi_head.bbox_head
    ]))
