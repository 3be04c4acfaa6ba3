# Class-balanced softmax CE (Cui et al., CVPR 2019): RoIs of class c weighted
# by (1 - beta) / (1 - beta^n_c), n_c = training instances, normalised to sum
# to C; background 1. No re-sampling.
_base_ = '../lvis/mask-rcnn_r50_fpn_ms-1x_lvis-v1.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='ReweightedCrossEntropyLoss',
                num_classes=_base_.num_classes,
                weighting='class_balanced',
                beta=0.999))))
