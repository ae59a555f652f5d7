"""Test-session settings that the notebook kernels (nbval) inherit: strict grading, no GUI, no bars."""

import os

os.environ["MMLLM_STRICT"] = "1"  # a check that does not pass raises, so nbval fails the cell
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ["TQDM_DISABLE"] = "1"
os.environ.setdefault("MMLLM_DEVICE", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub in tests
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Under pytest-xdist, share the cores between the workers instead of letting each one (and each
# notebook kernel it starts) spin up a thread per core: oversubscribed OpenMP threads slow torch
# several-fold. The results do not change (the chapter 2 numbers are the same on 1 and 2 threads).
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))


def pytest_collection_modifyitems(items):
    """Give nbval more than its fixed 5 s to collect a finished cell's outputs.

    nbval waits at most 5 s for each output message after a cell has run; on a loaded 2-core CI
    machine (two workers, each with a notebook kernel) a minute-long training cell once missed that
    window, and nbval then fails the cell and every cell after it. The cell's own time limit stays
    `--nbval-cell-timeout`.
    """
    for item in items:
        if hasattr(item, "output_timeout"):
            item.output_timeout = 60
