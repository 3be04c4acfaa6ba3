# Equalized Focal Loss (EFL) in ATSS R50-FPN on LVIS v1 (RFS 1e-3,
# multi-scale, 2x): the focal-loss baseline with EFL as the classifier loss.
_base_ = './atss_r50_fpn_rfs-1e-3_ms-2x_lvis-v1.py'
model = dict(
    bbox_head=dict(
        loss_cls=dict(
            _delete_=True,
            type='EFL',
            use_sigmoid=True,  # the head reads it: C logits, sigmoid scores
            num_classes=_base_.num_classes,
            gamma_b=2.0,
            scale_factor=8.0,
            alpha=0.25,
            loss_weight=1.0)))
