# The published Seesaw setting with repeat factor sampling (mmdet's
# mask-rcnn_r50_fpn_seesaw-loss_sample1e-3-ms-2x_lvis-v1): t = 1e-3, repeat
# factors rounded up as mmengine's ClassBalancedDataset does.
_base_ = './mask-rcnn_r50_fpn_seesaw_ms-2x_lvis-v1.py'

train_dataloader = dict(
    sampler=dict(
        _delete_=True, type='RFSSampler', threshold=1e-3, rounding='ceil'))
