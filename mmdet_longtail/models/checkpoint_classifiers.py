"""The classifier parameters of a checkpoint and their layouts.

Tools that read or rewrite classifier weights (the weight-norm analysis, the
tau-norm and BAGS converters) build the model of the checkpoint's config and
ask the head that owns each parameter for its :class:`ClassifierLayout`
(:func:`classifier_layout`), instead of inferring the layout from the number
of rows. The config is the one given to the tool, else the one mmengine saves
in every checkpoint (``meta['cfg']``).
"""
import os.path as osp
import re
from typing import Dict, List, Optional

import torch.nn as nn
from mmengine.config import Config

from mmdet_longtail.models.layers.classifier_layout import (
    ClassifierLayout, classifier_layout, describes_classifier)


def load_checkpoint_file(path: str) -> dict:
    """The checkpoint dict of ``path`` (on the CPU)."""
    import torch
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    # our own training outputs: full pickles (mmengine's HistoryBuffer...)
    checkpoint = torch.load(path, map_location='cpu', weights_only=False)
    if not isinstance(checkpoint, dict):
        raise ValueError(f'{path}: not a checkpoint (a {type(checkpoint)})')
    return checkpoint


def checkpoint_state_dict(checkpoint: dict) -> dict:
    """The parameters of a checkpoint (``state_dict``, ``model`` or the
    checkpoint itself)."""
    for key in ('state_dict', 'model'):
        if isinstance(checkpoint.get(key), dict):
            return checkpoint[key]
    return checkpoint


def load_config(path: str) -> Config:
    """The config file ``path``."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'config not found: {path}')
    return Config.fromfile(path)


def checkpoint_config(checkpoint: dict,
                      source: str,
                      config: Optional[str] = None) -> Config:
    """The config of a checkpoint: the file ``config`` if given, else the
    config text mmengine saved in ``meta['cfg']``.

    Raises:
        ValueError: no config given and none saved in the checkpoint.
    """
    if config is not None:
        return load_config(config)
    meta = checkpoint.get('meta')
    text = meta.get('cfg') if isinstance(meta, dict) else None
    if not isinstance(text, str):
        raise ValueError(
            f'{source}: the checkpoint does not carry its config '
            f"(meta['cfg'], saved by mmengine's runner), so the layout of "
            f'its classifier is unknown; pass the config it was trained '
            f'with (--config)')
    return Config.fromstring(text, '.py')


def build_model(cfg: Config) -> nn.Module:
    """The model of ``cfg`` (not initialised: only its structure and the
    settings of its heads are needed)."""
    import mmdet_longtail  # noqa: F401  (registers the components)
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    from mmdet_longtail.engine.long_tail_runner import give_class_statistics
    if 'model' not in cfg:
        raise ValueError(f'the config {cfg.filename or ""} has no model')
    give_class_statistics(cfg.model, cfg.get('train_dataloader'))
    return MODELS.build(cfg.model)


def select_keys(state_dict: dict, pattern: str, source: str) -> List[str]:
    """Keys of ``state_dict`` matching ``pattern`` (``re.search``).

    Raises:
        ValueError: no key matches (a wrong pattern would otherwise write
            an unchanged checkpoint or an empty table).
    """
    regex = re.compile(pattern)
    keys = [k for k in state_dict if regex.search(k)]
    if not keys:
        raise ValueError(f'{source}: no key of the checkpoint matches '
                         f'{pattern!r} (keys look like '
                         f'{list(state_dict)[:3]})')
    return keys


def owner_layout(model: nn.Module, key: str) -> ClassifierLayout:
    """The layout of the head owning the parameter ``key`` of ``model``'s
    state dict: the innermost module on the key's path that describes a
    classifier (e.g. ``roi_head.bbox_head.1`` for
    ``roi_head.bbox_head.1.fc_cls.weight``)."""
    parts = re.sub(r'^module\.', '', key).split('.')[:-1]
    for end in range(len(parts), -1, -1):
        try:
            module = model.get_submodule('.'.join(parts[:end]))
        except AttributeError:
            continue
        if describes_classifier(module):
            return classifier_layout(module)
    raise ValueError(f'{key}: no head of the {type(model).__name__} built '
                     f'from the config owns this parameter')


def classifier_layouts(state_dict: dict, keys: List[str], cfg: Config,
                       source: str) -> Dict[str, ClassifierLayout]:
    """The layout of the classifier of every key, from the model of
    ``cfg``; each parameter's outputs are checked against its layout.

    Raises:
        ValueError: a parameter does not fit its layout (the error names
            ``source``, the key and both shapes).
    """
    model = build_model(cfg)
    layouts = {}
    for key in keys:
        layout = owner_layout(model, key)
        layout.check_param(state_dict[key].shape, key, source)
        layouts[key] = layout
    return layouts
