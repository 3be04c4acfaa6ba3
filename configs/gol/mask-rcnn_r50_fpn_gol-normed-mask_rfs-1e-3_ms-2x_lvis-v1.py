# The authors' GOL setting (GOL/configs/gol/
# droploss_normed_mask_r50_rfs_4x4_2x_gumbel.py): Gumbel activation with the
# drop loss, repeat factor sampling (t = 1e-3, repeat factors rounded up as
# mmdet 2's ClassBalancedDataset did), a normalised mask predictor, NMS IoU
# 0.3 and 24 epochs (steps at 16 and 22). mmdet 3's RoI NMS is per class,
# as the authors' perclass_nms=True.
_base_ = './mask-rcnn_r50_fpn_gol_ms-1x_lvis-v1.py'

model = dict(
    roi_head=dict(
        mask_head=dict(
            predictor_cfg=dict(type='NormedConv2d', tempearture=20))),
    test_cfg=dict(rcnn=dict(nms=dict(iou_threshold=0.3))))
train_dataloader = dict(
    sampler=dict(
        _delete_=True, type='RFSSampler', threshold=1e-3, rounding='ceil'))

max_epochs = 24
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[16, 22],
        gamma=0.1)
]
