# Balanced Group Softmax (BAGS) trained end to end: Mask R-CNN with the
# group-softmax classifier (classes grouped by train instance count).
_base_ = '../lvis/mask-rcnn_r50_fpn_ms-1x_lvis-v1.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            type='BAGSBBoxHead',
            loss_cls=dict(
                _delete_=True,
                type='GroupSoftmaxLoss',
                num_classes=_base_.num_classes,
                group_bounds=(10, 100, 1000),
                beta=8.0))))
