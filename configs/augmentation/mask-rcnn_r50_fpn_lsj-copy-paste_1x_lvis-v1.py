# Mask R-CNN with large-scale jitter and mmdet's CopyPaste (Ghiasi et al.,
# "Simple Copy-Paste is a Strong Data Augmentation Method for Instance
# Segmentation", CVPR 2021) on the baseline's schedule.
_base_ = '../lvis/mask-rcnn_r50_fpn_ms-1x_lvis-v1.py'

# large-scale jitter (Ghiasi et al.): resize to image_size x [0.1, 2.0],
# crop / pad to image_size, then paste the objects of another image
image_size = (1024, 1024)
lsj_load_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='RandomResize',
        scale=image_size,
        ratio_range=(0.1, 2.0),
        keep_ratio=True),
    dict(
        type='RandomCrop',
        crop_type='absolute_range',
        crop_size=image_size,
        recompute_bbox=True,
        allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Pad', size=image_size),
]
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='MultiImageMixDataset',
        dataset=dict(_base_.train_dataloader.dataset,
                     pipeline=lsj_load_pipeline),
        pipeline=[
            dict(type='CopyPaste', max_num_pasted=100),
            dict(type='PackDetInputs')
        ]))
