"""Every tool imports, and so does every module any tool imports, also the
ones imported inside functions: the environment that tools/setup_env.sh
builds has all they need (a missing torchvision once broke every shipped
LVIS config's backbone initialisation)."""
import ast
import glob
import importlib
import importlib.util
import os.path as osp
import sys
from typing import List, Tuple

import pytest

from conftest import REPO_ROOT

TOOLS = sorted(
    glob.glob(osp.join(REPO_ROOT, 'tools', '**', '*.py'), recursive=True))


def tool_id(path: str) -> str:
    return osp.relpath(path, osp.join(REPO_ROOT, 'tools'))


def imported_names(path: str) -> List[Tuple[str, str]]:
    """(module, attribute or '') of every absolute import in the file."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend((alias.name, '') for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.extend((node.module, alias.name) for alias in node.names)
    return names


def is_sibling(module: str, path: str) -> bool:
    """Tools import helpers that sit next to them (``_runner_utils``)."""
    return osp.isfile(osp.join(osp.dirname(path), module + '.py'))


@pytest.mark.parametrize('path', TOOLS, ids=tool_id)
def test_everything_a_tool_imports_is_installed(path):
    names = imported_names(path)
    assert names, f'{tool_id(path)} imports nothing?'
    for module, attribute in names:
        if is_sibling(module.split('.')[0], path):
            continue
        imported = importlib.import_module(module)
        if attribute and not hasattr(imported, attribute):
            importlib.import_module(f'{module}.{attribute}')


@pytest.mark.parametrize('path', TOOLS, ids=tool_id)
def test_tool_module_imports(path, monkeypatch):
    monkeypatch.syspath_prepend(osp.dirname(path))
    name = 'tool_' + tool_id(path).replace('/', '_')[:-3]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    if not osp.basename(path).startswith('_'):  # helpers have no main
        assert callable(getattr(module, 'main', None)), \
            f'{tool_id(path)} has no main()'
