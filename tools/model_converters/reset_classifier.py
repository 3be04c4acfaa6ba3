"""Drop the RoI classifier from a checkpoint: the first step of cRT.

Kang et al., "Decoupling Representation and Classifier for Long-Tailed
Recognition", ICLR 2020 (https://arxiv.org/abs/1910.09217). Classifier
re-training (cRT) re-initialises the classifier of a trained detector and
trains it alone with class-balanced sampling. Loading the converted
checkpoint with ``load_from`` leaves ``fc_cls`` at its fresh initialisation
(mmdet's Normal(std=0.01)); everything else is the baseline. The cRT configs
in ``configs/decouple/`` expect this file.

Example:
    python tools/model_converters/reset_classifier.py \
        work_dirs/mask-rcnn_r50_fpn_ms-1x_lvis-v1/epoch_12.pth \
        work_dirs/mask-rcnn_r50_fpn_ms-1x_lvis-v1/crt_init.pth
"""
import argparse
import os.path as osp
import re
from typing import List, Tuple

import torch

# every classifier parameter of mmdet RoI heads (any cascade stage)
CLASSIFIER_PATTERN = r'(^|\.)bbox_head(\.\d+)?\.fc_cls\.'


def remove_classifier(state_dict: dict,
                      pattern: str = CLASSIFIER_PATTERN
                      ) -> Tuple[dict, List[str]]:
    """``state_dict`` without the keys matching ``pattern`` and the removed
    keys; raises ``ValueError`` if nothing matches."""
    regex = re.compile(pattern)
    removed = [k for k in state_dict if regex.search(k)]
    if not removed:
        raise ValueError(f'reset_classifier: no key matches {pattern!r} '
                         f'(keys look like {list(state_dict)[:3]})')
    kept = {k: v for k, v in state_dict.items() if k not in removed}
    return kept, removed


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('checkpoint', help='baseline checkpoint')
    parser.add_argument('out', help='output checkpoint')
    parser.add_argument(
        '--pattern',
        default=CLASSIFIER_PATTERN,
        help='regular expression of the keys to drop')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint}')
    checkpoint = torch.load(
        args.checkpoint, map_location='cpu', weights_only=False)
    state_dict, removed = remove_classifier(
        checkpoint.get('state_dict', checkpoint), args.pattern)
    meta = dict(checkpoint.get('meta') or {})
    meta['reset_classifier'] = removed
    # only the weights: the optimizer state of the baseline run is not reused
    torch.save(dict(meta=meta, state_dict=state_dict), args.out)
    print(f'removed {removed} -> {args.out}')


if __name__ == '__main__':
    main()
