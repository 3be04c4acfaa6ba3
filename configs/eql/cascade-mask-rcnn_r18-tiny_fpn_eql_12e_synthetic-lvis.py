# EQL in every stage of the tiny Cascade Mask R-CNN (synthetic LVIS, CPU).
_base_ = [
    '../lvis/cascade-mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py',
    './_base_/sigmoid-cls-init.py'
]

# the default synthetic set's 23 rare and common classes have an image
# frequency below 0.08 (0.068 and less), its frequent ones 0.085 and more
eql_lambda = 0.08
eql_loss = dict(
    type='EQLoss', num_classes=_base_.num_classes, lambda_threshold=eql_lambda)
model = dict(
    roi_head=dict(bbox_head=[
        dict(
            head,
            loss_cls=eql_loss,
            init_cfg=_base_.sigmoid_bbox_head_init_cfg)
        for head in _base_.model.roi_head.bbox_head
    ]))
