# Focal-loss ATSS R50-FPN on LVIS v1 (RFS 1e-3, multi-scale, 2x): mmdet's
# ATSS moved towards EFL's "improved baseline": two square anchors per
# location (scales 6 and 8), top-18 candidates per level, classifier prior
# 0.001, NMS at IoU 0.5. Differences that remain are listed in README.md.
_base_ = [
    './retinanet_r50_fpn_rfs-1e-3_ms-2x_lvis-v1.py',
    './_base_/atss_from_retinanet.py'
]
model = dict(
    **_base_.atss_model,
    bbox_head={
        **_base_.atss_head,
        'anchor_generator':
        dict(
            _delete_=True,
            type='AnchorGenerator',
            ratios=[1.0],
            scales=[6, 8],
            strides=[8, 16, 32, 64, 128]),
        'init_cfg':
        dict(
            type='Normal',
            layer='Conv2d',
            std=0.01,
            override=dict(
                type='Normal', name='atss_cls', std=0.01, bias_prob=0.001))
    },
    train_cfg={
        **_base_.atss_train_cfg, 'assigner':
        dict(type='ATSSAssigner', topk=18)
    },
    test_cfg=dict(nms=dict(type='nms', iou_threshold=0.5)))
