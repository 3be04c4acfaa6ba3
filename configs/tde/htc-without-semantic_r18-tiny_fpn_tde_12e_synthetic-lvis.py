# TDE in every stage of the tiny CPU HTC without semantic branch (synthetic
# LVIS).
_base_ = [
    '../lvis/htc-without-semantic_r18-tiny_fpn_12e_synthetic-lvis.py',
    './_base_/tde_head.py'
]
model = dict(
    roi_head=dict(
        type='TDEHybridTaskCascadeRoIHead',
        bbox_head=[
            dict(head, **_base_.tde_bbox_head, momentum=0.9)
            for head in _base_.model.roi_head.bbox_head
        ]))
