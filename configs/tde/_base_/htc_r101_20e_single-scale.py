# The training setting of the TDE authors' LVIS models (Tang et al., NeurIPS
# 2020, `configs/htc/htc_r101_fpn_20e_causal.py` in both their LVIS ports),
# as pieces the HTC configs put into a baseline: R101-FPN (torchvision
# weights), single-scale (1333, 800) training with flip, 20 epochs with the
# lr divided by 10 after epochs 16 and 19. The data are not re-sampled.
tde_htc_backbone = dict(
    depth=101,
    init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101'))
tde_htc_train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
tde_htc_max_epochs = 20
tde_htc_param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=tde_htc_max_epochs,
        by_epoch=True,
        milestones=[16, 19],
        gamma=0.1)
]
