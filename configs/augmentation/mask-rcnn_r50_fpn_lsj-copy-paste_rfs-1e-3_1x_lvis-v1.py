# Large-scale jitter and CopyPaste with repeat factor sampling (t = 1e-3).
_base_ = './mask-rcnn_r50_fpn_lsj-copy-paste_1x_lvis-v1.py'

train_dataloader = dict(
    sampler=dict(_delete_=True, type='RFSSampler', threshold=1e-3))
