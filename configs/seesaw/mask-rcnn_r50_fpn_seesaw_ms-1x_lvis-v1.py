# Seesaw Loss (mmdet's SeesawLoss) with a normalised linear classifier,
# as mmdet's Seesaw configs build it: C class logits and two objectness
# logits, mitigation p = 0.8, compensation q = 2.0, cosine classifier with
# scale 20. The sampler and schedule are those of the baseline.
_base_ = '../lvis/mask-rcnn_r50_fpn_ms-1x_lvis-v1.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            cls_predictor_cfg=dict(type='NormedLinear', tempearture=20),
            loss_cls=dict(
                _delete_=True,
                type='SeesawLoss',
                p=0.8,
                q=2.0,
                num_classes=_base_.num_classes,
                loss_weight=1.0))))
