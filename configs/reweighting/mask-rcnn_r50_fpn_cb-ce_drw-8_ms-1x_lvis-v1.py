# Deferred re-weighting (DRW, Cao et al., NeurIPS 2019) with class-balanced
# softmax CE (Cui et al., CVPR 2019; beta 0.999, background weight 1).
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

# DRW: plain CE for epochs 0-7, the class weights from epoch 8 (the first lr
# step of the 1x schedule), as LDAM-DRW switches at its first lr step
custom_hooks = _base_.custom_hooks + [
    dict(type='DeferredReweightingHook', switch_epoch=8)
]
