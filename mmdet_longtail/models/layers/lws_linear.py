"""Learnable weight scaling (LWS) classifier.

Kang et al., "Decoupling Representation and Classifier for Long-Tailed
Recognition", ICLR 2020. https://arxiv.org/abs/1910.09217

The classifier of a trained model is kept fixed and only a per-class scale
``f_c`` (initialised to 1) is learned with class-balanced sampling::

    z_c = (f_c * w_c) . x + b_c

For detection every output, background included, gets a scale (as in the
LVIS port of the eqlv2 code base).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmdet.registry import MODELS


def lws_logits(x: Tensor, weight: Tensor, bias: Tensor,
               scale: Tensor) -> Tensor:
    """``(scale[:, None] * weight) . x + bias``, i.e. logits with the rows
    of the weight scaled by ``scale`` (shape (K,))."""
    return F.linear(x, weight * scale.unsqueeze(1), bias)


@MODELS.register_module()
class LWSLinear(nn.Linear):
    """``nn.Linear`` with a learnable per-output scale ``weight_scaler``.

    ``weight`` and ``bias`` keep their ``nn.Linear`` names, so a baseline
    checkpoint loads into them (``weight_scaler`` then starts at 1 and the
    layer reproduces the baseline exactly). Train only ``weight_scaler``
    (e.g. ``FreezeExceptHook(trainable=[r'fc_cls\\.weight_scaler'])``).

    Args:
        in_features (int): input size.
        out_features (int): number of outputs (C + 1 for a softmax head).
        bias (bool): learn a bias. Defaults to True.
    """

    def __init__(self,
                 in_features: int,
                 out_features: int,
                 bias: bool = True,
                 **kwargs) -> None:
        super().__init__(in_features, out_features, bias=bias, **kwargs)
        self.weight_scaler = nn.Parameter(torch.ones(out_features))

    def reset_parameters(self) -> None:
        super().reset_parameters()
        # nn.Linear.__init__ calls this before weight_scaler exists
        if hasattr(self, 'weight_scaler'):
            nn.init.ones_(self.weight_scaler)

    def forward(self, x: Tensor) -> Tensor:
        return lws_logits(x, self.weight, self.bias, self.weight_scaler)
