# HTC (without the semantic branch) R-50-FPN on LVIS v1 with repeat factor sampling, t = 1e-3 (LVIS paper,
# App. B.2): r(I) = max(1, max_c sqrt(t / f(c))), stochastic rounding
# redrawn every epoch (RFSSampler, seeded by (seed, epoch)).
_base_ = '../lvis/htc-without-semantic_r50_fpn_ms-1x_lvis-v1.py'

train_dataloader = dict(
    sampler=dict(_delete_=True, type='RFSSampler', threshold=1e-3))
