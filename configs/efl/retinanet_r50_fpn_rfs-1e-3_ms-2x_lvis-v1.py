# Focal-loss RetinaNet R50-FPN on LVIS v1, the baseline of the EFL configs:
# repeat factor sampling (t = 1e-3, ceil), multi-scale (1333, 640..800)
# training, 2x schedule, box-only pipelines, and EFL's optimisation settings
# (lr 0.02 for 16 images, gradient clipping at 35, one-epoch linear warm-up).
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    '../_base_/datasets/lvis_v1_instance.py',
    'mmdet::_base_/schedules/schedule_2x.py', '../_base_/default_runtime.py'
]
model = dict(
    bbox_head=dict(num_classes=_base_.num_classes),
    # LVIS: low score threshold, up to 300 detections per image
    test_cfg=dict(score_thr=0.0001, max_per_img=300))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='RandomChoiceResize',
        scales=[(1333, 640), (1333, 672), (1333, 704), (1333, 736),
                (1333, 768), (1333, 800)],
        keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    dataset=dict(pipeline=train_pipeline),
    sampler=dict(
        _delete_=True, type='RFSSampler', threshold=1e-3,
        rounding='ceil'))  # EFL's code rounds repeat factors up
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(metric='bbox')
test_evaluator = val_evaluator

param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.001,
        by_epoch=True,
        begin=0,
        end=1,
        convert_to_iter_based=True),
    dict(
        type='MultiStepLR',
        begin=0,
        end=24,
        by_epoch=True,
        milestones=[16, 22],
        gamma=0.1)
]
optim_wrapper = dict(
    optimizer=dict(lr=0.02), clip_grad=dict(max_norm=35, norm_type=2))
