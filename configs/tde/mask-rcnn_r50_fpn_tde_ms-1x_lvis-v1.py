# De-confounded training + TDE inference (Tang et al., NeurIPS 2020) on the
# LVIS v1 Mask R-CNN baseline (no RFS).
_base_ = [
    '../lvis/mask-rcnn_r50_fpn_ms-1x_lvis-v1.py', './_base_/tde_head.py'
]
model = dict(
    roi_head=dict(
        type='TDERoIHead',
        # the authors' moving-average momentum on LVIS v1
        bbox_head=dict(**_base_.tde_bbox_head, momentum=0.9998)))
