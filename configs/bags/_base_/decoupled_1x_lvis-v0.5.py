# The BAGS authors' LVIS v0.5 classifier training (Li et al., CVPR 2020,
# `configs/bags/gs_*_1x_lvis_with0_bg8.py`), as pieces the decoupled v0.5
# configs put into their baseline: SGD lr 0.01 at batch 16 with the gradient
# norm clipped at 35; a 500-iteration linear warm-up from lr / 3; 12 epochs
# with the lr divided by 10 after epochs 8 and 11. The configs also train
# single-scale with flip (the dataset base's `single_scale_train_pipeline`)
# and test with the authors' score thresholds: 0.0 for Faster R-CNN, 0.001
# for the mask models (the baselines' 1e-4 is mmdet's LVIS default).
bags_v05_optim_wrapper = dict(
    optimizer=dict(lr=0.01), clip_grad=dict(max_norm=35, norm_type=2))
bags_v05_max_epochs = 12
bags_v05_param_scheduler = [
    dict(
        type='LinearLR', start_factor=1 / 3, by_epoch=False, begin=0,
        end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=bags_v05_max_epochs,
        by_epoch=True,
        milestones=[8, 11],
        gamma=0.1)
]
bags_v05_faster_score_thr = 0.0
bags_v05_mask_score_thr = 0.001
