# Equalization Loss (EQL) in every stage: sigmoid classifiers over the 1230
# classes whose tail classes (training image frequency < lambda; 915
# classes) are not suppressed by the other classes' foreground RoIs. The
# test scores are the stage-averaged logits through EQL's sigmoid.
_base_ = [
    '../lvis/cascade-mask-rcnn_r50_fpn_ms-2x_lvis-v0.5.py',
    './_base_/sigmoid-cls-init.py'
]

eql_lambda = 1.76e-3
eql_loss = dict(
    type='EQLoss', num_classes=_base_.num_classes, lambda_threshold=eql_lambda)
model = dict(
    roi_head=dict(bbox_head=[
        dict(
            head,
            loss_cls=eql_loss,
            init_cfg=_base_.sigmoid_bbox_head_init_cfg)
        for head in _base_.model.roi_head.bbox_head
    ]))
