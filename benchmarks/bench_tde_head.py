"""Time of the TDE box head against mmdet's Shared2FCBBoxHead at LVIS scale.

Tang, Huang and Zhang, "Long-Tailed Classification by Keeping the Good and
Removing the Bad Momentum Causal Effect", NeurIPS 2020
(https://arxiv.org/abs/2009.12991).

Both heads are built with the LVIS v1 settings (256 x 7 x 7 RoI features,
two shared 1024-d fcs, C = 1203, class-specific box regression) and timed on
the same inputs:

* train: a batch of 1024 sampled RoIs (2 images x 512, 25% foreground),
  forward, ``BBoxHead.loss`` (softmax cross-entropy + smooth L1) and
  backward. The TDE head also updates its moving-average feature (the labels
  are given as ``TDERoIHead`` gives them).
* infer: 1000 proposals (one image), forward in eval mode and the class
  probabilities that go to NMS (softmax for the standard head; for TDE the
  output ``[z | t]`` is scored with background exemption, then mmdet's
  softmax of the log-probabilities). Box decoding and NMS are the same code
  for both heads and are left out.

The classifier alone (``fc_cls`` + loss / scoring on 1024-d features) is
reported too. Timing is round robin: every repetition times each variant
once; a ratio is the median over repetitions of the per-repetition ratio,
so load changes cancel out. Goal: every head ratio at most 1.3x. The last
line is the summary, e.g.
``worst ratio to Shared2FCBBoxHead: 1.04x (train fwd+bwd)``.

Example:
    python benchmarks/bench_tde_head.py
    python benchmarks/bench_tde_head.py --device cuda --reps 200
"""
import argparse
import statistics
import time
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

GOAL = 1.3
LVIS_V1_CLASSES = 1203


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--num-classes', type=int, default=LVIS_V1_CLASSES)
    parser.add_argument('--train-rois', type=int, default=1024)
    parser.add_argument('--test-rois', type=int, default=1000)
    parser.add_argument('--fg-fraction', type=float, default=0.25)
    parser.add_argument('--reps', type=int, default=30)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--device', default='cpu')
    parser.add_argument(
        '--threads', type=int, default=None,
        help='torch CPU threads (default: torch default)')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args()


def build_heads(num_classes: int, device: torch.device) -> dict:
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import mmdet_longtail  # noqa: F401
    register_all_modules()
    common = dict(
        in_channels=256,
        fc_out_channels=1024,
        roi_feat_size=7,
        num_classes=num_classes,
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[0.0, 0.0, 0.0, 0.0],
            target_stds=[0.1, 0.1, 0.2, 0.2]),
        reg_class_agnostic=False,
        loss_cls=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0))
    heads = dict(
        standard=MODELS.build(dict(common, type='Shared2FCBBoxHead')),
        tde=MODELS.build(dict(common, type='TDEBBoxHead', momentum=0.9998)))
    for head in heads.values():
        head.to(device)  # PyTorch's default initialisation: timing only
    # a trained-looking moving average, so TDE inference is defined
    heads['tde'].fc_cls.moving_average_feature.uniform_(0, 1)
    return heads


def timed(fn: Callable[[], None], device: torch.device) -> float:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def train_inputs(num_rois: int, num_classes: int, fg_fraction: float,
                 device: torch.device) -> dict:
    num_fg = int(round(num_rois * fg_fraction))
    labels = torch.full((num_rois, ), num_classes, dtype=torch.long)
    labels[:num_fg] = torch.randint(0, num_classes, (num_fg, ))
    boxes = torch.rand(num_rois, 2) * 600
    rois = torch.cat([
        torch.zeros(num_rois, 1), boxes, boxes + 10 + torch.rand(
            num_rois, 2) * 200
    ], 1)
    bbox_weights = torch.zeros(num_rois, 4)
    bbox_weights[:num_fg] = 1
    inputs = dict(
        feats=torch.randn(num_rois, 256, 7, 7).relu(),
        rois=rois,
        labels=labels,
        label_weights=torch.ones(num_rois),
        bbox_targets=torch.randn(num_rois, 4),
        bbox_weights=bbox_weights)
    return {k: v.to(device) for k, v in inputs.items()}


def train_step(head, inputs: dict, tde: bool) -> Callable[[], None]:
    """Forward, loss and backward of one batch, as TDERoIHead runs it."""

    def step() -> None:
        head.zero_grad(set_to_none=True)
        if tde:
            with head.roi_labels(inputs['labels']):
                cls_score, bbox_pred = head(inputs['feats'])
        else:
            cls_score, bbox_pred = head(inputs['feats'])
        losses = head.loss(cls_score, bbox_pred, inputs['rois'],
                           inputs['labels'], inputs['label_weights'],
                           inputs['bbox_targets'], inputs['bbox_weights'])
        (losses['loss_cls'] + losses['loss_bbox']).backward()

    return step


def infer_step(head, feats: torch.Tensor, tde: bool) -> Callable[[], None]:
    """Eval forward and the class probabilities handed to NMS."""

    @torch.no_grad()
    def step() -> None:
        cls_score, _ = head(feats)
        if tde:  # TDEBBoxHead._predict_by_feat_single, then mmdet's softmax
            cls_score = head.class_log_scores(cls_score)
        F.softmax(cls_score, dim=-1)

    return step


def classifier_steps(heads: dict, inputs: dict) -> Dict[str, Callable]:
    """The classifiers alone on 1024-d features: train (fc_cls + CE +
    backward) and inference (fc_cls + scoring)."""
    feats = torch.randn(inputs['labels'].numel(), 1024,
                        device=inputs['labels'].device).relu()
    labels = inputs['labels']

    def train(name: str) -> Callable[[], None]:
        head = heads[name]

        def step() -> None:
            head.zero_grad(set_to_none=True)
            x = feats.detach().requires_grad_(True)
            if name == 'tde':
                with head.roi_labels(labels):
                    logits = head.fc_cls(x)
            else:
                logits = head.fc_cls(x)
            F.cross_entropy(logits, labels).backward()

        return step

    def infer(name: str) -> Callable[[], None]:
        head = heads[name]

        @torch.no_grad()
        def step() -> None:
            scores = head.fc_cls(feats)
            if name == 'tde':
                scores = head.class_log_scores(scores)
            F.softmax(scores, dim=-1)

        return step

    return {
        'cls train standard': train('standard'),
        'cls train tde': train('tde'),
        'cls infer standard': infer('standard'),
        'cls infer tde': infer('tde'),
    }


def median_ratio(numer: List[float], denom: List[float]) -> float:
    return statistics.median(n / d for n, d in zip(numer, denom))


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    heads = build_heads(args.num_classes, device)
    inputs = train_inputs(args.train_rois, args.num_classes,
                          args.fg_fraction, device)
    test_feats = torch.randn(args.test_rois, 256, 7, 7,
                             device=device).relu()

    for head in heads.values():
        head.train()
    steps = {
        'train standard': train_step(heads['standard'], inputs, False),
        'train tde': train_step(heads['tde'], inputs, True),
    }
    steps.update(classifier_steps(heads, inputs))
    infer = {
        'infer standard': infer_step(heads['standard'], test_feats, False),
        'infer tde': infer_step(heads['tde'], test_feats, True),
    }
    times = {k: [] for k in list(steps) + list(infer)}
    for rep in range(args.warmup + args.reps):
        sample = {}
        for head in heads.values():
            head.train()
        for name, fn in steps.items():
            if name.startswith('cls infer'):
                for head in heads.values():
                    head.eval()
            sample[name] = timed(fn, device)
        for head in heads.values():
            head.eval()
        for name, fn in infer.items():
            sample[name] = timed(fn, device)
        if rep >= args.warmup:
            for k, v in sample.items():
                times[k].append(v)

    print(f'device {device}, C={args.num_classes}, train {args.train_rois} '
          f'RoIs, test {args.test_rois} RoIs, 256x7x7 RoI features, '
          f'{args.reps} reps, torch threads {torch.get_num_threads()}')
    for k, v in times.items():
        print(f'{k:>20}: median {1e3 * statistics.median(v):8.2f} ms')
    ratios = {
        'train fwd+bwd':
        median_ratio(times['train tde'], times['train standard']),
        'inference': median_ratio(times['infer tde'],
                                  times['infer standard']),
    }
    cls_train = median_ratio(times['cls train tde'],
                             times['cls train standard'])
    cls_infer = median_ratio(times['cls infer tde'],
                             times['cls infer standard'])
    print(f'classifier alone (fc_cls + loss / scoring): train '
          f'{cls_train:.2f}x, inference {cls_infer:.2f}x')
    for name, ratio in ratios.items():
        print(f'head {name}: {ratio:.2f}x')
    worst = max(ratios, key=ratios.get)
    verdict = 'meets' if ratios[worst] <= GOAL else 'misses'
    print(f'(goal <= {GOAL}x: {verdict})')
    print(f'worst ratio to Shared2FCBBoxHead: {ratios[worst]:.2f}x '
          f'({worst})')


if __name__ == '__main__':
    main()
