"""``IterativeRoIHead``: the iterative learning of PCB.

He et al., "Relieving Long-tailed Instance Segmentation via Pairwise Class
Balance", CVPR 2022 (https://arxiv.org/abs/2201.02784), Fig. 2: the one
box head (shared weights) predicts K times on the same RoIs and targets.
After iteration k its predictions re-modulate the RoI features for
iteration k + 1::

    F_{k+1} = F_k * g_loc(t_k) + g_cls(s_k)

with s_k the class logits (N, R), t_k the box deltas (N, 4C), ``g_cls`` an
MLP to one bias per feature channel (N, 256, 1, 1) and ``g_loc`` an MLP to
one scale per RoI-feature location (N, 1, 7, 7). The loss sums the
iterations' losses with weights ``lambda_k`` (the authors: 0.2 / 0.2 /
0.6), except the box regression, taken from one iteration (the last) as it
is; a PCB classification loss (``PCBLoss``) is told the iteration k, so
that its soft-label weight grows as ``a_k = alpha * k / (K - 1)``. Testing
predicts with the last iteration.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch.nn as nn
from torch import Tensor

from mmdet.models.roi_heads import StandardRoIHead
from mmdet.models.task_modules.samplers import SamplingResult
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox2roi


def mlp(in_features: int, hidden: int, out_features: int, num_layers: int,
        layer_norm: bool = False) -> nn.Sequential:
    """``num_layers`` linear layers with ReLU between them, optionally after
    a LayerNorm of the input."""
    dims = [in_features] + [hidden] * (num_layers - 1) + [out_features]
    layers: List[nn.Module] = [nn.LayerNorm(in_features)] if layer_norm \
        else []
    for i in range(num_layers):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < num_layers - 1:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def combine_iteration_losses(losses: Sequence[Dict[str, Tensor]],
                             weights: Sequence[float],
                             regression_iteration: Optional[int]
                             ) -> Dict[str, Tensor]:
    """``sum_k lambda_k L_k`` for every loss key; ``loss_bbox`` of
    ``regression_iteration`` alone (when given); the other entries
    (accuracies) of the last iteration."""
    combined = dict(losses[-1])
    for key in losses[-1]:
        if 'loss' in key:
            combined[key] = sum(w * loss[key]
                                for w, loss in zip(weights, losses))
    if regression_iteration is not None and 'loss_bbox' in combined:
        combined['loss_bbox'] = losses[regression_iteration]['loss_bbox']
    return combined


@MODELS.register_module()
class IterativeRoIHead(StandardRoIHead):
    """Standard RoI head whose box head predicts ``num_iterations`` times,
    each time on features re-modulated by the previous predictions (see the
    module docstring).

    Args:
        num_iterations (int): K >= 1. Defaults to 3.
        iteration_loss_weights (Sequence[float]): lambda_k >= 0, K of them.
            Defaults to (0.2, 0.2, 0.6).
        regression_iteration (int, optional): the iteration whose
            ``loss_bbox`` is the box loss, unweighted (the authors: the
            last); None weights it like the others. Defaults to -1 (last).
        mlp_layers (int): linear layers of each MLP. Defaults to 2.
        mlp_hidden (int): width of their hidden layers. Defaults to 512.
        use_layer_norm (bool): LayerNorm of the class logits before
            ``g_cls`` (the authors' EQLv2 setting). Defaults to False.
        **kwargs: ``StandardRoIHead``'s arguments.
    """

    def __init__(self,
                 num_iterations: int = 3,
                 iteration_loss_weights: Sequence[float] = (0.2, 0.2, 0.6),
                 regression_iteration: Optional[int] = -1,
                 mlp_layers: int = 2,
                 mlp_hidden: int = 512,
                 use_layer_norm: bool = False,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(num_iterations, bool) or not isinstance(
                num_iterations, int) or num_iterations < 1:
            raise ValueError(f'IterativeRoIHead: num_iterations must be an '
                             f'integer >= 1, got {num_iterations!r}')
        weights = [float(w) for w in iteration_loss_weights]
        if len(weights) != num_iterations or not all(
                math.isfinite(w) and w >= 0 for w in weights):
            raise ValueError(
                f'IterativeRoIHead: iteration_loss_weights must be '
                f'{num_iterations} numbers >= 0 (one per iteration), got '
                f'{list(iteration_loss_weights)}')
        if regression_iteration is not None:
            if not -num_iterations <= regression_iteration < num_iterations:
                raise ValueError(
                    f'IterativeRoIHead: regression_iteration must lie in '
                    f'[{-num_iterations}, {num_iterations}) or be None, got '
                    f'{regression_iteration}')
            regression_iteration %= num_iterations
        if mlp_layers < 1:
            raise ValueError(f'IterativeRoIHead: mlp_layers must be >= 1, '
                             f'got {mlp_layers}')
        if self.with_shared_head:
            raise ValueError('IterativeRoIHead: a shared_head is not '
                             'supported; the box head must take the RoI '
                             'features')
        head = self.bbox_head
        if not (head.with_cls and head.with_reg):
            raise ValueError('IterativeRoIHead: the bbox_head must have a '
                             'classifier and a regressor (with_cls and '
                             'with_reg)')
        self.num_iterations = num_iterations
        self.iteration_loss_weights = weights
        self.regression_iteration = regression_iteration
        self.cls_modulation = mlp(head.fc_cls.out_features, mlp_hidden,
                                  head.in_channels, mlp_layers,
                                  use_layer_norm)
        self.loc_modulation = mlp(head.fc_reg.out_features, mlp_hidden,
                                  head.roi_feat_area, mlp_layers)

    def modulate(self, feats: Tensor, cls_score: Tensor,
                 bbox_pred: Tensor) -> Tensor:
        """``F * g_loc(t) + g_cls(s)``: the features of the next
        iteration."""
        num, channels, height, width = feats.shape
        channel_bias = self.cls_modulation(cls_score).view(
            num, channels, 1, 1)
        spatial_scale = self.loc_modulation(bbox_pred).view(
            num, 1, height, width)
        return feats * spatial_scale + channel_bias

    def _bbox_forward(self, x: Tuple[Tensor], rois: Tensor) -> dict:
        """The K iterations; ``cls_score`` and ``bbox_pred`` are the last
        one's, ``iterations`` all (cls_score, bbox_pred)."""
        bbox_feats = self.bbox_roi_extractor(
            x[:self.bbox_roi_extractor.num_inputs], rois)
        feats, iterations = bbox_feats, []
        for k in range(self.num_iterations):
            cls_score, bbox_pred = self.bbox_head(feats)
            iterations.append((cls_score, bbox_pred))
            if k < self.num_iterations - 1:
                feats = self.modulate(feats, cls_score, bbox_pred)
        return dict(
            cls_score=cls_score,
            bbox_pred=bbox_pred,
            bbox_feats=bbox_feats,
            iterations=iterations)

    def bbox_loss(self, x: Tuple[Tensor],
                  sampling_results: List[SamplingResult]) -> dict:
        """The box head's loss of each iteration on the same targets,
        combined by :func:`combine_iteration_losses`."""
        rois = bbox2roi([res.priors for res in sampling_results])
        bbox_results = self._bbox_forward(x, rois)
        targets = self.bbox_head.get_targets(sampling_results,
                                             self.train_cfg)
        loss_cls = self.bbox_head.loss_cls
        losses = []
        for k, (cls_score, bbox_pred) in enumerate(
                bbox_results['iterations']):
            if hasattr(loss_cls, 'set_iteration'):
                loss_cls.set_iteration(k, self.num_iterations)
            losses.append(
                self.bbox_head.loss(cls_score, bbox_pred, rois, *targets))
        bbox_results.update(loss_bbox=combine_iteration_losses(
            losses, self.iteration_loss_weights, self.regression_iteration))
        return bbox_results
