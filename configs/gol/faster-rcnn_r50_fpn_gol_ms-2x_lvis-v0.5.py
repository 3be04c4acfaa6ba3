# Gumbel Optimised Loss (GOL) in Faster R-CNN: Gumbel activation exp(-exp(-z))
# in training and at test time, with the drop loss on the tail classes
# (training image frequency < lambda; 915 classes). No re-sampling.
_base_ = [
    '../lvis/faster-rcnn_r50_fpn_ms-2x_lvis-v0.5.py',
    './_base_/gumbel-cls-init.py'
]

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='GOLoss',
                num_classes=_base_.num_classes,
                lambda_threshold=1.76e-3),
            init_cfg=_base_.gumbel_bbox_head_init_cfg)))
