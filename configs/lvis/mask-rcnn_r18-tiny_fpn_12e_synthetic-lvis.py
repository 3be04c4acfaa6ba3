# Tiny Mask R-CNN for CPU runs on the synthetic long-tailed LVIS set.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    '../_base_/models/tiny-r18_fpn.py',
    '../_base_/datasets/synthetic_lvis_instance.py',
    '../_base_/schedules/schedule_synthetic.py',
    '../_base_/synthetic_runtime.py'
]
model = dict(
    **_base_.tiny_model,
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=_base_.tiny_channels),
        bbox_head=dict(
            in_channels=_base_.tiny_channels,
            fc_out_channels=_base_.tiny_fc_channels,
            num_classes=_base_.num_classes),
        mask_roi_extractor=dict(out_channels=_base_.tiny_channels),
        mask_head=dict(
            num_convs=2,
            in_channels=_base_.tiny_channels,
            conv_out_channels=_base_.tiny_channels,
            num_classes=_base_.num_classes)),
    train_cfg=dict(**_base_.tiny_train_cfg, rcnn=dict(sampler=dict(num=128))),
    test_cfg=_base_.tiny_test_cfg)
