# Cost-sensitive softmax CE: RoIs of class c weighted by n_min / n_c
# (n_c = training instances); background 1. On LVIS v1 n_min = 1, so this is
# the degenerate inverse-frequency baseline. No re-sampling.
_base_ = '../lvis/mask-rcnn_r50_fpn_ms-1x_lvis-v1.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='ReweightedCrossEntropyLoss',
                num_classes=_base_.num_classes,
                weighting='cost_sensitive'))))
