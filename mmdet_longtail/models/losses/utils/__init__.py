"""The parts every long-tail classification loss shares, one per file:
input checks, reductions, the half-precision upcast, the BBoxHead
custom-classifier protocol (with the classifier layout) and the gradient
statistics of EQLv2 and EFL and the seeded per-step sampling of BAGS and
the federated loss. Method files import from here, never from each
other."""
from .compiled import compiled
from .custom_classifier import ClassifierLayout, CustomClassifierMixin
from .gradient_statistics import GradientStatistics
from .inputs import ClassifierInputs, check_num_classes
from .plain_classifier import PlainClassifierMixin
from .precision import upcast_half
from .reduction import check_reduction, reduce_roi_losses
from .sampling import SeededSampling, sampling_rng
from .sigmoid_classifier import (ObjectnessClassifierMixin,
                                 SigmoidClassifierMixin, foreground_accuracy,
                                 foreground_targets, with_zero_background)

__all__ = [
    'ClassifierInputs', 'ClassifierLayout', 'CustomClassifierMixin',
    'GradientStatistics', 'ObjectnessClassifierMixin', 'PlainClassifierMixin',
    'SeededSampling', 'SigmoidClassifierMixin', 'check_num_classes',
    'check_reduction', 'compiled', 'foreground_accuracy',
    'foreground_targets', 'reduce_roi_losses', 'sampling_rng', 'upcast_half',
    'with_zero_background'
]
