"""Write a tau-normalised copy of a detector checkpoint.

Kang et al., "Decoupling Representation and Classifier for Long-Tailed
Recognition", ICLR 2020 (https://arxiv.org/abs/1910.09217):
``w_c <- w_c / ||w_c|| ** tau`` for the class rows of every RoI classifier
(``bbox_head[.i].fc_cls.weight``); the background row, any other row (e.g.
BAGS's "others") and the bias are kept. Which row is which comes from the
head of the checkpoint's config (the one saved in the checkpoint, or
``--config``). For a softmax head the result, tested with the *unchanged*
config, gives the same scores as ``cls_predictor_cfg=dict(type=
'TauNormLinear', tau=TAU)`` on the original checkpoint.

Example:
    python tools/model_converters/tau_norm.py baseline.pth tau1.pth --tau 1
"""
import argparse
from typing import Optional

import torch

from mmdet_longtail.models.checkpoint_classifiers import (
    checkpoint_config, checkpoint_state_dict, classifier_layouts,
    load_checkpoint_file, select_keys)
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
        '--config',
        help='the config the checkpoint was trained with (default: the '
        'one saved in the checkpoint)')
    parser.add_argument(
        '--no-background',
        action='store_true',
        help='assert that the heads have no background output (every row '
        'is a class); the layout itself comes from the config')
    return parser.parse_args()


def convert(checkpoint: dict,
            tau: float,
            pattern: str = CLASSIFIER_WEIGHT_PATTERN,
            config: Optional[str] = None,
            no_background: bool = False,
            source: str = 'checkpoint') -> dict:
    """A new checkpoint dict with the class rows of the classifier weights
    tau-normalised.

    Only ``meta`` and ``state_dict`` are kept: the optimizer state of the
    original run must not be resumed with changed weights.

    Args:
        checkpoint (dict): the checkpoint.
        tau (float): norm exponent, >= 0.
        pattern (str): regular expression of the weight keys.
        config (str, optional): config file; default: ``meta['cfg']``.
        no_background (bool): refuse heads with a background output.
        source (str): name of the checkpoint for error messages.
    """
    if tau < 0:
        raise ValueError(f'--tau must be >= 0, got {tau}')
    state_dict = dict(checkpoint_state_dict(checkpoint))
    keys = select_keys(state_dict, pattern, source)
    layouts = classifier_layouts(state_dict, keys,
                                 checkpoint_config(checkpoint, source, config),
                                 source)
    for key, layout in layouts.items():
        if no_background and layout.background_row is not None:
            raise ValueError(
                f'--no-background, but the head of {key} has a background '
                f'output (row {layout.background_row}; {layout.summary()})')
    tau_normalize_state_dict(state_dict, tau, layouts)
    meta = dict(checkpoint.get('meta') or {})
    meta['tau_norm'] = dict(
        tau=tau,
        keys=keys,
        layouts={k: v.summary()
                 for k, v in layouts.items()})
    return dict(meta=meta, state_dict=state_dict)


def main() -> None:
    args = parse_args()
    checkpoint = load_checkpoint_file(args.checkpoint)
    out = convert(checkpoint, args.tau, args.pattern, args.config,
                  args.no_background, args.checkpoint)
    torch.save(out, args.out)
    print(f'tau-normalised (tau={args.tau}) {out["meta"]["tau_norm"]["keys"]}'
          f' -> {args.out}')


if __name__ == '__main__':
    main()
