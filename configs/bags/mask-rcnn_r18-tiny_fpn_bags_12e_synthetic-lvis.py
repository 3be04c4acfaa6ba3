# Balanced Group Softmax on the tiny CPU Mask R-CNN (synthetic LVIS).
_base_ = '../lvis/mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            type='BAGSBBoxHead',
            loss_cls=dict(
                _delete_=True,
                type='GroupSoftmaxLoss',
                num_classes=_base_.num_classes,
                # 1..350 instances per class in the synthetic train sets:
                # these bounds put classes into all four groups
                group_bounds=(3, 8, 20)))))
