# Initialisation of a sigmoid RoI classifier (EQL, EQLv2): fc_cls weights
# Normal(0, 0.01) and bias -log((1 - p) / p) = -6.9068 for the prior
# p = 0.001 (the authors' PRIOR_PROB / bias_init_with_prob(0.001)), so every
# class starts at probability 0.001 instead of 0.5; the other layers keep
# the initialisation of mmdet's Shared2FCBBoxHead. A head's init_cfg
# replaces its default list, so the whole list is written out.
sigmoid_prior_prob = 0.001
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
