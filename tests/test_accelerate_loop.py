"""Chapter 7's training loop under two CPU processes (gloo): replicas stay identical and equal one process on the global batch."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("accelerate")


def _read(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def test_two_processes_end_identical_and_equal_one_process_on_the_global_batch(tmp_path):
    from mmllm_course.training.distributed import launch_processes
    from mmllm_course.training.recipes_ch07 import short_stage

    steps, batch = 4, 16
    launch_processes(short_stage, 2, (str(tmp_path / "two"), steps, batch))
    short_stage(str(tmp_path / "one"), steps, batch)  # this process, no process group: one replica, the whole batch

    r0, m0 = _read(tmp_path / "two" / "rank0.safetensors")
    r1, m1 = _read(tmp_path / "two" / "rank1.safetensors")
    one, m_one = _read(tmp_path / "one" / "rank0.safetensors")
    assert m0["processes"] == "2" and m_one["processes"] == "1"
    assert sorted(r0) == sorted(r1) == sorted(one) and any("lora_B" in k for k in r0) and any("bridge" in k for k in r0)
    for name in r0:  # the replicas: bit-identical after every synchronised step
        assert torch.equal(r0[name], r1[name]), name
    diff = max((r0[k] - one[k]).abs().max().item() for k in r0)
    assert diff < 1e-4, f"2 processes vs 1 on the same global batch differ by {diff}"
    # and the run trained: the LoRA B matrices left zero (their initial value)
    assert max(one[k].abs().max().item() for k in one if "lora_B" in k) > 1e-3
    l2 = [float(x) for x in m0["losses"].split(",")]
    l1 = [float(x) for x in m_one["losses"].split(",")]
    assert len(l2) == len(l1) == steps and max(abs(a - b) for a, b in zip(l1, l2)) < 1e-4, (l1, l2)
    # saving from the main process only: one file, equal to rank 0's parameters
    saved, _ = _read(tmp_path / "two" / "trained.safetensors")
    assert sorted(saved) == sorted(r0) and all(torch.equal(saved[k], r0[k]) for k in r0)


def test_batch_must_split_evenly_over_the_processes():
    from mmllm_course.training.loop import random_batches

    data = {"x": torch.arange(10.0)}
    with pytest.raises(ValueError, match="divisible by the 3 processes"):
        random_batches(data, 4, torch.Generator(), shard=(0, 3))
    a = random_batches(data, 4, torch.Generator().manual_seed(0), shard=(0, 2))()["x"]
    b = random_batches(data, 4, torch.Generator().manual_seed(0), shard=(1, 2))()["x"]
    whole = random_batches(data, 4, torch.Generator().manual_seed(0))()["x"]
    assert torch.equal(torch.cat([a, b]), whole)
