# ECM in every stage of the tiny HTC without semantic branch (synthetic LVIS,
# CPU), with the authors' normalised linear classifier.
_base_ = '../lvis/htc-without-semantic_r18-tiny_fpn_12e_synthetic-lvis.py'

model = dict(
    roi_head=dict(bbox_head=[
        dict(
            head,
            loss_cls=dict(
                type='ECMLoss',
                num_classes=_base_.num_classes),
            cls_predictor_cfg=dict(type='NormedLinear', tempearture=20))
        for head in _base_.model.roi_head.bbox_head
    ]))
