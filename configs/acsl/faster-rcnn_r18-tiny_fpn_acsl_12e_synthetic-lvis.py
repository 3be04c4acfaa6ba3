# Adaptive Class Suppression Loss (ACSL, Wang et al., CVPR 2021): C sigmoid
# logits; a foreground RoI suppresses only the classes whose probability
# reaches xi = 0.7, a background RoI the rare / common / frequent classes with
# probability 0.01 / 0.1 / 1 (the authors' code); classifier prior 0.01.
# Trained end to end (the authors fine-tune the classifier of a baseline).
_base_ = [
    '../lvis/faster-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py',
    '../reweighting/_base_/sigmoid-cls-init.py'
]

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='ACSLoss',
                num_classes=_base_.num_classes,
                score_thr=0.7),
            init_cfg=_base_.sigmoid_bbox_head_init_cfg)))
