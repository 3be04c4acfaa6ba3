# EQL together with repeat factor sampling (t = 5e-4), the "EQL + RFS"
# setting of the authors' release on LVIS v0.5 (detectron2's sampler, whose
# stochastic rounding of the repeat factors is RFSDataset's default).
_base_ = './mask-rcnn_r50_fpn_eql_ms-2x_lvis-v0.5.py'

train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='RFSDataset',
        threshold=5e-4,
        mode='stochastic',
        dataset=_base_.train_dataloader.dataset))
