# Repeat factor sampling on the tiny Mask R-CNN (synthetic LVIS, CPU).
# t = 0.08 plays the role of LVIS's 1e-3: on LVIS v1, f(c) < 1e-3 means fewer
# than ~100 of 99k images, i.e. the rare and common classes; the synthetic
# set's common/frequent boundary is 8% of its images (common_fraction), and
# with t = 1e-3 no synthetic class would be repeated.
_base_ = '../lvis/mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py'

train_dataloader = dict(
    sampler=dict(_delete_=True, type='RFSSampler', threshold=0.08))
