"""benchmarks/synthetic_lt.py on a quick schedule: the baseline and two
method configs written here (one starting from the baseline's checkpoint,
one needing an initialisation nobody makes), and the report it writes."""
import glob
import json
import os.path as osp
import subprocess
import sys

from conftest import REPO_ROOT

sys.path.insert(0, osp.join(REPO_ROOT, 'benchmarks'))
import synthetic_lt  # noqa: E402

BASELINE = 'configs/lvis/mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py'
FROM_BASELINE = f"""_base_ = '{REPO_ROOT}/{BASELINE}'
load_from = 'work_dirs/mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis/epoch_12.pth'
model = dict(roi_head=dict(bbox_head=dict(loss_cls=dict(loss_weight=2.0))))
"""
NEEDS_MAGIC = f"""_base_ = '{REPO_ROOT}/{BASELINE}'
load_from = 'work_dirs/mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis/magic.pth'
"""


def test_plan_pairs_methods_with_their_framework_baseline():
    runs = synthetic_lt.plan(None)
    names = [r.config for r in runs]
    assert BASELINE in names
    baselines = [r for r in runs if r.baseline is None]
    assert runs[:len(baselines)] == baselines  # baselines train first
    for run in runs[len(baselines):]:
        if run.baseline:
            assert run.baseline in names
            assert osp.basename(run.baseline).startswith(run.framework)
    assert synthetic_lt.not_run(runs) == []
    assert len(synthetic_lt.discover()) == len(runs)


def test_quick_benchmark(synthetic_root, run_tool, tmp_path, monkeypatch):
    configs = tmp_path / 'configs'
    configs.mkdir()
    method = configs / 'mask-rcnn_r18-tiny_fpn_fromBase_1e_synthetic-lvis.py'
    method.write_text(FROM_BASELINE)
    magic = configs / 'mask-rcnn_r18-tiny_fpn_magic_1e_synthetic-lvis.py'
    magic.write_text(NEEDS_MAGIC)
    out = tmp_path / 'docs' / 'synthetic_benchmark.md'
    work = tmp_path / 'work'
    cmd = [sys.executable, osp.join(REPO_ROOT, 'benchmarks',
                                    'synthetic_lt.py'),
           '--configs', str(method), str(magic), '--epochs', '1',
           '--data-root', synthetic_root, '--work-root', str(work), '--out',
           str(out), '--cfg-options', 'train_dataloader.batch_size=4',
           'test_dataloader.batch_size=4',
           'train_dataloader.dataset.indices=8']
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=run_tool.env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert 'Baseline check' in last and '2/3 configs ran' in last
    text = out.read_text()
    assert '--epochs 1' in text and 'total time' in text
    assert 'Baseline check (segm): APr' in text
    # the page says which of the repo's configs it leaves out
    left_out = len(synthetic_lt.discover()) - 1  # all but the baseline
    assert f'- not in this run: {left_out} discovered configs' in text

    def numbers(name):
        (path, ) = glob.glob(str(work / name / '2*' / '2*.json'))
        with open(path) as f:
            return json.load(f)

    base = numbers('mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis')
    ours = numbers(method.stem)
    row = next(line for line in text.splitlines()
               if f'[{method.stem}]' in line)
    cells = [c.strip() for c in row.strip('|').split('|')]

    def pct(value):
        return '-' if value < 0 else f'{100 * value:.1f}'

    assert cells[1:6] == [pct(ours[f'lvis/segm_{k}'])
                          for k in ('AP', 'APr', 'APc', 'APf')] + [
                              pct(ours['lvis/bbox_AP'])]
    assert cells[6] == \
        f'{100 * (ours["lvis/segm_AP"] - base["lvis/segm_AP"]):+.1f}'
    baseline_row = next(line for line in text.splitlines()
                        if '**baseline**' in line)
    assert pct(base['lvis/segm_AP']) in baseline_row
    # the method started from the baseline's checkpoint
    log = (work / method.stem / 'benchmark_train.log').read_text()
    assert 'mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis/epoch_1.pth' in log
    assert 'Load checkpoint from' in log
    assert 'skipped: does not know how to make magic.pth' in text

    # --reuse: the finished runs give the same rows without training again
    train_log = work / method.stem / 'benchmark_train.log'
    trained_at = train_log.stat().st_mtime_ns
    monkeypatch.setenv('MMLT_SYNTHETIC_ROOT', synthetic_root)
    again = tmp_path / 'docs' / 'again.md'  # links relative to docs/
    assert synthetic_lt.main(cmd[2:cmd.index('--out')] + [
        '--out', str(again), '--reuse', '--cfg-options',
        'train_dataloader.batch_size=4', 'test_dataloader.batch_size=4',
        'train_dataloader.dataset.indices=8'
    ]) == 0
    assert train_log.stat().st_mtime_ns == trained_at
    rows = [line for line in again.read_text().splitlines()
            if line.startswith('| ')]
    assert rows == [line for line in text.splitlines()
                    if line.startswith('| ')]
