# Deferred re-sampling (DRS, Cao et al., NeurIPS 2019): uniform sampling for
# epochs 0-7, class-aware sampling from epoch 8, the first lr step of the 1x
# schedule.
_base_ = '../lvis/mask-rcnn_r50_fpn_ms-1x_lvis-v1.py'

train_dataloader = dict(
    sampler=dict(
        _delete_=True,
        type='DeferredSampler',
        switch_epoch=8,
        sampler=dict(type='LongTailClassAwareSampler')))
