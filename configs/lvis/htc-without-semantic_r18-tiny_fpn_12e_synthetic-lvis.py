# Tiny HTC (no semantic branch) for CPU runs on the synthetic LVIS set.
_base_ = [
    '../_base_/models/htc-without-semantic_r50_fpn.py',
    '../_base_/models/tiny-r18_fpn.py',
    '../_base_/datasets/synthetic_lvis_instance.py',
    '../_base_/schedules/schedule_synthetic.py',
    '../_base_/synthetic_runtime.py'
]
model = dict(
    **_base_.tiny_model,
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=_base_.tiny_channels),
        bbox_head=[
            dict(
                head,
                in_channels=_base_.tiny_channels,
                fc_out_channels=_base_.tiny_fc_channels,
                num_classes=_base_.num_classes)
            for head in _base_.model.roi_head.bbox_head
        ],
        mask_roi_extractor=dict(out_channels=_base_.tiny_channels),
        mask_head=[
            dict(
                head,
                num_convs=2,
                in_channels=_base_.tiny_channels,
                conv_out_channels=_base_.tiny_channels,
                num_classes=_base_.num_classes)
            for head in _base_.model.roi_head.mask_head
        ]),
    train_cfg=dict(
        **_base_.tiny_train_cfg,
        rcnn=[
            dict(stage, sampler=dict(stage.sampler, num=128))
            for stage in _base_.model.train_cfg.rcnn
        ]),
    test_cfg=_base_.tiny_test_cfg)
