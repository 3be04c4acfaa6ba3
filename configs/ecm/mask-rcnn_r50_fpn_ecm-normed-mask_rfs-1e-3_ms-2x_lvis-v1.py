# The ECM authors' 2x recipe (r50_ecm_2x.py): as the 1x recipe, 24 epochs
# with steps at 20 and 22.
_base_ = './mask-rcnn_r50_fpn_ecm-normed-mask_rfs-1e-3_ms-1x_lvis-v1.py'

max_epochs = 24
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-4,
        by_epoch=False,
        begin=0,
        end=10000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[20, 22],
        gamma=0.1)
]
