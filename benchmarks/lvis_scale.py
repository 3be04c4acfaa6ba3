"""LVIS-scale cost of every method: time per train step, peak memory and test
time per image of each shipped real config, next to its framework's baseline
measured in the same run.

The script writes LVIS-shaped synthetic data with the package's generator
(``make_synthetic_lvis``, which keeps its per-class minimum at any image
size): LVIS v1 (1203 classes) under ``<work-dir>/data/lvis_v1/`` and, when a
selected config needs it, LVIS v0.5 (1230 classes) under
``<work-dir>/data/lvis_v0.5/``, in the layout of ``data/README.md``. Then it
runs every shipped real config (``configs/*/*_lvis-v1.py`` and
``*_lvis-v0.5.py``, or the ``--configs`` subset, each with its baseline)
through ``tools/train.py`` for ``--iters`` iterations and ``tools/test.py``
on ``--test-images`` images, as subprocesses.

Each run uses a wrapper config in the work dir that inherits the shipped
config and changes only what a short CPU run needs: the resize steps of the
pipelines scaled to ``--scale`` (0 keeps the config's), an iteration-based
loop without validation and with a checkpoint at the end (deleted once
tested, unless ``--keep-checkpoints``), log lines every iteration, no
pretrained backbone (nothing downloads) and no ``load_from``, dataloaders
without worker processes (so the peak memory is that of one process). With
``--profile`` the train run's config inherits it and adds mmengine's
``ProfilerHook`` over the timed iterations. The data root goes in through
``--cfg-options`` (train and test dataloaders and the test evaluator's
``ann_file``); the models' class statistics come from
``train_dataloader.dataset`` (``LongTailRunner``).

Baselines: ``configs/lvis/<framework>_r50_fpn_ms-1x_lvis-v1.py`` (v1) or
``..._ms-2x_lvis-v0.5.py`` (v0.5); for RetinaNet / ATSS (EFL) the focal-loss
baseline of the detector, ``configs/efl/<detector>_r50_fpn_rfs-1e-3_ms-2x_
lvis-v1.py``. A config with another backbone depth (TDE's R101 HTC) is
compared with its baseline at that depth (``model.backbone.depth``).

Per config it prints: losses finite, time per train step (mean of the
logged ``time`` of the iterations after ``--warmup``) and its ratio to the
baseline, peak memory (CPU: maximum resident set of the train / test
process; GPU: mmengine's logged ``memory``, the allocator's peak), test time
per image (logged ``time`` of the test iterations after the first
``--warmup``, batch size 1) and its ratio, and whether the LVIS metric ran.
Ratios above the goals are flagged: RoI-head methods (BAGS, EQL, EQLv2,
Seesaw, TDE, NorCal, tau-norm, LWS) 1.05, EFL 1.10. The table goes to the
console (Markdown) and, with the numbers, to ``<work-dir>/lvis_scale.json``.

``--profile`` finds where a method's extra time goes: each train run also
prints ``torch.profiler``'s table of its timed iterations, every operator
(on a GPU with its kernels' device time, sorted by it, and host waits such
as ``cudaStreamSynchronize``; on a CPU sorted by self CPU time), near the
end of ``runs/<config>/train.log``; compare a method's table with its
baseline's. The profiler slows the steps, so take the ratios from a run
without it. Test time is not profiled.

Examples:
    python benchmarks/lvis_scale.py --configs \\
        configs/lvis/mask-rcnn_r50_fpn_ms-1x_lvis-v1.py \\
        configs/eql/mask-rcnn_r50_fpn_eql_ms-1x_lvis-v1.py
    python benchmarks/lvis_scale.py                      # every real config
    python benchmarks/lvis_scale.py --device cuda --amp --scale 0 --iters 30
    python benchmarks/lvis_scale.py --device cuda --profile --configs \\
        configs/eqlv2/mask-rcnn_r50_fpn_eqlv2_ms-1x_lvis-v1.py
"""
import argparse
import glob
import json
import math
import os
import os.path as osp
import pprint
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# shipped real configs: <framework>_r<depth>_fpn_<...>_<dataset>.py
CONFIG_NAME = re.compile(r'^(?P<framework>[a-z-]+)_r(?P<depth>\d+)_fpn_'
                         r'.*_(?P<dataset>lvis-v1|lvis-v0\.5)\.py$')
DATASETS = {
    'lvis-v1': dict(lvis_version='v1', num_classes=1203, dir='lvis_v1'),
    'lvis-v0.5': dict(lvis_version='v0.5', num_classes=1230, dir='lvis_v0.5'),
}
ONE_STAGE = ('retinanet', 'atss')
# method (config folder, or name part for configs/decouple) -> goal, the
# largest ratio to the baseline per train step and per test image
ROI_HEAD_GOAL = 1.05
EFL_GOAL = 1.10
GOALS = {
    'bags': ROI_HEAD_GOAL,
    'eql': ROI_HEAD_GOAL,
    'eqlv2': ROI_HEAD_GOAL,
    'seesaw': ROI_HEAD_GOAL,
    'tde': ROI_HEAD_GOAL,
    'norcal': ROI_HEAD_GOAL,
    'tau-norm': ROI_HEAD_GOAL,
    'lws': ROI_HEAD_GOAL,
    'efl': EFL_GOAL,
}


@dataclass
class Run:
    """One config to train and test (a method, or a baseline)."""
    config: str  # relative to the repository root
    dataset: str  # key of DATASETS
    overrides: Dict[str, str] = field(default_factory=dict)
    baseline: Optional[str] = None  # key of the baseline run; None: itself
    goal: Optional[float] = None
    result: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        extra = ' '.join(f'{k}={v}' for k, v in self.overrides.items())
        return f'{self.config} [{extra}]' if extra else self.config

    @property
    def name(self) -> str:
        name = osp.splitext(osp.basename(self.config))[0]
        extra = ','.join(f'{k.split(".")[-1]}={v}'
                         for k, v in self.overrides.items())
        return f'{name}[{extra}]' if extra else name


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--configs',
        nargs='+',
        help='configs or globs (default: every shipped real config); their '
        'baselines are added')
    parser.add_argument('--work-dir', default='work_dirs/lvis_scale')
    parser.add_argument(
        '--device',
        choices=['auto', 'cpu', 'cuda'],
        default='auto',
        help='cpu hides the GPUs from the runs; auto: a GPU if there is one')
    parser.add_argument(
        '--amp', action='store_true', help='tools/train.py --amp (GPU)')
    parser.add_argument('--iters', type=int, default=8,
                        help='train iterations per config')
    parser.add_argument(
        '--warmup',
        type=int,
        default=3,
        help='first train iterations left out of the time per step')
    parser.add_argument(
        '--test-warmup',
        type=int,
        default=1,
        help='first test images left out of the time per image')
    parser.add_argument('--test-images', type=int, default=8)
    parser.add_argument(
        '--scale',
        type=int,
        default=256,
        help='the resize steps of the pipelines resize to (SCALE, SCALE) '
        'with the config\'s keep_ratio; 0 keeps the config\'s scales')
    parser.add_argument('--train-images', type=int, default=3000)
    parser.add_argument('--image-size', type=int, default=128,
                        help='side of the synthetic images (px)')
    parser.add_argument('--min-class-images', type=int, default=2)
    parser.add_argument('--timeout', type=int, default=3600,
                        help='seconds per train or test process')
    parser.add_argument(
        '--profile',
        action='store_true',
        help='print torch.profiler\'s table of the timed train iterations '
        'in each run\'s train.log (slows them: not for the ratios)')
    parser.add_argument(
        '--keep-checkpoints',
        action='store_true',
        help='keep each run\'s checkpoint (deleted once it was tested)')
    return parser.parse_args(argv)


# ---------------------------------------------------------------- planning
def discover() -> List[str]:
    """Every shipped real config, relative to the repository root."""
    paths = glob.glob(osp.join(REPO_ROOT, 'configs', '*', '*.py'))
    return sorted(
        osp.relpath(p, REPO_ROOT) for p in paths
        if CONFIG_NAME.match(osp.basename(p)))


def parse_config_name(config: str) -> Tuple[str, str, str]:
    """(framework, backbone depth, dataset) of a real config's file name."""
    match = CONFIG_NAME.match(osp.basename(config))
    if match is None:
        raise ValueError(
            f'{config}: not a real LVIS config name '
            '(<framework>_r<depth>_fpn_..._lvis-v1.py or ..._lvis-v0.5.py)')
    return match['framework'], match['depth'], match['dataset']


def method_of(config: str) -> str:
    """The method a config belongs to: its folder, or for
    ``configs/decouple`` the recipe in its name (crt, lws, tau-norm)."""
    folder = osp.basename(osp.dirname(config))
    if folder == 'decouple':
        for recipe in ('tau-norm', 'lws', 'crt'):
            if f'_{recipe}_' in osp.basename(config):
                return recipe
        raise ValueError(f'{config}: unknown decoupled recipe')
    return folder


def framework_baseline(config: str) -> Tuple[str, Dict[str, str]]:
    """Baseline config of ``config``'s framework and the overrides that give
    it ``config``'s backbone depth."""
    framework, depth, dataset = parse_config_name(config)
    if framework in ONE_STAGE:
        if dataset != 'lvis-v1':
            raise ValueError(f'{config}: no {framework} baseline on '
                             f'{dataset}')
        # EFL's focal-loss baseline of the same detector
        base = f'configs/efl/{framework}_r50_fpn_rfs-1e-3_ms-2x_lvis-v1.py'
    elif dataset == 'lvis-v1':
        base = f'configs/lvis/{framework}_r50_fpn_ms-1x_lvis-v1.py'
    else:
        base = f'configs/lvis/{framework}_r50_fpn_ms-2x_lvis-v0.5.py'
    if not osp.isfile(osp.join(REPO_ROOT, base)):
        raise FileNotFoundError(f'{config}: baseline {base} not found')
    overrides = {} if depth == '50' else {'model.backbone.depth': depth}
    return base, overrides


def select(patterns: Optional[List[str]]) -> List[str]:
    if not patterns:
        return discover()
    selected = []
    for pattern in patterns:
        matches = sorted(
            osp.relpath(p, REPO_ROOT)
            for p in glob.glob(osp.join(REPO_ROOT, pattern)))
        matches = [m for m in matches if CONFIG_NAME.match(osp.basename(m))]
        if not matches:
            raise FileNotFoundError(f'--configs {pattern}: no real LVIS '
                                    'config matches')
        selected += [m for m in matches if m not in selected]
    return selected


def plan(patterns: Optional[List[str]]) -> List[Run]:
    """Runs of the selected configs with their baselines, baselines first."""
    baselines: Dict[str, Run] = {}
    methods: List[Run] = []
    for config in select(patterns):
        dataset = parse_config_name(config)[2]
        base, overrides = framework_baseline(config)
        base_run = Run(base, dataset, overrides)
        baselines.setdefault(base_run.key, base_run)
        if config == base and not overrides:
            continue
        methods.append(
            Run(config, dataset, baseline=base_run.key,
                goal=GOALS.get(method_of(config))))
    return list(baselines.values()) + methods


# --------------------------------------------------------------- wrappers
def _plain(obj):
    """ConfigDicts / lists of them as plain literals (for a config file)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    return obj


def rescale_pipeline(pipeline: List[dict], scale: int) -> List[dict]:
    """The pipeline with every resize step resizing to (scale, scale)."""
    out = []
    for step in _plain(pipeline):
        kind = step.get('type', '')
        if kind == 'Resize':
            step = dict(step, scale=(scale, scale))
        elif kind == 'RandomChoiceResize':
            step = dict(step, scales=[(scale, scale)])
        elif kind == 'RandomResize':
            step = dict(step, scale=[(scale, scale), (scale, scale)])
        elif 'Resize' in str(kind):
            raise ValueError(f'rescale_pipeline: unknown resize step {step}')
        out.append(step)
    return out


def dataset_depth(loader_cfg) -> int:
    """How many dataset wrappers sit around the dataset of a dataloader."""
    depth, dataset = 0, loader_cfg['dataset']
    while 'dataset' in dataset:
        depth, dataset = depth + 1, dataset['dataset']
    return depth


def _dataset_of(loader_cfg):
    dataset = loader_cfg['dataset']
    while 'dataset' in dataset:
        dataset = dataset['dataset']
    return dataset


def _nest(depth: int, inner: str) -> str:
    for _ in range(depth):
        inner = f'dict(dataset={inner})'
    return inner


def profiler_hook(args, gpu: bool) -> dict:
    """mmengine's ProfilerHook recording the iterations after ``--warmup``
    once and printing the table of all their operators (sorted by self
    device time on a GPU, self CPU time otherwise) when the last one ends.
    """
    return dict(
        type='ProfilerHook',
        by_epoch=False,
        profile_times=args.iters,
        schedule=dict(wait=0, warmup=args.warmup,
                      active=args.iters - args.warmup, repeat=1),
        activity_with_cuda=gpu,
        on_trace_ready=dict(
            type='log_trace',
            sort_by='self_cuda_time_total' if gpu else 'self_cpu_time_total',
            row_limit=-1))


def profiled_train_config(wrapper: str, args, gpu: bool) -> str:
    """Text of the train config of a ``--profile`` run: ``wrapper`` (the
    test's config too) with the profiler added to its hooks."""
    return (f'_base_ = {wrapper!r}\n'
            'custom_hooks = _base_.custom_hooks + '
            f'[{profiler_hook(args, gpu)!r}]\n')


def wrapper_config(config: str, args) -> str:
    """Text of the config a run uses: ``config`` with the short-run
    changes (see the module docstring)."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO_ROOT, config))
    lines = [
        f'_base_ = {osp.join(REPO_ROOT, config)!r}',
        'model = dict(backbone=dict(init_cfg=None))  # nothing downloads',
        'load_from = None',
        'resume = False',
        'randomness = dict(seed=0)',
        f'train_cfg = dict(_delete_=True, type=\'IterBasedTrainLoop\', '
        f'max_iters={args.iters})',
        # no validation: mmengine would validate after the last iteration,
        # and tools/test.py measures the test time
        'val_dataloader = None',
        'val_cfg = None',
        'val_evaluator = None',
        'default_hooks = dict(logger=dict(interval=1), checkpoint=dict('
        f'by_epoch=False, interval={args.iters}, max_keep_ckpts=1))',
        # window 1: the logged time / memory are those of each iteration
        'log_processor = dict(by_epoch=False, window_size=1)',
    ]
    for loader in ('train_dataloader', 'test_dataloader'):
        dataset = ''
        if args.scale:
            pipeline = rescale_pipeline(_dataset_of(cfg[loader])['pipeline'],
                                        args.scale)
            dataset = ', dataset=' + _nest(
                dataset_depth(cfg[loader]),
                f'dict(pipeline={pprint.pformat(pipeline, width=1000)})')
        lines.append(f'{loader} = dict(num_workers=0, '
                     f'persistent_workers=False{dataset})')
    return '\n'.join(lines) + '\n'


def data_options(run: Run, cfg_loaders: Dict[str, int],
                 data_root: str) -> List[str]:
    """``--cfg-options`` pointing the dataloaders and evaluators at
    ``data_root``."""
    version = DATASETS[run.dataset]['lvis_version']
    root = data_root.rstrip('/') + '/'
    options = [
        f'{loader}.dataset{".dataset" * depth}.data_root={root}'
        for loader, depth in cfg_loaders.items()
    ]
    ann = f'{root}annotations/lvis_{version}_val.json'
    options.append(f'test_evaluator.ann_file={ann}')
    return options + [f'{k}={v}' for k, v in run.overrides.items()]


# -------------------------------------------------------------- measuring
def run_measured(cmd: List[str], log_path: str, env: dict,
                 timeout: int) -> Tuple[int, float, float]:
    """Run ``cmd``; (return code, wall seconds, peak RSS in MiB of that
    process alone)."""
    start = time.time()
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdout=log,
            stderr=subprocess.STDOUT)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.time() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    # Linux: ru_maxrss in KiB
    return proc.returncode, time.time() - start, usage.ru_maxrss / 1024


def read_scalars(work_dir: str) -> List[dict]:
    """mmengine's per-iteration train scalars of the newest run."""
    # a run's folder name holds its overrides in brackets: not a pattern
    paths = sorted(glob.glob(osp.join(glob.escape(work_dir), '*',
                                      'vis_data', 'scalars.json')))
    if not paths:
        return []
    with open(paths[-1]) as f:
        return [json.loads(line) for line in f if line.strip()]


TEST_LINE = re.compile(r'(?:Epoch|Iter)\(test\)\s*\[\s*(\d+)/(\d+)\](.*)')


def _field(text: str, name: str) -> Optional[float]:
    match = re.search(rf'(?<![\w/]){name}: ([-\d.eE+naif]+)', text)
    return float(match[1]) if match else None


def parse_test_log(text: str) -> Tuple[List[float], List[float], bool]:
    """(time per test iteration, logged memory, whether the LVIS metric
    ran) from a test log."""
    times, memory, metric = [], [], False
    for line in text.splitlines():
        match = TEST_LINE.search(line)
        if not match:
            continue
        rest = match[3]
        if 'lvis/bbox_AP' in rest:
            metric = True
            continue
        value = _field(rest, 'time')
        if value is not None:
            times.append(value)
        mem = _field(rest, 'memory')
        if mem is not None:
            memory.append(mem)
    return times, memory, metric


def mean_after(values: List[float], skip: int) -> Optional[float]:
    kept = values[skip:] if len(values) > skip else values[-1:]
    return sum(kept) / len(kept) if kept else None


def train_numbers(scalars: List[dict], warmup: int) -> dict:
    losses = [s['loss'] for s in scalars if 'loss' in s]
    times = [s['time'] for s in scalars if 'time' in s and 'loss' in s]
    memory = [s['memory'] for s in scalars if 'memory' in s]
    return dict(
        iters=len(losses),
        losses_finite=bool(losses) and all(
            math.isfinite(v) for s in scalars for k, v in s.items()
            if k.startswith('loss')),
        step_s=mean_after(times, warmup),
        gpu_mem_mib=max(memory) if memory else None)


def train_and_test(run: Run, args, env: dict, data_root: str,
                   gpu: bool = False) -> None:
    from mmengine.config import Config
    out = osp.join(args.work_dir, 'runs', run.name)
    os.makedirs(out, exist_ok=True)
    wrapper = osp.join(out, 'config.py')
    with open(wrapper, 'w') as f:
        f.write(wrapper_config(run.config, args))
    train_config = wrapper
    if args.profile:
        # only the train run: a ProfilerHook in tools/test.py's runner
        # would build the train loop and start a profiler there
        train_config = osp.join(out, 'train_config.py')
        with open(train_config, 'w') as f:
            f.write(profiled_train_config(wrapper, args, gpu))
    cfg = Config.fromfile(wrapper)
    loaders = {
        name: dataset_depth(cfg[name])
        for name in ('train_dataloader', 'test_dataloader')
    }
    options = data_options(run, loaders, data_root)
    train_cmd = [
        sys.executable, 'tools/train.py', train_config, '--work-dir',
        osp.join(out, 'train'), '--cfg-options', *options
    ] + (['--amp'] if args.amp else [])
    code, wall, rss = run_measured(train_cmd, osp.join(out, 'train.log'), env,
                                   args.timeout)
    res = run.result
    res.update(train_returncode=code, train_wall_s=wall, train_rss_mib=rss)
    res.update(train_numbers(read_scalars(osp.join(out, 'train')),
                             args.warmup))
    ckpt = osp.join(out, 'train', f'iter_{args.iters}.pth')
    if code != 0 or not osp.isfile(ckpt):
        res['error'] = f'train failed (rc {code}), see {out}/train.log'
        return
    test_cmd = [
        sys.executable, 'tools/test.py', wrapper, ckpt, '--work-dir',
        osp.join(out, 'test'), '--cfg-options', *options
    ]
    code, wall, rss = run_measured(test_cmd, osp.join(out, 'test.log'), env,
                                   args.timeout)
    with open(osp.join(out, 'test.log')) as f:
        times, memory, metric = parse_test_log(f.read())
    res.update(
        test_returncode=code,
        test_wall_s=wall,
        test_rss_mib=rss,
        test_images=len(times),
        test_s_per_image=mean_after(times, args.test_warmup),
        test_gpu_mem_mib=max(memory) if memory else None,
        lvis_metric=metric)
    if code != 0:
        res['error'] = f'test failed (rc {code}), see {out}/test.log'
    if not args.keep_checkpoints:
        # up to 1 GB each at 1203 classes: a full run would fill a disk
        os.remove(ckpt)


# ---------------------------------------------------------------- report
def ratio(value: Optional[float], base: Optional[float]) -> Optional[float]:
    if value is None or not base:
        return None
    return value / base


def fill_ratios(runs: List[Run]) -> None:
    by_key = {r.key: r for r in runs}
    for run in runs:
        base = by_key[run.baseline] if run.baseline else run
        for item in ('step_s', 'test_s_per_image'):
            run.result[f'{item}_ratio'] = ratio(
                run.result.get(item), base.result.get(item))
        misses = [
            item for item in ('step_s_ratio', 'test_s_per_image_ratio')
            if run.goal is not None and run.result.get(item) is not None
            and run.result[item] > run.goal
        ]
        run.result['misses_goal'] = misses


def _fmt(value, spec: str) -> str:
    return '-' if value is None else format(value, spec)


def _ratio_cell(run: Run, item: str) -> str:
    value = run.result.get(item)
    text = _fmt(value, '.3f')
    if item in run.result.get('misses_goal', ()):
        text = f'**{text} > {run.goal:.2f}**'
    return text


def table(runs: List[Run], gpu: bool) -> str:
    mem = 'peak GPU mem train / test (MiB)' if gpu else \
        'peak RSS train / test (MiB)'
    lines = [
        f'| config | baseline | losses finite | train s/iter | ratio | {mem} '
        '| test s/img | ratio | goal | LVIS metric |',
        '|---|---|---|---|---|---|---|---|---|---|',
    ]
    by_key = {r.key: r for r in runs}
    for run in runs:
        res = run.result
        base = by_key[run.baseline].name if run.baseline else '(baseline)'
        if gpu:
            mems = (res.get('gpu_mem_mib'), res.get('test_gpu_mem_mib'))
        else:
            mems = (res.get('train_rss_mib'), res.get('test_rss_mib'))
        losses = {True: 'yes', False: '**no**'}.get(res.get('losses_finite'),
                                                    '-')
        metric = {True: 'yes', False: '**no**'}.get(res.get('lvis_metric'),
                                                    '-')
        if 'error' in res:
            metric += f' ({res["error"]})'
        lines.append(
            f'| {run.name} | {base} | {losses} | '
            f'{_fmt(res.get("step_s"), ".3f")} | '
            f'{_ratio_cell(run, "step_s_ratio")} | '
            f'{_fmt(mems[0], ".0f")} / {_fmt(mems[1], ".0f")} | '
            f'{_fmt(res.get("test_s_per_image"), ".3f")} | '
            f'{_ratio_cell(run, "test_s_per_image_ratio")} | '
            f'{_fmt(run.goal, ".2f")} | {metric} |')
    return '\n'.join(lines)


# ------------------------------------------------------------------ data
def ensure_data(args, dataset: str) -> str:
    """Write (or reuse) the synthetic data of ``dataset``; its data root."""
    from mmdet_longtail.datasets.synthetic_lvis import (annotation_path,
                                                        make_synthetic_lvis)
    spec = DATASETS[dataset]
    root = osp.join(args.work_dir, 'data', spec['dir'])
    options = dict(
        num_classes=spec['num_classes'],
        num_train_images=args.train_images,
        num_val_images=args.test_images,
        image_size=args.image_size,
        min_class_images=args.min_class_images,
        lvis_version=spec['lvis_version'])
    path = annotation_path(root, 'train', spec['lvis_version'])
    if osp.isfile(path):
        with open(path) as f:
            recorded = json.load(f)['info']['generator_options']
        if all(recorded.get(k) == v for k, v in options.items()):
            print(f'reusing {root}', flush=True)
            return root
    start = time.time()
    make_synthetic_lvis(root, **options)
    print(f'wrote {root} ({time.time() - start:.0f} s)', flush=True)
    return root


def run_env(args) -> Tuple[dict, bool]:
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [REPO_ROOT] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep)
                       if p])
    if args.device == 'cpu':
        env['CUDA_VISIBLE_DEVICES'] = ''
        return env, False
    import torch
    gpu = torch.cuda.is_available()
    if args.device == 'cuda' and not gpu:
        raise RuntimeError('--device cuda: no GPU here')
    if args.amp and not gpu:
        raise RuntimeError('--amp needs a GPU')
    return env, gpu


def main(argv=None) -> int:
    args = parse_args(argv)
    args.work_dir = osp.abspath(args.work_dir)
    if args.iters <= args.warmup:
        raise ValueError(f'--iters {args.iters} must exceed --warmup '
                         f'{args.warmup}')
    runs = plan(args.configs)
    env, gpu = run_env(args)
    roots = {d: ensure_data(args, d) for d in sorted({r.dataset
                                                      for r in runs})}
    start, load = time.time(), [os.getloadavg()[0]]
    for i, run in enumerate(runs):
        print(f'[{i + 1}/{len(runs)}] {run.key}', flush=True)
        train_and_test(run, args, env, roots[run.dataset], gpu)
        load.append(os.getloadavg()[0])
        print(f'    {run.result}', flush=True)
    fill_ratios(runs)
    text = table(runs, gpu)
    command = 'python benchmarks/lvis_scale.py ' + ' '.join(
        sys.argv[1:] if argv is None else argv)
    profiled = ' (profiled: the profiler slows the steps; take no ratio ' \
        'from this run)' if args.profile else ''
    print(f'\n{command}\n'
          f'device: {"GPU" if gpu else "CPU"}{" + AMP" if args.amp else ""}'
          f'{profiled}, {args.iters} train iterations (first '
          f'{args.warmup} left out), '
          f'{args.test_images} test images (first {args.test_warmup} left '
          f'out), scale {args.scale or "config"}, {args.train_images} train '
          f'images of {args.image_size} px, '
          f'{time.time() - start:.0f} s, load average {min(load):.1f}..'
          f'{max(load):.1f} on {os.cpu_count()} CPUs (a busy machine makes '
          f'the ratios noisy)\n\n{text}')
    report = dict(
        command=command, device='cuda' if gpu else 'cpu', amp=args.amp,
        load_average=load,
        args=vars(args),
        runs=[dict(config=r.config, key=r.key, baseline=r.baseline,
                   goal=r.goal, **r.result) for r in runs])
    path = osp.join(args.work_dir, 'lvis_scale.json')
    with open(path, 'w') as f:
        json.dump(report, f, indent=1)
    failed = [r.name for r in runs if 'error' in r.result
              or not r.result.get('losses_finite')
              or not r.result.get('lvis_metric')]
    missed = [r.name for r in runs if r.result.get('misses_goal')]
    print(f'\nwrote {path}; failed: {failed or "none"}; '
          f'over the goal: {missed or "none"}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
