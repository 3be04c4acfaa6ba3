# Effective Class-Margin loss (ECM) in every stage of HTC without semantic
# branch: C + 1 sigmoid logits with fixed margins and weights from the train
# image counts, the authors' normalised linear classifier (temperature 20). No
# re-sampling.
_base_ = '../lvis/htc-without-semantic_r50_fpn_ms-2x_lvis-v0.5.py'

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
