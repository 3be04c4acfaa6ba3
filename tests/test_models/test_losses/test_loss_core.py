"""The shared core of the classification losses
(``mmdet_longtail/models/losses/utils``): the input check, the reductions,
the half-precision upcast, the BBoxHead protocol and the gradient
statistics of EQLv2 and EFL."""
import ast
import os
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.logging import MMLogger

from mmdet_longtail.models.losses import utils as core
from mmdet_longtail.models.losses.utils import (ClassifierInputs,
                                                CustomClassifierMixin,
                                                GradientStatistics,
                                                check_reduction,
                                                reduce_roi_losses,
                                                upcast_half)

LOSSES_DIR = osp.dirname(core.__file__).rsplit(osp.sep, 1)[0]

INPUTS = ClassifierInputs('MyLoss', 3, 4, 'C=3 classes + 1 background',
                          hint='size the classifier through the loss',
                          weights_per_logit=True)


# ------------------------------------------------------------- inputs
def test_good_inputs_pass():
    INPUTS.check(torch.zeros(2, 4), torch.tensor([0, 3]), torch.ones(2))
    INPUTS.check(torch.zeros(2, 4), torch.tensor([0, 3]), torch.ones(2, 4))
    INPUTS.check(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))


@pytest.mark.parametrize('cls_score, labels, weights, message', [
    (torch.zeros(2, 3), [0, 1], None,
     r'MyLoss: expects 4 logits \(C=3 classes \+ 1 background\), so '
     r'cls_score must be \(N, 4\); got \(2, 3\); size the classifier'),
    (torch.zeros(4), [0, 1], None, r'cls_score must be \(N, 4\)'),
    (torch.tensor([[0., float('nan'), 0., 0.]]), [0], None,
     'MyLoss: cls_score is not finite \\(found nan\\)'),
    (torch.tensor([[0., 0., float('-inf'), 0.]]), [0], None,
     'MyLoss: cls_score is not finite \\(found -inf\\)'),
    (torch.zeros(2, 4), [0], None,
     r'MyLoss: labels must be \(2,\), one per row of cls_score \(2, 4\); '
     r'got \(1,\)'),
    (torch.zeros(2, 4), [0., 1.], None,
     'MyLoss: labels must be integers, got torch.float32'),
    (torch.zeros(2, 4), [0, 4], None,
     r'MyLoss: labels must lie in \[0, 3\] \(0..2 foreground, 3 '
     r'background\), found 4'),
    (torch.zeros(2, 4), [-1, 3], None, r'found -1'),
    (torch.zeros(2, 4), [0, 1], torch.ones(3),
     r'MyLoss: label_weights must hold one per row \(2\) or one per logit '
     r'\(8\), got \(3,\)'),
    (torch.zeros(2, 4), [0, 1], torch.tensor([1., -0.5]),
     'MyLoss: label_weights must be >= 0, found -0.5'),
])
def test_bad_inputs_name_the_loss_the_argument_and_the_value(
        cls_score, labels, weights, message):
    with pytest.raises(ValueError, match=message):
        INPUTS.check(cls_score, torch.tensor(labels), weights)


def test_weights_per_row_only():
    inputs = ClassifierInputs('RoILoss', 3, 4, 'C + 1')
    with pytest.raises(ValueError, match=r'one per row \(2\), got \(2, 4\)'):
        inputs.check(torch.zeros(2, 4), torch.tensor([0, 1]),
                     torch.ones(2, 4))


# ---------------------------------------------------------- reductions
def test_reductions():
    losses = torch.tensor([1., 2., 6.])
    assert torch.equal(reduce_roi_losses(losses, 'none'), losses)
    assert reduce_roi_losses(losses, 'sum').item() == 9.
    assert reduce_roi_losses(losses, 'mean').item() == 3.
    assert reduce_roi_losses(torch.zeros(0), 'mean').item() == 0.
    assert check_reduction('sum', 'MyLoss') == 'sum'
    with pytest.raises(ValueError, match="MyLoss: reduction must be one of "
                       r"\('none', 'mean', 'sum'\), got 'avg'"):
        check_reduction('avg', 'MyLoss')


# ----------------------------------------------------------- precision
def test_upcast_half():
    for dtype in (torch.float16, torch.bfloat16):
        x = torch.ones(2, dtype=dtype, requires_grad=True)
        y = upcast_half(x)
        assert y.dtype == torch.float32
        y.sum().backward()
        assert x.grad.dtype == dtype
    for dtype in (torch.float32, torch.float64):
        x = torch.ones(2, dtype=dtype)
        assert upcast_half(x) is x


# -------------------------------------------------- BBoxHead protocol
class ToyLoss(CustomClassifierMixin, nn.Module):

    def __init__(self) -> None:
        super().__init__()
        self.num_classes = 3

    def cls_channels(self) -> int:
        return self.num_classes + 2


def test_bbox_head_protocol():
    loss = ToyLoss()
    assert loss.custom_cls_channels and loss.custom_activation
    assert loss.custom_accuracy
    assert loss.get_cls_channels(3) == 5
    with pytest.raises(ValueError,
                       match='ToyLoss: num_classes=3 but the head has 4'):
        loss.get_cls_channels(4)
    with pytest.raises(NotImplementedError):
        loss.get_activation(torch.zeros(1, 5))


# ----------------------------------------------- gradient statistics
class RatioLoss(GradientStatistics, nn.Module):

    def __init__(self, initial_ratio: float, max_ratio=None) -> None:
        super().__init__()
        self.register_gradient_statistics(3, initial_ratio, max_ratio)


def test_statistics_buffers_and_recurrence():
    stats = RatioLoss(100.)
    assert set(stats.state_dict()) == {'pos_grad', 'neg_grad', 'pos_neg'}
    assert torch.equal(stats.pos_neg, torch.full((3, ), 100.))
    assert stats.accumulate_gradient_statistics(
        torch.tensor([[1., 0., 4.], [2., 0., 1.]]))
    assert stats.accumulate_gradient_statistics(
        torch.tensor([[1., 0., 0.], [2., 1., 1.]], dtype=torch.float64))
    assert stats.pos_grad.dtype == torch.float32  # the buffers' dtype
    torch.testing.assert_close(stats.pos_grad, torch.tensor([2., 0., 4.]))
    torch.testing.assert_close(stats.neg_grad, torch.tensor([4., 1., 2.]))
    # unbounded ratio pos / (neg + 1e-10)
    torch.testing.assert_close(stats.pos_neg, torch.tensor([0.5, 0., 2.]))
    clamped = RatioLoss(1., max_ratio=1.)
    assert torch.equal(clamped.pos_neg, torch.ones(3))
    clamped.accumulate_gradient_statistics(
        torch.tensor([[1., 0., 4.], [2., 0., 1.]]))
    torch.testing.assert_close(clamped.pos_neg, torch.tensor([0.5, 0., 1.]))


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_non_finite_step_is_skipped(bad):
    MMLogger.get_instance('test_loss_core')
    stats = RatioLoss(1., max_ratio=1.)
    stats.accumulate_gradient_statistics(torch.ones(2, 3))
    before = {k: v.clone() for k, v in stats.state_dict().items()}
    increment = torch.ones(2, 3)
    increment[1, 2] = bad
    assert not stats.accumulate_gradient_statistics(increment)
    for name, value in stats.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_statistics_resume_exactly():
    gen = torch.Generator().manual_seed(0)
    steps = [torch.rand(2, 3, generator=gen) for _ in range(4)]
    run = RatioLoss(100.)
    for increment in steps[:2]:
        run.accumulate_gradient_statistics(increment)
    resumed = RatioLoss(100.)
    resumed.load_state_dict(run.state_dict())
    for increment in steps[2:]:
        run.accumulate_gradient_statistics(increment)
        resumed.accumulate_gradient_statistics(increment)
    for name, value in run.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name


# --------------------------------------------------------- structure
def test_no_method_file_imports_another():
    """Each method's file imports only the shared core (``.utils``), not
    another method's file."""
    methods = {
        name[:-len('.py')]
        for name in os.listdir(LOSSES_DIR) if name.endswith('_loss.py')
    }
    assert len(methods) >= 13 and 'eql_loss' in methods, methods
    for method in methods:
        with open(osp.join(LOSSES_DIR, method + '.py')) as f:
            tree = ast.parse(f.read())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ''
                imported.add(module.split('.')[-1])
                # `from . import eql_loss`, `from ..losses import eql_loss`
                if not node.module or module.endswith('losses'):
                    imported.update(a.name for a in node.names)
            elif isinstance(node, ast.Import):
                imported.update(a.name.split('.')[-1] for a in node.names)
        assert not imported & (methods - {method}), method
