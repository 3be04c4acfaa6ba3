"""ProgressBarHook: one bar per phase with the right length, the train bar
resumes where the run is and carries the loss, validation does not end the
train bar, the val/test bar ends before the evaluation starts, and ranks
other than 0 draw nothing."""
import warnings
from types import SimpleNamespace

import torch

from mmdet_longtail.engine.hooks import ProgressBarHook


def fake_runner(rank: int = 0, max_iters: int = 6, start_iter: int = 0):
    return SimpleNamespace(
        rank=rank,
        max_iters=max_iters,
        iter=start_iter,
        val_dataloader=[None] * 3,
        test_dataloader=[None] * 4)


def bar_lines(err: str) -> list:
    return [line.strip() for line in err.replace('\r', '\n').splitlines()
            if line.strip()]


def test_train_bar_with_validation_inside(capsys):
    hook, runner = ProgressBarHook(min_interval=0), fake_runner(start_iter=2)
    hook.before_train(runner)
    assert (hook._bar.n, hook._bar.total) == (2, 6)  # resumed at iter 2
    hook.before_train_epoch(runner)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # a loss with grad converts quietly
        hook.after_train_iter(runner, 0, outputs=dict(
            loss=torch.tensor(1.23456, requires_grad=True)))
    assert hook._bar.postfix == 'loss=1.235'
    train_bar = hook._bar
    hook.before_val_epoch(runner)
    assert hook._bar.total == 3 and hook._bar.desc.startswith('val')
    for i in range(3):
        hook.after_val_iter(runner, i)
    assert hook._bar is None  # closed before the metric runs
    hook.after_val_epoch(runner, {})
    assert hook._bar is train_bar and train_bar.n == 3
    for i in range(3):
        hook.after_train_iter(runner, i, outputs=dict(loss=0.5))
    assert hook._bar is None  # 6 of 6
    hook.after_train(runner)
    lines = bar_lines(capsys.readouterr().err)
    assert any(line.startswith('val: 100%') for line in lines)
    assert any('train: 100%' in line and '6/6' in line and 'loss=0.500' in
               line for line in lines)


def test_test_bar(capsys):
    hook, runner = ProgressBarHook(min_interval=0), fake_runner()
    hook.before_test_epoch(runner)
    for i in range(4):
        hook.after_test_iter(runner, i)
    hook.after_test_epoch(runner, {})
    lines = bar_lines(capsys.readouterr().err)
    assert any(line.startswith('test: 100%') and '4/4' in line
               for line in lines)


def test_other_ranks_draw_nothing(capsys):
    hook, runner = ProgressBarHook(), fake_runner(rank=1)
    hook.before_train(runner)
    hook.after_train_iter(runner, 0, outputs=dict(loss=1.0))
    hook.before_test_epoch(runner)
    hook.after_test_iter(runner, 0)
    hook.after_test_epoch(runner, {})
    hook.after_train(runner)
    assert capsys.readouterr().err == ''
