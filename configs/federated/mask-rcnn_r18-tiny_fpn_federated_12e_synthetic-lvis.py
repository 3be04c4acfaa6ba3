# Federated loss in the tiny Mask R-CNN
# (synthetic LVIS, CPU). The synthetic set has 30 classes, fewer than the
# 50 of LVIS, so the class set holds 10 classes per step.
_base_ = [
    '../lvis/mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py',
    './_base_/sigmoid-cls-init.py'
]

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='FederatedLoss',
                num_classes=_base_.num_classes,
                num_sample_classes=10,
                freq_weight_power=0.5),
            init_cfg=_base_.federated_bbox_head_init_cfg)))
