# ECM in the tiny Mask R-CNN (synthetic LVIS, CPU), with the authors'
# normalised linear classifier.
_base_ = '../lvis/mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='ECMLoss',
                num_classes=_base_.num_classes),
            cls_predictor_cfg=dict(type='NormedLinear', tempearture=20))))
