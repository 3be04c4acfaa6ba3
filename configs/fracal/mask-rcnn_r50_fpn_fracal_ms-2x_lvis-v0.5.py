# FRACAL: the Mask R-CNN baseline re-scored at test time (no training change;
# a baseline checkpoint loads as is): softmax(z + b), divided by D_c ** lambda
# and renormalised. Change the settings at test time with --cfg-options
# model.roi_head.bbox_head.loss_cls.fractal_lambda=... (0 turns the fractal
# term off) or ...loss_cls.logit_adjustment=0 (no frequency term).
_base_ = '../lvis/mask-rcnn_r50_fpn_ms-2x_lvis-v0.5.py'

fracal_lambda = 2.0
fracal_logit_adjustment = 1.0
model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                type='FRACALLoss',
                num_classes=_base_.num_classes,
                fractal_lambda=fracal_lambda,
                logit_adjustment=fracal_logit_adjustment))))
