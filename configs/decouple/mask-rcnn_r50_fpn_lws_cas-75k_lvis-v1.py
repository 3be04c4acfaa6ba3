# LWS (learnable weight scaling; Kang et al., ICLR 2020) on the Mask R-CNN
# baseline: keep its classifier and learn one scale per output (init 1) with
# class-aware sampling, the cRT schedule, everything else frozen. It loads
# the baseline checkpoint itself (LWSLinear's weight / bias are nn.Linear's).
# LWSLinear defaults are the eqlv2 port's variant (scale_bias=False,
# scale_background=True); the README describes the switches.
_base_ = './mask-rcnn_r50_fpn_crt_cas-75k_lvis-v1.py'

load_from = 'work_dirs/mask-rcnn_r50_fpn_ms-1x_lvis-v1/epoch_12.pth'
model = dict(
    roi_head=dict(bbox_head=dict(cls_predictor_cfg=dict(type='LWSLinear'))))
custom_hooks = [
    hook for hook in _base_.custom_hooks if hook.type != 'FreezeExceptHook'
] + [
    dict(
        type='FreezeExceptHook',
        trainable=[r'bbox_head\.fc_cls\.weight_scaler'])
]
