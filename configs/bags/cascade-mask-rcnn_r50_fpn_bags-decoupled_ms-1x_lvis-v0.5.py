# Balanced Group Softmax, the published (decoupled) recipe: load a trained
# baseline, re-initialise the classifier with the BAGS layout and train only
# fc_cls (of every stage in Cascade / HTC) for 12 epochs, the rest frozen.
# Make the checkpoint with:
#   python tools/model_converters/bags_convert.py \
#       work_dirs/cascade-mask-rcnn_r50_fpn_ms-2x_lvis-v0.5/epoch_24.pth \
#       work_dirs/cascade-mask-rcnn_r50_fpn_ms-2x_lvis-v0.5/bags_init.pth
_base_ = './cascade-mask-rcnn_r50_fpn_bags_ms-2x_lvis-v0.5.py'

load_from = 'work_dirs/cascade-mask-rcnn_r50_fpn_ms-2x_lvis-v0.5/bags_init.pth'
custom_hooks = _base_.custom_hooks + [
    dict(type='FreezeExceptHook', trainable=[r'bbox_head(\.\d+)?\.fc_cls\.'])
]
# parameters are frozen after the DDP wrap, so DDP must expect unused ones
model_wrapper_cfg = dict(
    type='MMDistributedDataParallel', find_unused_parameters=True)
# BAGS fine-tunes the classifier with lr 0.01 at batch 16
optim_wrapper = dict(optimizer=dict(lr=0.01))
# 12 epochs of classifier training (the baseline's own schedule is 2x)
train_cfg = dict(max_epochs=12)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True,
         milestones=[8, 11], gamma=0.1)
]
