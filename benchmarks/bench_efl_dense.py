"""EFL on a dense head at LVIS scale: time and memory of the loss per step,
eager and fused (``torch.compile``), against mmdet's ``FocalLoss``.

The inputs are what a RetinaNet head gives its loss at LVIS scale: for a
batch of ``--batch`` padded images of ``--image-size`` px, one (N_l, C)
logit tensor per FPN level (strides 8 to 128, ``--anchors`` anchors per
location, C = 1203), labels in ``[0, C]`` with ``--positives`` positive
anchors per image on long-tailed classes (the rest background, label C),
label weights of ones and ``avg_factor`` = number of positives. A step calls
the loss once per level, as ``AnchorHead.loss_by_feat`` does, sums the
levels and runs the backward pass; EFL's gradient statistics update at its
end, as in training.

Losses: mmdet's ``FocalLoss`` (the baseline detector's; on a GPU it is
mmcv's fused CUDA kernel ``sigmoid_focal_loss``), ``EFL`` eager
(``fuse_on_cuda=False``) and, on a GPU, ``EFL`` fused (the default on CUDA;
the terms compiled by ``torch.compile``, see ``mmdet_longtail/models/losses/
utils/compiled.py``). ``--dtype float16`` gives the losses float16 logits
inside ``torch.autocast``, as a head trained with ``--amp`` does.

Timing is round robin: each repetition times every loss once on fresh
logits; a ratio is the median over the repetitions of the ratio of two
losses' times in the same repetition. Memory is the
allocator's peak during the step above what the logits hold (GPU only).
The fused loss's first call, which compiles, is reported on its own.

Example:
    python benchmarks/bench_efl_dense.py                  # GPU if present
    python benchmarks/bench_efl_dense.py --device cpu --image-size 256 256
"""
import argparse
import statistics
import time
from typing import Dict, List, Tuple

import torch

STRIDES = (8, 16, 32, 64, 128)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device',
                        default='cuda' if torch.cuda.is_available() else
                        'cpu')
    parser.add_argument('--image-size', type=int, nargs=2,
                        default=(1344, 800), metavar=('W', 'H'),
                        help='padded image size (mmdet pads to 32)')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--anchors', type=int, default=9,
                        help='anchors per location (RetinaNet 9, ATSS 1)')
    parser.add_argument('--num-classes', type=int, default=1203)
    parser.add_argument('--positives', type=int, default=200,
                        help='positive anchors per image')
    parser.add_argument('--dtype', choices=['float32', 'float16'],
                        default='float32',
                        help='logits dtype (float16: under autocast, as '
                        'with --amp)')
    parser.add_argument('--reps', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args()


def level_sizes(args) -> List[int]:
    """Anchors per FPN level for the whole batch."""
    width, height = args.image_size
    return [
        args.batch * args.anchors * -(-width // s) * -(-height // s)
        for s in STRIDES
    ]


def make_inputs(args,
                gen: torch.Generator) -> List[Tuple[torch.Tensor, ...]]:
    """(logits, labels, weights) per level, on the CPU (copied per step)."""
    sizes = level_sizes(args)
    total = sum(sizes)
    num_classes = args.num_classes
    labels = torch.full((total, ), num_classes, dtype=torch.long)
    positives = torch.randperm(total, generator=gen)[:args.positives *
                                                     args.batch]
    # long-tailed classes: class j drawn with probability ~ 1 / (j + 1)
    probs = 1.0 / torch.arange(1, num_classes + 1, dtype=torch.float64)
    labels[positives] = torch.multinomial(
        probs, positives.numel(), replacement=True, generator=gen)
    logits = torch.randn(total, num_classes, generator=gen) * 2 - 4
    inputs, start = [], 0
    for size in sizes:
        end = start + size
        inputs.append((logits[start:end], labels[start:end],
                       torch.ones(size)))
        start = end
    return inputs


def build_losses(args) -> Dict[str, torch.nn.Module]:
    """The losses to time; EFL fused only on CUDA, where it applies."""
    from mmdet.models.losses import FocalLoss

    from mmdet_longtail.models.losses.efl_loss import EFL
    efl = dict(num_classes=args.num_classes)
    losses = {
        'FocalLoss': FocalLoss(use_sigmoid=True, gamma=2.0, alpha=0.25),
        'EFL eager': EFL(**efl, fuse_on_cuda=False),
    }
    if args.device.startswith('cuda'):
        losses['EFL fused'] = EFL(**efl, fuse_on_cuda=True)
    return losses


def step(loss: torch.nn.Module, inputs, num_classes: int, device: str,
         dtype: torch.dtype) -> Tuple[float, float]:
    """One training step of the loss: (seconds, peak extra GiB)."""
    batch = [(x.to(device, dtype).requires_grad_(), y.to(device),
              w.to(device)) for x, y, w in inputs]
    num_pos = float(sum(int((y < num_classes).sum()) for _, y, _ in batch))
    cuda = device.startswith('cuda')
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        held = torch.cuda.memory_allocated()
    start = time.perf_counter()
    with torch.autocast(device.split(':')[0], dtype=dtype,
                        enabled=dtype != torch.float32):
        total = sum(loss(x, y, w, avg_factor=num_pos) for x, y, w in batch)
    total.backward()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() - held) / 2**30 if cuda \
        else float('nan')
    return seconds, peak


def median_ratio(times: List[float], reference: List[float]) -> float:
    return statistics.median(t / r for t, r in zip(times, reference))


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    dtype = getattr(torch, args.dtype)
    inputs = make_inputs(args, gen)
    losses = {k: v.to(args.device).train()
              for k, v in build_losses(args).items()}
    sizes = level_sizes(args)
    print(f'device {args.device} '
          f'({torch.cuda.get_device_name() if "cuda" in args.device else ""}'
          f'), torch {torch.__version__}, {args.dtype} logits, '
          f'{args.batch} images of {args.image_size[0]}x'
          f'{args.image_size[1]} px, {args.anchors} anchors per location: '
          f'{sum(sizes):,} anchors x {args.num_classes} classes in '
          f'{len(sizes)} levels')
    first = {
        name: step(loss, inputs, args.num_classes, args.device, dtype)[0]
        for name, loss in losses.items()
    }
    print('first step (a fused loss compiles): ' + ', '.join(
        f'{name} {seconds:.1f} s' for name, seconds in first.items()))
    times: Dict[str, List[float]] = {k: [] for k in losses}
    peaks: Dict[str, float] = {k: 0.0 for k in losses}
    for rep in range(args.warmup + args.reps):
        for name, loss in losses.items():
            seconds, peak = step(loss, inputs, args.num_classes, args.device,
                                 dtype)
            if rep >= args.warmup:
                times[name].append(seconds)
                peaks[name] = max(peaks[name], peak)
    base = times['FocalLoss']
    print('| loss | ms per step (median) | ratio to FocalLoss | '
          'ratio to EFL eager | peak extra memory (GiB) |')
    print('|---|---|---|---|---|')
    for name in losses:
        print(f'| {name} | {1e3 * statistics.median(times[name]):.2f} | '
              f'{median_ratio(times[name], base):.2f} | '
              f'{median_ratio(times[name], times["EFL eager"]):.2f} | '
              f'{peaks[name]:.2f} |')
    if 'EFL fused' in losses:
        fused, eager = losses['EFL fused'], losses['EFL eager']
        same = torch.allclose(fused.pos_neg, eager.pos_neg, rtol=1e-4,
                              atol=1e-6)
        print(f'EFL fused and eager statistics agree after '
              f'{1 + args.warmup + args.reps} steps: {same}')


if __name__ == '__main__':
    main()
