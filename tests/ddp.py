"""The one harness for multi-process (CPU, gloo) tests.

``run_ddp(worker, 2, *args)`` spawns the ranks; each imports the package,
joins a process group on a free TCP port of this machine, runs
``worker(rank, world_size, *args)`` with one torch thread (the ranks share
the cores), then waits for the others, leaves the group and checks that the
group is gone. ``free_port()`` is the port choice for tools that take one
(``PORT`` of tools/dist_train.sh): no two tests, or two concurrent runs of
the suite, meet on a fixed port.

Why the import and the check: a few torch modules take ``group.WORLD`` as a
default argument when they are first imported
(``torch.distributed.nn.functional``, ``ZeroRedundancyOptimizer``; mmengine
and so the package import both). Imported after ``init_process_group``
they hold the group past ``destroy_process_group``, whose shutdown does
not stop gloo's threads: they stop when the last reference goes, here
while the interpreter shuts down, which now and then aborted a finished
rank in CI (SIGABRT, 'terminate called without an active exception').
Imported first, as tools/train.py imports mmengine's runner before the
runner starts the group, they hold ``None``.
"""
import faulthandler
import gc
import os
import socket
import time
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now (the OS picks it:
    bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _group_threads() -> list:
    """Names of this process's threads that a live gloo process group runs
    (its TCP store, transport loop and workers); empty where /proc is not
    there to read."""
    tasks = '/proc/self/task'
    if not os.path.isdir(tasks):
        return []
    names = []
    for tid in os.listdir(tasks):
        try:
            with open(f'{tasks}/{tid}/comm') as comm:
                names.append(comm.read().strip())
        except OSError:  # the thread ended while being listed
            pass
    return sorted(n for n in names
                  if n.startswith(('gloo', 'pt_gloo', 'pt_tcpstore')))


def _check_the_group_is_gone(timeout: float = 5.0) -> None:
    """Raise if the group's threads outlive destroy_process_group (they
    leave within ``timeout`` seconds once the group is freed)."""
    gc.collect()  # a worker's reference cycles (a DDP reducer) hold it too
    deadline = time.monotonic() + timeout
    while _group_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _group_threads()
    if left:
        raise RuntimeError(
            f'the process group outlived destroy_process_group: threads '
            f'{left} still run and may abort the rank during interpreter '
            f'shutdown. Something still holds the group: a module imported '
            f'after init_process_group that took group.WORLD as a default '
            f'argument (import it in tests/ddp.py before the group starts), '
            f'or an object the worker left alive.')


def _rank_main(rank: int, world_size: int, port: int, worker: Callable,
               args: tuple) -> None:
    # an abort in C++ (gloo) prints every thread's Python stack
    faulthandler.enable()
    torch.set_num_threads(1)
    import mmdet_longtail  # noqa: F401 (before the group: module docstring)
    dist.init_process_group(
        'gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank,
        world_size=world_size)
    try:
        worker(rank, world_size, *args)
        # free what the worker built (a DDP reducer) while the group is
        # alive, and leave together
        dist.barrier()
    finally:
        dist.destroy_process_group()
    _check_the_group_is_gone()


def run_ddp(worker: Callable, world_size: int, *args: Any) -> None:
    """Run ``worker(rank, world_size, *args)`` in ``world_size`` processes
    of one gloo group; raises if any rank fails. ``worker`` must be a
    module-level function (it is pickled to the ranks)."""
    mp.spawn(_rank_main, args=(world_size, free_port(), worker, args),
             nprocs=world_size, join=True)
