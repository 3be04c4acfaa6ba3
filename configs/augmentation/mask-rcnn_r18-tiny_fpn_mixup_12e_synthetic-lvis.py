# Mask R-CNN with MixUp (Zhang et al., "mixup: Beyond Empirical
# Risk Minimization", ICLR 2018; detection form of Zhang et al., "Bag of
# Freebies for Training Object Detection Neural Networks", 2019).
# Tiny (synthetic LVIS, CPU).
_base_ = '../lvis/mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py'

# MaskMixUp (mmdet's MixUp, with the masks mixed too) blends each image with
# another one (resized to img_scale x [0.8, 1.6], maybe flipped) at 0.5 / 0.5
# and keeps both images' instances
mixup_scale = (128, 128)
mixup_load_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=mixup_scale, keep_ratio=True),
]
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='MultiImageMixDataset',
        dataset=dict(_base_.train_dataloader.dataset,
                     pipeline=mixup_load_pipeline),
        pipeline=[
            dict(
                type='MaskMixUp',
                img_scale=mixup_scale,
                ratio_range=(0.8, 1.6),
                pad_val=114.0),
            dict(type='RandomFlip', prob=0.5),
            dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1)),
            dict(type='PackDetInputs')
        ]))
