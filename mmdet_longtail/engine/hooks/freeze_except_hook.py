"""Train only some parameters: the decoupled (classifier re-training)
recipes of BAGS, cRT and LWS.

Kang et al., "Decoupling Representation and Classifier for Long-Tailed
Recognition", ICLR 2020 (https://arxiv.org/abs/1910.09217), and Li et al.,
"Overcoming Classifier Imbalance for Long-tail Object Detection with Balanced
Group Softmax", CVPR 2020 (https://arxiv.org/abs/2006.10408), re-train the
classifier of a trained detector with everything else fixed.
"""
import re
from typing import List, Optional, Sequence

import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm
from torch.nn.parallel import DistributedDataParallel

from mmdet.registry import HOOKS


def freeze_except(model: nn.Module, trainable: Sequence[str]) -> List[str]:
    """Set ``requires_grad`` to match: True only for parameters whose name
    matches one of the ``trainable`` regular expressions (``re.search``).

    Returns:
        list[str]: names of the trainable parameters.

    Raises:
        ValueError: a pattern matches no parameter (a typo would otherwise
            freeze the whole model).
    """
    patterns = [re.compile(p) for p in trainable]
    names = [name for name, _ in model.named_parameters()]
    for pattern in patterns:
        if not any(pattern.search(n) for n in names):
            raise ValueError(
                f'FreezeExceptHook: trainable pattern {pattern.pattern!r} '
                f'matches no parameter of {type(model).__name__} (names look '
                f'like {names[:3]})')
    kept = []
    for name, param in model.named_parameters():
        param.requires_grad_(any(p.search(name) for p in patterns))
        if param.requires_grad:
            kept.append(name)
    return kept


def frozen_norm_layers(model: nn.Module) -> List[nn.Module]:
    """Normalisation layers with running statistics whose own parameters
    are all frozen (their statistics must not move either)."""
    norm_types = (_BatchNorm, _InstanceNorm)
    return [
        m for m in model.modules() if isinstance(m, norm_types)
        and getattr(m, 'track_running_stats', False)
        and not any(p.requires_grad for p in m.parameters(recurse=False))
    ]


@HOOKS.register_module()
class FreezeExceptHook(Hook):
    """Freeze every parameter except those matching ``trainable``.

    Frozen parameters get no gradient, so the optimizer leaves them exactly
    unchanged (no weight decay, no momentum) and the backward stops early.
    Frozen BatchNorm-type layers are kept in eval mode at every iteration
    (mmengine calls ``model.train()`` at each epoch start), so their running
    statistics stay as loaded.

    Under DDP the parameters freeze after the model is wrapped, so the
    config must set ``model_wrapper_cfg=dict(type='MMDistributedDataParallel',
    find_unused_parameters=True)``; the hook checks it.

    Args:
        trainable (Sequence[str]): regular expressions searched in the
            parameter names of the unwrapped model, e.g.
            ``[r'bbox_head(\\.\\d+)?\\.fc_cls\\.']`` for every stage's
            classifier.
        frozen_norm_eval (bool): keep frozen normalisation layers in eval
            mode. Defaults to True.
    """
    priority = 'VERY_HIGH'

    def __init__(self,
                 trainable: Sequence[str],
                 frozen_norm_eval: bool = True) -> None:
        if isinstance(trainable, str) or not trainable:
            raise ValueError('FreezeExceptHook: trainable must be a '
                             'non-empty list of regular expressions, got '
                             f'{trainable!r}')
        self.trainable = list(trainable)
        self.frozen_norm_eval = frozen_norm_eval
        self._frozen_norms: List[nn.Module] = []

    def before_train(self, runner) -> None:
        model = runner.model
        if isinstance(model, DistributedDataParallel) and \
                not model.find_unused_parameters:
            raise ValueError(
                'FreezeExceptHook under DDP needs model_wrapper_cfg=dict('
                "type='MMDistributedDataParallel', "
                'find_unused_parameters=True) in the config')
        if is_model_wrapper(model):
            model = model.module
        kept = freeze_except(model, self.trainable)
        total = sum(p.numel() for p in model.parameters())
        num_kept = sum(p.numel() for n, p in model.named_parameters()
                       if p.requires_grad)
        runner.logger.info(
            f'FreezeExceptHook: training {len(kept)} tensors '
            f'({num_kept} of {total} parameters): {kept}')
        self._frozen_norms = frozen_norm_layers(model) \
            if self.frozen_norm_eval else []

    def before_train_iter(self,
                          runner,
                          batch_idx: int,
                          data_batch: Optional[dict] = None) -> None:
        for module in self._frozen_norms:
            module.eval()
