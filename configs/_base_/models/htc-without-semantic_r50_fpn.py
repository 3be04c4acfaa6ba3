# Hybrid Task Cascade without the semantic branch (the setting of the TDE
# paper): Cascade Mask R-CNN with interleaved execution and mask
# information flow.
_base_ = 'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py'

_mask_head = dict(
    type='HTCMaskHead',
    num_convs=4,
    in_channels=256,
    conv_out_channels=256,
    num_classes=80,
    loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0))
model = dict(
    type='HybridTaskCascade',
    roi_head=dict(
        type='HybridTaskCascadeRoIHead',
        interleaved=True,
        mask_info_flow=True,
        mask_head=[
            dict(_mask_head, with_conv_res=False),  # no earlier stage to use
            _mask_head,
            _mask_head,
        ]))
