# Deferred re-weighting (DRW, Cao et al., NeurIPS 2019) with class-balanced
# softmax CE (Cui et al., CVPR 2019; beta 0.999, background weight 1).
_base_ = '../lvis/mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='ReweightedCrossEntropyLoss',
                num_classes=_base_.num_classes,
                weighting='class_balanced',
                beta=0.999))))

# DRW: plain CE for epochs 0-8, the class weights from epoch 9 (the first lr
# step of the synthetic schedule)
custom_hooks = _base_.custom_hooks + [
    dict(type='DeferredReweightingHook', switch_epoch=9)
]
