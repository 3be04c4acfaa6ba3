# EQLv2 + PCB (the authors' mask_rcnn_r50_fpn_mstrain_eqlv2_pcb_2x_lvis_v1):
# EQLv2 (sigmoid, no re-sampling) with the PCB term (alpha 0.2) in the
# iterative RoI head, a LayerNorm before the class-logit MLP as the authors
# set it for EQLv2, 24 epochs, PCB on from epoch 17.
_base_ = [
    '../eqlv2/mask-rcnn_r50_fpn_eqlv2_ms-1x_lvis-v1.py',
    './_base_/iterative-pcb.py'
]

model = dict(
    roi_head=dict(
        **dict(_base_.pcb_roi_head, use_layer_norm=True),
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='PCBLoss',
                base_loss=_base_.model.roi_head.bbox_head.loss_cls,
                num_classes=_base_.num_classes,
                alpha=0.2,
                momentum=_base_.pcb_momentum))))
train_cfg = _base_.pcb_train_cfg
param_scheduler = _base_.pcb_param_scheduler
custom_hooks = _base_.custom_hooks + [
    dict(
        type='DeferredSwitchHook',
        attribute='pcb_enabled',
        switch_epoch=_base_.pcb_switch_epoch)
]
