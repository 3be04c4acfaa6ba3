# The published Seesaw setting (mmdet's
# mask-rcnn_r50_fpn_seesaw-loss_random-ms-2x_lvis-v1): Seesaw Loss with a
# normalised linear classifier, no re-sampling, 24 epochs.
_base_ = './mask-rcnn_r50_fpn_seesaw_ms-1x_lvis-v1.py'

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
