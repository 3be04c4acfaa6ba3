"""De-confounded classifier with Total Direct Effect (TDE) inference.

Tang, Huang and Zhang, "Long-Tailed Classification by Keeping the Good and
Removing the Bad Momentum Causal Effect", NeurIPS 2020.
https://arxiv.org/abs/2009.12991

The RoI feature ``x`` (D dims) and every class weight ``w_c`` are split into
``K`` heads of ``D / K`` dims (``x_k``, ``w_ck``).

* De-confounded training logits (multi-head normalised classifier)::

      z_c = (tau / K) * sum_k < x_k / ||x_k|| , w_ck / (||w_ck|| + gamma) >

* Moving-average feature, updated in training without gradient from the
  *foreground* RoIs of the batch (an exponentially decayed sum, not a convex
  average: only its direction is used)::

      e <- mu * e + mean_{i : label_i != background} x_i

* Counterfactual (TDE) logits at test time, with ``e_k`` the head-k part of
  ``e``::

      y0_c = sum_k cos(x_k, e_k) * (tau / K) * < e_k / ||e_k||,
                                                 w_ck / (||w_ck|| + gamma) >
      t_c  = z_c - alpha * y0_c
"""
from contextlib import contextmanager
from typing import Iterator, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dist import all_reduce
from torch import Tensor

from mmdet.registry import MODELS

# smallest norm a feature / moving-average part is divided by: an all-zero
# part gives a zero unit vector instead of NaN
MIN_NORM = 1e-12


def split_heads(tensor: Tensor, num_heads: int) -> Tensor:
    """``(..., D)`` -> ``(..., K, D / K)``."""
    dim = tensor.size(-1)
    if dim % num_heads != 0:
        raise ValueError(f'the feature dimension {dim} is not divisible by '
                         f'num_heads={num_heads}')
    return tensor.reshape(*tensor.shape[:-1], num_heads, dim // num_heads)


def unit_heads(tensor: Tensor, num_heads: int) -> Tensor:
    """Every head part scaled to unit l2 norm, ``(..., K, D / K)``."""
    return F.normalize(split_heads(tensor, num_heads), dim=-1, eps=MIN_NORM)


def normalize_class_weight(weight: Tensor,
                           num_heads: int,
                           gamma: float,
                           scale: float = 1.0) -> Tensor:
    """``scale * w_ck / (||w_ck|| + gamma)`` for every class row,
    ``(C, K, D/K)``."""
    parts = split_heads(weight, num_heads)
    norms = parts.norm(dim=-1, keepdim=True)
    # one division: the scale goes into the (C, K, 1) denominators
    return parts / ((norms + gamma).clamp(min=MIN_NORM) / scale)


def deconfounded_logits(features: Tensor, weight: Tensor, num_heads: int,
                        tau: float, gamma: float) -> Tensor:
    """De-confounded logits ``z``, ``(N, C)``.

    Args:
        features (Tensor): RoI features x, ``(N, D)``.
        weight (Tensor): class weights w, ``(C, D)`` (C includes background).
        num_heads (int): K, the number of heads x and w are split into.
        tau (float): the logit scale (each head contributes ``tau / K``).
        gamma (float): added to every head's weight norm.
    """
    x_hat = unit_heads(features, num_heads).flatten(1)
    w_tilde = normalize_class_weight(weight, num_heads, gamma,
                                     tau / num_heads).flatten(1)
    # sum over heads of per-head dot products == one dot product of the
    # concatenated (per-head normalised) vectors
    return x_hat.matmul(w_tilde.t())


def tde_correction(features: Tensor, moving_average: Tensor, weight: Tensor,
                   num_heads: int, tau: float, gamma: float) -> Tensor:
    """The counterfactual term ``y0`` for ``alpha = 1``, ``(N, C)``.

    ``y0_c = sum_k cos(x_k, e_k) (tau / K) <e_k / ||e_k||, w~_ck>``; the TDE
    logits are ``z - alpha * y0``. An all-zero ``e`` gives ``y0 = 0``.

    Args:
        features (Tensor): RoI features x, ``(N, D)``.
        moving_average (Tensor): the moving-average feature e, ``(D,)``.
        weight, num_heads, tau, gamma: as in :func:`deconfounded_logits`.
    """
    x_hat = unit_heads(features, num_heads)  # (N, K, D/K)
    e_hat = unit_heads(moving_average, num_heads)  # (K, D/K)
    w_tilde = normalize_class_weight(weight, num_heads, gamma)  # (C, K, D/K)
    cosines = torch.einsum('nkd,kd->nk', x_hat, e_hat)
    class_projection = torch.einsum('ckd,kd->ck', w_tilde, e_hat)
    return (tau / num_heads) * cosines.matmul(class_projection.t())


def deconfounded_and_tde_logits(features: Tensor, moving_average: Tensor,
                                weight: Tensor, num_heads: int, tau: float,
                                gamma: float, alpha: float) -> Tensor:
    """``[z | t]``, ``(N, 2C)``: the de-confounded logits and the TDE logits
    ``t = z - alpha * y0`` (:func:`deconfounded_logits`,
    :func:`tde_correction`) with shared normalisations; ``y0`` is never
    formed: ``t = z - alpha * cos @ projection`` is one fused product."""
    x_flat = unit_heads(features, num_heads).flatten(1)  # (N, D)
    w_flat = normalize_class_weight(weight, num_heads, gamma,
                                    tau / num_heads).flatten(1)  # (C, D)
    # per-head dot products with e^_k as one product with the (D, K)
    # block-diagonal matrix whose column k holds e^_k in the rows of head k
    e_blocks = torch.block_diag(
        *unit_heads(moving_average, num_heads).unsqueeze(-1))
    cosines = x_flat.matmul(e_blocks)  # (N, K)
    class_projection = w_flat.matmul(e_blocks)  # (C, K), tau / K included
    if torch.is_grad_enabled() or torch.is_autocast_enabled() or \
            x_flat.dtype != w_flat.dtype:
        logits = x_flat.matmul(w_flat.t())
        tde_logits = torch.addmm(
            logits, cosines, class_projection.t(), alpha=-alpha)
        return torch.cat([logits, tde_logits], dim=1)
    # plain inference: both halves written into one buffer (no copies)
    num_outputs = weight.size(0)
    packed = x_flat.new_empty(x_flat.size(0), 2 * num_outputs)
    logits = torch.mm(x_flat, w_flat.t(), out=packed[:, :num_outputs])
    torch.addmm(
        logits,
        cosines,
        class_projection.t(),
        alpha=-alpha,
        out=packed[:, num_outputs:])
    return packed


def foreground_mean(features: Tensor, labels: Tensor,
                    background_label: int) -> Tuple[Tensor, Tensor]:
    """Mean feature of the foreground RoIs and how many there are.

    Background RoIs (label ``background_label``) are left out. The mean of an
    empty set is returned as zeros with count 0 (no host synchronisation).

    Args:
        features (Tensor): ``(N, D)``.
        labels (Tensor): ``(N,)``, foreground ``0 .. background_label - 1``.
        background_label (int): the background label (mmdet: C).

    Returns:
        tuple[Tensor, Tensor]: the mean ``(D,)`` and the count (0-dim).
    """
    is_foreground = ((labels >= 0) & (labels < background_label)).to(
        features.dtype)
    count = is_foreground.sum()
    total = is_foreground.matmul(features)
    return total / count.clamp(min=1), count


def rank_averaged_update(batch_mean: Tensor, has_foreground: Tensor
                         ) -> Tuple[Tensor, Tensor]:
    """The moving-average increment averaged over the ranks of a process
    group (a single process is a group of one).

    Every rank contributes its batch mean; ranks with no foreground RoI in
    their batch do not count. Returns the increment ``(D,)`` and the number
    of ranks that contributed (0: no update anywhere).
    """
    packed = torch.cat([batch_mean * has_foreground, has_foreground[None]])
    all_reduce(packed, op='sum')  # nothing to do on one process
    contributors = packed[-1]
    return packed[:-1] / contributors.clamp(min=1), contributors


@MODELS.register_module()
class TDEClassifier(nn.Module):
    """De-confounded classifier with a moving-average feature and TDE output.

    Used as the ``fc_cls`` of :class:`TDEBBoxHead` (which builds it). The
    classifier holds the class weights ``(C + 1, D)`` (background last, no
    bias) and the moving-average feature ``e`` as the registered buffer
    ``moving_average_feature`` (saved in checkpoints and resumed).

    * Training: returns the de-confounded logits ``z`` ``(N, C + 1)`` and
      updates ``e`` from the foreground RoIs whose labels were given with
      :meth:`roi_labels`. Under distributed training the ranks' increments
      are averaged (all-reduce), so every rank holds the same ``e``.
    * Evaluation: returns ``[z | t]``, ``(N, 2 (C + 1))``, with the TDE
      logits ``t = z - alpha * y0``. Cascade / HTC average both halves over
      the stages; the box head turns them into probabilities once.

    Args:
        in_features (int): D, the RoI feature size (input of the classifier).
        out_features (int): C + 1 outputs, background last.
        num_heads (int): K, heads the feature and weights are split into;
            must divide ``in_features``. Defaults to 2.
        tau (float): logit scale, each head contributes ``tau / K``.
            Defaults to 16.0.
        gamma (float): added to every head's weight norm, >= 0.
            Defaults to 1/32.
        momentum (float): mu of the moving average, in [0, 1]. The authors
            used 0.9 on LVIS v0.5 and 0.9998 on LVIS v1. Defaults to 0.9.
        alpha (float): TDE strength; 0 gives the de-confounded logits.
            Only used at test time. Defaults to 1.5.
    """

    def __init__(self,
                 in_features: int,
                 out_features: int,
                 num_heads: int = 2,
                 tau: float = 16.0,
                 gamma: float = 1 / 32,
                 momentum: float = 0.9,
                 alpha: float = 1.5) -> None:
        super().__init__()
        check_tde_settings(in_features, num_heads, tau, gamma, momentum)
        self.in_features = in_features
        self.out_features = out_features
        self.num_heads = num_heads
        self.tau = float(tau)
        self.gamma = float(gamma)
        self.momentum = float(momentum)
        self.alpha = float(alpha)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        # the authors' initialisation; TDEBBoxHead's init_cfg repeats it
        bound = in_features**-0.5
        nn.init.uniform_(self.weight, -bound, bound)
        self.register_buffer('moving_average_feature',
                             torch.zeros(in_features))
        self._roi_labels: Optional[Tensor] = None

    def extra_repr(self) -> str:
        return (f'in_features={self.in_features}, '
                f'out_features={self.out_features}, '
                f'num_heads={self.num_heads}, tau={self.tau}, '
                f'gamma={self.gamma}, momentum={self.momentum}, '
                f'alpha={self.alpha}')

    @contextmanager
    def roi_labels(self, labels: Tensor) -> Iterator[None]:
        """Labels (background = C) of the RoIs of the next training forward.

        The RoI head wraps its box-head call in this context; the forward
        uses the labels once to update the moving-average feature.
        """
        self._roi_labels = labels
        try:
            yield
        finally:
            self._roi_labels = None

    def has_moving_average(self) -> bool:
        """Whether every head part of ``e`` is non-zero (TDE is defined)."""
        parts = split_heads(self.moving_average_feature, self.num_heads)
        return bool((parts.norm(dim=-1) > 0).all())

    def forward(self, features: Tensor) -> Tensor:
        if self.training:
            self._update_moving_average(features)
            return deconfounded_logits(features, self.weight, self.num_heads,
                                       self.tau, self.gamma)
        return deconfounded_and_tde_logits(
            features, self.moving_average_feature, self.weight,
            self.num_heads, self.tau, self.gamma, self.alpha)

    @torch.no_grad()
    def _update_moving_average(self, features: Tensor) -> None:
        labels = self._roi_labels
        if labels is None:
            raise RuntimeError(
                'TDEClassifier: no RoI labels for this training forward, so '
                'the moving-average feature cannot be updated; train '
                'TDEBBoxHead inside a TDE RoI head (TDERoIHead, '
                'TDECascadeRoIHead or TDEHybridTaskCascadeRoIHead)')
        # one forward per set of labels: a second call must bring its own
        self._roi_labels = None
        if labels.shape != features.shape[:1]:
            raise ValueError(
                f'TDEClassifier: {labels.numel()} RoI labels for '
                f'{features.size(0)} RoI features')
        batch_mean, count = foreground_mean(features.float(), labels,
                                            self.out_features - 1)
        increment, contributors = rank_averaged_update(
            batch_mean, (count > 0).float())
        # no foreground RoI on any rank: e stays as it is (no decay either)
        decay = torch.where(contributors > 0,
                            contributors.new_tensor(self.momentum),
                            contributors.new_tensor(1.0))
        self.moving_average_feature.mul_(decay).add_(increment)


def check_tde_settings(in_features: int, num_heads: int, tau: float,
                       gamma: float, momentum: float) -> None:
    """Clear errors for settings the classifier cannot use."""
    if not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f'TDEClassifier: num_heads must be a positive int, '
                         f'got {num_heads!r}')
    if in_features % num_heads != 0:
        raise ValueError(
            f'TDEClassifier: the RoI feature dimension in_features='
            f'{in_features} is not divisible by num_heads={num_heads} (the '
            f'feature is split into num_heads equal parts)')
    if tau <= 0:
        raise ValueError(f'TDEClassifier: tau must be > 0, got {tau}')
    if gamma < 0:
        raise ValueError(f'TDEClassifier: gamma must be >= 0, got {gamma}')
    if not 0 <= momentum <= 1:
        raise ValueError(
            f'TDEClassifier: momentum must be in [0, 1], got {momentum}')
