# NorCal: the Mask R-CNN baseline re-scored at test time (no training
# change; a baseline checkpoint loads as is). Tune gamma on val with
# tools/analysis_tools/sweep_scoring.py or --cfg-options
# model.roi_head.bbox_head.loss_cls.gamma=...
_base_ = '../lvis/mask-rcnn_r50_fpn_ms-1x_lvis-v1.py'

norcal_gamma = 0.6
model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                type='CalibratedCrossEntropyLoss',
                num_classes=_base_.num_classes,
                gamma=norcal_gamma,
                method='gamma'))))
