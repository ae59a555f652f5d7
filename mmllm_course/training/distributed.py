"""Several training processes on one machine without a launcher: what ``accelerate launch`` / ``torchrun`` set up.

A data-parallel run is N copies of the same script, one per device, that find each other through
four environment variables (``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE``, and each one's
``RANK`` / ``LOCAL_RANK``). ``accelerate.Accelerator`` reads them, joins the process group (``gloo``
on CPUs, ``nccl`` on GPUs) and from then on ``prepare`` / ``backward`` keep the replicas in step.
:func:`launch_processes` sets those variables and starts N Python processes on this machine, so a
test (or a CPU-only reader) runs the chapter-7 loop under two processes; on GPUs the command is::

    accelerate launch --multi_gpu --num_processes 2 -m mmllm_course.training.recipes_ch07 --steps 600

and on CPUs, with the same code, ``torchrun --nproc_per_node 2 -m mmllm_course.training.recipes_ch07 --cpu``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

from mmllm_course._checks import InputTypeError, check_int, describe

_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "OMP_NUM_THREADS")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(rank: int, fn: Callable, world: int, port: int, args: tuple) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world),
                       "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world),
                       "OMP_NUM_THREADS": "1"})
    import torch

    torch.set_num_threads(1)
    fn(*args)


def launch_processes(fn: Callable, num_processes: int = 2, args: tuple = ()) -> None:
    """Run ``fn(*args)`` in ``num_processes`` new Python processes that form one process group on this machine.

    ``fn`` must be importable by name (a module-level function: the processes are spawned, not
    forked); inside it, ``accelerate.Accelerator(cpu=True)`` sees ``num_processes`` processes and
    this process's rank. Returns when all have finished; an exception in one of them is raised here.
    """
    import torch.multiprocessing as mp

    if not callable(fn):
        raise InputTypeError(f"fn must be a module-level function, got {describe(fn)}")
    num_processes = check_int(num_processes, "num_processes")
    if not isinstance(args, tuple):
        raise InputTypeError(f"args must be a tuple of fn's arguments, got {describe(args)}")
    saved = {k: os.environ.get(k) for k in _ENV}
    try:
        mp.start_processes(_entry, args=(fn, num_processes, _free_port(), args), nprocs=num_processes,
                           join=True, start_method="spawn")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


__all__ = ["launch_processes"]
