# Pieces of a tiny ResNet-18 (16 base channels) FPN detector for CPU runs on
# the synthetic set. Configs merge `tiny_model` into a full model and use the
# channel widths below for their RoI heads.
tiny_channels = 32
tiny_fc_channels = 128
tiny_model = dict(
    backbone=dict(
        depth=18,
        base_channels=16,
        frozen_stages=-1,
        norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=tiny_channels),
    rpn_head=dict(
        in_channels=tiny_channels,
        feat_channels=tiny_channels,
        anchor_generator=dict(scales=[5])))
tiny_train_cfg = dict(
    rpn=dict(sampler=dict(num=128)),
    rpn_proposal=dict(nms_pre=600, max_per_img=300))
tiny_test_cfg = dict(
    rpn=dict(nms_pre=300, max_per_img=100),
    rcnn=dict(score_thr=0.0001, max_per_img=100))
