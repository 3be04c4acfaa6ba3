"""Prepare a baseline checkpoint for the decoupled BAGS recipe.

Li et al., "Overcoming Classifier Imbalance for Long-tail Object Detection
with Balanced Group Softmax", CVPR 2020 (https://arxiv.org/abs/2006.10408).
The published recipe loads a trained baseline, re-initialises the classifier
with the group layout (C + 1 + number of groups outputs) and trains only the
classifier. The baseline's ``fc_cls`` (C + 1 outputs) cannot be loaded into
that layout, so this tool converts it, for every stage of Cascade / HTC:

* ``--mode drop`` (default, the published recipe): remove ``fc_cls``;
  ``load_from`` leaves the new classifier at its initialisation.
* ``--mode reshape``: a warm start. Class c's row moves to its row of the
  BAGS layout and the background row to the background group's background
  row; the "others" rows start at zero. Needs ``--config`` (the BAGS
  config, whose train annotation file defines the groups). Both layouts come
  from the heads: the BAGS one from ``--config``, the baseline's from the
  config saved in the baseline checkpoint (or ``--baseline-config``).

Only the weights are written (the baseline's optimizer state is not reused).

Example:
    python tools/model_converters/bags_convert.py \
        work_dirs/mask-rcnn_r50_fpn_ms-1x_lvis-v1/epoch_12.pth \
        work_dirs/mask-rcnn_r50_fpn_ms-1x_lvis-v1/bags_init.pth
"""
import argparse
import os.path as osp
import sys
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

from mmdet_longtail.models.checkpoint_classifiers import (
    build_model, checkpoint_config, checkpoint_state_dict,
    load_checkpoint_file, load_config, owner_layout, select_keys)
from mmdet_longtail.models.layers.classifier_layout import ClassifierLayout

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from reset_classifier import CLASSIFIER_PATTERN, remove_classifier  # noqa


def relayout_classifier(param: Tensor, source: ClassifierLayout,
                        target: ClassifierLayout, key: str,
                        checkpoint: str = 'checkpoint') -> Tensor:
    """A classifier parameter (weight or bias, outputs first) moved from
    the ``source`` layout to the ``target`` one.

    Each class's row goes to its row of ``target``, the background row to
    the background row; every other row of ``target`` is zero.
    """
    source.check_param(param.shape, key, checkpoint)
    if source.num_classes != target.num_classes:
        raise ValueError(
            f'{checkpoint}: {key} has {source.num_classes} classes, the '
            f'target config {target.num_classes}')
    if source.num_priors != 1 or target.num_priors != 1:
        raise ValueError(f'{key}: only RoI classifiers (one prior) can be '
                         f'converted')
    out = param.new_zeros((target.num_rows, ) + tuple(param.shape[1:]))
    out[list(target.class_rows)] = param[list(source.class_rows)]
    if source.background_row is not None and \
            target.background_row is not None:
        out[target.background_row] = param[source.background_row]
    return out


def model_layouts(cfg, keys: List[str]) -> Dict[str, ClassifierLayout]:
    """The classifier layout of each key in the model of ``cfg``."""
    model = build_model(cfg)
    return {key: owner_layout(model, key) for key in keys}


def reshape_state_dict(state_dict: Dict[str, Tensor],
                       sources: Dict[str, ClassifierLayout],
                       targets: Dict[str, ClassifierLayout],
                       checkpoint: str = 'checkpoint'
                       ) -> Tuple[dict, List[str]]:
    """``state_dict`` with every key of ``targets`` moved from its source
    layout to its target layout (:func:`relayout_classifier`) and the
    reshaped keys."""
    out = dict(state_dict)
    for key, target in targets.items():
        out[key] = relayout_classifier(state_dict[key], sources[key], target,
                                       key, checkpoint)
    return out, list(targets)


def reshape_checkpoint(checkpoint: dict,
                       config: str,
                       baseline_config: Optional[str] = None,
                       source: str = 'checkpoint') -> Tuple[dict, List[str]]:
    """The state dict of ``checkpoint`` with every RoI classifier laid out
    as the heads of ``config`` (the BAGS config) lay theirs out."""
    state_dict = checkpoint_state_dict(checkpoint)
    keys = select_keys(state_dict, CLASSIFIER_PATTERN, source)
    baseline = checkpoint_config(checkpoint, source, baseline_config)
    sources = model_layouts(baseline, keys)
    targets = model_layouts(load_config(config), keys)
    return reshape_state_dict(state_dict, sources, targets, source)


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
    parser.add_argument(
        '--baseline-config',
        help='config of the baseline checkpoint (--mode reshape; default: '
        'the one saved in the checkpoint)')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.mode == 'reshape' and not args.config:
        raise ValueError('--mode reshape needs --config <BAGS config>')
    checkpoint = load_checkpoint_file(args.checkpoint)
    if args.mode == 'drop':
        state_dict, changed = remove_classifier(
            checkpoint_state_dict(checkpoint), CLASSIFIER_PATTERN)
    else:
        state_dict, changed = reshape_checkpoint(checkpoint, args.config,
                                                 args.baseline_config,
                                                 args.checkpoint)
    meta = dict(checkpoint.get('meta') or {})
    meta['bags_convert'] = dict(mode=args.mode, keys=changed)
    torch.save(dict(meta=meta, state_dict=state_dict), args.out)
    print(f'bags_convert ({args.mode}): {changed} -> {args.out}')


if __name__ == '__main__':
    main()
