# EQL together with repeat factor sampling (t = 5e-4), the "EQL + RFS"
# setting of the authors' release on LVIS v0.5 (detectron2's sampler, whose
# stochastic rounding of the repeat factors is RFSSampler's default).
_base_ = './mask-rcnn_r50_fpn_eql_ms-2x_lvis-v0.5.py'

train_dataloader = dict(
    sampler=dict(
        _delete_=True,
        type='RFSSampler',
        threshold=5e-4,
        rounding='stochastic'))
