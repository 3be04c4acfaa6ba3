"""RoI heads that train and test :class:`TDEBBoxHead`.

Tang, Huang and Zhang, "Long-Tailed Classification by Keeping the Good and
Removing the Bad Momentum Causal Effect", NeurIPS 2020.
https://arxiv.org/abs/2009.12991

* Training: the labels of the sampled RoIs (background = C) are handed to
  the box head, whose classifier updates its moving-average feature from the
  foreground RoIs (:class:`TDEClassifier`).
* Cascade / HTC testing: every stage's classifier returns ``[z | t]`` (the
  de-confounded and the TDE logits). ``test_cfg.rcnn.tde_stage_average``
  says how the stages are combined:

  - ``'scores'`` (default, as the authors' HTC): each stage scores its own
    ``[z | t]`` (background-exempted TDE) and the probabilities are
    averaged, ``s = mean_k s_k``;
  - ``'logits'``: ``[z | t]`` is averaged first (``mean(t) = mean(z) -
    alpha * mean(y0)``, as mmdet averages a cascade's raw class scores) and
    the last stage's head scores the average once.

  Between stages, the class whose box regression refines a RoI is the
  stage's best foreground class under its scoring (mmdet's cascades regress
  class-agnostically, so this matters only for class-specific heads).
* Test-time settings for every framework with one key: ``test_cfg.rcnn``
  may hold ``tde_alpha`` and ``tde_scoring``; when present they override the
  ``alpha`` / ``scoring`` of every stage's box head (logged), e.g.
  ``--cfg-options model.test_cfg.rcnn.tde_alpha=1.0``.
"""
from typing import List, Sequence, Tuple

import torch
from mmengine.logging import print_log
from torch import Tensor

from mmdet.models.roi_heads import (CascadeRoIHead, HybridTaskCascadeRoIHead,
                                    StandardRoIHead)
from mmdet.models.task_modules.samplers import SamplingResult
from mmdet.registry import MODELS
from mmdet.structures.bbox import get_box_tensor
from .bbox_heads.tde_bbox_head import TDEBBoxHead, check_scoring

#: ``test_cfg.rcnn`` keys overriding the box heads' test-time settings
TEST_CFG_KEYS = dict(tde_alpha='alpha', tde_scoring='scoring')

#: ``test_cfg.rcnn.tde_stage_average`` of the cascades: average each stage's
#: probabilities (the authors') or the stages' ``[z | t]`` before scoring
STAGE_AVERAGES = ('scores', 'logits')


def sampled_roi_labels(sampling_results: Sequence[SamplingResult],
                       background_label: int) -> Tensor:
    """Labels of the sampled RoIs in the order of ``bbox2roi(priors)``.

    Each image contributes its positives (their ground-truth labels) and
    then its negatives (``background_label``), as ``SamplingResult.priors``
    orders them.
    """
    labels = []
    for result in sampling_results:
        labels.append(result.pos_gt_labels.long())
        labels.append(result.pos_gt_labels.new_full(
            (result.neg_priors.size(0), ), background_label,
            dtype=torch.long))
    return torch.cat(labels)


def combine_stages(heads: Sequence[TDEBBoxHead], stage_scores: List[Tensor],
                   stage_average: str) -> Tensor:
    """The class output the last stage's head scores, from every stage's
    ``[z | t]`` (see :data:`STAGE_AVERAGES`)."""
    if stage_average == 'logits':
        # the same arithmetic (and order) as CascadeRoIHead._refine_roi
        return sum(stage_scores) / float(len(stage_scores))
    mean = sum(
        head.class_log_scores(score).exp()
        for head, score in zip(heads, stage_scores)) / float(
            len(stage_scores))
    # [log s | log s]: every scoring of the last head maps it back to s
    # (softmax(log s) = s as s sums to 1; s exempts its own background)
    log_mean = mean.log()
    return torch.cat([log_mean, log_mean], dim=1)


def configure_tde_heads(bbox_heads: Sequence, test_cfg, owner: str) -> None:
    """Check the box heads and apply the ``test_cfg.rcnn`` overrides."""
    for stage, head in enumerate(bbox_heads):
        if not isinstance(head, TDEBBoxHead):
            raise TypeError(
                f'{owner} needs TDEBBoxHead box heads; bbox_head'
                f'{"" if len(bbox_heads) == 1 else f"[{stage}]"} is '
                f'{type(head).__name__}')
    if not test_cfg:
        return
    for cfg_key, attribute in TEST_CFG_KEYS.items():
        value = test_cfg.get(cfg_key)
        if value is None:
            continue
        if attribute == 'scoring':
            check_scoring(value, f'{owner} test_cfg.{cfg_key}')
        else:
            value = float(value)
        for head in bbox_heads:
            if getattr(head, attribute) != value:
                print_log(
                    f'{owner}: test_cfg.{cfg_key}={value!r} overrides the box '
                    f'head {attribute}={getattr(head, attribute)!r}',
                    logger='current')
            head.set_scoring_settings(**{attribute: value})


@MODELS.register_module()
class TDERoIHead(StandardRoIHead):
    """:class:`StandardRoIHead` (Faster / Mask R-CNN) for
    :class:`TDEBBoxHead`.

    Training passes the sampled RoIs' labels to the box head; testing is the
    stock one (the box head scores). ``test_cfg.rcnn.tde_alpha`` /
    ``tde_scoring`` override the box head's ``alpha`` / ``scoring``.
    """

    def init_bbox_head(self, bbox_roi_extractor, bbox_head) -> None:
        super().init_bbox_head(bbox_roi_extractor, bbox_head)
        configure_tde_heads([self.bbox_head], self.test_cfg,
                            type(self).__name__)

    def bbox_loss(self, x: Tuple[Tensor],
                  sampling_results: List[SamplingResult]) -> dict:
        labels = sampled_roi_labels(sampling_results,
                                    self.bbox_head.num_classes)
        with self.bbox_head.roi_labels(labels):
            return super().bbox_loss(x, sampling_results)


class TDECascadeMixin:
    """Training and test-time refinement shared by the cascade variants."""

    def init_bbox_head(self, bbox_roi_extractor, bbox_head) -> None:
        super().init_bbox_head(bbox_roi_extractor, bbox_head)
        configure_tde_heads(list(self.bbox_head), self.test_cfg,
                            type(self).__name__)
        average = self.stage_average
        if average not in STAGE_AVERAGES:
            raise ValueError(
                f'{type(self).__name__}: test_cfg.rcnn.tde_stage_average='
                f'{average!r} is not one of {STAGE_AVERAGES}')

    @property
    def stage_average(self) -> str:
        """How the stages' class outputs are combined at test time (see
        :data:`STAGE_AVERAGES`)."""
        return (self.test_cfg or {}).get('tde_stage_average', 'scores')

    def bbox_loss(self, stage: int, x: Tuple[Tensor],
                  sampling_results: List[SamplingResult], **kwargs) -> dict:
        head = self.bbox_head[stage]
        labels = sampled_roi_labels(sampling_results, head.num_classes)
        with head.roi_labels(labels):
            return super().bbox_loss(
                stage=stage, x=x, sampling_results=sampling_results,
                **kwargs)

    def _refine_roi(self, x: Tuple[Tensor], rois: Tensor,
                    batch_img_metas: List[dict],
                    num_proposals_per_img: Sequence[int], **kwargs) -> tuple:
        """Multi-stage refinement at test time.

        As ``CascadeRoIHead._refine_roi``, except that the intermediate
        class is chosen from the stage's TDE scores (the stock method takes
        the arg-max of the raw ``cls_score`` columns, which here hold
        ``[z | t]``) and the stages are combined as :attr:`stage_average`
        says. Returns the last RoIs, the combined class output in the
        ``[z | t]`` layout the last head scores, and the last box
        regression, split per image.
        """
        stage_scores = []
        for stage in range(self.num_stages):
            bbox_results = self._bbox_forward(
                stage=stage, x=x, rois=rois, **kwargs)
            cls_score = bbox_results['cls_score']
            bbox_pred = bbox_results['bbox_pred']
            stage_scores.append(cls_score)
            if stage < self.num_stages - 1:
                head = self.bbox_head[stage]
                labels = head.class_log_scores(cls_score)[:, :-1].argmax(1)
                rois = self._regress_rois(head, rois, labels, bbox_pred,
                                          batch_img_metas,
                                          num_proposals_per_img)
        mean_score = combine_stages(self.bbox_head, stage_scores,
                                    self.stage_average)
        return (rois.split(num_proposals_per_img, 0),
                mean_score.split(num_proposals_per_img, 0),
                bbox_pred.split(num_proposals_per_img, 0))

    @staticmethod
    def _regress_rois(head: TDEBBoxHead, rois: Tensor, labels: Tensor,
                      bbox_pred: Tensor, batch_img_metas: List[dict],
                      num_proposals_per_img: Sequence[int]) -> Tensor:
        """RoIs moved by one stage's regression (per image: the box coder
        clips to each image's shape)."""
        refined = []
        for img_rois, img_labels, img_pred, img_meta in zip(
                rois.split(num_proposals_per_img, 0),
                labels.split(num_proposals_per_img, 0),
                bbox_pred.split(num_proposals_per_img, 0), batch_img_metas):
            if img_rois.size(0) == 0:
                continue
            boxes = get_box_tensor(
                head.regress_by_class(img_rois[:, 1:], img_labels, img_pred,
                                      img_meta))
            refined.append(torch.cat([img_rois[:, :1], boxes], dim=1))
        return torch.cat(refined)


@MODELS.register_module()
class TDECascadeRoIHead(TDECascadeMixin, CascadeRoIHead):
    """:class:`CascadeRoIHead` (Cascade Mask R-CNN) for
    :class:`TDEBBoxHead` in every stage.

    Training passes each stage's sampled labels to that stage's box head
    (each stage keeps its own moving-average feature). At test time the
    stages are combined as ``test_cfg.rcnn.tde_stage_average`` says (by
    default each stage's probabilities are averaged).
    """


@MODELS.register_module()
class TDEHybridTaskCascadeRoIHead(TDECascadeMixin, HybridTaskCascadeRoIHead):
    """:class:`HybridTaskCascadeRoIHead` (HTC, with or without the semantic
    branch) for :class:`TDEBBoxHead` in every stage; as
    :class:`TDECascadeRoIHead`. The mask heads are the stock ones, as in the
    paper."""
