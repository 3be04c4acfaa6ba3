# LWS on the tiny Mask R-CNN (synthetic LVIS, CPU): the tiny baseline with a
# learnable per-output scale of fc_cls, trained alone as in the tiny cRT.
_base_ = './mask-rcnn_r18-tiny_fpn_crt_cas-4e_synthetic-lvis.py'

load_from = 'work_dirs/mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis/epoch_12.pth'
model = dict(
    roi_head=dict(bbox_head=dict(cls_predictor_cfg=dict(type='LWSLinear'))))
custom_hooks = [
    hook for hook in _base_.custom_hooks if hook.type != 'FreezeExceptHook'
] + [
    dict(
        type='FreezeExceptHook',
        trainable=[r'bbox_head\.fc_cls\.weight_scaler'])
]
