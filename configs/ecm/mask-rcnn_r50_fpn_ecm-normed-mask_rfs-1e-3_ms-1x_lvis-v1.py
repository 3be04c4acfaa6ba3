# The ECM authors' recipe (ECM-Loss, configs/effective_class_margin_loss/
# r50_ecm_1x.py and r50_ecm_2x.py) on top of the ECM loss and the normalised
# linear classifier: a normalised mask predictor (temperature 20), repeat
# factor sampling t = 1e-3 with repeat factors rounded up (mmdet 2's
# ClassBalancedDataset of its LVIS data set config), gradient clipping at L2
# norm 5 and a 10,000-iteration linear warm-up from 1e-4; 12 epochs with
# steps at 8, 11.
_base_ = './mask-rcnn_r50_fpn_ecm_ms-1x_lvis-v1.py'

model = dict(
    roi_head=dict(
        mask_head=dict(
            predictor_cfg=dict(type='NormedConv2d', tempearture=20))))
train_dataloader = dict(
    sampler=dict(
        _delete_=True, type='RFSSampler', threshold=1e-3, rounding='ceil'))
optim_wrapper = dict(clip_grad=dict(max_norm=5, norm_type=2))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-4,
        by_epoch=False,
        begin=0,
        end=10000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[8, 11],
        gamma=0.1)
]
