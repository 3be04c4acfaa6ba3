# Seesaw Loss (mmdet's SeesawLoss) with a normalised linear classifier in
# every stage, as mmdet's Seesaw configs build it: C class logits and two
# objectness logits, p = 0.8, q = 2.0, cosine classifier with scale 20.
# Each stage's loss counts the samples of its own stage.
_base_ = '../lvis/cascade-mask-rcnn_r50_fpn_ms-1x_lvis-v1.py'

seesaw_loss = dict(
    type='SeesawLoss',
    p=0.8,
    q=2.0,
    num_classes=_base_.num_classes,
    loss_weight=1.0)
model = dict(
    roi_head=dict(bbox_head=[
        dict(
            head,
            cls_predictor_cfg=dict(type='NormedLinear', tempearture=20),
            loss_cls=seesaw_loss) for head in _base_.model.roi_head.bbox_head
    ]))
