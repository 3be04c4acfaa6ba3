# cRT (classifier re-training; Kang et al., ICLR 2020) on the Mask R-CNN
# baseline: re-initialise fc_cls and train it alone with class-aware sampling
# for 75k iterations, everything else frozen (the LVIS recipe of the eqlv2
# code base). Make the checkpoint (baseline without fc_cls) with:
#   python tools/model_converters/reset_classifier.py \
#       work_dirs/mask-rcnn_r50_fpn_ms-1x_lvis-v1/epoch_12.pth \
#       work_dirs/mask-rcnn_r50_fpn_ms-1x_lvis-v1/crt_init.pth
_base_ = '../lvis/mask-rcnn_r50_fpn_ms-1x_lvis-v1.py'

load_from = 'work_dirs/mask-rcnn_r50_fpn_ms-1x_lvis-v1/crt_init.pth'
# class-aware sampling: draw a class uniformly, then an image of that class
train_dataloader = dict(
    sampler=dict(_delete_=True, type='LongTailClassAwareSampler', seed=0))
custom_hooks = _base_.custom_hooks + [
    dict(type='FreezeExceptHook', trainable=[r'bbox_head\.fc_cls\.'])
]
# parameters are frozen after the DDP wrap, so DDP must expect unused ones
model_wrapper_cfg = dict(
    type='MMDistributedDataParallel', find_unused_parameters=True)

# published schedule: 75k iterations at batch 16 (8 GPUs x 2), SGD lr 0.02,
# x0.1 at 50k and 70k, 500-iteration linear warm-up from 0.001
max_iters = 75000
train_cfg = dict(
    _delete_=True,
    type='IterBasedTrainLoop',
    max_iters=max_iters,
    val_interval=max_iters)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
        end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_iters,
        by_epoch=False,
        milestones=[50000, 70000],
        gamma=0.1)
]
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=5000))
log_processor = dict(by_epoch=False)
