# Balanced Group Softmax (BAGS) trained end to end: Mask R-CNN with the
# group-softmax classifier (classes grouped by train instance count).
_base_ = '../lvis/mask-rcnn_r50_fpn_ms-1x_lvis-v1.py'

bags_ann_file = (_base_.train_dataloader.dataset.data_root +
                 _base_.train_dataloader.dataset.ann_file)
model = dict(
    roi_head=dict(
        bbox_head=dict(
            type='BAGSBBoxHead',
            ann_file=bags_ann_file,
            group_bounds=(10, 100, 1000),
            beta=8.0,
            loss_cls=dict(_delete_=True, type='GroupSoftmaxLoss'))))
