"""Write a tau-normalised copy of a detector checkpoint.

Kang et al., "Decoupling Representation and Classifier for Long-Tailed
Recognition", ICLR 2020 (https://arxiv.org/abs/1910.09217):
``w_c <- w_c / ||w_c|| ** tau`` for the foreground rows of every RoI
classifier (``bbox_head[.i].fc_cls.weight``); the background row (last) and
the bias are kept. The result is tested with the *unchanged* config, and
gives the same scores as ``cls_predictor_cfg=dict(type='TauNormLinear',
tau=TAU)`` on the original checkpoint.

Example:
    python tools/model_converters/tau_norm.py baseline.pth tau1.pth --tau 1
"""
import argparse
import os.path as osp

import torch

from mmdet_longtail.models.layers.tau_norm_linear import (
    CLASSIFIER_WEIGHT_PATTERN, tau_normalize_state_dict)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('checkpoint', help='input checkpoint')
    parser.add_argument('out', help='output checkpoint')
    parser.add_argument(
        '--tau', type=float, required=True, help='norm exponent (>= 0)')
    parser.add_argument(
        '--pattern',
        default=CLASSIFIER_WEIGHT_PATTERN,
        help='regular expression of the classifier weight keys')
    parser.add_argument(
        '--no-background',
        action='store_true',
        help='normalise every row (heads without a background output)')
    return parser.parse_args()


def convert(checkpoint: dict, tau: float, pattern: str,
            exclude_background: bool) -> dict:
    """A new checkpoint dict with the classifier weights tau-normalised.

    Only ``meta`` and ``state_dict`` are kept: the optimizer state of the
    original run must not be resumed with changed weights.
    """
    if tau < 0:
        raise ValueError(f'--tau must be >= 0, got {tau}')
    state_dict = dict(checkpoint.get('state_dict', checkpoint))
    keys = tau_normalize_state_dict(state_dict, tau, pattern,
                                    exclude_background)
    meta = dict(checkpoint.get('meta') or {})
    meta['tau_norm'] = dict(tau=tau, keys=keys,
                            exclude_background=exclude_background)
    return dict(meta=meta, state_dict=state_dict)


def main() -> None:
    args = parse_args()
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint}')
    checkpoint = torch.load(
        args.checkpoint, map_location='cpu', weights_only=False)
    out = convert(checkpoint, args.tau, args.pattern, not args.no_background)
    torch.save(out, args.out)
    print(f'tau-normalised (tau={args.tau}) {out["meta"]["tau_norm"]["keys"]}'
          f' -> {args.out}')


if __name__ == '__main__':
    main()
