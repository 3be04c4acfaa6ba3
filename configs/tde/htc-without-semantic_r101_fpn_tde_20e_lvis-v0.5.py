# De-confound-TDE as the authors trained it on LVIS v0.5 (Tang et al.,
# NeurIPS 2020): the v1 setting (HTC without semantic branch, R101-FPN, no
# RFS, single-scale, 20 epochs) with the v0.5 moving-average momentum 0.9,
# gradient clipping at 35, a 500-iteration warm-up from lr / 3 and test
# score threshold 0.
_base_ = [
    '../lvis/htc-without-semantic_r50_fpn_ms-2x_lvis-v0.5.py',
    './_base_/tde_head.py', './_base_/htc_r101_20e_single-scale.py'
]
model = dict(
    backbone=_base_.tde_htc_backbone,
    roi_head=dict(
        type='TDEHybridTaskCascadeRoIHead',
        bbox_head=[
            # the authors' moving-average momentum on LVIS v0.5
            dict(head, **_base_.tde_bbox_head, momentum=0.9)
            for head in _base_.model.roi_head.bbox_head
        ]),
    test_cfg=dict(rcnn=dict(score_thr=0.0)))

train_dataloader = dict(dataset=dict(pipeline=_base_.tde_htc_train_pipeline))
train_cfg = dict(max_epochs=_base_.tde_htc_max_epochs)
param_scheduler = [
    dict(_base_.tde_htc_param_scheduler[0], start_factor=1 / 3),
    _base_.tde_htc_param_scheduler[1]
]
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
