# Federated loss (CenterNet2) in Cascade Mask R-CNN (every stage): sigmoid BCE over the classes
# present in the batch plus negatives drawn in proportion to
# sqrt(train image count), 50 classes per step. No re-sampling.
_base_ = [
    '../lvis/cascade-mask-rcnn_r50_fpn_ms-1x_lvis-v1.py',
    './_base_/sigmoid-cls-init.py'
]

model = dict(
    roi_head=dict(bbox_head=[
        dict(
            head,
            loss_cls=dict(
                type='FederatedLoss',
                num_classes=_base_.num_classes,
                num_sample_classes=50,
                freq_weight_power=0.5),
            init_cfg=_base_.federated_bbox_head_init_cfg)
        for head in _base_.model.roi_head.bbox_head
    ]))
