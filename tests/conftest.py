"""Shared fixtures: a small synthetic LVIS set and a runner for the tools.

Tools run in subprocesses (as a user runs them), pointed at the small
dataset through MMLT_SYNTHETIC_ROOT, which the synthetic configs read. They
import mmdet_longtail as a user's tools do: from the environment's install
of this checkout, never from the current directory or PYTHONPATH.
"""
import os
import os.path as osp
import random
import signal
import subprocess
import sys
from typing import Dict, List, Optional

import numpy as np
import pytest
import torch

from ddp import free_port

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

# Small but complete: 30 classes (the configs' num_classes), every class in
# train, a long tail, and a val split where every class can be evaluated.
SMALL_SYNTHETIC = dict(
    num_classes=30,
    num_train_images=48,
    num_val_images=16,
    max_class_images=24,
    min_class_images=1,
    seed=0)

# Threads per pytest worker: more threads than cores (pytest-xdist workers x
# torch threads) makes every CPU kernel wait on the others. An
# OMP_NUM_THREADS of the caller wins, and the tools get the same number as
# this process: tests comparing a tool's output with an in-process run
# bit for bit need both to reduce in the same order.
THREADS = os.environ.get('OMP_NUM_THREADS') or str(max(
    1, (os.cpu_count() or 1) //
    int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))))
torch.set_num_threads(int(THREADS))

# Settings that make a tiny config train and test in seconds.
FAST_CFG_OPTIONS = [
    'train_cfg.max_epochs=1',
    'train_dataloader.batch_size=4',
    'val_dataloader.batch_size=4',
    'test_dataloader.batch_size=4',
    'default_hooks.logger.interval=1',
]


@pytest.fixture(autouse=True)
def seeded_randomness():
    """Every test starts from the same global random state (torch, numpy,
    random), whichever tests ran before it in the process: a draw without
    its own generator is the same draw in every run."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope='session')
def synthetic_root(tmp_path_factory) -> str:
    """A small synthetic LVIS v1 data root, generated once per session."""
    from mmdet_longtail.datasets import make_synthetic_lvis
    root = str(tmp_path_factory.mktemp('synthetic_lvis'))
    make_synthetic_lvis(root, **SMALL_SYNTHETIC)
    return root + '/'


def run_in_own_group(cmd: List[str], env: Dict[str, str],
                     timeout: int) -> subprocess.CompletedProcess:
    """Run ``cmd`` in a new process group; on timeout kill the whole group
    (torchrun's ranks and dataloader workers too, not only the launcher)."""
    with subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          start_new_session=True) as popen:
        try:
            stdout, _ = popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            stdout, _ = popen.communicate()
            raise AssertionError(f'{" ".join(cmd)} timed out after '
                                 f'{timeout} s:\n{stdout[-6000:]}')
    return subprocess.CompletedProcess(cmd, popen.returncode, stdout)


class ToolRunner:
    """Run ``tools/<name>`` in a subprocess on the small synthetic set."""

    def __init__(self, data_root: str) -> None:
        self.data_root = data_root

    def env(self, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        env = dict(os.environ)
        env['MMLT_SYNTHETIC_ROOT'] = self.data_root
        env.setdefault('OMP_NUM_THREADS', THREADS)
        # a crash in C++ (a gloo rank's abort) prints the Python stacks
        env.setdefault('PYTHONFAULTHANDLER', '1')
        if extra:
            env.update(extra)
        return env

    def __call__(self,
                 tool: str,
                 *args: str,
                 check: bool = True,
                 timeout: int = 600,
                 env: Optional[Dict[str, str]] = None
                 ) -> subprocess.CompletedProcess:
        cmd = [sys.executable, osp.join(REPO_ROOT, 'tools', tool), *args]
        if tool.endswith('.sh'):
            cmd = ['bash', osp.join(REPO_ROOT, 'tools', tool), *args]
        extra = dict(env or {}, PYTHON=sys.executable)
        if tool.startswith('dist_'):
            # the ranks share the cores: one thread each
            extra.setdefault('OMP_NUM_THREADS', '1')
            # torchrun's rendezvous on a port nothing else uses now
            extra.setdefault('PORT', str(free_port()))
        proc = run_in_own_group(cmd, self.env(extra), timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f'{" ".join(cmd)} failed '
                                 f'({proc.returncode}):\n{proc.stdout[-6000:]}')
        return proc

    def train(self, config: str, work_dir: str, *extra: str,
              cfg_options: Optional[List[str]] = None,
              **kwargs) -> subprocess.CompletedProcess:
        opts = FAST_CFG_OPTIONS + list(cfg_options or [])
        return self('train.py', config, '--work-dir', work_dir, *extra,
                    '--cfg-options', *opts, **kwargs)

    def test(self, config: str, checkpoint: str, work_dir: str, *extra: str,
             cfg_options: Optional[List[str]] = None,
             **kwargs) -> subprocess.CompletedProcess:
        opts = FAST_CFG_OPTIONS + list(cfg_options or [])
        return self('test.py', config, checkpoint, '--work-dir', work_dir,
                    *extra, '--cfg-options', *opts, **kwargs)


def installed_checkout() -> str:
    """tools/setup_env.sh's own answer for this Python's environment:
    'installed', 'missing' or 'elsewhere: PATH'."""
    proc = subprocess.run(
        ['bash', osp.join(REPO_ROOT, 'tools', 'setup_env.sh'), '--check'],
        env=dict(os.environ, MMLT_VENV=sys.prefix),
        capture_output=True, text=True, check=True)
    return proc.stdout.strip()


@pytest.fixture(scope='session')
def run_tool(synthetic_root) -> ToolRunner:
    found = installed_checkout()
    if found != 'installed':
        pytest.fail(f'the environment of {sys.executable} does not have '
                    f'this checkout {REPO_ROOT} installed ({found}): run the '
                    f'suite with bash tools/run_tests.sh (it installs the '
                    f'checkout) or pip install -e .')
    return ToolRunner(synthetic_root)


def last_checkpoint(work_dir: str) -> str:
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return osp.join(work_dir, osp.basename(f.read().strip()))


def build_config_model(cfg) -> torch.nn.Module:
    """The model of a loaded config, with the class statistics of its train
    set, as ``LongTailRunner`` builds it."""
    from mmdet.registry import MODELS
    from mmdet_longtail.engine.long_tail_runner import give_class_statistics
    give_class_statistics(cfg.model, cfg.get('train_dataloader'))
    return MODELS.build(cfg.model)
