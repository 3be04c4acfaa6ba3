# mmdet's ATSS R50-FPN (mmdet::atss/atss_r50_fpn_1x_coco.py) as a diff over
# its RetinaNet: one square anchor per location, adaptive training sample
# selection, a GN head with a centerness branch and a GIoU box loss. A config
# that inherits a RetinaNet config and this file turns it into ATSS with
#   model = dict(**_base_.atss_model, bbox_head=_base_.atss_head,
#                train_cfg=_base_.atss_train_cfg, ...)
atss_model = dict(type='ATSS', neck=dict(add_extra_convs='on_output'))
atss_head = dict(
    type='ATSSHead',
    anchor_generator=dict(
        _delete_=True,
        type='AnchorGenerator',
        ratios=[1.0],
        octave_base_scale=8,
        scales_per_octave=1,
        strides=[8, 16, 32, 64, 128]),
    bbox_coder=dict(target_stds=[0.1, 0.1, 0.2, 0.2]),
    loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
    loss_centerness=dict(
        type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
    init_cfg=dict(
        type='Normal',
        layer='Conv2d',
        std=0.01,
        override=dict(type='Normal', name='atss_cls', std=0.01,
                      bias_prob=0.01)))
atss_train_cfg = dict(
    _delete_=True,
    assigner=dict(type='ATSSAssigner', topk=9),
    allowed_border=-1,
    pos_weight=-1,
    debug=False)
atss_nms = dict(type='nms', iou_threshold=0.6)
