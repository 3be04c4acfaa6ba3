"""mmdet_longtail's C++ CPU kernels (``ops/csrc``), built on first use.

``torch.compile`` fuses the sigmoid losses (EQL, EQLv2, EFL) well on a GPU,
but on a CPU its code is bound by full-precision transcendental functions
and makes a second pass for the per-class sums; the hand-written kernels
avoid both (see each source file). They are built once per machine and torch version with
``torch.utils.cpp_extension.load`` for the vector instruction set torch
itself runs on (``torch.backends.cpu.get_cpu_capability()``), and cached
under ``TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``);
concurrent processes (DDP ranks, test workers) wait for one build.

Where no C++ toolchain is found or the build fails, :func:`load_cpu_kernels`
returns None after one warning and the losses take their portable path
(same values). ``MMDET_LONGTAIL_CPU_KERNELS=0`` turns the kernels off.
"""
import hashlib
import logging
import os
import os.path as osp
import shutil
import sys
import time
from types import ModuleType
from typing import List, Optional

import torch
from mmengine.logging import print_log

SOURCES = ('efl_cpu.cpp', 'one_hot_bce_cpu.cpp', 'bindings.cpp')
HEADERS = ('row_blocks.h', 'sigmoid_terms.h')
CSRC_DIR = osp.join(osp.dirname(__file__), 'csrc')
# torch's capability name -> compiler flags and ATen's vector ISA macro
ISA_FLAGS = {
    'AVX512': [
        '-mavx512f', '-mavx512dq', '-mavx512vl', '-mavx512bw', '-mfma',
        '-mavx2', '-DCPU_CAPABILITY_AVX512'
    ],
    'AVX2': ['-mavx2', '-mfma', '-mf16c', '-DCPU_CAPABILITY_AVX2'],
}

# a build takes ~30 s on 2 cores; a lock this old was left by a killed one
STALE_LOCK_S = 600

_state = {'module': None, 'failed': False}


def enabled() -> bool:
    """False when ``MMDET_LONGTAIL_CPU_KERNELS=0``."""
    return os.environ.get('MMDET_LONGTAIL_CPU_KERNELS', '1') != '0'


def compiler_flags() -> List[str]:
    """Optimisation, vector-ISA and OpenMP flags for this machine."""
    capability = torch.backends.cpu.get_cpu_capability()
    flags = ['-O3'] + ISA_FLAGS.get(capability, [])
    if sys.platform.startswith('linux'):
        # at::parallel_for is OpenMP in the header: without it, one thread
        flags.append('-fopenmp')
    return flags


def _ensure_ninja_on_path() -> None:
    """The build runs ``ninja``; a virtual environment's own copy is not
    on PATH when its python is called by path."""
    if shutil.which('ninja') is None:
        bin_dir = osp.dirname(sys.executable)
        os.environ['PATH'] = bin_dir + os.pathsep + os.environ.get('PATH', '')


def source_digest() -> str:
    """Hash of every source and header, the compiler flags and the torch
    and Python versions: torch's cache tracks only the sources, so the
    build's name carries the rest."""
    digest = hashlib.sha1(' '.join(
        compiler_flags() + [torch.__version__, sys.version]).encode())
    for name in SOURCES + HEADERS:
        with open(osp.join(CSRC_DIR, name), 'rb') as f:
            digest.update(f.read())
    return digest.hexdigest()[:10]


def remove_stale_lock(build_dir: str) -> None:
    """torch's build lock is a file that a killed build leaves behind,
    after which every later build waits on it forever; a build takes well
    under ``STALE_LOCK_S``, so an older lock is removed."""
    lock = osp.join(build_dir, 'lock')
    try:
        age = time.time() - os.path.getmtime(lock)
    except OSError:
        return  # no lock
    if age > STALE_LOCK_S:
        print_log(f'mmdet_longtail: removing the stale build lock {lock} '
                  f'({age:.0f} s old)', logger='current',
                  level=logging.WARNING)
        try:
            os.remove(lock)
        except OSError:
            pass  # another process removed it first


def build() -> ModuleType:
    """Build (or load the cached build of) the extension; raises on
    failure."""
    from torch.utils.cpp_extension import get_default_build_root, load
    _ensure_ninja_on_path()
    flags = compiler_flags()
    capability = torch.backends.cpu.get_cpu_capability().lower()
    name = f'mmdet_longtail_cpu_{capability}_{source_digest()}'
    build_dir = osp.join(get_default_build_root(), name)
    os.makedirs(build_dir, exist_ok=True)
    remove_stale_lock(build_dir)
    return load(
        name=name,
        sources=[osp.join(CSRC_DIR, source) for source in SOURCES],
        extra_cflags=flags,
        extra_ldflags=['-fopenmp'] if '-fopenmp' in flags else [],
        build_directory=build_dir,
        verbose=False)


def load_cpu_kernels() -> Optional[ModuleType]:
    """The built extension, or None where it is off or cannot be built
    (warned once)."""
    if _state['module'] is not None:
        return _state['module']
    if _state['failed'] or not enabled():
        return None
    print_log(
        'mmdet_longtail: loading its C++ CPU kernels (the first time on a '
        'machine they are compiled, about 30 s)',
        logger='current')
    try:
        _state['module'] = build()
    except Exception as err:  # noqa: B902 any toolchain failure
        _state['failed'] = True
        first_line = (str(err).strip().splitlines() or [''])[0]
        print_log(
            f'mmdet_longtail: C++ CPU kernels unavailable '
            f'({type(err).__name__}: {first_line}); the losses run their '
            f'portable path (same values, slower). Set '
            f'MMDET_LONGTAIL_CPU_KERNELS=0 to skip the build.',
            logger='current',
            level=logging.WARNING)
        return None
    return _state['module']


def cpu_kernels_for(x: torch.Tensor,
                    min_numel: int) -> Optional[ModuleType]:
    """The kernels for a loss's input ``x`` when they apply to it: a
    contiguous float32 CPU tensor of at least ``min_numel`` elements,
    outside ``torch.compile`` tracing (a compiled model traces the
    portable path); else None."""
    if (x.device.type != 'cpu' or x.dtype != torch.float32
            or x.numel() < min_numel or not x.is_contiguous()
            or torch.compiler.is_compiling()):
        return None
    return load_cpu_kernels()
