# GOL in every stage of the tiny Cascade Mask R-CNN (synthetic LVIS, CPU). The
# default synthetic set's 23 rare and common classes have an image frequency
# below 0.08, its frequent ones 0.085 and more.
_base_ = [
    '../lvis/cascade-mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py',
    './_base_/gumbel-cls-init.py'
]

model = dict(
    roi_head=dict(bbox_head=[
        dict(
            head,
            loss_cls=dict(
                type='GOLoss',
                num_classes=_base_.num_classes,
                lambda_threshold=0.08),
            init_cfg=_base_.gumbel_bbox_head_init_cfg)
        for head in _base_.model.roi_head.bbox_head
    ]))
