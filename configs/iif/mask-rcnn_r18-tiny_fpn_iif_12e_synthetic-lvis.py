# IIF in the tiny Mask R-CNN (synthetic LVIS, CPU).
_base_ = [
    '../lvis/mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py',
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
