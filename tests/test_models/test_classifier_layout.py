"""ClassifierLayout: every classifier kind says which output is which class,
the background, the groups and the extra rows. Each layout is worked out by
hand for C = 5 classes and compared with what the head (or its loss)
answers; the checkpoint helpers check weights against it."""
import pytest
import torch
from mmengine.config import Config

import mmdet_longtail  # noqa: F401
from mmdet.registry import MODELS
from mmdet_longtail.datasets.class_stats import ClassStatistics
from mmdet_longtail.models.checkpoint_classifiers import (
    checkpoint_config, classifier_layouts, owner_layout)
from mmdet_longtail.models.layers import ClassifierLayout, classifier_layout

C = 5
COUNTS = [5, 50, 500, 5000, 20]  # BAGS groups [1,10) [10,100) [100,1000) ...
BAGS_COUNTS = dict(image_count=COUNTS, instance_count=COUNTS)


def box_head(loss_cls=None, **kwargs):
    cfg = dict(
        type='Shared2FCBBoxHead',
        num_classes=C,
        in_channels=4,
        fc_out_channels=8,
        roi_feat_size=2)
    if loss_cls is not None:
        cfg['loss_cls'] = loss_cls
    cfg.update(kwargs)
    return MODELS.build(cfg)


SOFTMAX = ClassifierLayout('softmax', 6, (0, 1, 2, 3, 4), background_row=5)
SIGMOID_WITH_BACKGROUND = ClassifierLayout(
    'sigmoid', 6, (0, 1, 2, 3, 4), background_row=5)
SIGMOID = ClassifierLayout('sigmoid', 5, (0, 1, 2, 3, 4))
# groups by instance count: G0 {c0}, G1 {c1, c4}, G2 {c2}, G3 {c3}, each
# [others, classes ascending], then the background group [any fg, bg]:
#   row  0    1    2    3    4    5    6    7    8    9    10
#      oth0  c0  oth1  c1   c4  oth2  c2  oth3  c3  fg   bg
BAGS = ClassifierLayout(
    'bags',
    11, (1, 3, 6, 8, 4),
    background_row=10,
    groups=((0, 1), (2, 3, 4), (5, 6), (7, 8), (9, 10)),
    extra_rows=((0, 'others of group 0'), (2, 'others of group 1'),
                (5, 'others of group 2'), (7, 'others of group 3'),
                (9, 'background group: any foreground')))
# Seesaw: C class logits, then objectness [foreground, background]
SEESAW = ClassifierLayout(
    'seesaw',
    7, (0, 1, 2, 3, 4),
    background_row=6,
    groups=((0, 1, 2, 3, 4), (5, 6)),
    extra_rows=((5, 'objectness: foreground'), ))


@pytest.mark.parametrize(
    'loss_cls, expected',
    [
        (None, SOFTMAX),  # CrossEntropyLoss, softmax
        (dict(type='CrossEntropyLoss', use_sigmoid=True),
         SIGMOID_WITH_BACKGROUND),
        (dict(type='EQLoss', num_classes=C, lambda_threshold=1e-3,
              class_statistics=dict(image_count=[1] * C, num_images=10)), SIGMOID),
        (dict(type='EQLv2', num_classes=C), SIGMOID_WITH_BACKGROUND),
        (dict(type='CalibratedCrossEntropyLoss', num_classes=C,
              class_statistics=ClassStatistics.from_counts([1, 2, 3, 4, 5]),
              gamma=0.5), SOFTMAX),
        (dict(type='GroupSoftmaxLoss', num_classes=C,
              class_statistics=BAGS_COUNTS), BAGS),
        (dict(type='SeesawLoss', num_classes=C), SEESAW),
        (dict(type='FederatedLoss', num_classes=C,
              class_statistics=dict(image_count=[1] * C)), SIGMOID),
        (dict(type='FRACALLoss', num_classes=C,
              class_statistics=ClassStatistics.from_counts([1, 2, 3, 4, 5]),
              fractal_dimensions=[1.0, 1.2, 1.4, 1.6, 1.8]), SOFTMAX),
        (dict(type='FRACALLoss', num_classes=C, use_sigmoid=True,
              class_statistics=ClassStatistics.from_counts([1, 2, 3, 4, 5]),
              fractal_dimensions=[1.0, 1.2, 1.4, 1.6, 1.8]), SIGMOID),
        (dict(type='IIFLoss', num_classes=C,
              class_statistics=dict(image_count=COUNTS, num_images=5000)),
         SOFTMAX),
        (dict(type='ECMLoss', num_classes=C,
              class_statistics=dict(image_count=COUNTS)),
         SIGMOID_WITH_BACKGROUND),
        (dict(type='GOLoss', num_classes=C,
              class_statistics=dict(image_count=COUNTS)), SIGMOID),
        (dict(type='ReweightedCrossEntropyLoss', num_classes=C,
              class_statistics=ClassStatistics.from_counts([1, 2, 3, 4, 5])),
         SOFTMAX),
        (dict(type='ReweightedCrossEntropyLoss', num_classes=C,
              use_sigmoid=True,
              class_statistics=ClassStatistics.from_counts([1, 2, 3, 4, 5])),
         SIGMOID),
        (dict(type='ACSLoss', num_classes=C, background='all'), SIGMOID),
        # PCB keeps its base loss's classifier
        (dict(type='PCBLoss', num_classes=C,
              base_loss=dict(type='CrossEntropyLoss')), SOFTMAX),
        (dict(type='PCBLoss', num_classes=C,
              base_loss=dict(type='SeesawLoss', num_classes=C)), SEESAW),
        (dict(type='PCBLoss', num_classes=C,
              base_loss=dict(type='EQLv2', num_classes=C)),
         SIGMOID_WITH_BACKGROUND),
    ],
    ids=['softmax', 'sigmoid-ce', 'eql', 'eqlv2', 'norcal', 'bags',
         'seesaw', 'federated', 'fracal', 'fracal-sigmoid', 'iif', 'ecm',
         'gol', 'reweighted-ce', 'reweighted-sigmoid', 'acsl', 'pcb-ce',
         'pcb-seesaw', 'pcb-eqlv2'])
def test_box_head_layouts_by_hand(loss_cls, expected):
    head = box_head(loss_cls)
    layout = classifier_layout(head)
    assert layout == expected
    # the classifier that was built has the layout's outputs
    assert head.fc_cls.weight.shape[0] == layout.num_rows
    if head.custom_cls_channels:
        assert classifier_layout(head.loss_cls) == expected


def test_bags_head_asks_its_loss():
    head = MODELS.build(
        dict(
            type='BAGSBBoxHead',
            num_classes=C,
            in_channels=4,
            fc_out_channels=8,
            roi_feat_size=2,
            loss_cls=dict(
                type='GroupSoftmaxLoss',
                num_classes=C,
                class_statistics=BAGS_COUNTS)))
    assert classifier_layout(head) == BAGS
    assert list(BAGS.class_rows) == head.group_layout.class_columns.tolist()


def test_tde_head_is_a_softmax_layout():
    head = MODELS.build(
        dict(
            type='TDEBBoxHead',
            num_classes=C,
            in_channels=4,
            fc_out_channels=8,
            roi_feat_size=2))
    assert classifier_layout(head) == SOFTMAX
    assert head.fc_cls.weight.shape == (6, 8)


@pytest.mark.parametrize('predictor', [
    dict(type='TauNormLinear', tau=1.0),
    dict(type='LWSLinear', scale_background=False),
    dict(type='LWSLinear'),
])
def test_calibrated_predictors_keep_the_head_layout(predictor):
    head = box_head(cls_predictor_cfg=predictor)
    assert classifier_layout(head) == SOFTMAX


def test_predictor_assuming_a_background_row_is_refused():
    """TauNormLinear keeps its last row as the background; EQL's sigmoid
    classifier has none (its last row is class 4)."""
    eql = dict(type='EQLoss', num_classes=C, lambda_threshold=1e-3,
               class_statistics=dict(image_count=[1] * C, num_images=10))
    head = box_head(eql, cls_predictor_cfg=dict(type='TauNormLinear'))
    with pytest.raises(ValueError, match='background at row None'):
        classifier_layout(head)
    head = box_head(
        eql,
        cls_predictor_cfg=dict(type='TauNormLinear',
                               exclude_background=False))
    assert classifier_layout(head) == SIGMOID


def dense_head(head_type: str, scales_per_octave=3, ratios=(0.5, 1.0, 2.0),
               **kwargs):
    return MODELS.build(
        dict(
            type=head_type,
            num_classes=C,
            in_channels=4,
            feat_channels=4,
            stacked_convs=1,
            anchor_generator=dict(
                type='AnchorGenerator',
                octave_base_scale=4,
                scales_per_octave=scales_per_octave,
                ratios=list(ratios),
                strides=[8, 16]),
            **kwargs))


def test_retinanet_efl_layout_by_hand():
    """9 anchors per location, C sigmoid outputs each, no background:
    channel a * C + c of ``retina_cls`` is class c of anchor a."""
    head = dense_head(
        'RetinaHead',
        loss_cls=dict(type='EFL', num_classes=C, use_sigmoid=True))
    layout = classifier_layout(head)
    assert layout == ClassifierLayout('sigmoid', 5, (0, 1, 2, 3, 4),
                                      num_priors=9)
    assert head.retina_cls.out_channels == layout.num_channels == 45
    channels = layout.class_channels()
    assert channels.shape == (9, C)
    assert channels[2, 3] == 2 * C + 3
    # mmdet's own reshape of the score map agrees
    scores = torch.arange(45.).view(1, 45, 1, 1)
    per_anchor = scores.permute(0, 2, 3, 1).reshape(-1, C)
    assert per_anchor[2, 3] == channels[2, 3]


def test_atss_softmax_dense_head():
    head = dense_head(
        'ATSSHead',
        scales_per_octave=1,
        ratios=(1.0, ),
        norm_cfg=dict(type='GN', num_groups=2, requires_grad=True),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False))
    layout = classifier_layout(head)
    # one anchor per location (as the ATSS configs); softmax adds the
    # background last
    assert layout == ClassifierLayout('softmax', 6, range(5),
                                      background_row=5, num_priors=1)
    assert head.atss_cls.out_channels == 6


@pytest.mark.parametrize('loss_cls', [
    dict(type='EQLoss', num_classes=C, lambda_threshold=1e-3,
         class_statistics=dict(image_count=[1] * C, num_images=10)),
    dict(type='EQLv2', num_classes=C),
    dict(type='GroupSoftmaxLoss', num_classes=C,
         class_statistics=BAGS_COUNTS),
], ids=['eql', 'eqlv2', 'bags'])
def test_every_loss_layout_matches_its_channel_count(loss_cls):
    loss = MODELS.build(loss_cls)
    assert loss.classifier_layout().num_rows == loss.get_cls_channels(C)


def test_layout_must_describe_every_row():
    with pytest.raises(ValueError, match='describe each of the 6 rows'):
        ClassifierLayout('softmax', 6, range(5))  # row 5 undescribed
    with pytest.raises(ValueError, match='exactly once'):
        ClassifierLayout('softmax', 5, range(5), background_row=4)


def test_unknown_classifier_is_a_type_error():
    with pytest.raises(TypeError, match='does not describe a classifier'):
        classifier_layout(torch.nn.Linear(2, 2))


def test_mismatched_weight_names_checkpoint_key_and_shapes():
    with pytest.raises(ValueError) as info:
        SOFTMAX.check_param((7, 8), 'roi_head.bbox_head.fc_cls.weight',
                            'work_dirs/x/epoch_12.pth')
    message = str(info.value)
    for part in ('work_dirs/x/epoch_12.pth',
                 'roi_head.bbox_head.fc_cls.weight', '(7, 8)', '(6, 8)'):
        assert part in message


# ------------------------------------------------------ checkpoints

TINY_MASK_RCNN = 'configs/lvis/mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py'


def test_layouts_of_a_checkpoint_come_from_its_saved_config():
    cfg = Config.fromfile(TINY_MASK_RCNN)
    model = MODELS.build(cfg.model)
    key = 'roi_head.bbox_head.fc_cls.weight'
    assert owner_layout(model, key) == ClassifierLayout.softmax(30)
    checkpoint = dict(meta=dict(cfg=cfg.pretty_text),
                      state_dict=model.state_dict())
    state = checkpoint['state_dict']
    layouts = classifier_layouts(
        state, [key, 'roi_head.bbox_head.fc_cls.bias'],
        checkpoint_config(checkpoint, 'tiny.pth'), 'tiny.pth')
    assert set(layouts.values()) == {ClassifierLayout.softmax(30)}

    wrong = dict(state, **{key: torch.ones(33, state[key].shape[1])})
    with pytest.raises(ValueError) as info:
        classifier_layouts(wrong, [key], cfg, 'wrong.pth')
    assert f'wrong.pth: {key} has shape (33, {state[key].shape[1]})' in \
        str(info.value)
    assert f'(31, {state[key].shape[1]})' in str(info.value)


def test_checkpoint_without_config_is_a_clear_error():
    with pytest.raises(ValueError, match=r"bare.pth: the checkpoint does "
                       r"not carry its config \(meta\['cfg'\]"):
        checkpoint_config(dict(state_dict={}), 'bare.pth')
