"""RoI box head with a Balanced Group Softmax classifier.

Li et al., "Overcoming Classifier Imbalance for Long-tail Object Detection
with Balanced Group Softmax", CVPR 2020. https://arxiv.org/abs/2006.10408
"""
from typing import Any, Optional, Sequence

from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
from mmdet.registry import MODELS
from mmdet.utils import ConfigType
from mmdet_longtail.models.losses.group_softmax_loss import (GroupLayout,
                                                             GroupSoftmaxLoss)

LOSS_TYPE = 'GroupSoftmaxLoss'


def merge_group_softmax_cfg(loss_cls: ConfigType, num_classes: int,
                            **head_args: Any) -> dict:
    """The loss config completed with the head's settings.

    A setting may be given on the head or on ``loss_cls``; giving it on both
    with different values is an error rather than a silent choice.
    """
    cfg = dict(loss_cls)
    loss_type = cfg.get('type')
    if loss_type not in (LOSS_TYPE, GroupSoftmaxLoss):
        raise ValueError(
            f'BAGSBBoxHead needs loss_cls=dict(type={LOSS_TYPE!r}), got '
            f'{loss_type!r}; when inheriting a base config write loss_cls='
            f'dict(_delete_=True, type={LOSS_TYPE!r})')
    for key, value in dict(head_args, num_classes=num_classes).items():
        if value is None:
            continue
        if cfg.get(key) is not None and _normalise(cfg[key]) != \
                _normalise(value):
            raise ValueError(f'BAGSBBoxHead: {key}={value!r} but loss_cls.'
                             f'{key}={cfg[key]!r}; set it in one place')
        cfg[key] = value
    return cfg


def _normalise(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else value


@MODELS.register_module()
class BAGSBBoxHead(Shared2FCBBoxHead):
    """Shared 2-fc box head whose classifier is a Balanced Group Softmax.

    ``fc_cls`` has ``C + 1 + number_of_groups`` outputs laid out as
    ``[G_1 | ... | G_G | G_bg]`` (see :class:`GroupSoftmaxLoss`); at test time
    the scores are merged into ``(N, C + 1)``, background last, so mmdet's
    NMS, Cascade / HTC stage averaging (of logits) and the LVIS metric work
    unchanged. Box regression is the stock one. Works as the head of Faster
    / Mask R-CNN and as every stage's head of Cascade and HTC.

    Args:
        num_classes (int): foreground classes. Defaults to 80 (as BBoxHead).
        ann_file (str, optional): LVIS *train* annotation file whose
            instance counts define the groups. Give this or
            ``instance_count`` (here or in ``loss_cls``).
        instance_count (Sequence[int], optional): explicit instance counts.
        group_bounds (Sequence[int], optional): group boundaries on the
            instance count. None: the loss default (10, 100, 1000).
        beta (float, optional): "others" RoIs kept per in-group RoI.
            None: the loss default 8.0.
        seed (int, optional): seed of the "others" sampling. None: the run's
            seed.
        loss_cls (dict): ``dict(type='GroupSoftmaxLoss', ...)``; the head
            fills in ``num_classes`` and the settings above.
        **kwargs: the arguments of :class:`Shared2FCBBoxHead`.
    """

    def __init__(self,
                 num_classes: int = 80,
                 ann_file: Optional[str] = None,
                 instance_count: Optional[Sequence[int]] = None,
                 group_bounds: Optional[Sequence[int]] = None,
                 beta: Optional[float] = None,
                 seed: Optional[int] = None,
                 loss_cls: ConfigType = dict(
                     type=LOSS_TYPE, loss_weight=1.0),
                 **kwargs) -> None:
        loss_cfg = merge_group_softmax_cfg(
            loss_cls,
            num_classes,
            ann_file=ann_file,
            instance_count=instance_count,
            group_bounds=group_bounds,
            beta=beta,
            seed=seed)
        super().__init__(num_classes=num_classes, loss_cls=loss_cfg, **kwargs)

    @property
    def group_layout(self) -> GroupLayout:
        """Which class sits in which classifier column."""
        return self.loss_cls.layout
