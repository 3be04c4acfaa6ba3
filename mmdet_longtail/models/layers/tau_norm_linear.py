"""tau-normalised classifier (post-hoc classifier re-balancing).

Kang et al., "Decoupling Representation and Classifier for Long-Tailed
Recognition", ICLR 2020. https://arxiv.org/abs/1910.09217

A classifier trained on long-tailed data has larger weight norms for
frequent classes. tau-normalisation rescales each foreground weight vector
by a power of its norm::

    w~_c = w_c / ||w_c|| ** tau          (foreground rows c < C)
    z_c  = w~_c . x + b_c

``tau = 0`` is the original classifier, ``tau = 1`` gives unit-norm rows.
For detection the background row (the last one in mmdet) is left untouched
and the bias is kept, as in the detection port of BAGS
(``tools/test_lvis_tnorm.py``).
"""
import math
from typing import Any, Dict, List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmdet.registry import MODELS
from ..scoring_settings import ScoringSettingsMixin
from .classifier_layout import ClassifierLayout

# rows with a smaller norm are treated as this norm (an all-zero row stays 0)
MIN_ROW_NORM = 1e-12


def tau_normalize_rows(weight: Tensor, tau: float,
                       rows: Sequence[int]) -> Tensor:
    """``w_r / ||w_r|| ** tau`` for the given rows of ``weight`` (outputs
    first; the norm is over everything else); the other rows are copied.

    Args:
        weight (Tensor): (K, ...) classifier weight, one row per output.
        tau (float): exponent of the norm; 0 returns an unchanged copy.
        rows (Sequence[int]): the rows to normalise.
    """
    out = weight.clone()
    if float(tau) == 0:
        return out
    rows = torch.as_tensor(list(rows), dtype=torch.long,
                           device=weight.device)
    selected = weight[rows]
    norms = selected.flatten(1).norm(dim=1).clamp(min=MIN_ROW_NORM)
    norms = norms.view(-1, *([1] * (weight.dim() - 1)))
    out[rows] = selected / norms.pow(float(tau))
    return out


def tau_normalize_weight(weight: Tensor,
                         tau: float,
                         exclude_background: bool = True) -> Tensor:
    """``w_c / ||w_c|| ** tau`` for every row (except the last one when
    ``exclude_background``); returns a new tensor.

    Args:
        weight (Tensor): (K, D) classifier weight, one row per output.
        tau (float): exponent of the norm; 0 returns an unchanged copy.
        exclude_background (bool): leave the last row (background) as is.
    """
    if weight.dim() != 2:
        raise ValueError(f'tau_normalize_weight expects a (K, D) weight, '
                         f'got shape {tuple(weight.shape)}')
    num_rows = weight.size(0) - 1 if exclude_background else weight.size(0)
    return tau_normalize_rows(weight, tau, range(num_rows))


@MODELS.register_module()
class TauNormLinear(ScoringSettingsMixin, nn.Linear):
    """``nn.Linear`` whose foreground rows are tau-normalised in forward.

    ``tau`` is a test-time scoring setting (see
    :mod:`mmdet_longtail.models.scoring_settings`): set it from the config
    (``--cfg-options model.roi_head.bbox_head.cls_predictor_cfg.tau=0.5``)
    or at run time with ``set_scoring_settings(tau=0.5)``. ``tau=0`` is
    exactly ``nn.Linear``.

    The stored ``weight`` / ``bias`` are the raw ones, so the state dict is
    that of ``nn.Linear`` and a baseline checkpoint loads unchanged; use it
    as ``cls_predictor_cfg=dict(type='TauNormLinear', tau=1.0)``.

    Args:
        in_features (int): input size.
        out_features (int): number of outputs (C + 1 for a softmax head).
        bias (bool): learn a bias (kept unchanged by the normalisation).
            Defaults to True.
        tau (float): exponent of the row norm; 0 is a plain linear layer.
            Defaults to 1.0.
        exclude_background (bool): the last output is the background and is
            not normalised (mmdet's softmax heads). Set False for a head
            without a background output. Defaults to True.
    """

    #: test-time scoring settings (see ScoringSettingsMixin)
    SCORING_SETTINGS = ('tau', )

    def __init__(self,
                 in_features: int,
                 out_features: int,
                 bias: bool = True,
                 tau: float = 1.0,
                 exclude_background: bool = True,
                 **kwargs) -> None:
        super().__init__(in_features, out_features, bias=bias, **kwargs)
        self.tau = check_tau(tau)
        self.exclude_background = exclude_background

    def check_scoring_settings(self, settings: Dict[str, Any]
                               ) -> Dict[str, Any]:
        """``tau`` as a float >= 0."""
        return dict(settings, tau=check_tau(settings['tau']))

    def forward(self, x: Tensor) -> Tensor:
        if self.tau == 0:
            return F.linear(x, self.weight, self.bias)
        weight = tau_normalize_weight(self.weight, self.tau,
                                      self.exclude_background)
        return F.linear(x, weight, self.bias)

    def extra_repr(self) -> str:
        return (super().extra_repr() + f', tau={self.tau}, '
                f'exclude_background={self.exclude_background}')


def check_tau(tau: float) -> float:
    """``tau`` as a float; a clear error unless it is finite and >= 0."""
    tau = float(tau)
    if not math.isfinite(tau) or tau < 0:
        raise ValueError(f'TauNormLinear: tau must be >= 0 (and finite), '
                         f'got {tau}')
    return tau


# classifier weights of mmdet RoI heads (any cascade stage), e.g.
# ``roi_head.bbox_head.fc_cls.weight``, ``roi_head.bbox_head.2.fc_cls.weight``
CLASSIFIER_WEIGHT_PATTERN = r'(^|\.)bbox_head(\.\d+)?\.fc_cls\.weight$'


def tau_normalize_state_dict(state_dict: dict, tau: float,
                             layouts: Dict[str, ClassifierLayout]
                             ) -> List[str]:
    """tau-normalise, in place, the class rows of every weight named in
    ``layouts`` (the background and extra rows and the biases are kept).

    Args:
        state_dict (dict): the parameters.
        tau (float): exponent of the norm.
        layouts (dict[str, ClassifierLayout]): the layout of each weight to
            normalise, by key (see ``classifier_layouts`` in
            ``mmdet_longtail.models.checkpoint_classifiers``).

    Returns:
        list[str]: the keys that were normalised.
    """
    for key, layout in layouts.items():
        layout.check_param(state_dict[key].shape, key, 'tau-norm')
        state_dict[key] = tau_normalize_rows(
            state_dict[key], tau, layout.class_channels().ravel())
    return list(layouts)
