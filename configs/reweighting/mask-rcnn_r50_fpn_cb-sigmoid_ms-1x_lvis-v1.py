# Class-balanced sigmoid CE (Cui et al., CVPR 2019): C sigmoid logits, every
# RoI's BCE weighted by its class's (1 - beta) / (1 - beta^n_c), normalised to
# sum to C; background 1; classifier prior 0.01. No re-sampling.
_base_ = [
    '../lvis/mask-rcnn_r50_fpn_ms-1x_lvis-v1.py',
    './_base_/sigmoid-cls-init.py'
]

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='ReweightedCrossEntropyLoss',
                num_classes=_base_.num_classes,
                weighting='class_balanced',
                beta=0.999,
                use_sigmoid=True),
            init_cfg=_base_.sigmoid_bbox_head_init_cfg)))
