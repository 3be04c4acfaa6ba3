"""The one harness for multi-process (CPU, gloo) tests.

``run_ddp(worker, 2, *args)`` spawns the ranks; each joins a process group
on a free TCP port of this machine, runs ``worker(rank, world_size, *args)``
with one torch thread (the ranks share the cores), then waits for the others
and leaves the group; a rank that finished cleanly then exits at once.
``free_port()`` is the port choice for tools that take one (``PORT`` of
tools/dist_train.sh): no two tests, or two concurrent runs of the suite,
meet on a fixed port.
"""
import faulthandler
import os
import socket
import sys
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


def _rank_main(rank: int, world_size: int, port: int, worker: Callable,
               args: tuple) -> None:
    # an abort in C++ (gloo) prints every thread's Python stack
    faulthandler.enable()
    torch.set_num_threads(1)
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
    # The worker's results are written and the group is left. A finished
    # rank has aborted after this point (SIGABRT, 'terminate called without
    # an active exception': a C++ thread destroyed unjoined, torch 2.13 +
    # gloo) in about one CI run of three; exiting without interpreter
    # finalization skips those destructors and changes nothing checked.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_ddp(worker: Callable, world_size: int, *args: Any) -> None:
    """Run ``worker(rank, world_size, *args)`` in ``world_size`` processes
    of one gloo group; raises if any rank fails. ``worker`` must be a
    module-level function (it is pickled to the ranks)."""
    mp.spawn(_rank_main, args=(world_size, free_port(), worker, args),
             nprocs=world_size, join=True)
