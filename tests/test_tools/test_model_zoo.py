"""tools/model_zoo.py: paper-vs-ours tables from metafiles and work dirs.

A metafile written here, a work dir holding the json the metric wrote (an
mmengine test result), a val-only work dir, a broken metafile, and ``--run``
with its train and test commands recorded (train, test, then skipped as
finished); the tool's one subprocess run is the first test.
"""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))
import model_zoo  # noqa: E402

TINY = 'configs/lvis/faster-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py'
MASK = 'configs/lvis/mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis.py'

METAFILE = f"""
Collections:
  - Name: TinyPaper
    Paper:
      URL: https://arxiv.org/abs/0000.00000
      Title: 'A tiny paper'
    README: configs/tiny/README.md
Models:
  - Name: mask-tiny
    In Collection: TinyPaper
    Config: {MASK}
    Results:
      - Task: Object Detection
        Dataset: LVIS v1
        Metrics:
          box AP: 21.0
      - Task: Instance Segmentation
        Dataset: LVIS v1
        Metrics:
          mask AP: 20.0
          APr: 10.0
          APc: 20.0
          APf: 30.0
  - Name: faster-tiny
    In Collection: TinyPaper
    Config: {TINY}
    Results:
      - Task: Object Detection
        Dataset: LVIS v1
        Metrics:
          box AP: 25.96
          APr: 17.66
  - Name: not-run
    In Collection: TinyPaper
    Config: configs/lvis/not-run.py
"""

# what LongTailLVISMetric logs (fractions), as in a test result json
METRIC = {
    'lvis/bbox_AP': 0.2345, 'lvis/bbox_APr': 0.1, 'lvis/bbox_APc': 0.2,
    'lvis/bbox_APf': 0.3, 'lvis/segm_AP': 0.21234, 'lvis/segm_APr': 0.0567,
    'lvis/segm_APc': -1.0, 'lvis/segm_APf': 0.3333, 'time': 0.5
}


def table_rows(text: str, config_name: str) -> dict:
    """{'paper': cells, 'ours': cells, 'delta': cells} of one config."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines)
                 if line.startswith(f'| [{config_name}]'))
    rows = {}
    for line in lines[start:start + 3]:
        cells = [c.strip() for c in line.strip('|').split('|')]
        rows[cells[1].rstrip('*')] = cells[2:]
    return rows


@pytest.fixture
def zoo(tmp_path):
    metafile = tmp_path / 'metafile.yml'
    metafile.write_text(METAFILE)
    broken = tmp_path / 'broken.yml'
    broken.write_text('Models:\n  - Config: x.py\n')  # no Name
    work = tmp_path / 'work_dirs'
    # the mask model: a test result json as the metric wrote it
    test_dir = work / 'mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis' / \
        '20260101_120000'
    test_dir.mkdir(parents=True)
    (test_dir / '20260101_120000.json').write_text(json.dumps(METRIC))
    # the faster model: only the training's validation
    vis = work / 'faster-rcnn_r18-tiny_fpn_12e_synthetic-lvis' / \
        '20260101_100000' / 'vis_data'
    vis.mkdir(parents=True)
    (vis / 'scalars.json').write_text('\n'.join(
        json.dumps(r) for r in ({'loss': 1.0, 'step': 1}, {
            'lvis/bbox_AP': 0.1, 'lvis/bbox_APr': 0.05, 'step': 1
        }, {'loss': 0.5, 'step': 2}, {
            'lvis/bbox_AP': 0.2, 'lvis/bbox_APr': 0.15, 'step': 2
        })))
    return str(metafile), str(broken), str(work)


def test_tables_paper_vs_ours(run_tool, zoo, tmp_path):
    metafile, broken, work = zoo
    out = str(tmp_path / 'zoo.md')
    proc = run_tool('model_zoo.py', '--metafiles', metafile, broken,
                    '--work-dirs', work, '--out', out, '--digits', '2')
    assert 'warning: skipped' in proc.stdout and 'broken.yml' in proc.stdout
    with open(out) as f:
        text = f.read()
    assert '### TinyPaper' in text
    assert '[A tiny paper](https://arxiv.org/abs/0000.00000)' in text

    mask = table_rows(text, 'mask-tiny')  # headline: mask AP
    assert mask['paper'] == ['20.0', '10.0', '20.0', '30.0', '21.0']
    # ours = 100 x the metric's segm numbers (APb = bbox AP); -1 -> '-'
    assert mask['ours'] == ['21.23', '5.67', '-', '33.33', '23.45']
    assert mask['delta'] == ['+1.23', '-4.33', '-', '+3.33', '+2.45']

    faster = table_rows(text, 'faster-tiny')  # box only, last validation
    assert faster['paper'] == ['25.96', '17.66', '-', '-', '25.96']
    assert faster['ours'] == ['20.00', '15.00', '-', '-', '20.00']
    assert faster['delta'] == ['-5.96', '-2.66', '-', '-', '-5.96']
    assert '| | ours* |' in text and 'last validation' in text

    not_run = table_rows(text, 'not-run')
    assert not_run['paper'] == ['-'] * 5 and not_run['ours'] == ['-'] * 5


def test_run_trains_tests_then_skips(zoo, tmp_path, monkeypatch, capsys):
    """--run issues train.py (resuming, with the options) then test.py on
    the checkpoint training left; the table shows what the test run's
    metric logged; a second --run skips the tested model. The commands are
    recorded, not run: that train.py and test.py work, and that what
    test.py writes is what the table reads, test_train_test.py checks."""
    metafile, _, _ = zoo
    work = str(tmp_path / 'runs')
    work_dir = osp.join(work, 'faster-rcnn_r18-tiny_fpn_12e_synthetic-lvis')
    logged = dict(METRIC, **{'lvis/bbox_APr': -1.0})
    issued = []

    def fake_run(cmd, cwd, env):
        issued.append(cmd)
        if osp.basename(cmd[1]) == 'train.py':
            os.makedirs(work_dir)
            with open(osp.join(work_dir, 'epoch_1.pth'), 'w'):
                pass
            with open(osp.join(work_dir, 'last_checkpoint'), 'w') as f:
                f.write(osp.join(work_dir, 'epoch_1.pth'))
        else:  # as mmengine's test run logs the metric
            os.makedirs(osp.join(work_dir, '20260101_120000'))
            with open(osp.join(work_dir, '20260101_120000',
                               '20260101_120000.json'), 'w') as f:
                json.dump(logged, f)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(model_zoo.subprocess, 'run', fake_run)
    args = ['--metafiles', metafile, '--work-dirs', work, '--models',
            'faster-tiny', '--digits', '4', '--run', '--cfg-options', 'a=1']
    assert model_zoo.main(args) == 0
    out = capsys.readouterr().out
    assert '[train]' in out and '[test]' in out
    train, test = issued
    assert train == [sys.executable, osp.join(REPO_ROOT, 'tools', 'train.py'),
                     TINY, '--work-dir', work_dir, '--resume',
                     '--cfg-options', 'a=1']
    assert test == [sys.executable, osp.join(REPO_ROOT, 'tools', 'test.py'),
                    TINY, osp.join(work_dir, 'epoch_1.pth'), '--work-dir',
                    work_dir, '--cfg-options', 'a=1']
    ours = table_rows(out, 'faster-tiny')['ours']
    # box-only model: its bbox numbers; APr -1 (not evaluable) -> '-'
    assert ours == ['23.4500', '-', '20.0000', '30.0000', '23.4500']

    assert model_zoo.main(args) == 0
    again = capsys.readouterr().out
    assert '[skip] faster-tiny' in again and '[train]' not in again
    assert len(issued) == 2


def test_dry_run_commands(tmp_path):
    metafile = tmp_path / 'metafile.yml'
    metafile.write_text(METAFILE)
    collections = model_zoo.select(
        model_zoo.read_metafile(str(metafile)), None, 'mask-tiny')
    (model, ) = collections[0].models
    train, test = model_zoo.run_commands(model, 'wd', 8, ['a=1'])
    assert train[:4] == ['bash', osp.join(REPO_ROOT, 'tools',
                                          'dist_train.sh'), MASK, '8']
    assert '--resume' in train and train[-2:] == ['--cfg-options', 'a=1']
    assert test[1].endswith('dist_test.sh') and test[3:5] == [
        '{checkpoint}', '8'
    ]


def test_every_metafile_of_the_repo_is_readable():
    """Whatever the method folders hold: it parses, and configs exist."""
    for path in model_zoo.discover_metafiles():
        for collection in model_zoo.read_metafile(path):
            for model in collection.models:
                assert model.config, f'{path}: {model.name} has no Config'
                assert osp.isfile(osp.join(REPO_ROOT, model.config)), \
                    f'{path}: {model.name}: {model.config} not found'
                for key, value in model.published.items():
                    assert 0 <= value <= 100, (path, model.name, key)
    assert os.path.isdir(osp.join(REPO_ROOT, 'configs'))


def test_ap_fixed_columns(zoo, tmp_path):
    """--ap-fixed: AP-fixed / APr-fixed / AP-pool columns from the metric's
    *_fixed / *_AP_pool numbers (headline type) and the metafile; the test
    step of --run asks the metric for them."""
    metafile, _, work = zoo
    test_dir = osp.join(work, 'mask-rcnn_r18-tiny_fpn_12e_synthetic-lvis',
                        '20260102_120000')
    os.makedirs(test_dir)
    with open(osp.join(test_dir, '20260102_120000.json'), 'w') as f:
        json.dump(dict(METRIC, **{
            'lvis/segm_AP_fixed': 0.2234, 'lvis/segm_APr_fixed': 0.1,
            'lvis/segm_APc_fixed': 0.2, 'lvis/segm_APf_fixed': 0.3,
            'lvis/segm_AP_pool': 0.25, 'lvis/bbox_AP_fixed': 0.9
        }), f)
    text = tmp_path / 'metafile_fixed.yml'
    text.write_text(METAFILE.replace('          APf: 30.0',
                                     '          APf: 30.0\n'
                                     '          AP-fixed: 22.0'))
    out = str(tmp_path / 'zoo.md')
    assert model_zoo.main(['--metafiles', str(text), '--work-dirs', work,
                           '--out', out, '--digits', '2',
                           '--ap-fixed']) == 0
    with open(out) as f:
        table = f.read()
    assert '| Config | | AP | APr | APc | APf | APb | AP-fixed | ' \
        'APr-fixed | AP-pool |' in table
    mask = table_rows(table, 'mask-tiny')
    assert mask['paper'][5:] == ['22.0', '-', '-']
    assert mask['ours'][5:] == ['22.34', '10.00', '25.00']
    assert mask['delta'][5:] == ['+0.34', '-', '-']
    # without --ap-fixed: the table is unchanged
    assert model_zoo.main(['--metafiles', str(text), '--work-dirs', work,
                           '--out', out]) == 0
    with open(out) as f:
        assert 'AP-fixed' not in f.read()

    (model, ) = model_zoo.select(
        model_zoo.read_metafile(metafile), None, 'mask-tiny')[0].models
    train, test = model_zoo.run_commands(model, 'wd', 1, ['a=1'],
                                         ap_fixed=True)
    assert test[-4:] == ['--cfg-options', 'a=1',
                         'test_evaluator.ap_fixed=True',
                         'test_evaluator.ap_pool=True']
    assert 'test_evaluator.ap_fixed=True' not in train
