# De-confound-TDE as the authors trained it on LVIS v1 (Tang et al., NeurIPS
# 2020): HTC without the semantic branch ("Cascade Mask R-CNN" in the paper),
# R101-FPN, no RFS, single-scale training, 20 epochs, batch 2 x 8 GPUs, SGD
# lr 0.02. TDE in every stage (averaged over stages at test), stock mask
# heads.
_base_ = [
    '../lvis/htc-without-semantic_r50_fpn_ms-1x_lvis-v1.py',
    './_base_/tde_head.py', './_base_/htc_r101_20e_single-scale.py'
]
model = dict(
    backbone=_base_.tde_htc_backbone,
    roi_head=dict(
        type='TDEHybridTaskCascadeRoIHead',
        bbox_head=[
            # the authors' moving-average momentum on LVIS v1
            dict(head, **_base_.tde_bbox_head, momentum=0.9998)
            for head in _base_.model.roi_head.bbox_head
        ]),
    # the authors' test threshold on v1
    test_cfg=dict(rcnn=dict(score_thr=1e-5)))

train_dataloader = dict(dataset=dict(pipeline=_base_.tde_htc_train_pipeline))
train_cfg = dict(max_epochs=_base_.tde_htc_max_epochs)
param_scheduler = _base_.tde_htc_param_scheduler
