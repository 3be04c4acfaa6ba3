# Tiny RetinaNet for CPU runs on the synthetic long-tailed LVIS set.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    '../_base_/models/tiny-r18_fpn.py',
    '../_base_/datasets/synthetic_lvis_instance.py',
    '../_base_/schedules/schedule_synthetic.py',
    '../_base_/synthetic_runtime.py'
]
model = dict(
    backbone=_base_.tiny_model.backbone,
    neck=_base_.tiny_model.neck,
    bbox_head=dict(
        num_classes=_base_.num_classes,
        in_channels=_base_.tiny_channels,
        feat_channels=_base_.tiny_channels),
    test_cfg=dict(score_thr=0.0001, max_per_img=100))
val_evaluator = dict(metric='bbox')
test_evaluator = val_evaluator
