# Seesaw with repeat factor sampling and a normalised mask predictor as well
# (mmdet's mask-rcnn_r50_fpn_seesaw-loss-normed-mask_sample1e-3-ms-2x_lvis-v1).
_base_ = './mask-rcnn_r50_fpn_seesaw_rfs-1e-3_ms-2x_lvis-v1.py'

model = dict(
    roi_head=dict(
        mask_head=dict(
            predictor_cfg=dict(type='NormedConv2d', tempearture=20))))
