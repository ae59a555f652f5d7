"""Test-session settings that the notebook kernels (nbval) inherit: strict grading, no GUI, no bars."""

import os

os.environ["MMLLM_STRICT"] = "1"  # a check that does not pass raises, so nbval fails the cell
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ["TQDM_DISABLE"] = "1"
os.environ.setdefault("MMLLM_DEVICE", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub in tests
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
