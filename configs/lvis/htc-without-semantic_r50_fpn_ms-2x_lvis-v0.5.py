_base_ = [
    '../_base_/models/htc-without-semantic_r50_fpn.py',
    '../_base_/datasets/lvis_v0.5_instance.py',
    'mmdet::_base_/schedules/schedule_2x.py', '../_base_/default_runtime.py'
]
model = dict(
    roi_head=dict(
        bbox_head=[
            dict(head, num_classes=_base_.num_classes)
            for head in _base_.model.roi_head.bbox_head
        ],
        mask_head=[
            dict(head, num_classes=_base_.num_classes)
            for head in _base_.model.roi_head.mask_head
        ]),
    # LVIS allows up to 300 detections per image
    test_cfg=dict(rcnn=dict(score_thr=0.0001, max_per_img=300)))
