# cRT on the tiny Mask R-CNN (synthetic LVIS, CPU): the tiny baseline without
# fc_cls (tools/model_converters/reset_classifier.py), fc_cls trained alone
# with class-aware sampling for 4 epochs, everything else frozen.
_base_ = '../lvis/mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py'

load_from = ('work_dirs/mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis/'
             'crt_init.pth')
train_dataloader = dict(
    sampler=dict(_delete_=True, type='LongTailClassAwareSampler', seed=0))
custom_hooks = _base_.custom_hooks + [
    dict(type='FreezeExceptHook', trainable=[r'bbox_head\.fc_cls\.'])
]
model_wrapper_cfg = dict(
    type='MMDistributedDataParallel', find_unused_parameters=True)
train_cfg = dict(max_epochs=4, val_interval=4)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='MultiStepLR', begin=0, end=4, by_epoch=True, milestones=[3])
]
