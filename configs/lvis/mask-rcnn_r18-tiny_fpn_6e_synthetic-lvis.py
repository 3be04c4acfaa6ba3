# The README's main job (tools/run_demo.sh): the tiny Mask R-CNN baseline on
# half its schedule, so that data, training and test take under 5 minutes on
# 2 CPU cores.
_base_ = './mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py'

max_epochs = 6
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
warmup, steps = _base_.param_scheduler
param_scheduler = [warmup, dict(steps, end=max_epochs, milestones=[4, 5])]
# the same table for every run on the same machine
randomness = dict(seed=0)
