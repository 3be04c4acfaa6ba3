"""Record what the RoI box branch computes, through forward hooks.

During ``model.test_step`` every stage's box head returns its class scores
and box regression, every stage's classifier (``fc_cls``) receives its
features, and the last stage's RoI extractor receives the RoIs the last
head's post-processing gets. Public PyTorch forward hooks observe these
calls; no method of the model is replaced.
"""
from typing import Callable, List, Optional

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .detector import stage_heads


def _last_extractor(model: nn.Module) -> nn.Module:
    extractor = model.roi_head.bbox_roi_extractor
    return extractor[-1] if isinstance(extractor,
                                       nn.ModuleList) else extractor


def _single_call(calls: list, what: str) -> object:
    if len(calls) != 1:
        raise RuntimeError(
            f'the score sweep expects one call of {what} per batch, got '
            f'{len(calls)}; cannot tell which produced the detections')
    return calls[0]


class HeadRecorder:
    """Context that records, batch by batch, the box branch of ``model``.

    Args:
        model (nn.Module): a two-stage detector in eval mode.
        combine_stages (callable): the stages' class outputs (a list, one
            per stage) combined as the RoI head combines them.
    """

    def __init__(self, model: nn.Module,
                 combine_stages: Callable[[List[Tensor]], Tensor]) -> None:
        self.heads = stage_heads(model)
        self.extractor = _last_extractor(model)
        self.with_mask = bool(getattr(model.roi_head, 'with_mask', False))
        self.combine_stages = combine_stages
        self._handles: List[RemovableHandle] = []
        self.start_batch()

    def __enter__(self) -> 'HeadRecorder':
        self._handles.append(
            self.extractor.register_forward_hook(
                self._record_rois, with_kwargs=True))
        for stage, head in enumerate(self.heads):
            self._handles.append(
                head.register_forward_hook(self._head_hook(stage)))
            if isinstance(getattr(head, 'fc_cls', None), nn.Module):
                self._handles.append(
                    head.fc_cls.register_forward_hook(
                        self._feature_hook(stage)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def start_batch(self) -> None:
        """Forget the previous batch."""
        self.rois: List[Tensor] = []
        self.head_outputs: List[list] = [[] for _ in self.heads]
        self.stage_feats: List[List[Tensor]] = [[] for _ in self.heads]

    # -- hooks -------------------------------------------------------------

    def _record_rois(self, module: nn.Module, args: tuple, kwargs: dict,
                     output) -> None:
        rois = args[1] if len(args) > 1 else kwargs['rois']
        self.rois.append(rois.detach())

    def _head_hook(self, stage: int) -> Callable:

        def hook(module: nn.Module, inputs: tuple, output) -> None:
            self.head_outputs[stage].append(output)

        return hook

    def _feature_hook(self, stage: int) -> Callable:

        def hook(module: nn.Module, inputs: tuple, output) -> None:
            self.stage_feats[stage].append(inputs[0].detach())

        return hook

    # -- records -----------------------------------------------------------

    def image_records(self, batch_img_metas: List[dict]) -> List[dict]:
        """One cache record per image of the batch just run: the RoIs, the
        combined class output and the box regression the last head's
        post-processing received, and every stage's classifier features."""
        # as BaseRoIHead.predict: boxes stay in the resized image when a
        # mask head follows (it rescales them itself)
        rescale = not self.with_mask
        if not self.rois:
            # no RoI in the whole batch: mmdet returns empty results early
            return [
                dict(
                    img_meta=dict(meta),
                    rois=torch.zeros(0, 5),
                    cls_score=torch.zeros(0, 0),
                    bbox_pred=None,
                    stage_feats=None,
                    rescale=rescale) for meta in batch_img_metas
            ]
        rois = _single_call(self.rois, 'the last RoI extractor')
        outputs = [
            _single_call(calls, f'the stage-{stage} box head')
            for stage, calls in enumerate(self.head_outputs)
        ]
        cls_score = self.combine_stages([out[0] for out in outputs])
        bbox_pred = outputs[-1][1]
        if bbox_pred is not None and not isinstance(bbox_pred, Tensor):
            raise RuntimeError(
                f'the score sweep caches tensor box regressions; '
                f'{type(self.heads[-1]).__name__} returns '
                f'{type(bbox_pred).__name__}')
        counts = torch.bincount(
            rois[:, 0].long(), minlength=len(batch_img_metas)).tolist()
        feats = self._split_features(counts)
        per_image = zip(rois.split(counts), cls_score.split(counts),
                        bbox_pred.split(counts) if bbox_pred is not None
                        else [None] * len(counts))
        records = []
        for i, (meta, (img_rois, img_cls, img_reg)) in enumerate(
                zip(batch_img_metas, per_image)):
            records.append(
                dict(
                    img_meta=dict(meta),
                    rois=img_rois.cpu().clone(),
                    cls_score=img_cls.detach().cpu().clone(),
                    bbox_pred=None
                    if img_reg is None else img_reg.detach().cpu().clone(),
                    stage_feats=None if feats is None else
                    [f[i].cpu().clone() for f in feats],
                    rescale=rescale))
        return records

    def _split_features(self, counts: List[int]) -> Optional[List[tuple]]:
        """Every stage's classifier features split per image (None if a
        stage has no ``fc_cls`` module)."""
        if any(not calls for calls in self.stage_feats):
            return None
        return [
            _single_call(calls, f'the stage-{stage} classifier').split(counts)
            for stage, calls in enumerate(self.stage_feats)
        ]
