# FRACAL: the tiny Cascade Mask R-CNN (synthetic LVIS, CPU) baseline re-scored at test time (no training change).
# The final scores are the stage-averaged logits through the last stage's
# activation, so only that stage carries FRACAL:
# --cfg-options model.roi_head.bbox_head.2.loss_cls.fractal_lambda=...
_base_ = '../lvis/cascade-mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py'

fracal_lambda = 2.0
fracal_logit_adjustment = 1.0
last = _base_.model.roi_head.bbox_head[-1]
model = dict(
    roi_head=dict(bbox_head=[
        *_base_.model.roi_head.bbox_head[:-1],
        dict(
            last,
            loss_cls=dict(
                last['loss_cls'],
                type='FRACALLoss',
                num_classes=_base_.num_classes,
                fractal_lambda=fracal_lambda,
                logit_adjustment=fracal_logit_adjustment))
    ]))
