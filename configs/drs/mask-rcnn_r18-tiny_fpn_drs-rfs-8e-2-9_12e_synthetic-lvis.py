# Deferred re-sampling on the tiny Mask R-CNN (synthetic LVIS, CPU): uniform
# for epochs 0-8, RFS from epoch 9 (the first lr step); t = 0.08 plays the
# role of LVIS's 1e-3 (see configs/rfs/).
_base_ = '../lvis/mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py'

train_dataloader = dict(
    sampler=dict(
        _delete_=True,
        type='DeferredSampler',
        switch_epoch=9,
        sampler=dict(type='RFSSampler', threshold=0.08)))
