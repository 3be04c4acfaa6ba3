# Balanced Group Softmax, the published (decoupled) recipe: load a trained
# baseline, re-initialise the classifier with the BAGS layout and train only
# fc_cls (of every stage in Cascade / HTC) for 12 epochs, the rest frozen.
# Make the checkpoint with:
#   python tools/model_converters/bags_convert.py \
#       work_dirs/faster-rcnn_r50_fpn_ms-2x_lvis-v0.5/epoch_24.pth \
#       work_dirs/faster-rcnn_r50_fpn_ms-2x_lvis-v0.5/bags_init.pth
_base_ = [
    './faster-rcnn_r50_fpn_bags_ms-2x_lvis-v0.5.py',
    './_base_/decoupled_1x_lvis-v0.5.py'
]

load_from = 'work_dirs/faster-rcnn_r50_fpn_ms-2x_lvis-v0.5/bags_init.pth'
custom_hooks = _base_.custom_hooks + [
    dict(type='FreezeExceptHook', trainable=[r'bbox_head(\.\d+)?\.fc_cls\.'])
]
# parameters are frozen after the DDP wrap, so DDP must expect unused ones
model_wrapper_cfg = dict(
    type='MMDistributedDataParallel', find_unused_parameters=True)
# the authors' v0.5 recipe (single-scale, lr 0.01, gradient clip 35, warm-up
# from lr / 3, 12 epochs, the authors' test score threshold; the baseline's
# own schedule is 2x multi-scale)
train_dataloader = dict(
    dataset=dict(pipeline=_base_.single_scale_train_pipeline))
optim_wrapper = _base_.bags_v05_optim_wrapper
train_cfg = dict(max_epochs=_base_.bags_v05_max_epochs)
param_scheduler = _base_.bags_v05_param_scheduler
model = dict(
    test_cfg=dict(rcnn=dict(score_thr=_base_.bags_v05_faster_score_thr)))
