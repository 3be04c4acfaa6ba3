# Equalization Loss v2 (EQLv2) in every stage of the HTC (no semantic branch)
# on LVIS v1 (no re-sampling). Each stage's loss keeps its own gradient
# statistics; the test scores are the stage-averaged logits through EQLv2's
# sigmoid(z_c) * (1 - sigmoid(z_bg)).
_base_ = [
    '../lvis/htc-without-semantic_r50_fpn_ms-1x_lvis-v1.py',
    '../eql/_base_/sigmoid-cls-init.py'
]

eqlv2_loss = dict(
    type='EQLv2',
    num_classes=_base_.num_classes,
    gamma=12.0,
    mu=0.8,
    alpha=4.0)
model = dict(
    roi_head=dict(bbox_head=[
        dict(
            head,
            loss_cls=eqlv2_loss,
            init_cfg=_base_.sigmoid_bbox_head_init_cfg)
        for head in _base_.model.roi_head.bbox_head
    ]))
