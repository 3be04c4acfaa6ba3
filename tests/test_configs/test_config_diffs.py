"""Method configs read as diffs: every config of a long-tail method differs
from its framework's baseline (configs/lvis/, same framework and dataset)
only in that method's keys, and the class count is written once, in the
dataset bases. Parses configs only; builds no model."""
import glob
import inspect
import io
import os.path as osp
import re
import tokenize
from functools import lru_cache
from typing import Any, Dict, List

import pytest
from mmengine.config import Config
from mmengine.runner import Runner

from conftest import REPO_ROOT

# The keys each method may change, as dotted paths ('*' matches anything,
# a path also covers everything below it). Keyed by the config's folder.
HEADS = 'model.roi_head.bbox_head*'  # one head, or every cascade stage
METHOD_KEYS: Dict[str, List[str]] = {
    # the loss (sigmoid EQL) and the classifier prior that goes with it
    'eql': [f'{HEADS}.loss_cls', f'{HEADS}.init_cfg'],
    # the same, with EQLv2's loss
    'eqlv2': [f'{HEADS}.loss_cls', f'{HEADS}.init_cfg'],
    # the loss and the cosine classifier it needs
    'seesaw': [f'{HEADS}.loss_cls', f'{HEADS}.cls_predictor_cfg'],
    # the calibrated loss, in the last stage of cascades only
    'norcal': [f'{HEADS}.loss_cls'],
    # the sampler, nothing else
    'rfs': ['train_dataloader.sampler'],
    # the group-softmax head and its loss
    'bags': [f'{HEADS}.type', f'{HEADS}.loss_cls'],
    # the TDE RoI head, its heads' TDE keys
    'tde': [
        'model.roi_head.type', f'{HEADS}.type', f'{HEADS}.num_heads',
        f'{HEADS}.tau', f'{HEADS}.gamma', f'{HEADS}.alpha', f'{HEADS}.scoring',
        f'{HEADS}.momentum'
    ],
    # tau-normalised / LWS classifiers
    'decouple': [f'{HEADS}.cls_predictor_cfg'],
    # the EFL classifier loss
    'efl': ['model.bbox_head.loss_cls'],
    # the federated sigmoid loss and its classifier prior
    'federated': [f'{HEADS}.loss_cls', f'{HEADS}.init_cfg'],
    # the calibrated loss (post hoc), in the last stage of cascades only
    'fracal': [f'{HEADS}.loss_cls'],
    # the inverse-image-frequency softmax loss and its classifier init
    'iif': [f'{HEADS}.loss_cls', f'{HEADS}.init_cfg'],
    # the class-margin loss and the authors' cosine classifier
    'ecm': [f'{HEADS}.loss_cls', f'{HEADS}.cls_predictor_cfg'],
    # the Gumbel loss and its classifier init
    'gol': [f'{HEADS}.loss_cls', f'{HEADS}.init_cfg'],
    # the re-weighted loss, and the classifier prior of its sigmoid variant
    'reweighting': [f'{HEADS}.loss_cls', f'{HEADS}.init_cfg'],
    # the deferred sampler (uniform, then RFS or class-aware)
    'drs': ['train_dataloader.sampler'],
    # the ACSL loss and the classifier prior that goes with it
    'acsl': [f'{HEADS}.loss_cls', f'{HEADS}.init_cfg'],
    # the training set wrapped in MultiImageMixDataset (CopyPaste / MixUp)
    'augmentation': ['train_dataloader.dataset'],
    # the iterative RoI head, the PCB loss around the base method's loss
    # (with what that needs: Seesaw's cosine classifier, EQLv2's prior),
    # the switch hook
    'pcb': [
        'model.roi_head.type', 'model.roi_head.num_iterations',
        'model.roi_head.iteration_loss_weights',
        'model.roi_head.regression_iteration', 'model.roi_head.mlp_layers',
        'model.roi_head.mlp_hidden', 'model.roi_head.use_layer_norm',
        f'{HEADS}.loss_cls', f'{HEADS}.cls_predictor_cfg',
        f'{HEADS}.init_cfg', 'custom_hooks'
    ],
}
# Recipe variants, recognised by a token of the config name, may also
# change these keys.
SCHEDULE = ['train_cfg', 'param_scheduler']
DECOUPLED = ['load_from', 'custom_hooks', 'model_wrapper_cfg', *SCHEDULE]
VARIANT_KEYS: Dict[str, List[str]] = {
    # repeat factor sampling on top of the method
    r'rfs-[\de-]+': ['train_dataloader.sampler'],
    # the published 2x schedule on LVIS v1 (baseline: 1x)
    r'ms-2x_lvis-v1':
    SCHEDULE,
    # classifier retraining from the baseline's checkpoint with the rest
    # frozen (BAGS v0.5 also uses its own lr and clipping)
    r'bags-decoupled': [*DECOUPLED, 'optim_wrapper'],
    # cRT / LWS: the same, with class-aware sampling and an iteration loop
    r'(crt|lws)_cas': [
        *DECOUPLED, 'train_dataloader.sampler', 'default_hooks.checkpoint',
        'log_processor'
    ],
    # deferred re-weighting: the hook that switches the class weights on
    r'drw-\d+': ['custom_hooks'],
    # mmdet's normalised mask predictor
    r'normed-mask': ['model.roi_head.mask_head.predictor_cfg'],
    # FRACAL's recipe: a cosine classifier and a normalised mask predictor
    r'fracal-normed': [
        f'{HEADS}.cls_predictor_cfg', 'model.roi_head.mask_head.predictor_cfg'
    ],
    # the BAGS authors' v0.5 classifier training is single-scale, and they
    # test with their own score threshold
    r'bags-decoupled_ms-1x_lvis-v0.5': [
        'train_dataloader.dataset.pipeline', 'model.test_cfg.rcnn.score_thr'
    ],
    # TDE's HTC recipe: R101, single-scale, 20 epochs, its test threshold
    r'r101_fpn_tde_20e': [
        'model.backbone', 'train_dataloader.dataset.pipeline',
        'model.test_cfg.rcnn.score_thr', *SCHEDULE
    ],
    # ... and on v0.5 the authors' gradient clipping
    r'r101_fpn_tde_20e_lvis-v0.5': ['optim_wrapper.clip_grad'],
    # the ECM authors' recipe: gradient clipping, a 10k-iteration warm-up
    # (and their 2x steps)
    r'ecm-normed-mask': ['optim_wrapper.clip_grad', *SCHEDULE],
    # the GOL authors' test NMS
    r'gol-normed-mask': ['model.test_cfg.rcnn.nms.iou_threshold'],
}
BASELINES = {
    'lvis-v1': 'configs/lvis/{}_r50_fpn_ms-1x_lvis-v1.py',
    'lvis-v0.5': 'configs/lvis/{}_r50_fpn_ms-2x_lvis-v0.5.py',
    'synthetic-lvis': 'configs/lvis/{}_r18-tiny_fpn_12e_synthetic-lvis.py',
}
# EFL's focal-loss detectors on LVIS are baselines themselves (there is no
# RetinaNet / ATSS in configs/lvis for the real datasets)
EFL_BASELINE = 'configs/efl/{}_r50_fpn_rfs-1e-3_ms-2x_lvis-v1.py'
# The top-level keys the runner reads; the rest are config-local helper
# variables (eql_lambda, seesaw_loss, ...).
RUNNER_KEYS = (
    set(inspect.signature(Runner.__init__).parameters) - {'self'}
    | {'model_wrapper_cfg', 'runner_type'})


def method_configs() -> List[str]:
    paths = glob.glob(osp.join(REPO_ROOT, 'configs', '*', '*.py'))
    configs = []
    for path in sorted(paths):
        rel = osp.relpath(path, REPO_ROOT)
        folder = rel.split(osp.sep)[1]
        if folder in ('lvis', '_base_'):
            continue
        if osp.abspath(path) in {
                osp.join(REPO_ROOT, EFL_BASELINE.format(f))
                for f in ('retinanet', 'atss')
        }:
            continue
        configs.append(rel)
    return configs


def baseline_of(config: str) -> str:
    name = osp.splitext(osp.basename(config))[0]
    framework, dataset = name.split('_')[0], name.rsplit('_', 1)[-1]
    if config.startswith('configs/efl/') and dataset != 'synthetic-lvis':
        return EFL_BASELINE.format(framework)
    return BASELINES[dataset].format(framework)


def allowed_keys(config: str) -> List[str]:
    folder = config.split('/')[1]
    keys = list(METHOD_KEYS[folder])
    for token, extra in VARIANT_KEYS.items():
        # a variant of the config's own, not one its baseline has too
        if re.search(token, osp.basename(config)) and not re.search(
                token, osp.basename(baseline_of(config))):
            keys += extra
    return keys


def flatten(cfg: Any, path: str = '') -> Dict[str, Any]:
    """Dotted path -> leaf value of everything nested in a config."""
    if isinstance(cfg, dict) and cfg:
        flat = {}
        for key, value in cfg.items():
            flat.update(flatten(value, f'{path}.{key}' if path else key))
        return flat
    if isinstance(cfg, (list, tuple)) and cfg:
        flat = {}
        for i, value in enumerate(cfg):
            flat.update(flatten(value, f'{path}[{i}]'))
        return flat
    return {path: cfg}


@lru_cache(maxsize=None)  # baselines are shared by many method configs
def runner_view(path: str) -> Dict[str, Any]:
    cfg = Config.fromfile(osp.join(REPO_ROOT, path)).to_dict()
    return flatten({k: v for k, v in cfg.items() if k in RUNNER_KEYS})


def covered(path: str, patterns: List[str]) -> bool:
    for pattern in patterns:
        regex = re.escape(pattern).replace(r'\*', r'[^.]*')
        if re.fullmatch(regex + r'([.\[].*)?', path):
            return True
    return False


def test_every_method_config_has_a_baseline():
    configs = method_configs()
    assert len(configs) > 80
    for config in configs:
        assert config.split('/')[1] in METHOD_KEYS, config
        assert osp.isfile(osp.join(REPO_ROOT, baseline_of(config))), config


@pytest.mark.parametrize('config', method_configs())
def test_method_config_differs_from_its_baseline_in_its_keys(config):
    ours, base = runner_view(config), runner_view(baseline_of(config))
    differing = sorted(
        path for path in set(ours) | set(base)
        if path not in ours or path not in base or ours[path] != base[path])
    assert differing, f'{config} is its baseline {baseline_of(config)}'
    allowed = allowed_keys(config)
    outside = [path for path in differing if not covered(path, allowed)]
    assert not outside, (
        f'{config} differs from {baseline_of(config)} outside its method '
        f'keys {allowed}: {outside}')


def test_class_counts_are_written_only_in_the_dataset_bases():
    """No ``num_classes=<number>`` (nor 1203 / 1230 anywhere) outside
    configs/_base_/datasets; mmdet-style model bases keep mmdet's COCO
    default, which every baseline overrides."""
    allowed_dirs = ('configs/_base_/datasets/', 'configs/_base_/models/')
    offenders = []
    for path in sorted(
            glob.glob(
                osp.join(REPO_ROOT, 'configs', '**', '*.py'), recursive=True)):
        rel = osp.relpath(path, REPO_ROOT)
        if rel.startswith(allowed_dirs):
            continue
        with open(path) as f:
            tokens = [
                t for t in tokenize.generate_tokens(
                    io.StringIO(f.read()).readline)
                if t.type in (tokenize.NAME, tokenize.OP, tokenize.NUMBER)
            ]
        for i, tok in enumerate(tokens):
            if tok.type == tokenize.NUMBER and tok.string in ('1203', '1230'):
                offenders.append(f'{rel}:{tok.start[0]}')
            if (tok.string == 'num_classes' and i + 2 < len(tokens)
                    and tokens[i + 1].string in ('=', ':')
                    and tokens[i + 2].type == tokenize.NUMBER):
                offenders.append(f'{rel}:{tok.start[0]}')
    assert not offenders, offenders
