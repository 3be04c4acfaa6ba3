# Balanced Group Softmax in every stage of the tiny CPU HTC (synthetic LVIS).
_base_ = '../lvis/htc-without-semantic_r18-tiny_fpn_12e_synthetic-lvis.py'

model = dict(
    roi_head=dict(bbox_head=[
        dict(
            head,
            type='BAGSBBoxHead',
            loss_cls=dict(
                type='GroupSoftmaxLoss',
                num_classes=_base_.num_classes,
                # 1..350 instances per class in the synthetic train sets:
                # these bounds put classes into all four groups
                group_bounds=(3, 8, 20)))
        for head in _base_.model.roi_head.bbox_head
    ]))
