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
import re
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmdet.registry import MODELS

# rows with a smaller norm are treated as this norm (an all-zero row stays 0)
MIN_ROW_NORM = 1e-12


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
    tau = float(tau)
    if tau == 0:
        return weight.clone()
    num_rows = weight.size(0) - 1 if exclude_background else weight.size(0)
    fg = weight[:num_rows]
    norms = fg.norm(dim=1, keepdim=True).clamp(min=MIN_ROW_NORM)
    return torch.cat([fg / norms.pow(tau), weight[num_rows:]], dim=0)


@MODELS.register_module()
class TauNormLinear(nn.Linear):
    """``nn.Linear`` whose foreground rows are tau-normalised in forward.

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

    def __init__(self,
                 in_features: int,
                 out_features: int,
                 bias: bool = True,
                 tau: float = 1.0,
                 exclude_background: bool = True,
                 **kwargs) -> None:
        super().__init__(in_features, out_features, bias=bias, **kwargs)
        if tau < 0:
            raise ValueError(f'TauNormLinear: tau must be >= 0, got {tau}')
        self.tau = float(tau)
        self.exclude_background = exclude_background

    def forward(self, x: Tensor) -> Tensor:
        if self.tau == 0:
            return F.linear(x, self.weight, self.bias)
        weight = tau_normalize_weight(self.weight, self.tau,
                                      self.exclude_background)
        return F.linear(x, weight, self.bias)

    def extra_repr(self) -> str:
        return (super().extra_repr() + f', tau={self.tau}, '
                f'exclude_background={self.exclude_background}')


# classifier weights of mmdet RoI heads (any cascade stage), e.g.
# ``roi_head.bbox_head.fc_cls.weight``, ``roi_head.bbox_head.2.fc_cls.weight``
CLASSIFIER_WEIGHT_PATTERN = r'(^|\.)bbox_head(\.\d+)?\.fc_cls\.weight$'


def tau_normalize_state_dict(state_dict: dict,
                             tau: float,
                             pattern: str = CLASSIFIER_WEIGHT_PATTERN,
                             exclude_background: bool = True) -> List[str]:
    """tau-normalise, in place, every weight of ``state_dict`` whose key
    matches ``pattern`` (``re.search``); biases are not touched.

    Returns:
        list[str]: the keys that were normalised.

    Raises:
        ValueError: no key matches (a wrong pattern would otherwise write an
            unchanged checkpoint).
    """
    regex = re.compile(pattern)
    keys = [k for k in state_dict if regex.search(k)]
    if not keys:
        raise ValueError(f'tau-norm: no key of the checkpoint matches '
                         f'{pattern!r} (keys look like '
                         f'{list(state_dict)[:3]})')
    for key in keys:
        state_dict[key] = tau_normalize_weight(state_dict[key], tau,
                                               exclude_background)
    return keys
