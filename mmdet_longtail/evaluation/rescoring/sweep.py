"""Build the cache with one network pass, then re-score and evaluate every
setting from it."""
import gc
import os
import os.path as osp
import pickle
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Dict, Iterator, List, Optional

import torch
from torch import nn

from .cache import (CACHE_VERSION, ShardWriter, clear_cache, iter_shards,
                    write_meta)
from .detector import build_evaluator
from .fingerprint import to_plain
from .recorder import HeadRecorder
from .rescorer import Rescorer, check_reproduces
from .settings import Setting


@dataclass
class SweepResult:
    """Metrics and cost of one setting."""
    setting: Setting
    metrics: Dict[str, float]
    scoring_s: float
    evaluation_s: float

    @property
    def seconds(self) -> float:
        return self.scoring_s + self.evaluation_s


def prefixed_metrics(metrics: Dict[str, float],
                     iou_type: str = 'bbox') -> Dict[str, float]:
    """``{'AP': ..., 'APr': ...}`` from the evaluator's ``lvis/bbox_AP`` (or
    ``coco/bbox_mAP``-style) keys; every ``<iou_type>_*`` key is kept."""
    out = {}
    for key, value in metrics.items():
        short = key.split('/')[-1]
        if short.startswith(iou_type + '_'):
            out[short[len(iou_type) + 1:]] = float(value)
    return out


def build_cache(cfg, cache_dir: str, fingerprint: dict, model: nn.Module,
                rescorer: Rescorer, shard_size: int) -> dict:
    """Run the detector once: cache per-image head inputs, evaluate like
    ``tools/test.py`` and time it (the full test pass). Every image is
    re-scored from its record with the model's own setting and must give
    the network's detections. Returns the cache's meta data."""
    from mmengine.runner import Runner
    from mmengine.utils import ProgressBar

    os.makedirs(cache_dir, exist_ok=True)
    clear_cache(cache_dir)
    loader = Runner.build_dataloader(cfg.test_dataloader)
    dataset_meta = loader.dataset.metainfo
    evaluator = build_evaluator(cfg, dataset_meta, False)
    writer = ShardWriter(cache_dir, shard_size)
    rescorer.restore()
    print(f'running the detector once over {len(loader.dataset)} images '
          f'(cache: {cache_dir})')
    bar = ProgressBar(len(loader.dataset))
    network_s = extra_s = 0.0
    with HeadRecorder(model, rescorer.combine_stages) as recorder:
        start = time.perf_counter()
        for data_batch in loader:
            recorder.start_batch()
            with torch.no_grad():
                outputs = model.test_step(data_batch)
            evaluator.process(data_samples=outputs, data_batch=data_batch)
            network_end = time.perf_counter()
            network_s += network_end - start
            with torch.no_grad():
                records = recorder.image_records(
                    [o.metainfo for o in outputs])
                check_reproduces(rescorer, records, outputs)
            writer.add(records)
            bar.update(len(outputs))
            start = time.perf_counter()
            extra_s += start - network_end
    writer.close()
    sys.stdout.write('\n')
    eval_start = time.perf_counter()
    metrics = evaluator.evaluate(writer.num_images)
    evaluation_s = time.perf_counter() - eval_start
    meta = dict(
        version=CACHE_VERSION,
        fingerprint=fingerprint,
        num_images=writer.num_images,
        shards=writer.shards,
        num_stages=len(rescorer.heads),
        cached_taus=rescorer.cached_taus,
        cached_alpha=rescorer.cached_alpha,
        full_pass_seconds=dict(
            network=network_s,
            evaluation=evaluation_s,
            total=network_s + evaluation_s,
            caching=extra_s),
        config_setting=asdict(rescorer.base),
        dataset_meta=to_plain(dataset_meta),
        config_metrics={k: float(v)
                        for k, v in metrics.items()})
    write_meta(cache_dir, meta)
    return meta


def _sample(record: dict, pred) -> dict:
    meta = record['img_meta']
    return dict(
        img_id=meta['img_id'],
        ori_shape=meta['ori_shape'],
        img_path=meta.get('img_path'),
        bboxes=pred.bboxes.cpu(),
        scores=pred.scores.cpu(),
        labels=pred.labels.cpu())


def _prediction(sample: dict) -> dict:
    """A sample in ``tools/test.py --out`` format."""
    return dict(
        img_id=sample['img_id'],
        ori_shape=sample['ori_shape'],
        img_path=sample['img_path'],
        pred_instances=dict(
            bboxes=sample['bboxes'],
            scores=sample['scores'],
            labels=sample['labels']))


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector (reference counting still
    frees memory); cycles made meanwhile are collected afterwards.

    Re-scoring allocates many small objects while the cache records and the
    predictions of every setting are alive; each full collection walks all
    of them and doubled the cost of a setting, at random points.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def run_sweep(cfg,
              cache_dir: str,
              meta: dict,
              rescorer: Rescorer,
              settings: List[Setting],
              dump_dir: Optional[str] = None) -> List[SweepResult]:
    """Re-score every cached image under every setting, then evaluate each
    setting with the config's metric (boxes)."""
    rescorer.check_supported(settings)
    with cyclic_gc_paused():
        return _rescore_and_evaluate(cfg, cache_dir, meta, rescorer, settings,
                                     dump_dir)


def _rescore_and_evaluate(cfg, cache_dir: str, meta: dict,
                          rescorer: Rescorer, settings: List[Setting],
                          dump_dir: Optional[str]) -> List[SweepResult]:
    from mmengine.utils import ProgressBar

    evaluator = build_evaluator(cfg, meta['dataset_meta'], True)
    per_setting: List[List[dict]] = [[] for _ in settings]
    scoring_s = [0.0] * len(settings)
    print(f're-scoring {meta["num_images"]} cached images under '
          f'{len(settings)} settings')
    bar = ProgressBar(meta['num_images'] * len(settings))
    for shard in iter_shards(cache_dir, meta):
        for k, setting in enumerate(settings):
            start = time.perf_counter()
            with torch.no_grad():
                for record in shard:
                    pred = rescorer.detections(record, setting)
                    per_setting[k].append(_sample(record, pred))
            scoring_s[k] += time.perf_counter() - start
            bar.update(len(shard))
    rescorer.restore()
    sys.stdout.write('\n')

    results = []
    for k, setting in enumerate(settings):
        start = time.perf_counter()
        predictions = [_prediction(s) for s in per_setting[k]]
        evaluator.process(data_samples=predictions, data_batch=None)
        metrics = evaluator.evaluate(len(predictions))
        evaluation_s = time.perf_counter() - start
        results.append(
            SweepResult(setting, prefixed_metrics(metrics), scoring_s[k],
                        evaluation_s))
        if dump_dir is not None:  # the metric may have changed its input
            dump_predictions([_prediction(s) for s in per_setting[k]],
                             osp.join(dump_dir, f'predictions_{k:03d}.pkl'))
    return results


def dump_predictions(predictions: List[dict], path: str) -> None:
    """Predictions in ``tools/test.py --out`` format (list of dicts)."""
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    with open(path, 'wb') as f:
        pickle.dump(predictions, f)
