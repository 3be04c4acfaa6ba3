"""Every config parses, and every model it defines builds with the right
number of classes, initialises up to the download of its pretrained
backbone, and runs a training and an inference forward pass.

The train set of real-LVIS configs, where the models' class statistics come
from, is an LVIS-shaped annotation file of the same version and number of
categories written by the package's generator, so the test needs no LVIS
download.
"""
import glob
import json
import os.path as osp
from typing import Any, List, Set

import pytest
import torch

from conftest import REPO_ROOT, build_config_model

CONFIGS = sorted(
    p for p in glob.glob(osp.join(REPO_ROOT, 'configs', '**', '*.py'),
                         recursive=True) if '_base_' not in p)
# keys of the model configs this process has built and run
MODELS_RUN: Set[str] = set()
NUM_CLASSES_BY_DATASET = {
    'lvis-v1': 1203,
    'lvis-v0.5': 1230,
    'synthetic-lvis': 30,
}


def expected_num_classes(path: str) -> int:
    name = osp.splitext(osp.basename(path))[0]
    dataset = name.rsplit('_', 1)[-1]
    assert dataset in NUM_CLASSES_BY_DATASET, (
        f'{name}: config names must end with the dataset '
        f'({sorted(NUM_CLASSES_BY_DATASET)})')
    return NUM_CLASSES_BY_DATASET[dataset]


def find_values(cfg: Any, key: str, path: str = '') -> List[tuple]:
    """(dotted path, value) of every ``key`` nested in a config."""
    found = []
    if isinstance(cfg, dict):
        for k, v in cfg.items():
            sub = f'{path}.{k}' if path else k
            if k == key:
                found.append((sub, v))
            found.extend(find_values(v, key, sub))
    elif isinstance(cfg, (list, tuple)):
        for i, v in enumerate(cfg):
            found.extend(find_values(v, key, f'{path}[{i}]'))
    return found


@pytest.fixture(scope='module')
def lvis_shaped_train_files(tmp_path_factory, synthetic_root) -> dict:
    """num_classes -> an LVIS-shaped train annotation file with that many
    classes, written by the package's generator (LVIS v1 with 1203 classes,
    v0.5 with 1230; the small synthetic set's for 30): the statistics of
    every model come from it, as from a real train file."""
    from mmdet_longtail.datasets import make_synthetic_lvis
    files = {30: osp.join(synthetic_root, 'annotations',
                          'lvis_v1_train.json')}
    for num_classes, version in ((1203, 'v1'), (1230, 'v0.5')):
        root = str(tmp_path_factory.mktemp(f'lvis_{version}'))
        files[num_classes] = make_synthetic_lvis(
            root, num_classes=num_classes, num_train_images=400,
            num_val_images=1, image_size=128, min_class_images=1,
            max_class_images=100, lvis_version=version)['train']
    assert set(files) == set(NUM_CLASSES_BY_DATASET.values())
    return files


def shrink_sampling(cfg: Any) -> None:
    """Fewer proposals and sampled RoIs: the forward pass checks wiring, not
    accuracy, and 512 RoIs through 3 mask heads dominate the test time."""
    limits = dict(nms_pre=200, max_per_img=10, num=32)
    if isinstance(cfg, dict):
        for k in list(cfg):
            if k in limits and isinstance(cfg[k], int):
                cfg[k] = min(cfg[k], limits[k])
            else:
                shrink_sampling(cfg[k])
    elif isinstance(cfg, list):
        for v in cfg:
            shrink_sampling(v)


def load_config(path: str):
    from mmengine.config import Config
    return Config.fromfile(path)


class DownloadStarted(Exception):
    """Raised where ``init_weights`` would start downloading ``args[0]``."""


def check_pretrained_init(model, cfg, path: str, monkeypatch) -> None:
    """``init_weights`` resolves every pretrained checkpoint (torchvision's
    model URLs need torchvision) up to the download, which this machine
    cannot make."""
    from mmengine.runner import checkpoint
    pretrained = [v for _, v in find_values(cfg.model, 'checkpoint')
                  if isinstance(v, str)]
    if not pretrained:
        return

    def start_download(url, *args, **kwargs):
        raise DownloadStarted(url)

    monkeypatch.setattr(checkpoint, 'load_from_http', start_download)
    with pytest.raises(DownloadStarted) as started:
        model.init_weights()
    url = str(started.value)
    scheme, name = pretrained[0].split('://')
    assert scheme == 'torchvision', f'{path}: {pretrained[0]}'
    assert url.startswith('https://download.pytorch.org/models/' + name), \
        f'{path}: {pretrained[0]} resolved to {url}'


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: osp.relpath(
    p, osp.join(REPO_ROOT, 'configs')))
def test_config_builds_and_runs(path, lvis_shaped_train_files, monkeypatch):
    from mmdet.testing import demo_mm_inputs
    from mmdet.utils import register_all_modules
    import mmdet_longtail  # noqa: F401
    register_all_modules()

    cfg = load_config(path)
    num_classes = expected_num_classes(path)
    assert cfg.get('default_scope') == 'mmdet'
    assert 'mmdet_longtail' in cfg.custom_imports['imports']
    assert 'train_dataloader' in cfg and 'test_evaluator' in cfg
    types = [v for _, v in find_values(cfg.train_dataloader, 'type')]
    assert 'RFSDataset' not in types, f'{path}: RFSDataset was replaced'
    sampler = cfg.train_dataloader.get('sampler') or {}
    if sampler.get('type') == 'RFSSampler':
        # RFS keeps mmdet's batching; only the sampler changes
        assert cfg.train_dataloader.batch_sampler.type == \
            'AspectRatioBatchSampler', path
        assert sampler.get('shuffle', True), path
    for sub, value in find_values(cfg.model, 'num_classes'):
        assert value == num_classes, f'{path}: model.{sub}={value}'
    # statistics come only from the train set, never from the model config
    assert not find_values(cfg.model, 'ann_file') and not find_values(
        cfg.model, 'class_statistics'), f'{path}: statistics in the model'
    train_set = cfg.train_dataloader.dataset
    while 'dataset' in train_set:
        train_set = train_set.dataset
    train_set.ann_file = lvis_shaped_train_files[num_classes]
    shrink_sampling(cfg.model.get('train_cfg'))
    shrink_sampling(cfg.model.get('test_cfg'))
    # the same model config (another schedule, sampler or dataset wrapper of
    # a model built and run in this process) builds and runs the same way
    model_key = json.dumps(cfg.model.to_dict(), sort_keys=True, default=repr)
    if model_key in MODELS_RUN:
        return
    torch.manual_seed(0)
    model = build_config_model(cfg)
    for sub, value in find_values(cfg.model, 'class_statistics'):
        assert value == lvis_shaped_train_files[num_classes], f'{path}: {sub}'
    check_pretrained_init(model, cfg, path, monkeypatch)

    heads = [(name, m) for name, m in model.named_modules()
             if isinstance(getattr(m, 'num_classes', None), int)
             and 'rpn_head' not in name]
    assert heads, f'{path}: no head with num_classes'
    for name, module in heads:
        assert module.num_classes == num_classes, f'{path}: {name}'

    with_mask = 'mask_head' in cfg.model.get('roi_head', {})
    packed = demo_mm_inputs(
        batch_size=2,
        image_shapes=[(3, 64, 96), (3, 96, 64)],
        num_items=[3, 1],
        num_classes=num_classes,
        with_mask=with_mask)
    model.train()
    data = model.data_preprocessor(packed, True)
    losses = model(**data, mode='loss')
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(v)
                for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total), f'{path}: non-finite loss {losses}'
    total.backward()

    model.eval()
    with torch.no_grad():
        results = model(**model.data_preprocessor(packed, False),
                        mode='predict')
    assert len(results) == 2
    for res in results:
        pred = res.pred_instances
        assert pred.bboxes.shape[-1] == 4
        if len(pred.labels):
            assert int(pred.labels.max()) < num_classes
            assert float(pred.scores.min()) >= 0
            assert float(pred.scores.max()) <= 1 + 1e-6
    MODELS_RUN.add(model_key)
