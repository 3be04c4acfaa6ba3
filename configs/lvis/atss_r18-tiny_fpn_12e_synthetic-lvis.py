# Tiny ATSS for CPU runs on the synthetic long-tailed LVIS set: the tiny
# RetinaNet with mmdet's ATSS head, assigner and losses. GroupNorm uses 8
# groups of 4 channels: 32 groups of 1 channel fail on the 1 x 1 top level
# of a single 128 px image.
_base_ = [
    './retinanet_r18-tiny_fpn_12e_synthetic-lvis.py',
    '../efl/_base_/atss_from_retinanet.py'
]
model = dict(
    **_base_.atss_model,
    bbox_head=dict(
        **_base_.atss_head,
        norm_cfg=dict(type='GN', num_groups=8, requires_grad=True)),
    train_cfg=_base_.atss_train_cfg,
    test_cfg=dict(nms=_base_.atss_nms))
