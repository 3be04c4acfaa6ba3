# Inverse Image Frequency (IIF) in every stage of HTC without semantic branch:
# softmax cross-entropy of the logits scaled by w_c = ln(N / n_img,c)
# (background 1), the same scaling at test time. No re-sampling.
_base_ = [
    '../lvis/htc-without-semantic_r50_fpn_ms-1x_lvis-v1.py',
    './_base_/iif-cls-init.py'
]

model = dict(
    roi_head=dict(bbox_head=[
        dict(
            head,
            loss_cls=dict(
                type='IIFLoss',
                num_classes=_base_.num_classes),
            init_cfg=_base_.iif_bbox_head_init_cfg)
        for head in _base_.model.roi_head.bbox_head
    ]))
