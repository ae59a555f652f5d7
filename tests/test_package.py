"""Package-level promises: a light import, device choice, reproducible seeds."""

import subprocess
import sys

import torch

from mmllm_course import get_device, seed_everything


def test_import_is_light():
    # transformers / diffusers take seconds to import: the library imports them only when a converter runs.
    code = (
        "import sys, mmllm_course, mmllm_course.encoders, mmllm_course.nn, mmllm_course.data, mmllm_course.grading;"
        "heavy = [m for m in ('transformers', 'diffusers', 'skimage', 'jupytext') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_device_choice(monkeypatch):
    monkeypatch.setenv("MMLLM_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")
    assert get_device("meta") == torch.device("meta")


def test_seed_everything_is_reproducible():
    seed_everything(3)
    a = torch.randn(4)
    seed_everything(3)
    assert torch.equal(a, torch.randn(4))
