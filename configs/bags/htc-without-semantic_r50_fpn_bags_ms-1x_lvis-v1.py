# Balanced Group Softmax (BAGS) trained end to end: each of the three stages
# of HTC (no semantic branch) gets the group-softmax classifier.
_base_ = '../lvis/htc-without-semantic_r50_fpn_ms-1x_lvis-v1.py'

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
