# FRACAL: the tiny Faster R-CNN (synthetic LVIS, CPU) baseline re-scored at test time (no training change;
# a baseline checkpoint loads as is): softmax(z + b), divided by D_c ** lambda
# and renormalised. Change the settings at test time with --cfg-options
# model.roi_head.bbox_head.loss_cls.fractal_lambda=... (0 turns the fractal
# term off) or ...loss_cls.logit_adjustment=0 (no frequency term).
_base_ = '../lvis/faster-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py'

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
