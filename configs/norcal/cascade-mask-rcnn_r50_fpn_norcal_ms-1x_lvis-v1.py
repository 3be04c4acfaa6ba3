# NorCal on the Cascade Mask R-CNN baseline. The final scores are the
# stage-averaged logits through the *last* stage's loss_cls, so only that
# stage is calibrated and one key changes gamma:
#   --cfg-options model.roi_head.bbox_head.2.loss_cls.gamma=...
_base_ = '../lvis/cascade-mask-rcnn_r50_fpn_ms-1x_lvis-v1.py'

norcal_gamma = 0.6
model = dict(
    roi_head=dict(bbox_head=[
        *_base_.model.roi_head.bbox_head[:-1],
        dict(
            _base_.model.roi_head.bbox_head[-1],
            loss_cls=dict(
                _base_.model.roi_head.bbox_head[-1].loss_cls,
                type='CalibratedCrossEntropyLoss',
                num_classes=_base_.num_classes,
                gamma=norcal_gamma,
                method='gamma'))
    ]))
