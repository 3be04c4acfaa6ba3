# Equalization Loss (EQL): sigmoid classifier over the 1230 classes whose
# tail classes (training image frequency < lambda; 915 classes) are not
# suppressed by the other classes' foreground RoIs. No re-sampling.
_base_ = [
    '../lvis/faster-rcnn_r50_fpn_ms-2x_lvis-v0.5.py',
    './_base_/sigmoid-cls-init.py'
]

eql_lambda = 1.76e-3
model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='EQLoss',
                num_classes=_base_.num_classes,
                lambda_threshold=eql_lambda),
            init_cfg=_base_.sigmoid_bbox_head_init_cfg)))
