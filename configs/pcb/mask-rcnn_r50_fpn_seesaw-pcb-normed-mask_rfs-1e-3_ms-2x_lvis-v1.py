# Seesaw + PCB (the authors'
# mask_rcnn_r50_fpn_sample1e-3_seesaw_pcb_normed_mask_mstrain_2x_lvis_v1):
# mmdet's Seesaw loss (cosine classifier, normalised mask predictor, RFS
# t = 1e-3) with the PCB term (alpha 0.05) in the iterative RoI head,
# 24 epochs, PCB on from epoch 17.
_base_ = [
    '../seesaw/mask-rcnn_r50_fpn_seesaw-normed-mask_rfs-1e-3_ms-2x_lvis-v1.py',
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
                alpha=0.05,
                momentum=_base_.pcb_momentum))))
custom_hooks = _base_.custom_hooks + [
    dict(
        type='DeferredSwitchHook',
        attribute='pcb_enabled',
        switch_epoch=_base_.pcb_switch_epoch)
]
