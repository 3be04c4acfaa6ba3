"""Paper-vs-ours tables from the method folders' ``metafile.yml``.

Every ``configs/<method>/metafile.yml`` lists its configs with the numbers
the paper published (``Results`` -> ``Metrics``: ``box AP``, ``mask AP``,
``APr``, ``APc``, ``APf``). This tool reads them and the work directories
of our runs and prints (or writes, ``--out``) one Markdown table per paper:
config, then the published AP / APr / APc / APf / APb, ours and the
difference. AP is the mask AP when the paper reports it (APr/c/f then are
mask numbers too), else the box AP; APb is the box AP.

``--ap-fixed`` adds the columns AP-fixed, APr-fixed and AP-pool (fixed and
pooled AP, Dave et al., "Evaluating Large-Vocabulary Object Detectors: The
Devil is in the Details", 2021): ours from the ``lvis/<type>_AP_fixed``,
``..._APr_fixed`` and ``..._AP_pool`` numbers of a test run with
``test_evaluator.ap_fixed=True test_evaluator.ap_pool=True`` (added to the
test step of ``--run``), the paper's from metafile metrics of those names.
Fixed AP needs more than 300 detections per image: pass e.g.
``--cfg-options model.test_cfg.rcnn.max_per_img=1000`` (see the README).

Our numbers come from a work directory named after the config
(``<work-root>/<config name>``, mmdet's default ``work_dirs/<name>``): the
latest ``tools/test.py`` result (``<timestamp>/<timestamp>.json``), else the
last validation of the training log (marked ``*``).

``--run`` trains and tests the listed configs one after another
(``tools/train.py --resume``, then ``tools/test.py`` on the last checkpoint;
with ``--gpus N > 1`` through ``tools/dist_train.sh`` / ``dist_test.sh``),
skipping configs whose test result exists.

Examples:
    python tools/model_zoo.py                       # tables from work_dirs/
    python tools/model_zoo.py --out docs/model_zoo.md
    python tools/model_zoo.py --run --collections EQLv2 --gpus 8
    python tools/model_zoo.py --run --models 'synthetic' --dry-run
"""
import argparse
import glob
import os
import os.path as osp
import re
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from mmdet_longtail.evaluation.result_files import work_dir_metrics

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
COLUMNS = ('AP', 'APr', 'APc', 'APf', 'APb')
# --ap-fixed: column -> the metric's item (lvis/<type>_<item>)
FIXED_COLUMNS = {
    'AP-fixed': 'AP_fixed',
    'APr-fixed': 'APr_fixed',
    'AP-pool': 'AP_pool'
}
FIXED_TEST_OPTIONS = ['test_evaluator.ap_fixed=True',
                      'test_evaluator.ap_pool=True']


@dataclass
class ModelEntry:
    """One config of a metafile with its published numbers (in %)."""
    name: str
    collection: str
    config: str
    published: Dict[str, float] = field(default_factory=dict)
    # 'segm' when the headline AP is mask AP, 'bbox' for box AP, None when
    # nothing is published
    headline: Optional[str] = None

    @property
    def work_name(self) -> str:
        """Work directory name: the config's (mmdet's default), else the
        model's name."""
        if self.config:
            return osp.splitext(osp.basename(self.config))[0]
        return self.name


@dataclass
class Collection:
    name: str
    title: str = ''
    url: str = ''
    readme: str = ''
    models: List[ModelEntry] = field(default_factory=list)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--metafiles', nargs='+',
        help='metafile.yml files (default: configs/*/metafile.yml)')
    parser.add_argument(
        '--work-dirs', nargs='+', default=['work_dirs'],
        help='folders holding one work directory per config name, or work '
        'directories themselves (default: work_dirs)')
    parser.add_argument('--collections', help='regex on collection names')
    parser.add_argument('--models', help='regex on config names')
    parser.add_argument('--out', help='write the tables to this Markdown file')
    parser.add_argument('--digits', type=int, default=1,
                        help='decimals of our numbers and differences')
    parser.add_argument('--run', action='store_true',
                        help='train and test the listed configs first')
    parser.add_argument('--gpus', type=int, default=1,
                        help='processes per run (> 1: dist_train/test.sh)')
    parser.add_argument('--dry-run', action='store_true',
                        help='with --run: print the commands only')
    parser.add_argument(
        '--cfg-options', nargs='+', default=[],
        help='passed to tools/train.py and tools/test.py with --run')
    parser.add_argument(
        '--ap-fixed', action='store_true',
        help='add AP-fixed / APr-fixed / AP-pool columns (Dave et al. 2021); '
        'with --run, the test step evaluates them')
    return parser.parse_args(argv)


# ------------------------------------------------------------ metafiles
def published_numbers(results) -> Tuple[Dict[str, float], Optional[str]]:
    """AP / APr / APc / APf / APb from a model's ``Results`` list."""
    if not isinstance(results, list):
        return {}, None
    entries = [r.get('Metrics') or {} for r in results if isinstance(r, dict)]
    mask = next((m for m in entries if 'mask AP' in m), None)
    box = next((m for m in entries if 'box AP' in m), None)
    headline_entry, headline = (mask, 'segm') if mask else (box, 'bbox')
    if headline_entry is None:
        return {}, None
    numbers = {'AP': headline_entry['mask AP' if mask else 'box AP']}
    for key in ('APr', 'APc', 'APf', *FIXED_COLUMNS):
        if key in headline_entry:
            numbers[key] = headline_entry[key]
    if box is not None:
        numbers['APb'] = box['box AP']
    return {k: float(v) for k, v in numbers.items()}, headline


def read_metafile(path: str) -> List[Collection]:
    """Collections of one metafile, with their models."""
    import yaml
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f'{path}: expected a mapping with Collections and '
                         f'Models')
    collections = {}
    for c in data.get('Collections') or []:
        paper = c.get('Paper') or {}
        collections[c['Name']] = Collection(
            name=c['Name'], title=paper.get('Title', ''),
            url=paper.get('URL', ''), readme=c.get('README', ''))
    for m in data.get('Models') or []:
        if not isinstance(m, dict) or 'Name' not in m:
            raise ValueError(f'{path}: a model without Name: {m!r}')
        name = m.get('In Collection') or osp.basename(osp.dirname(path))
        collection = collections.setdefault(name, Collection(name=name))
        published, headline = published_numbers(m.get('Results'))
        collection.models.append(
            ModelEntry(name=m['Name'], collection=name,
                       config=m.get('Config', ''), published=published,
                       headline=headline))
    return list(collections.values())


def discover_metafiles(root: str = REPO_ROOT) -> List[str]:
    return sorted(glob.glob(osp.join(root, 'configs', '*', 'metafile.yml')))


# ------------------------------------------------------------ our numbers
def find_work_dir(name: str, roots: List[str]) -> Optional[str]:
    for root in roots:
        if osp.basename(osp.normpath(root)) == name and osp.isdir(root):
            return root
        candidate = osp.join(root, name)
        if osp.isdir(candidate):
            return candidate
    return None


def ours_columns(numbers: Dict[str, float],
                 headline: Optional[str]) -> Dict[str, float]:
    """AP / APr / APc / APf / APb (in %) from lvis/... metrics, AP of the
    same type as the published headline."""
    if not numbers:
        return {}
    iou_type = headline or ('segm' if 'lvis/segm_AP' in numbers else 'bbox')
    if f'lvis/{iou_type}_AP' not in numbers:
        return {}
    columns = {
        k: 100 * numbers[f'lvis/{iou_type}_{k}']
        for k in ('AP', 'APr', 'APc', 'APf')
        if f'lvis/{iou_type}_{k}' in numbers
    }
    if 'lvis/bbox_AP' in numbers:
        columns['APb'] = 100 * numbers['lvis/bbox_AP']
    for column, item in FIXED_COLUMNS.items():
        if f'lvis/{iou_type}_{item}' in numbers:
            columns[column] = 100 * numbers[f'lvis/{iou_type}_{item}']
    return columns


# ------------------------------------------------------------ tables
def _cell(value: Optional[float], digits: int) -> str:
    if value is None or value < 0:  # -1: undefined in lvis-api
        return '-'
    return f'{value:.{digits}f}'


def collection_table(collection: Collection, roots: List[str],
                     digits: int, link_dir: str = REPO_ROOT,
                     columns: Sequence[str] = COLUMNS) -> str:
    """Markdown table of one paper; config links relative to
    ``link_dir`` (the folder of the Markdown file)."""
    lines = [f'### {collection.name}']
    if collection.title:
        paper = f'[{collection.title}]({collection.url})' \
            if collection.url else collection.title
        lines.append(f'\nPaper: {paper}')
    lines += [
        '', '| Config | | ' + ' | '.join(columns) + ' |',
        '|---|---|' + '---|' * len(columns)
    ]
    marks = set()
    for model in collection.models:
        work_dir = find_work_dir(model.work_name, roots)
        numbers, origin = work_dir_metrics(work_dir) if work_dir else ({}, '')
        ours = ours_columns(numbers, model.headline)
        mark = '*' if origin == 'val' else ''
        marks.add(mark)
        config = model.name
        if model.config:
            link = osp.relpath(osp.join(REPO_ROOT, model.config), link_dir)
            config = f'[{model.name}]({link})'

        paper_cells = [
            str(model.published[k]) if k in model.published else '-'
            for k in columns
        ]
        our_cells = [_cell(ours.get(k), digits) for k in columns]
        delta = [
            f'{ours[k] - model.published[k]:+.{digits}f}'
            if k in ours and k in model.published and ours[k] >= 0 else '-'
            for k in columns
        ]
        lines.append(f'| {config} | paper | ' + ' | '.join(paper_cells) +
                     ' |')
        lines.append(f'| | ours{mark} | ' + ' | '.join(our_cells) + ' |')
        lines.append('| | delta | ' + ' | '.join(delta) + ' |')
    if '*' in marks:
        lines.append('\n\\* last validation of the training run (no test '
                     'result yet).')
    return '\n'.join(lines)


def select(collections: List[Collection], collection_re: Optional[str],
           model_re: Optional[str]) -> List[Collection]:
    chosen = []
    for c in collections:
        if collection_re and not re.search(collection_re, c.name):
            continue
        models = [
            m for m in c.models if not model_re or re.search(model_re, m.name)
        ]
        if models:
            chosen.append(Collection(c.name, c.title, c.url, c.readme,
                                     models))
    return chosen


# ------------------------------------------------------------ running
def last_checkpoint(work_dir: str) -> Optional[str]:
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return None
    with open(pointer) as f:
        path = osp.join(work_dir, osp.basename(f.read().strip()))
    return path if osp.isfile(path) else None


def run_commands(model: ModelEntry, work_dir: str, gpus: int,
                 cfg_options: List[str],
                 ap_fixed: bool = False) -> List[List[str]]:
    """Train (resuming) and test commands of one config; ``ap_fixed``: the
    test also evaluates fixed and pooled AP."""
    py = sys.executable
    tools = osp.join(REPO_ROOT, 'tools')
    options = ['--cfg-options', *cfg_options] if cfg_options else []
    test_options = cfg_options + (FIXED_TEST_OPTIONS if ap_fixed else [])
    test_options = ['--cfg-options', *test_options] if test_options else []
    ckpt = '{checkpoint}'  # filled in after training
    if gpus > 1:
        train = ['bash', osp.join(tools, 'dist_train.sh'), model.config,
                 str(gpus), '--work-dir', work_dir, '--resume', *options]
        test = ['bash', osp.join(tools, 'dist_test.sh'), model.config, ckpt,
                str(gpus), '--work-dir', work_dir, *test_options]
    else:
        train = [py, osp.join(tools, 'train.py'), model.config, '--work-dir',
                 work_dir, '--resume', *options]
        test = [py, osp.join(tools, 'test.py'), model.config, ckpt,
                '--work-dir', work_dir, *test_options]
    return [train, test]


def run_models(collections: List[Collection], work_root: str, gpus: int,
               cfg_options: List[str], dry_run: bool,
               ap_fixed: bool = False) -> List[str]:
    """Train + test every listed config not tested yet; returns failures."""
    failures = []
    env = dict(os.environ, PYTHON=sys.executable)
    for model in [m for c in collections for m in c.models]:
        work_dir = osp.abspath(osp.join(work_root, model.work_name))
        if work_dir_metrics(work_dir)[1] == 'test':
            print(f'[skip] {model.name}: tested in {work_dir}')
            continue
        if not model.config or not osp.isfile(
                osp.join(REPO_ROOT, model.config)):
            print(f'[fail] {model.name}: config not found: {model.config}')
            failures.append(model.name)
            continue
        train, test = run_commands(model, work_dir, gpus, cfg_options,
                                   ap_fixed)
        for step, cmd in (('train', train), ('test', test)):
            if step == 'test':
                ckpt = last_checkpoint(work_dir) or osp.join(
                    work_dir, 'latest.pth')
                cmd = [ckpt if a == '{checkpoint}' else a for a in cmd]
            print(f'[{step}] ' + ' '.join(cmd), flush=True)
            if dry_run:
                continue
            proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env)
            if proc.returncode != 0:
                print(f'[fail] {model.name}: {step} exited with '
                      f'{proc.returncode}', flush=True)
                failures.append(model.name)
                break
    return failures


def main(argv=None) -> int:
    args = parse_args(argv)
    metafiles = args.metafiles or discover_metafiles()
    collections, problems = [], []
    for path in metafiles:
        try:
            collections.extend(read_metafile(path))
        except Exception as e:  # a broken metafile must not hide the others
            problems.append(f'{path}: {type(e).__name__}: {e}')
    for problem in problems:
        print(f'warning: skipped {problem}', file=sys.stderr)
    collections = select(collections, args.collections, args.models)
    if not collections:
        print('error: no model selected (metafiles: '
              f'{len(metafiles)})', file=sys.stderr)
        return 1
    failures = []
    if args.run:
        failures = run_models(collections, args.work_dirs[0], args.gpus,
                              args.cfg_options, args.dry_run, args.ap_fixed)
    columns = COLUMNS + (tuple(FIXED_COLUMNS) if args.ap_fixed else ())
    print('\n\n'.join(
        collection_table(c, args.work_dirs, args.digits, columns=columns)
        for c in collections))
    if args.out:
        text = '\n\n'.join(
            collection_table(c, args.work_dirs, args.digits,
                             osp.dirname(osp.abspath(args.out)), columns)
            for c in collections) + '\n'
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            f.write('# Paper vs ours\n\nGenerated by `python tools/'
                    'model_zoo.py`; values in %, "-" = not reported or not '
                    'run.\n\n' + text)
        print(f'tables written to {args.out}')
    if failures:
        print(f'failed: {", ".join(failures)}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
