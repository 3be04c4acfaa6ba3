# TDE on the tiny CPU Mask R-CNN (synthetic LVIS).
_base_ = [
    '../lvis/mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py', './_base_/tde_head.py'
]
model = dict(
    roi_head=dict(
        type='TDERoIHead',
        bbox_head=dict(**_base_.tde_bbox_head, momentum=0.9)))
