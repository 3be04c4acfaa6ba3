# Balanced Group Softmax (BAGS) trained end to end: each of the three stages
# of Cascade Mask R-CNN gets the group-softmax classifier.
_base_ = '../lvis/cascade-mask-rcnn_r50_fpn_ms-2x_lvis-v0.5.py'

model = dict(
    roi_head=dict(bbox_head=[
        dict(
            head,
            type='BAGSBBoxHead',
            loss_cls=dict(
                type='GroupSoftmaxLoss',
                num_classes=_base_.num_classes,
                group_bounds=(10, 100, 1000),
                beta=8.0)) for head in _base_.model.roi_head.bbox_head
    ]))
