# Deferred re-sampling on the tiny Mask R-CNN (synthetic LVIS, CPU): uniform
# for epochs 0-8, class-aware sampling from epoch 9 (the first lr step).
_base_ = '../lvis/mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py'

train_dataloader = dict(
    sampler=dict(
        _delete_=True,
        type='DeferredSampler',
        switch_epoch=9,
        sampler=dict(type='LongTailClassAwareSampler')))
