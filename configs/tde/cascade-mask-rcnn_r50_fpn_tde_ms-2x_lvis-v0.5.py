# De-confounded training + TDE inference (Tang et al., NeurIPS 2020) in every
# stage of the LVIS v0.5 Cascade Mask R-CNN baseline (no RFS). At test time
# the stages' de-confounded and TDE logits are averaged and scored once.
_base_ = [
    '../lvis/cascade-mask-rcnn_r50_fpn_ms-2x_lvis-v0.5.py',
    './_base_/tde_head.py'
]
model = dict(
    roi_head=dict(
        type='TDECascadeRoIHead',
        bbox_head=[
            # the authors' moving-average momentum on LVIS v0.5
            dict(head, **_base_.tde_bbox_head, momentum=0.9)
            for head in _base_.model.roi_head.bbox_head
        ]))
