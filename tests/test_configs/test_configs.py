"""Every config parses, and every model it defines builds with the right
number of classes, initialises up to the download of its pretrained
backbone, and runs a training and an inference forward pass.

The train set of real-LVIS configs, where the models' class statistics come
from, is a small stand-in annotation file with the same number of categories,
so the test needs no LVIS download.
"""
import glob
import json
import os.path as osp
from typing import Any, List

import pytest
import torch

from conftest import REPO_ROOT, build_config_model

CONFIGS = sorted(
    p for p in glob.glob(osp.join(REPO_ROOT, 'configs', '**', '*.py'),
                         recursive=True) if '_base_' not in p)
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
def stand_in_ann_files(tmp_path_factory) -> dict:
    """num_classes -> a small LVIS-style train file with that many classes,
    covering every frequency letter and every BAGS instance-count group."""
    root = tmp_path_factory.mktemp('stand_in_lvis')
    files = {}
    for num_classes in set(NUM_CLASSES_BY_DATASET.values()):
        pattern = [1, 12, 101]  # groups [0,10) [10,100) [100,1000)
        annotations, categories = [], []
        for label in range(num_classes):
            count = 1000 if label == 0 else pattern[label % 3]  # [1000, inf)
            for k in range(count):
                annotations.append(
                    dict(
                        id=len(annotations) + 1,
                        image_id=k % 150 + 1,
                        category_id=label + 1,
                        bbox=[0, 0, 10, 10],
                        area=100))
            categories.append(dict(id=label + 1, name=f'c{label}'))
        images = [
            dict(id=i + 1, width=64, height=64, coco_url='') for i in range(150)
        ]
        path = str(root / f'lvis_{num_classes}.json')
        with open(path, 'w') as f:
            json.dump(
                dict(images=images, annotations=annotations,
                     categories=categories), f)
        files[num_classes] = path
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
def test_config_builds_and_runs(path, stand_in_ann_files, monkeypatch):
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
    train_set.ann_file = stand_in_ann_files[num_classes]
    shrink_sampling(cfg.model.get('train_cfg'))
    shrink_sampling(cfg.model.get('test_cfg'))
    torch.manual_seed(0)
    model = build_config_model(cfg)
    for sub, value in find_values(cfg.model, 'class_statistics'):
        assert value == stand_in_ann_files[num_classes], f'{path}: {sub}'
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
