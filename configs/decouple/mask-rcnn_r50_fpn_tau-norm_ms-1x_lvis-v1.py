# tau-normalisation (Kang et al., ICLR 2020) of the Mask R-CNN baseline at
# test time: w_c / ||w_c||^tau for the foreground rows of fc_cls, background
# row and bias kept. The baseline checkpoint loads as is; tools/
# model_converters/tau_norm.py writes the same weights into a checkpoint.
_base_ = '../lvis/mask-rcnn_r50_fpn_ms-1x_lvis-v1.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            cls_predictor_cfg=dict(type='TauNormLinear', tau=1.0))))
