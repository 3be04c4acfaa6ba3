"""Pairwise Class Balance (PCB) on top of a RoI classification loss.

He et al., "Relieving Long-tailed Instance Segmentation via Pairwise Class
Balance", CVPR 2022 (https://arxiv.org/abs/2201.02784).

A C x C foreground confusion matrix M (row: ground-truth class, column:
predicted class) is an exponential moving average of the classifier's class
probabilities ``pi(z_i)`` of the foreground RoIs, grouped by their label::

    B_j  = 1 / n_j * sum_{i: y_i = j} pi(z_i)    (n_j > 0, summed over ranks)
    M_j <- m M_j + (1 - m) B_j                   (a row's first B_j sets it)

``pi`` is the softmax over the C class logits for softmax classifiers
(CE, Seesaw) and the sigmoid of each class logit for sigmoid ones (EQLv2).
Each RoI of class y gets the "fightback" soft label of column y of M, the
classes that are confused *as* y::

    q_y = M[:, y] / sum_j M[j, y]     (softmax)      q_y = M[:, y] (sigmoid)

From the switch on (``pcb_enabled``, set by ``DeferredSwitchHook``; and
once every class has had a foreground RoI, as the authors require), the
loss of iteration k of K of the iterative RoI head is::

    a_k = alpha * k / (K - 1)                    (k = 0 .. K - 1; K = 1: alpha)
    L   = L_base + a_k / A * sum_{i fg} w_i [D(q_{y_i} || p_i)
                                             - D(e_{y_i} || p_i)]

with ``w_i`` mmdet's label weights, A its ``avg_factor`` (N without one), p
the classifier's distribution (the softmax over the rows of the class
group; independent sigmoids, D then summing the binary KL of each class)
and e_y the one-hot label. For the softmax CE base this is exactly the
paper's (and the authors' code's) loss::

    L = CE_bg + (1 - a_k) CE_fg + a_k KL(q_y || p)

and for every base it moves the weight a_k of the foreground RoIs' hard
label to the soft label in the classifier's own probabilities. Before the
switch L = L_base exactly. Background RoIs have no pairwise term.
"""
import math
from typing import Dict, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dist import all_reduce
from mmengine.logging import print_log
from torch import Tensor

from mmdet.models.losses import CrossEntropyLoss
from mmdet.registry import MODELS
from mmdet_longtail.models.layers.classifier_layout import (
    ClassifierLayout, classifier_layout)
from .utils import ClassifierInputs, check_num_classes, upcast_half

# what D and pi are, by the kind of the base loss's classifier layout
SOFTMAX_KINDS = ('softmax', 'seesaw')
SIGMOID_KINDS = ('sigmoid', )


def base_layout(base: nn.Module, num_classes: int) -> ClassifierLayout:
    """The classifier layout of the base loss, with its C class rows."""
    if isinstance(base, CrossEntropyLoss):
        if base.use_mask:
            raise ValueError('PCBLoss: base_loss CrossEntropyLoss with '
                             'use_mask=True is a mask loss, not a RoI '
                             'classification loss')
        # a stock BBoxHead sizes C + 1 outputs, background last
        layout = (ClassifierLayout.sigmoid(num_classes, background=True)
                  if base.use_sigmoid else
                  ClassifierLayout.softmax(num_classes))
    else:
        try:
            layout = classifier_layout(base)
        except TypeError:
            raise ValueError(
                f'PCBLoss: base_loss {type(base).__name__} does not describe '
                f'its foreground class logits (no classifier_layout()); use '
                f'CrossEntropyLoss, SeesawLoss or a loss of this package'
            ) from None
    if layout.kind not in SOFTMAX_KINDS + SIGMOID_KINDS:
        raise ValueError(f'PCBLoss: base_loss {type(base).__name__} has a '
                         f'{layout.kind!r} classifier; PCB supports '
                         f'{SOFTMAX_KINDS + SIGMOID_KINDS}')
    if layout.num_classes != num_classes:
        raise ValueError(f'PCBLoss: num_classes={num_classes} but base_loss '
                         f'{type(base).__name__} has {layout.num_classes}')
    return layout


def iteration_alpha(alpha: float, iteration: int,
                    num_iterations: int) -> float:
    """``a_k = alpha * k / (K - 1)``; ``alpha`` when K = 1."""
    if num_iterations == 1:
        return alpha
    return alpha * iteration / (num_iterations - 1)


def fightback_targets(confusion: Tensor, labels: Tensor,
                      normalise: bool) -> Tensor:
    """(N, C) soft labels: column ``y_i`` of M, divided by its sum when
    ``normalise`` (softmax classifiers)."""
    if normalise:
        confusion = confusion / confusion.sum(0, keepdim=True)
    return confusion[:, labels.long()].t()


def _xlogy_over(q: Tensor, p_log: Tensor) -> Tensor:
    """``q log q - q log p`` with ``0 log 0 = 0``, elementwise."""
    return torch.xlogy(q, q) - q * p_log


def softmax_pairwise_term(logits: Tensor, targets: Tensor,
                          labels: Tensor) -> Tensor:
    """Per-RoI ``KL(q || p) - KL(e_y || p)`` of a softmax over ``logits``
    (N, R), the targets (N, C) on its first C rows (0 on the others)."""
    log_p = F.log_softmax(logits, dim=1)
    kl = _xlogy_over(targets, log_p[:, :targets.size(1)]).sum(1)
    hard = -log_p.gather(1, labels.long()[:, None])[:, 0]
    return kl - hard


def sigmoid_pairwise_term(logits: Tensor, targets: Tensor,
                          labels: Tensor) -> Tensor:
    """Per-RoI ``sum_c [KL_b(q_c || s_c) - KL_b(e_yc || s_c)]`` of the
    sigmoids ``s`` of the C class ``logits`` (N, C), binary KL ``KL_b``."""
    one_hot = F.one_hot(labels.long(), logits.size(1)).to(logits)
    entropy = -(torch.xlogy(targets, targets) +
                torch.xlogy(1 - targets, 1 - targets))
    soft = F.binary_cross_entropy_with_logits(
        logits, targets, reduction='none') - entropy
    hard = F.binary_cross_entropy_with_logits(
        logits, one_hot, reduction='none')
    return (soft - hard).sum(1)


@MODELS.register_module()
class PCBLoss(nn.Module):
    """Pairwise Class Balance (He et al., CVPR 2022,
    https://arxiv.org/abs/2201.02784) added to a base classification loss
    (see the module docstring for the equations).

    Called as mmdet's RoI heads call their classification loss. The base
    loss keeps its classifier (the BBoxHead custom-classifier protocol,
    activation, accuracy and layout are the base's); its output is returned
    with the pairwise term added (a tensor), or with the term under the key
    ``loss_pcb`` (a dict, e.g. Seesaw's).

    Buffers (saved in checkpoints, restored by ``--resume``):
    ``confusion`` (C, C), M; ``class_count`` (C,), the foreground RoIs seen
    per class. Updated without gradient by every call in training mode,
    summed over the ranks under ``torch.distributed`` (every rank must call
    the loss the same number of times), so all ranks keep the same M.

    Args:
        base_loss (dict): config of the base loss, e.g.
            ``dict(type='CrossEntropyLoss')``, ``dict(type='SeesawLoss',
            ...)`` or ``dict(type='EQLv2', ...)``.
        num_classes (int): C, foreground classes.
        alpha (float): alpha in [0, 1], the weight of the soft label in the
            last iteration. The authors use 0.4 (CE), 0.05 (Seesaw) and
            0.2 (EQLv2). Defaults to 0.4.
        momentum (float): m in [0, 1) of the moving average. Defaults to
            0.99.
        pcb_enabled (bool): the switch; ``DeferredSwitchHook`` sets it from
            the epoch. Defaults to False.
    """

    def __init__(self,
                 base_loss: dict,
                 num_classes: int,
                 alpha: float = 0.4,
                 momentum: float = 0.99,
                 pcb_enabled: bool = False) -> None:
        super().__init__()
        if not isinstance(base_loss, dict) or 'type' not in base_loss:
            raise ValueError(f'PCBLoss: base_loss must be a loss config '
                             f'with a type, got {base_loss!r}')
        alpha, momentum = float(alpha), float(momentum)
        if not (math.isfinite(alpha) and 0 <= alpha <= 1):
            raise ValueError(f'PCBLoss: alpha must lie in [0, 1], got '
                             f'{alpha}')
        if not (math.isfinite(momentum) and 0 <= momentum < 1):
            raise ValueError(f'PCBLoss: momentum must lie in [0, 1), got '
                             f'{momentum}')
        self.num_classes = check_num_classes('PCBLoss', num_classes)
        self.alpha = alpha
        self.momentum = momentum
        self.pcb_enabled = bool(pcb_enabled)
        self.base = MODELS.build(base_loss)
        self.layout = base_layout(self.base, self.num_classes)
        self.iteration, self.num_iterations = 0, 1
        self.register_buffer('confusion',
                             torch.zeros(self.num_classes, self.num_classes))
        self.register_buffer('class_count', torch.zeros(self.num_classes))
        self.inputs = ClassifierInputs(
            'PCBLoss', self.num_classes, self.layout.num_rows,
            self.layout.summary())
        self._warned_unseen = False

    # -- the base loss's classifier protocol ---------------------------------

    @property
    def custom_cls_channels(self) -> bool:
        return getattr(self.base, 'custom_cls_channels', False)

    @property
    def custom_activation(self) -> bool:
        return getattr(self.base, 'custom_activation', False)

    @property
    def custom_accuracy(self) -> bool:
        return getattr(self.base, 'custom_accuracy', False)

    def get_cls_channels(self, num_classes: int) -> int:
        """The base loss's classifier outputs."""
        return self.base.get_cls_channels(num_classes)

    def get_activation(self, cls_score: Tensor) -> Tensor:
        """The base loss's scores (N, C + 1), background last."""
        return self.base.get_activation(cls_score)

    def get_accuracy(self, cls_score: Tensor,
                     labels: Tensor) -> Dict[str, Tensor]:
        """The base loss's accuracies."""
        return self.base.get_accuracy(cls_score, labels)

    def classifier_layout(self) -> ClassifierLayout:
        """The base loss's classifier layout."""
        return self.layout

    # -- PCB -----------------------------------------------------------------

    def set_iteration(self, iteration: int, num_iterations: int) -> None:
        """The iteration k (0-based) of K of the iterative RoI head whose
        loss the next calls compute."""
        if not 0 <= int(iteration) < int(num_iterations):
            raise ValueError(f'PCBLoss: iteration must lie in [0, '
                             f'{num_iterations}), got {iteration}')
        self.iteration, self.num_iterations = int(iteration), int(
            num_iterations)

    def current_alpha(self) -> float:
        """a_k of the current iteration."""
        return iteration_alpha(self.alpha, self.iteration,
                               self.num_iterations)

    def class_probabilities(self, cls_score: Tensor) -> Tensor:
        """(N, C) pi(z): softmax over the class logits, or their
        sigmoids."""
        logits = cls_score[:, list(self.layout.class_rows)]
        if self.layout.kind in SIGMOID_KINDS:
            return torch.sigmoid(logits)
        return F.softmax(logits, dim=1)

    @torch.no_grad()
    def update_confusion(self, cls_score: Tensor, labels: Tensor) -> None:
        """One moving-average step of M from the foreground RoIs of this
        call, summed over the ranks."""
        fg = labels < self.num_classes
        probs = self.class_probabilities(upcast_half(cls_score[fg].detach()))
        sums = self.confusion.new_zeros(self.num_classes,
                                        self.num_classes + 1)
        rows = labels[fg].long()
        sums[:, :-1].index_add_(0, rows, probs.to(sums))
        sums[:, -1].index_add_(0, rows, sums.new_ones(rows.numel()))
        all_reduce(sums, op='sum')
        counts = sums[:, -1]
        seen = counts > 0
        batch = sums[seen, :-1] / counts[seen, None]
        first = self.class_count[seen] == 0
        ema = self.momentum * self.confusion[seen] + (1 -
                                                      self.momentum) * batch
        self.confusion[seen] = torch.where(first[:, None], batch, ema)
        self.class_count += counts

    def pcb_active(self) -> bool:
        """The switch is on and every class has had a foreground RoI."""
        if not self.pcb_enabled:
            return False
        if bool((self.class_count > 0).all()):
            return True
        if not self._warned_unseen:
            self._warned_unseen = True
            unseen = int((self.class_count == 0).sum())
            print_log(f'PCBLoss: switched on, but {unseen} of '
                      f'{self.num_classes} classes have had no foreground '
                      f'RoI yet; the pairwise term waits for them',
                      logger='current')
        return False

    def pairwise_term(self, cls_score: Tensor, labels: Tensor) -> Tensor:
        """Per-RoI ``D(q || p) - D(e_y || p)`` (N,), 0 for background."""
        cls_score = upcast_half(cls_score)
        fg = labels < self.num_classes
        term = cls_score.new_zeros(labels.shape)
        if not bool(fg.any()):
            return term
        softmax = self.layout.kind in SOFTMAX_KINDS
        targets = fightback_targets(
            self.confusion.to(cls_score.dtype), labels[fg], softmax)
        if softmax:
            group = (self.layout.groups[0] if self.layout.groups else
                     range(self.layout.num_rows))
            logits = cls_score[fg][:, list(group)]
            term[fg] = softmax_pairwise_term(logits, targets, labels[fg])
        else:
            logits = cls_score[fg][:, list(self.layout.class_rows)]
            term[fg] = sigmoid_pairwise_term(logits, targets, labels[fg])
        return term

    def forward(self,
                cls_score: Tensor,
                labels: Tensor,
                label_weights: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None,
                **kwargs) -> Union[Tensor, Dict[str, Tensor]]:
        """The base loss, plus ``a_k`` times the pairwise term once PCB is
        on; in training mode M is updated first."""
        reduction = self.inputs.check(
            cls_score, labels, label_weights,
            reduction=reduction_override or 'mean')
        # once for the confusion update, the base loss and the term
        cls_score = upcast_half(cls_score)
        if self.training:
            self.update_confusion(cls_score, labels)
        loss = self.base(cls_score, labels, label_weights,
                         avg_factor=avg_factor,
                         reduction_override=reduction_override, **kwargs)
        alpha = self.current_alpha()
        if not self.pcb_active() or alpha == 0:
            return loss
        term = self.pairwise_term(cls_score, labels)
        if label_weights is not None:
            term = term * label_weights.reshape(-1).to(term)
        if reduction == 'sum':
            term = term.sum()
        elif reduction == 'mean':
            norm = avg_factor if avg_factor is not None else labels.numel()
            term = term.sum() / max(float(norm), 1.0)
        pcb = alpha * term
        if isinstance(loss, dict):
            return dict(loss, loss_pcb=pcb)
        return loss + pcb.to(loss.dtype)

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, alpha={self.alpha}, '
                f'momentum={self.momentum}, pcb_enabled={self.pcb_enabled}')
