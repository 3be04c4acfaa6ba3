"""Every classification loss of the package, built small (7 classes, 96
RoIs a step), with the inputs of a few training steps: the losses the
device tests (tests/test_cuda) and the half-precision test run alike."""
from typing import Callable, Dict

import torch

from mmdet_longtail.datasets.class_stats import ClassStatistics
from mmdet_longtail.models.losses.acsl_loss import ACSLoss
from mmdet_longtail.models.losses.calibrated_ce_loss import \
    CalibratedCrossEntropyLoss
from mmdet_longtail.models.losses.ecm_loss import ECMLoss
from mmdet_longtail.models.losses.efl_loss import EFL
from mmdet_longtail.models.losses.eql_loss import EQLoss
from mmdet_longtail.models.losses.eqlv2_loss import EQLv2
from mmdet_longtail.models.losses.federated_loss import FederatedLoss
from mmdet_longtail.models.losses.fracal_loss import FRACALLoss
from mmdet_longtail.models.losses.gol_loss import GOLoss
from mmdet_longtail.models.losses.group_softmax_loss import GroupSoftmaxLoss
from mmdet_longtail.models.losses.iif_loss import IIFLoss
from mmdet_longtail.models.losses.pcb_loss import PCBLoss
from mmdet_longtail.models.losses.reweighted_ce_loss import \
    ReweightedCrossEntropyLoss

NUM_CLASSES = 7
NUM_ROIS = 96
STATS = ClassStatistics.from_counts(
    image_count=[60, 30, 12, 6, 3, 2, 1],
    instance_count=[200, 80, 30, 12, 4, 2, 1],
    num_images=100)

LOSSES: Dict[str, Callable[[], torch.nn.Module]] = {
    'EQL': lambda: EQLoss(NUM_CLASSES, lambda_threshold=0.1,
                          class_statistics=STATS),
    'EQLv2': lambda: EQLv2(NUM_CLASSES),
    'BAGS': lambda: GroupSoftmaxLoss(
        NUM_CLASSES, class_statistics=STATS, group_bounds=(3, 20, 100),
        seed=0),
    'NorCal': lambda: CalibratedCrossEntropyLoss(
        NUM_CLASSES, class_statistics=STATS, gamma=0.5),
    'IIF': lambda: IIFLoss(NUM_CLASSES, class_statistics=STATS),
    'ECM': lambda: ECMLoss(NUM_CLASSES, class_statistics=STATS),
    # the drop draws come from the device's generator: off, to compare
    'GOL': lambda: GOLoss(NUM_CLASSES, class_statistics=STATS,
                          drop_loss=False),
    'federated': lambda: FederatedLoss(
        NUM_CLASSES, class_statistics=STATS, num_sample_classes=3, seed=0),
    'FRACAL': lambda: FRACALLoss(
        NUM_CLASSES, class_statistics=STATS,
        fractal_dimensions=[1.9, 1.7, 1.5, 1.2, 1.0, 0.6, 0.3]),
    'FRACAL-sigmoid': lambda: FRACALLoss(
        NUM_CLASSES, class_statistics=STATS,
        fractal_dimensions=[1.9, 1.7, 1.5, 1.2, 1.0, 0.6, 0.3],
        use_sigmoid=True),
    'class-balanced-CE': lambda: ReweightedCrossEntropyLoss(
        NUM_CLASSES, class_statistics=STATS),
    'class-balanced-sigmoid': lambda: ReweightedCrossEntropyLoss(
        NUM_CLASSES, class_statistics=STATS, use_sigmoid=True),
    'ACSL': lambda: ACSLoss(NUM_CLASSES, class_statistics=STATS, seed=0),
    'PCB-CE': lambda: PCBLoss(
        dict(type='CrossEntropyLoss'), NUM_CLASSES, pcb_enabled=True),
    'PCB-EQLv2': lambda: PCBLoss(
        dict(type='EQLv2', num_classes=NUM_CLASSES), NUM_CLASSES,
        alpha=0.2, pcb_enabled=True),
    'EFL': lambda: EFL(NUM_CLASSES),
}


def channels(loss: torch.nn.Module) -> int:
    if isinstance(loss, EFL):
        return NUM_CLASSES  # a dense sigmoid head: no background output
    if getattr(loss, 'custom_cls_channels', False):
        return loss.get_cls_channels(NUM_CLASSES)
    return NUM_CLASSES + 1


def step_inputs(step: int, num_channels: int):
    """Logits and labels of one step, made on the CPU; every class (and the
    background) occurs, so that PCB's term is on from the first step."""
    gen = torch.Generator().manual_seed(step)
    logits = torch.randn(NUM_ROIS, num_channels, generator=gen,
                         dtype=torch.float64) * 3
    labels = torch.arange(NUM_ROIS) % (NUM_CLASSES + 1)
    labels = labels[torch.randperm(NUM_ROIS, generator=gen)]
    weights = (torch.rand(NUM_ROIS, generator=gen) > 0.1).double()
    return logits, labels, weights


def total(loss_value) -> torch.Tensor:
    if isinstance(loss_value, dict):
        return sum(loss_value.values())
    return loss_value


def run_step(loss: torch.nn.Module, logits: torch.Tensor,
             labels: torch.Tensor, weights: torch.Tensor, device: str):
    """One loss and backward on a fresh leaf copy of ``logits`` on
    ``device`` (a copy even on the CPU, where ``to`` would return the same
    tensor and two runs would share, and add up, its gradient); the value
    and the gradient, on ``device``."""
    logits = logits.detach().to(device, copy=True).requires_grad_()
    value = total(loss(logits, labels.to(device), weights.to(device),
                       avg_factor=float(NUM_ROIS)))
    value.backward()
    return value.detach(), logits.grad
