"""Write the synthetic long-tailed LVIS v1 dataset (deterministic per seed).

Example:
    python tools/misc/make_synthetic_lvis.py data/synthetic_lvis --seed 0
"""
import argparse
import time
from dataclasses import fields

from mmdet_longtail.datasets.synthetic_lvis import (LVIS_VERSIONS,
                                                    SyntheticLVISOptions,
                                                    make_synthetic_lvis)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out_dir', nargs='?', default='data/synthetic_lvis')
    for f in fields(SyntheticLVISOptions):
        if f.type in (int, float, 'int', 'float'):
            typ = int if f.type in (int, 'int') else float
            parser.add_argument(
                '--' + f.name.replace('_', '-'),
                type=typ,
                default=f.default,
                help=f'(default: {f.default})')
    parser.add_argument(
        '--lvis-version',
        choices=LVIS_VERSIONS,
        default='v1',
        help='file names and image records of LVIS v1 or v0.5')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    options = SyntheticLVISOptions(**{
        f.name: getattr(args, f.name)
        for f in fields(SyntheticLVISOptions) if hasattr(args, f.name)
    })
    start = time.time()
    paths = make_synthetic_lvis(args.out_dir, options, progress=True)
    print(f'wrote {paths["train"]} and {paths["val"]} '
          f'({time.time() - start:.1f} s)')


if __name__ == '__main__':
    main()
