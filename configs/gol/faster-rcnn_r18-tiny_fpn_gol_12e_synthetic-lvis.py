# GOL in the tiny Faster R-CNN (synthetic LVIS, CPU). The default synthetic
# set's 23 rare and common classes have an image frequency below 0.08, its
# frequent ones 0.085 and more.
_base_ = [
    '../lvis/faster-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py',
    './_base_/gumbel-cls-init.py'
]

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='GOLoss',
                num_classes=_base_.num_classes,
                lambda_threshold=0.08),
            init_cfg=_base_.gumbel_bbox_head_init_cfg)))
