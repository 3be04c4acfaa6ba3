# Initialisation of the Gumbel classifier as the authors': fc_cls weights
# constant 0.001 and bias -2, so every class starts at
# exp(-exp(2)) = 6.2e-4; the other layers keep the initialisation of
# mmdet's Shared2FCBBoxHead. A head's init_cfg replaces its default list, so
# the whole list is written out.
gumbel_bbox_head_init_cfg = [
    dict(type='Constant', val=0.001, bias=-2, override=dict(name='fc_cls')),
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
