# The authors' GOL setting on LVIS v0.5: Gumbel activation with the drop
# loss (lambda = 1.76e-3, EQL's v0.5 tail set of the 915 rare and common
# classes), repeat factor sampling (t = 1e-3, repeat factors rounded up), a
# normalised mask predictor, NMS IoU 0.3 and 24 epochs (steps at 16 and 22,
# as the v0.5 baseline).
_base_ = './mask-rcnn_r50_fpn_gol_ms-2x_lvis-v0.5.py'

model = dict(
    roi_head=dict(
        mask_head=dict(
            predictor_cfg=dict(type='NormedConv2d', tempearture=20))),
    test_cfg=dict(rcnn=dict(nms=dict(iou_threshold=0.3))))
train_dataloader = dict(
    sampler=dict(
        _delete_=True, type='RFSSampler', threshold=1e-3, rounding='ceil'))
