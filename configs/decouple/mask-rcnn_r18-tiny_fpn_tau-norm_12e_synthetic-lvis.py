# tau-normalisation of the tiny Mask R-CNN at test time (synthetic LVIS).
_base_ = '../lvis/mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            cls_predictor_cfg=dict(type='TauNormLinear', tau=1.0))))
