"""Forward + backward time of the BAGS classifier at LVIS scale.

Li et al., "Overcoming Classifier Imbalance for Long-tail Object Detection
with Balanced Group Softmax", CVPR 2020 (https://arxiv.org/abs/2006.10408).

The classification part of a box head at LVIS v1 scale: a batch of 1024
sampled RoIs (2 images x 512), 1024-d RoI features, C = 1203 classes.

* baseline: ``fc_cls`` = Linear(1024, C + 1) and mmdet's softmax
  ``CrossEntropyLoss``;
* BAGS: ``fc_cls`` = Linear(1024, C + 1 + 5) and ``GroupSoftmaxLoss`` with
  instance counts that give the LVIS v1 group sizes 200 / 412 / 334 / 257,
  "others" sampling with beta = 8 included.

Labels follow mmdet's RoI sampler: 25% foreground, drawn in proportion to
the instance counts, the rest background (label C). Each loss is called as
``BBoxHead.loss`` calls it. Timing is round robin: every repetition times
both heads once on the same features; a ratio is the median over the
repetitions of the per-repetition ratio, so load changes cancel out. The
inference activation (``get_activation`` vs softmax) is reported as well.
Goal: the training ratio is at most 1.5x. The last line is the summary, e.g.
``ratio to softmax CE head: 1.21x``.

Example:
    python benchmarks/bench_bags_head.py
    python benchmarks/bench_bags_head.py --device cuda --reps 200
"""
import argparse
import statistics
import time
from typing import Callable, List

import numpy as np
import torch
import torch.nn as nn

GOAL = 1.5
LVIS_V1_GROUP_SIZES = (200, 412, 334, 257)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--num-rois', type=int, default=1024)
    parser.add_argument('--in-features', type=int, default=1024)
    parser.add_argument('--fg-fraction', type=float, default=0.25)
    parser.add_argument('--reps', type=int, default=60)
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--device', default='cpu')
    parser.add_argument(
        '--threads', type=int, default=None,
        help='torch CPU threads (default: torch default)')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args()


def lvis_v1_like_counts(rng: np.random.Generator) -> np.ndarray:
    """Instance counts with the LVIS v1 BAGS group sizes, shuffled."""
    ranges = [(1, 9), (10, 99), (100, 999), (1000, 50000)]
    counts = np.concatenate([
        np.exp(rng.uniform(np.log(lo), np.log(hi + 1), n)).astype(int)
        for (lo, hi), n in zip(ranges, LVIS_V1_GROUP_SIZES)
    ])
    return counts[rng.permutation(len(counts))]


def sampled_labels(counts: np.ndarray, num_rois: int, fg_fraction: float,
                   rng: np.random.Generator) -> torch.Tensor:
    num_classes = len(counts)
    num_fg = int(round(num_rois * fg_fraction))
    fg = rng.choice(num_classes, num_fg, p=counts / counts.sum())
    labels = np.full(num_rois, num_classes)
    labels[:num_fg] = fg
    return torch.from_numpy(labels[rng.permutation(num_rois)])


def timed(fn: Callable[[], None], device: torch.device) -> float:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def head_step(fc_cls: nn.Module, loss: nn.Module, feats: torch.Tensor,
              labels: torch.Tensor) -> Callable[[], None]:
    """One classification forward + backward as BBoxHead.loss does it."""
    label_weights = torch.ones(len(labels), device=feats.device)

    def step() -> None:
        fc_cls.zero_grad(set_to_none=True)
        x = feats.detach().requires_grad_(True)
        value = loss(
            fc_cls(x),
            labels,
            label_weights,
            avg_factor=float(len(labels)))
        value.backward()

    return step


def median_ratio(numer: List[float], denom: List[float]) -> float:
    return statistics.median(n / d for n, d in zip(numer, denom))


def main() -> None:
    args = parse_args()
    from mmdet.models.losses import CrossEntropyLoss

    from mmdet_longtail.models.losses.group_softmax_loss import \
        GroupSoftmaxLoss

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    counts = lvis_v1_like_counts(rng)
    num_classes = len(counts)
    labels = sampled_labels(counts, args.num_rois, args.fg_fraction,
                            rng).to(device)
    feats = torch.randn(args.num_rois, args.in_features, device=device)

    bags = GroupSoftmaxLoss(
        num_classes,
        class_statistics=dict(image_count=counts, instance_count=counts),
        seed=0)
    assert bags.layout.group_sizes == LVIS_V1_GROUP_SIZES
    bags = bags.to(device)
    ce = CrossEntropyLoss(use_sigmoid=False)
    ce_fc = nn.Linear(args.in_features, num_classes + 1).to(device)
    bags_fc = nn.Linear(args.in_features,
                        bags.get_cls_channels(num_classes)).to(device)
    steps = dict(
        ce=head_step(ce_fc, ce, feats, labels),
        bags=head_step(bags_fc, bags, feats, labels))
    with torch.no_grad():
        ce_logits, bags_logits = ce_fc(feats), bags_fc(feats)
    infer = dict(
        ce=lambda: ce_logits.softmax(-1),
        bags=lambda: bags.get_activation(bags_logits))

    times = {k: [] for k in ('ce', 'bags', 'ce_inf', 'bags_inf')}
    for rep in range(args.warmup + args.reps):
        sample = {
            'ce': timed(steps['ce'], device),
            'bags': timed(steps['bags'], device),
            'ce_inf': timed(infer['ce'], device),
            'bags_inf': timed(infer['bags'], device),
        }
        if rep >= args.warmup:
            for k, v in sample.items():
                times[k].append(v)

    print(f'device {device}, {args.num_rois} RoIs, {args.in_features}-d '
          f'features, C={num_classes}, groups {LVIS_V1_GROUP_SIZES}, '
          f'{args.reps} reps, torch threads {torch.get_num_threads()}')
    for k in ('ce', 'bags', 'ce_inf', 'bags_inf'):
        print(f'{k:>9}: median {1e3 * statistics.median(times[k]):.2f} ms')
    inf_ratio = median_ratio(times['bags_inf'], times['ce_inf'])
    print(f'inference activation ratio to softmax: {inf_ratio:.2f}x')
    ratio = median_ratio(times['bags'], times['ce'])
    verdict = 'meets' if ratio <= GOAL else 'misses'
    print(f'(goal <= {GOAL}x: {verdict})')
    print(f'ratio to softmax CE head: {ratio:.2f}x')


if __name__ == '__main__':
    main()
