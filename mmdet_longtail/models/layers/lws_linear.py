"""Learnable weight scaling (LWS) classifier.

Kang et al., "Decoupling Representation and Classifier for Long-Tailed
Recognition", ICLR 2020. https://arxiv.org/abs/1910.09217

The classifier of a trained model is kept fixed and only a per-class scale
``f_c`` (initialised to 1) is learned with class-balanced sampling. Two
variants exist::

    scale_bias=False:  z_c = (f_c * w_c) . x + b_c     (eqlv2 LVIS port)
    scale_bias=True:   z_c = f_c * (w_c . x + b_c)     (Kang et al.'s code)

The LVIS port of the eqlv2 code base scales the weight rows only, and gives
every output, background included, a scale; its published LVIS v1 number
(17.0 mask AP) comes from that variant, which is the default here.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmdet.registry import MODELS


def lws_logits(x: Tensor,
               weight: Tensor,
               bias: Tensor,
               scale: Tensor,
               scale_bias: bool = False) -> Tensor:
    """LWS logits with one scale ``f_c`` per output (``scale``, shape (K,)).

    ``scale_bias=False``: ``z_c = (f_c * w_c) . x + b_c``;
    ``scale_bias=True``: ``z_c = f_c * (w_c . x + b_c)``.
    """
    if scale_bias:
        return scale * F.linear(x, weight, bias)
    return F.linear(x, scale.unsqueeze(1) * weight, bias)


@MODELS.register_module()
class LWSLinear(nn.Linear):
    """``nn.Linear`` with a learnable per-output scale ``weight_scaler``.

    With ``f`` the scales, ``w_c`` / ``b_c`` the row / bias of output ``c``::

        scale_bias=False:  z_c = (f_c * w_c) . x + b_c
        scale_bias=True:   z_c = f_c * (w_c . x + b_c)

    and with ``scale_background=False`` the last (background) output keeps
    ``f_bg = 1``, which is a constant, not a learned parameter.

    ``weight`` and ``bias`` keep their ``nn.Linear`` names, so a baseline
    checkpoint loads into them (``weight_scaler`` then starts at 1 and the
    layer reproduces the baseline exactly). Train only ``weight_scaler``
    (e.g. ``FreezeExceptHook(trainable=[r'fc_cls\\.weight_scaler'])``).

    Args:
        in_features (int): input size.
        out_features (int): number of outputs (C + 1 for a softmax head,
            background last).
        bias (bool): learn a bias. Defaults to True.
        scale_bias (bool): False scales the weight rows only (the eqlv2
            LVIS port, behind the published LVIS v1 number); True scales
            the whole output, bias included (Kang et al.'s code). Defaults
            to False.
        scale_background (bool): True learns a scale for every output,
            background included (the eqlv2 LVIS port); False keeps the last
            (background) output's scale fixed at 1, so ``weight_scaler``
            has ``out_features - 1`` elements. Defaults to True.
    """

    def __init__(self,
                 in_features: int,
                 out_features: int,
                 bias: bool = True,
                 scale_bias: bool = False,
                 scale_background: bool = True,
                 **kwargs) -> None:
        super().__init__(in_features, out_features, bias=bias, **kwargs)
        self.scale_bias = scale_bias
        self.scale_background = scale_background
        num_scales = out_features if scale_background else out_features - 1
        self.weight_scaler = nn.Parameter(
            torch.ones(num_scales,
                       device=self.weight.device,
                       dtype=self.weight.dtype))

    def reset_parameters(self) -> None:
        super().reset_parameters()
        # nn.Linear.__init__ calls this before weight_scaler exists
        if hasattr(self, 'weight_scaler'):
            nn.init.ones_(self.weight_scaler)

    def scale(self) -> Tensor:
        """The scale ``f`` of every output, shape (out_features,): the
        learned ``weight_scaler``, followed by a constant 1 for the
        background when ``scale_background`` is False."""
        if self.scale_background:
            return self.weight_scaler
        return torch.cat([self.weight_scaler, self.weight_scaler.new_ones(1)])

    def forward(self, x: Tensor) -> Tensor:
        return lws_logits(x, self.weight, self.bias, self.scale(),
                          self.scale_bias)

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, scale_bias={self.scale_bias}, '
                f'scale_background={self.scale_background}')
