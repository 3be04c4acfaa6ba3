# RFS + PCB (the authors' mask_rcnn_r50_fpn_sample1e-3_mstrain_pcb_2x_lvis_v1):
# softmax CE with the PCB term (alpha 0.4) in the iterative RoI head, repeat
# factor sampling t = 1e-3 rounded up (mmdet's ClassBalancedDataset, as the
# authors), 24 epochs, PCB on from epoch 17.
_base_ = [
    '../rfs/mask-rcnn_r50_fpn_rfs-1e-3_ms-1x_lvis-v1.py',
    './_base_/iterative-pcb.py'
]

model = dict(
    roi_head=dict(
        **_base_.pcb_roi_head,
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='PCBLoss',
                base_loss=_base_.model.roi_head.bbox_head.loss_cls,
                num_classes=_base_.num_classes,
                alpha=0.4,
                momentum=_base_.pcb_momentum))))
train_dataloader = dict(sampler=dict(rounding='ceil'))
train_cfg = _base_.pcb_train_cfg
param_scheduler = _base_.pcb_param_scheduler
custom_hooks = _base_.custom_hooks + [
    dict(
        type='DeferredSwitchHook',
        attribute='pcb_enabled',
        switch_epoch=_base_.pcb_switch_epoch)
]
