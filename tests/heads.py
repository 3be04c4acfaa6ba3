"""A small mmdet Shared2FCBBoxHead around a classification loss, and its
scores and losses on given logits: how the loss tests check a loss through
the real head (channels, activation, accuracy, loss)."""
import torch


def shared_2fc_head(loss_cls: dict, num_classes: int = 3):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    return MODELS.build(
        dict(
            type='Shared2FCBBoxHead',
            in_channels=4,
            fc_out_channels=8,
            roi_feat_size=2,
            num_classes=num_classes,
            loss_cls=loss_cls))


def rois_like(logits: torch.Tensor) -> torch.Tensor:
    """One 8 x 8 box of image 0 per row of ``logits``."""
    num_rois = logits.size(0)
    box = torch.tensor([[0., 0., 8., 8.]], dtype=logits.dtype)
    return torch.cat(
        [torch.zeros(num_rois, 1, dtype=logits.dtype),
         box.repeat(num_rois, 1)], dim=1)


def _box_deltas(head, logits: torch.Tensor) -> torch.Tensor:
    width = 4 if head.reg_class_agnostic else 4 * head.num_classes
    return torch.zeros(logits.size(0), width, dtype=logits.dtype)


def raw_head_scores(head, logits: torch.Tensor) -> torch.Tensor:
    """Scores BBoxHead computes for the RoIs (no NMS: the aug-test path)."""
    result = head._predict_by_feat_single(
        roi=rois_like(logits),
        cls_score=logits,
        bbox_pred=_box_deltas(head, logits),
        img_meta=dict(img_shape=(32, 32)),
        rescale=False,
        rcnn_test_cfg=None)
    return result.scores


def head_losses(head, logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """BBoxHead.loss of the RoIs with ``labels``, every label weight 1 and
    zero box targets."""
    num_rois = logits.size(0)
    zeros = torch.zeros(num_rois, 4, dtype=logits.dtype)
    return head.loss(logits, _box_deltas(head, logits), rois_like(logits),
                     labels, torch.ones(num_rois, dtype=logits.dtype), zeros,
                     zeros)
