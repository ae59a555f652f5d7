"""Small helpers every chapter uses: pick a device, seed every random generator."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from mmllm_course._checks import InputTypeError, check_int, describe

DEVICE_CHOICES = ("cpu", "cuda", "cuda:N", "mps", "meta")


def get_device(prefer: str | None = None) -> torch.device:
    """The best available device: CUDA, then Apple's MPS, then the CPU.

    ``prefer`` (or the ``MMLLM_DEVICE`` environment variable) forces one, e.g. ``"cpu"``, which is
    what the tests and CI use so that numbers are reproducible. A name torch does not know
    (``"gpu"``) or a device this machine lacks raises a ``ValueError`` listing the choices.
    """
    if prefer is not None and not isinstance(prefer, (str, torch.device)):
        raise InputTypeError(f"prefer must be a device name such as {DEVICE_CHOICES} or None, got {describe(prefer)}")
    source = "prefer" if prefer else "MMLLM_DEVICE"
    choice = prefer or os.environ.get("MMLLM_DEVICE")
    if choice:
        try:
            device = torch.device(choice)
        except (RuntimeError, ValueError) as err:
            raise ValueError(f"{source}={str(choice)!r} is not a device: expected one of {DEVICE_CHOICES}") from err
        available = {"cuda": torch.cuda.is_available, "mps": lambda: getattr(torch.backends, "mps", None) is not None
                     and torch.backends.mps.is_available()}
        if device.type in available and not available[device.type]():
            raise ValueError(f"{source}={str(choice)!r} asks for {device.type}, which this machine does not have; use 'cpu' or leave it unset")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a torch ``Generator`` seeded the same way.

    ``seed`` is an integer in [0, 2**32) (NumPy's range).
    """
    seed = check_int(seed, "seed", minimum=0)
    if seed >= 2**32:
        raise ValueError(f"seed must be below 2**32 (NumPy's limit), got {seed}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one CPU thread, then restore torch's thread count.

    A small model's matrices are too small to gain from sharing them between threads, and sharing can
    cost a lot: on a 2-core machine kept busy by other processes (load average 8), chapter 4's Q-Former
    trained in 14.5 s on one thread and in 239 s on two, every parallel region waiting for a thread
    the OS had put aside.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
