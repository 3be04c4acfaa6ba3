# PCB in the tiny Mask R-CNN (synthetic LVIS, CPU): softmax CE with the PCB
# term (alpha 0.4) in the iterative RoI head (3 iterations, 0.2 / 0.2 / 0.6).
# The switch at epoch 9 of 12 (the first lr step) plays the role of the
# authors' 17 of 24 (one epoch after the first lr step).
_base_ = [
    '../lvis/mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py',
    './_base_/iterative-pcb.py'
]

model = dict(
    roi_head=dict(
        **dict(_base_.pcb_roi_head, mlp_hidden=64),
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='PCBLoss',
                base_loss=_base_.model.roi_head.bbox_head.loss_cls,
                num_classes=_base_.num_classes,
                alpha=0.4,
                momentum=_base_.pcb_momentum))))
custom_hooks = _base_.custom_hooks + [
    dict(type='DeferredSwitchHook', attribute='pcb_enabled', switch_epoch=9)
]
