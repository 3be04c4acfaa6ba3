# IIF in every stage of the tiny Cascade Mask R-CNN (synthetic LVIS, CPU).
_base_ = [
    '../lvis/cascade-mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py',
    './_base_/iif-cls-init.py'
]

model = dict(
    roi_head=dict(bbox_head=[
        dict(
            head,
            loss_cls=dict(
                type='IIFLoss',
                num_classes=_base_.num_classes),
            init_cfg=_base_.iif_bbox_head_init_cfg)
        for head in _base_.model.roi_head.bbox_head
    ]))
