# Initialisation of a sigmoid RoI classifier with C outputs (class-balanced
# sigmoid CE, ACSL): fc_cls weights Normal(0, 0.01) and bias
# -log((1 - p) / p) = -4.5951 for the prior p = 0.01 (Cui et al. and the
# ACSL authors initialise the sigmoid bias to a small prior so that the
# start is not dominated by the negatives); the other layers keep the
# initialisation of mmdet's Shared2FCBBoxHead. A head's init_cfg replaces
# its default list, so the whole list is written out.
sigmoid_prior_prob = 0.01
sigmoid_bbox_head_init_cfg = [
    dict(
        type='Normal',
        std=0.01,
        bias_prob=sigmoid_prior_prob,
        override=dict(name='fc_cls')),
    dict(type='Normal', std=0.001, override=dict(name='fc_reg')),
    dict(
        type='Xavier',
        distribution='uniform',
        override=[
            dict(name='shared_fcs'),
            dict(name='cls_fcs'),
            dict(name='reg_fcs')
        ])
]
