# Balanced Group Softmax, the published (decoupled) recipe: load a trained
# baseline, re-initialise the classifier with the BAGS layout and train only
# fc_cls (of every stage in Cascade / HTC) for 12 epochs, the rest frozen.
# Make the checkpoint with:
#   python tools/model_converters/bags_convert.py \
#       work_dirs/faster-rcnn_r50_fpn_ms-1x_lvis-v1/epoch_12.pth \
#       work_dirs/faster-rcnn_r50_fpn_ms-1x_lvis-v1/bags_init.pth
_base_ = './faster-rcnn_r50_fpn_bags_ms-1x_lvis-v1.py'

load_from = 'work_dirs/faster-rcnn_r50_fpn_ms-1x_lvis-v1/bags_init.pth'
custom_hooks = _base_.custom_hooks + [
    dict(type='FreezeExceptHook', trainable=[r'bbox_head(\.\d+)?\.fc_cls\.'])
]
# parameters are frozen after the DDP wrap, so DDP must expect unused ones
model_wrapper_cfg = dict(
    type='MMDistributedDataParallel', find_unused_parameters=True)
# lr 0.02 at batch 16 (the eqlv2 code base's BAGS on LVIS v1, behind the
# published 23.1 mask AP), not the 0.01 of the authors' v0.5 recipe
optim_wrapper = dict(optimizer=dict(lr=0.02))
