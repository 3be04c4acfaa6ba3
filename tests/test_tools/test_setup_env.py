"""tools/setup_env.sh decides from the venv itself whether this checkout is
installed: not from the current directory, not from PYTHONPATH.

A new user's first command once failed because the decision was asked from
the repo root, where ``import mmdet_longtail`` finds the checkout without any
install. Each case runs the decision (``--check``) from the repo root and
from elsewhere, on a bare venv that has (or lacks) this checkout.
"""
import os
import os.path as osp
import subprocess
import sys
import sysconfig

import pytest

from conftest import REPO_ROOT

SETUP_ENV = osp.join(REPO_ROOT, 'tools', 'setup_env.sh')


@pytest.fixture
def bare_venv(tmp_path) -> str:
    venv = str(tmp_path / 'venv')
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', venv],
                   check=True)
    return venv


def site_packages(venv: str) -> str:
    rel = osp.relpath(sysconfig.get_paths()['purelib'], sys.prefix)
    path = osp.join(venv, rel)
    assert osp.isdir(path), path
    return path


def check(venv: str, cwd: str) -> str:
    env = dict(os.environ, MMLT_VENV=venv, PYTHONPATH=REPO_ROOT)
    proc = subprocess.run(['bash', SETUP_ENV, '--check'], cwd=cwd, env=env,
                          capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def put_on_path(venv: str, directory: str) -> None:
    """What an install does for the decision: the venv's site-packages
    makes ``directory`` importable."""
    with open(osp.join(site_packages(venv), 'checkout.pth'), 'w') as f:
        f.write(directory + '\n')


@pytest.mark.parametrize('where', ['repo_root', 'elsewhere'])
def test_venv_without_the_checkout_is_missing(bare_venv, tmp_path, where):
    cwd = REPO_ROOT if where == 'repo_root' else str(tmp_path)
    # the repo root and PYTHONPATH both hold mmdet_longtail, the venv not
    assert check(bare_venv, cwd) == 'missing'


@pytest.mark.parametrize('where', ['repo_root', 'elsewhere'])
def test_venv_with_the_checkout_is_installed(bare_venv, tmp_path, where):
    put_on_path(bare_venv, REPO_ROOT)
    cwd = REPO_ROOT if where == 'repo_root' else str(tmp_path)
    assert check(bare_venv, cwd) == 'installed'


@pytest.mark.parametrize('where', ['repo_root', 'elsewhere'])
def test_venv_with_a_moved_clone_points_elsewhere(bare_venv, tmp_path,
                                                  where):
    old_clone = tmp_path / 'old_clone'
    (old_clone / 'mmdet_longtail').mkdir(parents=True)
    (old_clone / 'mmdet_longtail' / '__init__.py').write_text('')
    put_on_path(bare_venv, str(old_clone))
    cwd = REPO_ROOT if where == 'repo_root' else str(tmp_path)
    assert check(bare_venv, cwd) == f'elsewhere: {osp.realpath(old_clone)}'


def test_no_venv_at_all_is_missing(tmp_path):
    assert check(str(tmp_path / 'absent'), REPO_ROOT) == 'missing'


def test_relative_venv_path_is_the_one_asked(bare_venv, tmp_path):
    """MMLT_VENV relative to the caller's directory: the decision, made
    from another directory, still asks that venv."""
    put_on_path(bare_venv, REPO_ROOT)
    relative = osp.relpath(bare_venv, str(tmp_path))
    assert check(relative, str(tmp_path)) == 'installed'
