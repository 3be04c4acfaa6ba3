# The decoupled BAGS recipe on the tiny CPU model: load the tiny baseline
# converted by tools/model_converters/bags_convert.py and train only fc_cls
# (of every stage) for a few epochs, everything else frozen.
_base_ = './htc-without-semantic_r18-tiny_fpn_bags_12e_synthetic-lvis.py'

load_from = ('work_dirs/htc-without-semantic_r18-tiny_fpn_12e_synthetic-lvis/'
             'bags_init.pth')
custom_hooks = _base_.custom_hooks + [
    dict(type='FreezeExceptHook', trainable=[r'bbox_head(\.\d+)?\.fc_cls\.'])
]
model_wrapper_cfg = dict(
    type='MMDistributedDataParallel', find_unused_parameters=True)
train_cfg = dict(max_epochs=4, val_interval=4)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='MultiStepLR', begin=0, end=4, by_epoch=True, milestones=[3])
]
