# Tiny large-scale jitter and CopyPaste with RFS; t = 0.08 plays the role
# of LVIS's 1e-3 (configs/rfs/).
_base_ = './mask-rcnn_r18-tiny_fpn_lsj-copy-paste_12e_synthetic-lvis.py'

train_dataloader = dict(
    sampler=dict(_delete_=True, type='RFSSampler', threshold=0.08))
