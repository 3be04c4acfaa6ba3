# FRACAL with the authors' training recipe for its baseline (kostas1515/FRACAL,
# r50_rfs_cos_lr_norm_4x4_2x_softmax_carafe): 24 epochs, repeat factor
# sampling (t = 1e-3), a normalised linear classifier (temperature 20) and a
# normalised mask predictor. Not reproduced here: the authors' CARAFE mask
# upsampling, learnable mask temperature, cosine schedule and fp16.
_base_ = './mask-rcnn_r50_fpn_fracal_ms-1x_lvis-v1.py'

max_epochs = 24
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[16, 22],
        gamma=0.1)
]
# the authors' mmdet 3 fork samples with mmengine's ClassBalancedDataset,
# which rounds repeat factors up
train_dataloader = dict(
    sampler=dict(
        _delete_=True, type='RFSSampler', threshold=1e-3, rounding='ceil'))
model = dict(
    roi_head=dict(
        bbox_head=dict(
            cls_predictor_cfg=dict(type='NormedLinear', tempearture=20)),
        mask_head=dict(
            predictor_cfg=dict(type='NormedConv2d', tempearture=20))))
