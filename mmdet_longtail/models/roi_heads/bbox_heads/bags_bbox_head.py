"""RoI box head with a Balanced Group Softmax classifier.

Li et al., "Overcoming Classifier Imbalance for Long-tail Object Detection
with Balanced Group Softmax", CVPR 2020. https://arxiv.org/abs/2006.10408
"""
from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
from mmdet.registry import MODELS
from mmdet.utils import ConfigType
from mmdet_longtail.models.losses.group_softmax_loss import (GroupLayout,
                                                             GroupSoftmaxLoss)

LOSS_TYPE = 'GroupSoftmaxLoss'
# settings the head once took and passed on; they belong to ``loss_cls``
LOSS_SETTINGS = ('ann_file', 'instance_count', 'class_statistics',
                 'group_bounds', 'beta', 'seed')


@MODELS.register_module()
class BAGSBBoxHead(Shared2FCBBoxHead):
    """Shared 2-fc box head whose classifier is a Balanced Group Softmax.

    ``loss_cls`` is a :class:`GroupSoftmaxLoss`; as every custom-classifier
    loss it sizes ``fc_cls`` (``C + 1 + number_of_groups`` outputs laid out
    ``[G_1 | ... | G_G | G_bg]``) and merges the scores into ``(N, C + 1)``,
    background last, at test time, so mmdet's NMS, Cascade / HTC stage
    averaging and the LVIS metric work unchanged. Box regression is the stock
    one. Works as the head of Faster / Mask R-CNN and as every stage's head
    of Cascade and HTC. The loss declares ``num_classes`` and its settings;
    the head checks that they agree with its own ``num_classes``.

    Args:
        loss_cls (dict): ``dict(type='GroupSoftmaxLoss', num_classes=C,
            ...)``.
        **kwargs: the arguments of :class:`Shared2FCBBoxHead`.
    """

    def __init__(self, loss_cls: ConfigType, **kwargs) -> None:
        moved = sorted(set(LOSS_SETTINGS) & set(kwargs))
        if moved:
            raise ValueError(
                f'BAGSBBoxHead: {moved} are settings of loss_cls (type='
                f'{LOSS_TYPE!r}), not of the head; the class statistics come '
                f'from train_dataloader.dataset (class_statistics)')
        if loss_cls.get('type') not in (LOSS_TYPE, GroupSoftmaxLoss):
            raise ValueError(
                f'BAGSBBoxHead needs loss_cls=dict(type={LOSS_TYPE!r}), got '
                f'{loss_cls.get("type")!r}; when inheriting a base config '
                f'write loss_cls=dict(_delete_=True, type={LOSS_TYPE!r}, '
                f'num_classes=...)')
        super().__init__(loss_cls=loss_cls, **kwargs)

    @property
    def group_layout(self) -> GroupLayout:
        """Which class sits in which classifier column."""
        return self.loss_cls.layout
