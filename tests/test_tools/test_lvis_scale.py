"""The helpers of benchmarks/lvis_scale.py: every shipped real config has a
baseline and the right goal, the wrapper config, the log parsing, and one run
with its train and test processes faked (numbers read, checkpoint removed)."""
import json
import os
import os.path as osp
import re
import sys
from types import SimpleNamespace

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, osp.join(REPO_ROOT, 'benchmarks'))
import lvis_scale  # noqa: E402


def test_every_real_config_has_a_baseline_and_a_goal():
    configs = lvis_scale.discover()
    assert len(configs) > 50
    assert not [c for c in configs if 'synthetic' in c or '_base_' in c]
    runs = lvis_scale.plan(None)
    keys = {r.key for r in runs}
    baselines = [r for r in runs if r.baseline is None]
    assert runs[:len(baselines)] == baselines  # baselines run first
    # every real config runs, itself or as a baseline
    assert set(configs) <= {r.config for r in runs}
    for run in runs:
        assert osp.isfile(osp.join(REPO_ROOT, run.config))
        if run.baseline is None:
            assert run.goal is None
            continue
        assert run.baseline in keys
        base = next(r for r in runs if r.key == run.baseline)
        assert base.dataset == run.dataset
        framework = lvis_scale.parse_config_name(run.config)[0]
        assert lvis_scale.parse_config_name(base.config)[0] == framework
        method = lvis_scale.method_of(run.config)
        if method in ('bags', 'eql', 'eqlv2', 'seesaw', 'tde', 'norcal',
                      'tau-norm', 'lws'):
            assert run.goal == 1.05, run.config
        elif method == 'efl':
            assert run.goal == 1.10
            assert base.config.startswith('configs/efl/')
            assert 'efl' not in osp.basename(base.config)
        else:  # rfs, cRT: reported, no goal
            assert run.goal is None, run.config


def test_baseline_mapping():
    base = lvis_scale.framework_baseline
    assert base('configs/eql/mask-rcnn_r50_fpn_eql_ms-2x_lvis-v0.5.py') == (
        'configs/lvis/mask-rcnn_r50_fpn_ms-2x_lvis-v0.5.py', {})
    assert base('configs/efl/atss_r50_fpn_efl_rfs-1e-3_ms-2x_lvis-v1.py') == (
        'configs/efl/atss_r50_fpn_rfs-1e-3_ms-2x_lvis-v1.py', {})
    assert base(
        'configs/tde/htc-without-semantic_r101_fpn_tde_20e_lvis-v1.py') == (
            'configs/lvis/htc-without-semantic_r50_fpn_ms-1x_lvis-v1.py',
            {'model.backbone.depth': '101'})
    with pytest.raises(ValueError, match='not a real LVIS config'):
        base('configs/eql/mask-rcnn_r18-tiny_fpn_eql_12e_synthetic-lvis.py')
    with pytest.raises(FileNotFoundError, match='no real LVIS config'):
        lvis_scale.select(['configs/nothing/*.py'])


def test_rescale_pipeline():
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='RandomChoiceResize', scales=[(1333, 640), (1333, 800)],
             keep_ratio=True),
        dict(type='Resize', scale=(1333, 800), keep_ratio=True),
        dict(type='RandomResize', scale=[(1333, 640), (1333, 800)]),
    ]
    out = lvis_scale.rescale_pipeline(pipeline, 64)
    assert out[0] == pipeline[0]
    assert out[1] == dict(type='RandomChoiceResize', scales=[(64, 64)],
                          keep_ratio=True)
    assert out[2]['scale'] == (64, 64) and out[2]['keep_ratio']
    assert out[3]['scale'] == [(64, 64), (64, 64)]
    with pytest.raises(ValueError, match='unknown resize step'):
        lvis_scale.rescale_pipeline([dict(type='FancyResize')], 64)


def test_wrapper_config_and_data_options(tmp_path):
    from mmengine.config import Config
    args = SimpleNamespace(scale=96, iters=5)
    config = 'configs/eql/mask-rcnn_r50_fpn_eql_ms-1x_lvis-v1.py'
    path = tmp_path / 'config.py'
    path.write_text(lvis_scale.wrapper_config(config, args))
    cfg = Config.fromfile(str(path))
    assert cfg.model.backbone.init_cfg is None and cfg.load_from is None
    assert cfg.train_cfg == dict(type='IterBasedTrainLoop', max_iters=5)
    # no validation after the last iteration
    assert cfg.val_dataloader is None and cfg.val_cfg is None \
        and cfg.val_evaluator is None
    assert cfg.default_hooks.checkpoint.interval == 5
    assert cfg.log_processor.window_size == 1
    for loader in ('train_dataloader', 'test_dataloader'):
        assert cfg[loader].num_workers == 0
        resize = [s for s in cfg[loader].dataset.pipeline
                  if 'Resize' in s.type]
        assert resize and all(
            (96, 96) in (s.get('scales') or [s.scale]) for s in resize)
    run = lvis_scale.Run(config, 'lvis-v1', {'model.backbone.depth': '101'})
    options = lvis_scale.data_options(
        run, {'train_dataloader': 0, 'test_dataloader': 1}, '/d/lvis_v1')
    assert options == [
        'train_dataloader.dataset.data_root=/d/lvis_v1/',
        'test_dataloader.dataset.dataset.data_root=/d/lvis_v1/',
        'test_evaluator.ann_file=/d/lvis_v1/annotations/lvis_v1_val.json',
        'model.backbone.depth=101',
    ]


@pytest.mark.parametrize('gpu', [False, True])
def test_profile_adds_mmengine_profiler_to_the_train_config_only(
        tmp_path, gpu):
    """--profile: the train config keeps the config's own hooks (the
    decoupled BAGS config freezes all but the classifier) and adds
    ProfilerHook; the test config, the wrapper, has no profiler."""
    from mmengine.config import Config
    config = 'configs/bags/mask-rcnn_r50_fpn_bags-decoupled_ms-1x_lvis-v1.py'
    args = SimpleNamespace(scale=0, iters=6, warmup=2)
    wrapper = tmp_path / 'config.py'
    wrapper.write_text(lvis_scale.wrapper_config(config, args))
    train = tmp_path / 'train_config.py'
    train.write_text(
        lvis_scale.profiled_train_config(str(wrapper), args, gpu))
    shipped = Config.fromfile(osp.join(REPO_ROOT, config)).custom_hooks
    assert shipped and Config.fromfile(str(wrapper)).custom_hooks == shipped
    train_cfg = Config.fromfile(str(train))
    assert train_cfg.train_cfg.max_iters == 6  # the wrapper's, inherited
    assert train_cfg.custom_hooks[:-1] == shipped
    profiler = train_cfg.custom_hooks[-1]
    assert profiler.type == 'ProfilerHook'
    assert profiler.activity_with_cuda is gpu
    assert profiler.on_trace_ready.sort_by == (
        'self_cuda_time_total' if gpu else 'self_cpu_time_total')


def test_profiler_records_the_iterations_after_the_warmup(capsys):
    """mmengine's ProfilerHook as --profile configures it, stepped like a
    6-iteration training with a warm-up of 2: one table, of iterations 2
    to 5 (the ones the time per step counts)."""
    import logging

    import torch
    from mmengine.hooks import ProfilerHook
    cfg = lvis_scale.profiler_hook(SimpleNamespace(iters=6, warmup=2),
                                   gpu=False)
    assert cfg.pop('type') == 'ProfilerHook'
    hook = ProfilerHook(**cfg)
    runner = SimpleNamespace(max_iters=6, iter=0, log_dir='.',
                             logger=logging.getLogger('profile-test'))
    hook.before_run(runner)
    for it in range(6):
        runner.iter = it
        with torch.profiler.record_function(f'iteration_{it}'):
            torch.ones(4).sum()
        hook.after_train_iter(runner, it, None, None)
    hook.after_train_epoch(runner)  # what the loop calls at its end
    out = capsys.readouterr().out
    assert out.count('Self CPU time total') == 1
    recorded = {int(m) for m in re.findall(r'^\s*iteration_(\d+) ', out,
                                           re.M)}
    assert recorded == {2, 3, 4, 5}


def test_log_parsing_ratios_and_table():
    log = '\n'.join([
        '12/03 - mmengine - INFO - Iter(test) [1/3]  eta: 0:00:02  '
        'time: 3.0000  data_time: 0.0100  memory: 900',
        '12/03 - mmengine - INFO - Iter(test) [2/3]  time: 1.0000  '
        'data_time: 0.0100  memory: 1000',
        '12/03 - mmengine - INFO - Iter(test) [3/3]  time: 2.0000  '
        'data_time: 0.0100',
        '12/03 - mmengine - INFO - Iter(test) [3/3]  lvis/bbox_AP: 0.0100  '
        'data_time: 0.0100  time: 2.0000',
    ])
    times, memory, metric = lvis_scale.parse_test_log(log)
    assert times == [3.0, 1.0, 2.0] and memory == [900, 1000] and metric
    assert lvis_scale.mean_after(times, 1) == 1.5
    numbers = lvis_scale.train_numbers([
        dict(loss=2.0, loss_cls=1.0, time=5.0, iter=1),
        dict(loss=1.0, loss_cls=0.5, time=1.0, iter=2),
        dict(loss=1.0, loss_cls=float('nan'), time=3.0, iter=3),
    ], warmup=1)
    assert numbers['step_s'] == 2.0 and numbers['iters'] == 3
    assert numbers['losses_finite'] is False

    base = lvis_scale.Run('configs/lvis/a_r50_fpn_x_lvis-v1.py', 'lvis-v1')
    method = lvis_scale.Run('configs/eql/a_r50_fpn_eql_x_lvis-v1.py',
                            'lvis-v1', baseline=base.key, goal=1.05)
    base.result = dict(step_s=2.0, test_s_per_image=1.0, losses_finite=True,
                       lvis_metric=True)
    method.result = dict(step_s=2.2, test_s_per_image=1.0,
                         losses_finite=True, lvis_metric=True)
    lvis_scale.fill_ratios([base, method])
    assert method.result['step_s_ratio'] == pytest.approx(1.1)
    assert method.result['misses_goal'] == ['step_s_ratio']
    text = lvis_scale.table([base, method], gpu=False)
    assert '**1.100 > 1.05**' in text and '(baseline)' in text


def test_scalars_of_a_run_with_overrides_are_found(tmp_path):
    """A run's folder is named with its overrides in brackets
    (``..._lvis-v1[depth=101]``), which glob would read as a pattern."""
    run = lvis_scale.Run('configs/lvis/htc-without-semantic_r50_fpn_ms-1x_'
                         'lvis-v1.py', 'lvis-v1',
                         {'model.backbone.depth': '101'})
    assert '[depth=101]' in run.name
    vis = tmp_path / run.name / 'train' / '20261204_000000' / 'vis_data'
    vis.mkdir(parents=True)
    (vis / 'scalars.json').write_text('{"loss": 1.5, "time": 2.0}\n'
                                      '{"loss": 1.25, "time": 3.0}\n')
    scalars = lvis_scale.read_scalars(str(tmp_path / run.name / 'train'))
    assert [s['loss'] for s in scalars] == [1.5, 1.25]


@pytest.mark.parametrize('keep', [False, True])
def test_a_run_reads_its_logs_and_deletes_its_checkpoint(
        tmp_path, monkeypatch, keep):
    """train_and_test with the two processes replaced by a fake that writes
    what tools/train.py and tools/test.py write."""
    config = 'configs/eql/mask-rcnn_r50_fpn_eql_ms-1x_lvis-v1.py'
    run = lvis_scale.Run(config, 'lvis-v1')
    args = SimpleNamespace(work_dir=str(tmp_path), scale=64, iters=3,
                           warmup=1, test_warmup=1, amp=False, timeout=60,
                           keep_checkpoints=keep, profile=False)
    commands = []

    def fake_run(cmd, log_path, env, timeout):
        commands.append(cmd)
        work_dir = cmd[cmd.index('--work-dir') + 1]
        if cmd[1] == 'tools/train.py':
            vis = osp.join(work_dir, '20261204_000000', 'vis_data')
            os.makedirs(vis)
            with open(osp.join(vis, 'scalars.json'), 'w') as f:
                for i, t in enumerate((9.0, 2.0, 4.0)):
                    f.write(json.dumps(dict(loss=1.0, time=t, iter=i)) +
                            '\n')
            open(osp.join(work_dir, 'iter_3.pth'), 'w').close()
            text = ''
        else:
            text = '\n'.join([
                'Iter(test) [1/3]  time: 5.0000',
                'Iter(test) [2/3]  time: 1.0000',
                'Iter(test) [3/3]  time: 2.0000',
                'Iter(test) [3/3]    lvis/bbox_AP: 0.0000',
            ])
        with open(log_path, 'w') as f:
            f.write(text)
        return 0, 1.0, 100.0

    monkeypatch.setattr(lvis_scale, 'run_measured', fake_run)
    lvis_scale.train_and_test(run, args, {}, '/d/lvis_v1')
    res = run.result
    assert res['iters'] == 3 and res['losses_finite']
    assert res['step_s'] == pytest.approx(3.0)  # first iteration left out
    assert res['test_s_per_image'] == pytest.approx(1.5)
    assert res['lvis_metric'] and 'error' not in res
    ckpt = osp.join(str(tmp_path), 'runs', run.name, 'train', 'iter_3.pth')
    assert commands[1][3] == ckpt  # the test loads the train checkpoint
    assert osp.isfile(ckpt) == keep
    assert 'train_dataloader.dataset.data_root=/d/lvis_v1/' in commands[0]
