# Tiny ATSS with Equalized Focal Loss for CPU runs on the synthetic set.
_base_ = '../lvis/atss_r18-tiny_fpn_12e_synthetic-lvis.py'
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
