# TDE (Tang et al., NeurIPS 2020) box-head settings, as the authors set them
# for every data set: the RoI feature and the class weights are split into
# K = 2 heads, logit scale tau = 16, gamma = 1/32 added to the weight norms;
# at test time alpha = 1.5 with background-exempted scoring. The moving-
# average momentum depends on the data set and is set by each config.
tde_bbox_head = dict(
    type='TDEBBoxHead',
    num_heads=2,
    tau=16.0,
    gamma=1 / 32,
    alpha=1.5,
    scoring='tde')
