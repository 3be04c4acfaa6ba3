# NorCal on a Mask R-CNN trained with repeat factor sampling (t = 1e-3), the
# "NorCal w/ RFS" setting. NorCal itself changes only the test-time scores;
# the RFS sampler below describes how the baseline checkpoint was trained.
_base_ = './mask-rcnn_r50_fpn_norcal_ms-1x_lvis-v1.py'

train_dataloader = dict(
    sampler=dict(_delete_=True, type='RFSSampler', threshold=1e-3))
