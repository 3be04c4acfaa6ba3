"""Synthetic long-tail benchmark: every method's tiny config, trained and
tested on CPU, next to its baseline.

Discovers every ``configs/*/*_synthetic-lvis.py``; the configs of
``configs/lvis/`` are the baselines, and a method config is compared with the
baseline of its framework (same name before ``_r18-tiny``, e.g. ``mask-rcnn``
-> ``configs/lvis/mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py``). Each
config is trained with ``tools/train.py`` (seeded) and tested with
``tools/test.py``; the numbers are those the metric logged. Writes
``docs/synthetic_benchmark.md``: AP / APr / APc / APf (mask AP for mask
models, else box) and APb per config, the difference to the baseline, the
time, and the command. The last line printed is the summary.

Decoupled recipes (``load_from`` a baseline's work dir) run after their
baseline: ``epoch_*.pth`` means the baseline's last checkpoint, and the
known initialisations are made from it by their converters
(``bags_init.pth``: ``tools/model_converters/bags_convert.py``,
``crt_init.pth``: ``tools/model_converters/reset_classifier.py``). A config
can name its own converter with ``synthetic_init_converter = 'tools/...py'``
(called as ``converter BASELINE_CKPT OUT``).

Examples:
    python benchmarks/synthetic_lt.py                      # everything
    python benchmarks/synthetic_lt.py --configs configs/lvis/mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py configs/eqlv2/*_synthetic-lvis.py
    python benchmarks/synthetic_lt.py --epochs 1 --out /tmp/quick.md

``--reuse`` keeps the numbers and time of every config whose work dir holds
a finished run of this benchmark (continue an interrupted run, or add
configs to one without training its baseline again).
"""  # noqa: E501
import argparse
import glob
import os
import os.path as osp
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
BASELINE_DIR = 'configs/lvis'
MAIN_BASELINE = 'configs/lvis/mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py'
SUFFIX = '_synthetic-lvis.py'
INIT_CONVERTERS = {
    'bags_init.pth': 'tools/model_converters/bags_convert.py',
    'crt_init.pth': 'tools/model_converters/reset_classifier.py',
}
ITEMS = ('AP', 'APr', 'APc', 'APf')
# written in a work dir when its train and test runs finished
SECONDS_FILE = 'benchmark_seconds.txt'


@dataclass
class Run:
    """One config of the benchmark and its outcome."""
    config: str  # repo-relative path
    baseline: Optional[str] = None  # repo-relative path, None for baselines
    numbers: Dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    status: str = 'pending'  # 'ok', 'failed: ...', 'skipped: ...'

    @property
    def name(self) -> str:
        return osp.splitext(osp.basename(self.config))[0]

    @property
    def framework(self) -> str:
        return self.name.split('_r18-tiny')[0]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--configs', nargs='+',
        help=f'configs to run (default: every configs/*/*{SUFFIX}); their '
        f'baselines are added')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--epochs', type=int,
                        help='override every schedule (quick runs)')
    parser.add_argument('--data-root', default='data/synthetic_lvis/',
                        help='synthetic set (generated with --seed when '
                        'absent)')
    parser.add_argument('--work-root', default='work_dirs/synthetic_lt')
    parser.add_argument('--out', default='docs/synthetic_benchmark.md')
    parser.add_argument('--reuse', action='store_true',
                        help='keep finished runs found in --work-root')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        help='passed to every train and test run')
    return parser.parse_args(argv)


def discover() -> List[str]:
    """Every tiny synthetic config, repo-relative."""
    return sorted(
        osp.relpath(c, REPO_ROOT)
        for c in glob.glob(osp.join(REPO_ROOT, 'configs', '*', f'*{SUFFIX}')))


def framework_baseline(config: str) -> Optional[str]:
    """The configs/lvis tiny config of the same framework, if any."""
    framework = osp.basename(config).split('_r18-tiny')[0]
    baseline = f'{BASELINE_DIR}/{framework}_r18-tiny_fpn_12e{SUFFIX}'
    return baseline if osp.isfile(osp.join(REPO_ROOT, baseline)) else None


def plan(configs: Optional[List[str]]) -> List[Run]:
    """Baselines first (in name order), then the methods."""
    if not configs:
        configs = [osp.join(REPO_ROOT, c) for c in discover()]
    relative = []
    for config in configs:
        path = osp.abspath(config)
        if not osp.isfile(path):
            raise FileNotFoundError(f'config not found: {config}')
        relative.append(osp.relpath(path, REPO_ROOT))
    baselines = {c for c in relative if osp.dirname(c) == BASELINE_DIR}
    methods = [c for c in relative if c not in baselines]
    for method in methods:
        baseline = framework_baseline(method)
        if baseline:
            baselines.add(baseline)
    if MAIN_BASELINE not in baselines and osp.isfile(
            osp.join(REPO_ROOT, MAIN_BASELINE)):
        baselines.add(MAIN_BASELINE)
    runs = [Run(c) for c in sorted(baselines)]
    runs += [Run(c, framework_baseline(c)) for c in methods]
    return runs


def run_logged(cmd: List[str], log_path: str, env: dict) -> int:
    os.makedirs(osp.dirname(log_path), exist_ok=True)
    with open(log_path, 'w') as log:
        return subprocess.run(cmd, cwd=REPO_ROOT, env=env, stdout=log,
                              stderr=subprocess.STDOUT).returncode


def last_checkpoint(work_dir: str) -> Optional[str]:
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return None
    with open(pointer) as f:
        path = osp.join(work_dir, osp.basename(f.read().strip()))
    return path if osp.isfile(path) else None


def resolve_load_from(run: Run, work_root: str, env: dict):
    """``load_from`` for this run: (path or None, problem or None)."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO_ROOT, run.config))
    load_from = cfg.get('load_from')
    if not load_from:
        return None, None
    match = re.match(r'^(?:\./)?work_dirs/([^/]+)/([^/]+)$', load_from)
    if not match:
        path = osp.join(REPO_ROOT, load_from)
        return (path, None) if osp.isfile(path) else (
            None, f'needs load_from={load_from}')
    source, file_name = match.groups()
    source_ckpt = last_checkpoint(osp.join(work_root, source))
    if source_ckpt is None:
        return None, f'needs a trained {source}'
    if re.match(r'^(epoch|iter)_\d+\.pth$|^latest\.pth$', file_name):
        return source_ckpt, None
    converter = cfg.get('synthetic_init_converter') or \
        INIT_CONVERTERS.get(file_name)
    if converter is None:
        return None, f'does not know how to make {file_name} from {source}'
    target = osp.join(work_root, source, file_name)
    cmd = [sys.executable, osp.join(REPO_ROOT, converter), source_ckpt,
           target]
    log = osp.join(work_root, run.name, 'benchmark_convert.log')
    if run_logged(cmd, log, env) != 0 or not osp.isfile(target):
        return None, f'{converter} failed (see {log})'
    return target, None


def reuse_finished(run: Run, work_dir: str) -> bool:
    """Fill ``run`` from a finished run in ``work_dir``, if there is one."""
    from mmdet_longtail.evaluation.result_files import work_dir_metrics
    seconds_file = osp.join(work_dir, SECONDS_FILE)
    numbers, origin = work_dir_metrics(work_dir)
    if origin != 'test' or not osp.isfile(seconds_file):
        return False
    with open(seconds_file) as f:
        run.seconds = float(f.read())
    run.numbers, run.status = numbers, 'ok'
    return True


def train_and_test(run: Run, args, env: dict) -> None:
    from mmdet_longtail.evaluation.result_files import work_dir_metrics
    work_dir = osp.abspath(osp.join(args.work_root, run.name))
    if args.reuse and reuse_finished(run, work_dir):
        return
    options = [f'randomness.seed={args.seed}', *args.cfg_options]
    if args.epochs:
        options.append(f'train_cfg.max_epochs={args.epochs}')
    load_from, problem = resolve_load_from(run, osp.abspath(args.work_root),
                                           env)
    if problem:
        run.status = f'skipped: {problem}'
        return
    train_options = list(options)
    # the test run afterwards evaluates; no validation during training
    # (mmengine validates after the last epoch whatever val_interval says)
    train_options += ['val_cfg=None', 'val_dataloader=None',
                      'val_evaluator=None']
    if load_from:
        train_options.append(f'load_from={load_from}')
    py = sys.executable
    start = time.perf_counter()
    train = [py, osp.join(REPO_ROOT, 'tools', 'train.py'), run.config,
             '--work-dir', work_dir, '--cfg-options', *train_options]
    if run_logged(train, osp.join(work_dir, 'benchmark_train.log'), env):
        run.status = f'failed: training (see {work_dir}/benchmark_train.log)'
        return
    ckpt = last_checkpoint(work_dir)
    test = [py, osp.join(REPO_ROOT, 'tools', 'test.py'), run.config, ckpt,
            '--work-dir', work_dir, '--cfg-options', *options]
    if run_logged(test, osp.join(work_dir, 'benchmark_test.log'), env):
        run.status = f'failed: test (see {work_dir}/benchmark_test.log)'
        return
    run.seconds = time.perf_counter() - start
    run.numbers, origin = work_dir_metrics(work_dir)
    run.status = 'ok' if origin == 'test' else 'failed: no test result'
    if run.status == 'ok':
        with open(osp.join(work_dir, SECONDS_FILE), 'w') as f:
            f.write(repr(run.seconds))


def headline(numbers: Dict[str, float]) -> str:
    return 'segm' if 'lvis/segm_AP' in numbers else 'bbox'


def percent(numbers: Dict[str, float], iou_type: str, item: str) -> str:
    value = numbers.get(f'lvis/{iou_type}_{item}')
    return '-' if value is None or value < 0 else f'{100 * value:.1f}'


def delta(run: Run, base: Optional[Run], item: str) -> str:
    if base is None or not run.numbers or not base.numbers:
        return ''
    iou_type = headline(run.numbers)
    a = run.numbers.get(f'lvis/{iou_type}_{item}', -1)
    b = base.numbers.get(f'lvis/{iou_type}_{item}', -1)
    return '' if a < 0 or b < 0 else f'{100 * (a - b):+.1f}'


def report(runs: List[Run], command: str, total: float, data_note: str,
           seed: int, out_dir: str) -> str:
    """The Markdown page; config links relative to ``out_dir``."""
    by_config = {r.config: r for r in runs}
    lines = [
        '# Synthetic long-tail benchmark', '',
        'Every method\'s tiny config (`configs/*/*_synthetic-lvis.py`) '
        'trained and tested on CPU on the synthetic long-tailed LVIS set, '
        'next to the baseline of its framework (`configs/lvis/`). Values in '
        '%; AP / APr / APc / APf are mask numbers for models with masks, '
        'box numbers otherwise; APb is the box AP; deltas are to the '
        'baseline.', '',
        f'- command: `{command}`',
        f'- seed: {seed}; total time: {total / 60:.1f} min on '
        f'{os.cpu_count()} CPU cores ({time.strftime("%Y-%m-%d")})',
        f'- data: {data_note}', ''
    ]
    skipped = not_run(runs)
    if skipped:
        frameworks_left = sorted({Run(c).framework for c in skipped})
        lines[-1:-1] = [
            f'- not in this run: {len(skipped)} discovered configs '
            f'({", ".join(frameworks_left)}); '
            '`python benchmarks/synthetic_lt.py` runs them all']
    frameworks = sorted({r.framework for r in runs},
                        key=lambda f: (f != 'mask-rcnn', f))
    for framework in frameworks:
        members = [r for r in runs if r.framework == framework]
        lines += [
            f'## {framework}', '',
            '| config | AP | APr | APc | APf | APb | ΔAP | ΔAPr | time (s) |',
            '|---|---|---|---|---|---|---|---|---|'
        ]
        for run in members:
            base = by_config.get(run.baseline) if run.baseline else None
            link = osp.relpath(osp.join(REPO_ROOT, run.config), out_dir)
            label = f'[{run.name}]({link})'
            if run.baseline is None:
                label = f'**baseline** {label}'
            if run.status != 'ok':
                lines.append(f'| {label} | {run.status} |' + ' |' * 7)
                continue
            t = headline(run.numbers)
            cells = [percent(run.numbers, t, k) for k in ITEMS]
            cells.append(percent(run.numbers, 'bbox', 'AP'))
            cells += [delta(run, base, 'AP'), delta(run, base, 'APr'),
                      f'{run.seconds:.0f}']
            lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
        lines.append('')
    lines.append(baseline_check(by_config.get(MAIN_BASELINE)))
    return '\n'.join(lines) + '\n'


def not_run(runs: List[Run]) -> List[str]:
    """Discovered tiny configs that this run did not include."""
    included = {r.config for r in runs}
    return [c for c in discover() if c not in included]


def baseline_check(base: Optional[Run]) -> str:
    """Is the set long-tailed enough: baseline APr clearly below APf?"""
    if base is None or base.status != 'ok':
        return 'Baseline check: the main baseline did not run.'
    t = headline(base.numbers)
    apr = base.numbers.get(f'lvis/{t}_APr', -1)
    apf = base.numbers.get(f'lvis/{t}_APf', -1)
    verdict = 'clearly below' if 0 <= apr < 0.5 * apf else \
        'NOT clearly below'
    return (f'Baseline check ({t}): APr {100 * apr:.1f} is {verdict} APf '
            f'{100 * apf:.1f}.')


def ensure_data(root: str, seed: int) -> str:
    from mmdet_longtail.datasets.synthetic_lvis import (make_synthetic_lvis,
                                                        synthetic_lvis_exists)
    if not synthetic_lvis_exists(root):
        print(f'generating the synthetic set in {root} (seed {seed})',
              flush=True)
        make_synthetic_lvis(root, seed=seed)
    from mmdet_longtail.datasets import get_class_statistics
    stats = get_class_statistics(
        osp.join(root, 'annotations', 'lvis_v1_train.json'))
    groups = {f: stats.frequency.count(f) for f in 'rcf'}
    shown = osp.relpath(root, REPO_ROOT)
    if shown.startswith('..'):
        shown = root  # outside the repository: keep the absolute path
    return (f'`{shown}`, {stats.num_classes} classes '
            f'(rare / common / frequent: {groups["r"]} / {groups["c"]} / '
            f'{groups["f"]}), {stats.num_images} training images, '
            f'{int(stats.instance_count.min())} to '
            f'{int(stats.instance_count.max())} training instances per '
            f'class')


def main(argv=None) -> int:
    args = parse_args(argv)
    command = 'python benchmarks/synthetic_lt.py ' + ' '.join(
        sys.argv[1:] if argv is None else argv)
    data_root = osp.join(osp.abspath(args.data_root), '')
    env = dict(os.environ, MMLT_SYNTHETIC_ROOT=data_root,
               PYTHONPATH=REPO_ROOT + os.pathsep +
               os.environ.get('PYTHONPATH', ''))
    os.environ['MMLT_SYNTHETIC_ROOT'] = data_root  # for Config.fromfile
    data_note = ensure_data(data_root, args.seed)
    runs = plan(args.configs)
    start = time.perf_counter()
    for i, run in enumerate(runs, 1):
        print(f'[{i}/{len(runs)}] {run.config} ...', flush=True)
        train_and_test(run, args, env)
        numbers = run.numbers
        t = headline(numbers)
        summary = ' '.join(f'{k} {percent(numbers, t, k)}' for k in ITEMS)
        print(f'    {run.status} {summary if numbers else ""} '
              f'({run.seconds:.0f} s)', flush=True)
    total = time.perf_counter() - start
    text = report(runs, command, total, data_note, args.seed,
                  osp.dirname(osp.abspath(args.out)))
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        f.write(text)
    ok = sum(r.status == 'ok' for r in runs)
    failed = [r.name for r in runs if r.status.startswith('failed')]
    print(f'{baseline_check(next((r for r in runs if r.config == MAIN_BASELINE), None))} '  # noqa: E501
          f'{ok}/{len(runs)} configs ran in {total / 60:.1f} min; wrote '
          f'{args.out}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
