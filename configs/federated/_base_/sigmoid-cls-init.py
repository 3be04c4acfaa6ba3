# Initialisation of the federated loss's sigmoid RoI classifier: fc_cls
# weights Normal(0, 0.01) and bias -log((1 - p) / p) = -4.595 for the prior
# p = 0.01 (CenterNet2's ROI_BOX_HEAD.PRIOR_PROB for its sigmoid box head),
# so every class starts at probability 0.01 instead of 0.5; the other layers
# keep the initialisation of mmdet's Shared2FCBBoxHead. A head's init_cfg
# replaces its default list, so the whole list is written out.
federated_prior_prob = 0.01
federated_bbox_head_init_cfg = [
    dict(
        type='Normal',
        std=0.01,
        bias_prob=federated_prior_prob,
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
