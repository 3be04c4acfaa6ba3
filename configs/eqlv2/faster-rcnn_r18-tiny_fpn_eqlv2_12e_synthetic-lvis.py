# Equalization Loss v2 (EQLv2) in the tiny Faster R-CNN (synthetic LVIS, CPU):
# C + 1 sigmoid logits (objectness last), weighted by the accumulated gradient
# ratios of the classes.
_base_ = [
    '../lvis/faster-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py',
    '../eql/_base_/sigmoid-cls-init.py'
]

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='EQLv2',
                num_classes=_base_.num_classes,
                gamma=12.0,
                mu=0.8,
                alpha=4.0),
            init_cfg=_base_.sigmoid_bbox_head_init_cfg)))
