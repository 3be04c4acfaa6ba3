# Federated loss in the tiny HTC without semantic branch (every stage)
# (synthetic LVIS, CPU). The synthetic set has 30 classes, fewer than the
# 50 of LVIS, so the class set holds 10 classes per step.
_base_ = [
    '../lvis/htc-without-semantic_r18-tiny_fpn_12e_synthetic-lvis.py',
    './_base_/sigmoid-cls-init.py'
]

model = dict(
    roi_head=dict(bbox_head=[
        dict(
            head,
            loss_cls=dict(
                type='FederatedLoss',
                num_classes=_base_.num_classes,
                num_sample_classes=10,
                freq_weight_power=0.5),
            init_cfg=_base_.federated_bbox_head_init_cfg)
        for head in _base_.model.roi_head.bbox_head
    ]))
