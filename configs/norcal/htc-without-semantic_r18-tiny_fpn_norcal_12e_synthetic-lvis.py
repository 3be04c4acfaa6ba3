# NorCal on the tiny HTC without semantic branch (synthetic LVIS, CPU);
# the last stage is calibrated: model.roi_head.bbox_head.2.loss_cls.gamma=...
_base_ = '../lvis/htc-without-semantic_r18-tiny_fpn_12e_synthetic-lvis.py'

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
