# The README's main job (tools/run_demo.sh): the tiny Mask R-CNN baseline on
# half its schedule, so that data, training and test take under 5 minutes on
# 2 CPU cores.
_base_ = './mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py'

max_epochs = 6
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[4, 5],
        gamma=0.1)
]
# the same table for every run on the same machine
randomness = dict(seed=0)
