"""Prepare a baseline checkpoint for the decoupled BAGS recipe.

Li et al., "Overcoming Classifier Imbalance for Long-tail Object Detection
with Balanced Group Softmax", CVPR 2020 (https://arxiv.org/abs/2006.10408).
The published recipe loads a trained baseline, re-initialises the classifier
with the group layout (C + 1 + number of groups outputs) and trains only the
classifier. The baseline's ``fc_cls`` (C + 1 outputs) cannot be loaded into
that layout, so this tool converts it, for every stage of Cascade / HTC:

* ``--mode drop`` (default, the published recipe): remove ``fc_cls``;
  ``load_from`` leaves the new classifier at its initialisation.
* ``--mode reshape``: a warm start. Class c's row moves to its column of the
  BAGS layout and the background row to the background group's background
  column; the "others" rows start at zero. Needs ``--config`` (the BAGS
  config, whose train annotation file defines the groups).

Only the weights are written (the baseline's optimizer state is not reused).

Example:
    python tools/model_converters/bags_convert.py \
        work_dirs/mask-rcnn_r50_fpn_ms-1x_lvis-v1/epoch_12.pth \
        work_dirs/mask-rcnn_r50_fpn_ms-1x_lvis-v1/bags_init.pth
"""
import argparse
import os.path as osp
import re
import sys
from typing import Dict, List, Tuple

import torch
from torch import Tensor

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from reset_classifier import CLASSIFIER_PATTERN, remove_classifier  # noqa

STAGE_PATTERN = re.compile(r'bbox_head(?:\.(\d+))?\.fc_cls\.(weight|bias)$')


def reshape_classifier(param: Tensor, class_columns: Tensor,
                       num_channels: int, key: str = 'fc_cls') -> Tensor:
    """A (C + 1, ...) softmax classifier parameter laid out for BAGS.

    Row c goes to ``class_columns[c]``, the background row (C) to the last
    column; the "others" rows are zero.
    """
    num_classes = len(class_columns)
    if param.size(0) != num_classes + 1:
        raise ValueError(
            f'{key}: expected {num_classes + 1} rows (a softmax classifier '
            f'with {num_classes} classes + background), got '
            f'{tuple(param.shape)}; is it already converted, or from another '
            f'dataset?')
    out = param.new_zeros((num_channels, ) + tuple(param.shape[1:]))
    out[class_columns] = param[:num_classes]
    out[num_channels - 1] = param[num_classes]
    return out


def stage_layouts(config: str) -> list:
    """The group layout of each BAGS box head of ``config`` (one per
    cascade stage)."""
    from mmengine.config import Config

    from mmdet_longtail.engine.long_tail_runner import (
        fill_class_statistics, train_annotation_file)
    from mmdet_longtail.models.losses import group_softmax_loss as gsl
    cfg = Config.fromfile(config)
    heads = cfg.model.roi_head.bbox_head
    heads = heads if isinstance(heads, list) else [heads]
    train_file = train_annotation_file(cfg.train_dataloader.dataset)
    layouts = []
    for i, head in enumerate(heads):
        if head.get('type') != 'BAGSBBoxHead':
            raise ValueError(f'{config}: roi_head.bbox_head[{i}] is '
                             f'{head.get("type")!r}, not BAGSBBoxHead')
        loss_cfg = dict(head.loss_cls)
        fill_class_statistics(loss_cfg, train_file)
        loss_cfg.pop('type')
        layouts.append(gsl.GroupSoftmaxLoss(**loss_cfg).layout)
    return layouts


def reshape_state_dict(state_dict: Dict[str, Tensor],
                       layouts: list) -> Tuple[dict, List[str]]:
    """``state_dict`` with every stage's ``fc_cls`` reshaped (see
    :func:`reshape_classifier`) and the reshaped keys."""
    out, changed = dict(state_dict), []
    for key, param in state_dict.items():
        match = STAGE_PATTERN.search(key)
        if not match:
            continue
        stage = int(match.group(1) or 0)
        if stage >= len(layouts):
            raise ValueError(f'{key}: the config has only {len(layouts)} '
                             f'BAGS box head(s)')
        layout = layouts[stage]
        out[key] = reshape_classifier(
            param, torch.as_tensor(layout.class_columns), layout.num_channels,
            key)
        changed.append(key)
    if not changed:
        raise ValueError(f'bags_convert: no fc_cls key in the checkpoint '
                         f'(keys look like {list(state_dict)[:3]})')
    return out, changed


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('checkpoint', help='baseline checkpoint')
    parser.add_argument('out', help='output checkpoint')
    parser.add_argument(
        '--mode',
        choices=('drop', 'reshape'),
        default='drop',
        help='drop fc_cls (published recipe) or reshape it into the BAGS '
        'layout (warm start)')
    parser.add_argument(
        '--config', help='the BAGS config (needed by --mode reshape)')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint}')
    if args.mode == 'reshape' and not args.config:
        raise ValueError('--mode reshape needs --config <BAGS config>')
    checkpoint = torch.load(
        args.checkpoint, map_location='cpu', weights_only=False)
    state_dict = checkpoint.get('state_dict', checkpoint)
    if args.mode == 'drop':
        state_dict, changed = remove_classifier(state_dict,
                                                CLASSIFIER_PATTERN)
    else:
        state_dict, changed = reshape_state_dict(state_dict,
                                                 stage_layouts(args.config))
    meta = dict(checkpoint.get('meta') or {})
    meta['bags_convert'] = dict(mode=args.mode, keys=changed)
    torch.save(dict(meta=meta, state_dict=state_dict), args.out)
    print(f'bags_convert ({args.mode}): {changed} -> {args.out}')


if __name__ == '__main__':
    main()
