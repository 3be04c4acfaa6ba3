# NorCal on the tiny Faster R-CNN (synthetic LVIS, CPU).
_base_ = '../lvis/faster-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py'

norcal_gamma = 0.6
model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                type='CalibratedCrossEntropyLoss',
                num_classes=_base_.num_classes,
                gamma=norcal_gamma,
                method='gamma'))))
