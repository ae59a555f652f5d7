"""The shipped "pretrained" weights: they reach the bars their chapter asserts, and the script that makes them still runs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mmllm_course import pretrained
from mmllm_course.recipes import CHAPTER2_CLIP, CLIPRun, chapter2_failures, evaluate_chapter2_clip
from mmllm_course.encoders.clip_training import TrainingHistory


def test_shipped_chapter2_clip_reaches_chapter2_bars_on_its_held_out_images():
    model, tokenizer = pretrained.load_chapter2_clip()
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    held_out = CHAPTER2_CLIP.data(0)[1]  # seed 0's held-out images: never trained on
    run = CLIPRun(model, TrainingHistory(), None, held_out, tokenizer, 0, CHAPTER2_CLIP)
    metrics = evaluate_chapter2_clip(run)
    assert chapter2_failures(metrics) == []
    # the metrics stored in the file are the ones measured here
    for name in ("zero_shot_max", "all_captions", "recall@1"):
        assert abs(model.pretrained_metrics[name] - metrics[name]) < 1e-3, name


def test_make_script_writes_the_same_layout_in_quick_mode(tmp_path):
    path = pretrained.make_chapter2_clip(str(tmp_path / "clip.safetensors"), quick=True)
    quick, _ = pretrained.load_chapter2_clip(path)
    shipped, _ = pretrained.load_chapter2_clip()
    a, b = quick.state_dict(), shipped.state_dict()
    assert a.keys() == b.keys()
    assert all(a[k].shape == b[k].shape and a[k].dtype == b[k].dtype for k in a)
    assert not all(torch.equal(a[k], b[k]) for k in a)  # it trained something else: 5 steps
    assert quick.pretrained_metrics["zero_shot_max"] < 0.5


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown weights"):
        pretrained.weights_path("chapter99")
    with pytest.raises(TypeError, match="name must be a str"):
        pretrained.weights_path(3)
    with pytest.raises(ValueError, match="no weights file"):
        pretrained.load_chapter2_clip("/no/such/file.safetensors")
    with pytest.raises(TypeError, match="path must be"):
        pretrained.load_chapter2_clip(3)
