# Balanced Group Softmax on the tiny CPU Mask R-CNN (synthetic LVIS).
_base_ = '../lvis/mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py'

bags_ann_file = (_base_.train_dataloader.dataset.data_root +
                 _base_.train_dataloader.dataset.ann_file)
model = dict(
    roi_head=dict(
        bbox_head=dict(
            type='BAGSBBoxHead',
            ann_file=bags_ann_file,
            # the synthetic train sets have 1..350 instances per class; these
            # bounds put classes into all four groups
            group_bounds=(3, 8, 20),
            loss_cls=dict(_delete_=True, type='GroupSoftmaxLoss'))))
