"""The capstone's pipeline (mmllm_course.pipelines): the flow's shapes, what trains, the losses, bad input.

Its measured accuracies (class, size, Chamfer beside the baselines) are asserted by chapter 11's
notebook and its seed run (``bench --seeds 5 --only chapter11``); these tests stay small and fast.
"""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch

from mmllm_course.data.audio import SOLID_WORDS, make_spoken_descriptions, make_spoken_objects
from mmllm_course.data.points import SOLIDS
from mmllm_course.encoders.audio import AudioEncoder
from mmllm_course.pipelines import (
    CHAPTER11,
    AudioTo3D,
    NoObjectError,
    build_audio_to_3d,
    capstone_failures,
    make_spoken_requests,
)
from mmllm_course.pipelines import audio_to_3d as cap
from mmllm_course.viz import check_flow

TINY = dataclasses.replace(CHAPTER11, train_size=20, reject_size=6, held_out_size=10, held_out_reject_size=4, encoder_steps=2,
                           steps=2, batch_size=8, warmup_steps=1)


@functools.lru_cache(maxsize=2)
def _model(bridge: str = "resampler") -> AudioTo3D:
    torch.manual_seed(0)
    return build_audio_to_3d(AudioEncoder(TINY.encoder_config()), TINY, seed=0, bridge=bridge)


@functools.lru_cache(maxsize=1)
def _clips():
    return make_spoken_requests(6, 2, seed=5)


# ------------------------------------------------------------------------------ data


def test_spoken_objects_are_balanced_deterministic_and_say_their_solid():
    a, b = make_spoken_objects(20, seed=3), make_spoken_objects(20, seed=3)
    assert torch.equal(a.waveforms, b.waveforms) and a.captions == b.captions
    assert SOLID_WORDS == SOLIDS  # the spoken word of a solid is its name in data.points
    assert torch.bincount(a.solid * 2 + a.size, minlength=10).tolist() == [2] * 10
    for caption, solid, size in zip(a.captions, a.solid.tolist(), a.size.tolist()):
        words = caption.split()
        assert words[0] == ("small", "large")[size] and words[2] == SOLIDS[solid]
    assert a.waveforms.shape == (20, 16000) and a.waveforms.abs().amax(dim=1).min() > 0.05
    # chapter 8's descriptions are unchanged by the new words (the same draws, in the same order)
    assert make_spoken_descriptions(3, seed=0).captions == make_spoken_descriptions(3, seed=0).captions


def test_requests_mix_objects_and_things_with_no_solid():
    clips = _clips()
    assert len(clips) == 8 and int(clips.is_object.sum()) == 6
    for caption, solid in zip(clips.captions, clips.solid.tolist()):
        assert (caption.split()[2] in SOLIDS) == (solid >= 0)
        assert solid >= 0 or caption.split()[2] in cap.REJECT_SHAPES


# ------------------------------------------------------------------------------ the flow


@pytest.mark.parametrize("bridge", ["resampler", "mlp"])
def test_describe_chains_and_matches_the_real_tensors(bridge):
    model = _model(bridge)
    stages = check_flow(model.describe())
    assert [s.part for s in stages] == ["input", "encoder", "encoder", "input bridge", "LLM backbone", "LLM backbone",
                                        "output projector", "generator", "output"]
    wave = _clips().waveforms[:3]
    mel = model.log_mel(wave)
    tokens = model.encoder(mel)
    audio = model.bridge(tokens)
    answers = model.answers(torch.ones(3, dtype=torch.bool))
    embeds, ids = model._sequence(tokens, answers)
    logits, hidden = model._lm(embeds)
    from mmllm_course.output import signal_hidden_states

    signal = signal_hidden_states(hidden, ids, model.signal_ids)
    cond = model.projector(signal)
    real = [wave, mel, tokens, audio, hidden[:, :-1], signal, cond]  # the LM stage's output: up to the last signal token
    for stage, tensor in zip(stages, real):
        assert tuple(3 if d == "B" else d for d in stage.output_shape) == tuple(tensor.shape), stage
    assert stages[-2].output_shape == ("B", model.decoder.config.num_points, 3)
    assert model.num_audio_tokens == (8 if bridge == "resampler" else 50)


def test_only_the_bridge_projector_and_signal_rows_train():
    model = build_audio_to_3d(AudioEncoder(TINY.encoder_config()), TINY, seed=1)
    clips = _clips()
    lm_before = {k: v.clone() for k, v in model.lm.state_dict().items()}
    other_before = {k: v.clone() for k, v in list(model.encoder.state_dict().items()) + list(model.decoder.state_dict().items())}
    bridge_before = [p.clone() for p in model.bridge.parameters()]
    features = cap.encode_requests(model.log_mel, model.encoder, clips.waveforms)
    cap.train_audio_to_3d(model, features, clips, dataclasses.replace(TINY, steps=3), seed=0)
    emb_key = [k for k in lm_before if "embed_tokens" in k][0]
    for k, v in model.lm.state_dict().items():
        if k == emb_key or (model.lm.config.tie_word_embeddings and "lm_head" in k):
            rows = torch.ones(v.shape[0], dtype=torch.bool)
            rows[model.signal_ids] = False
            assert torch.equal(v[rows], lm_before[k][rows]), k  # the old vocabulary is untouched
            assert not torch.equal(v[~rows], lm_before[k][~rows])  # the signal rows learned
        else:
            assert torch.equal(v, lm_before[k]), k
    after = dict(list(model.encoder.state_dict().items()) + list(model.decoder.state_dict().items()))
    assert all(torch.equal(after[k], v) for k, v in other_before.items())
    assert any(not torch.equal(a, b) for a, b in zip(model.bridge.parameters(), bridge_before))


def test_losses_are_the_lm_loss_on_signal_tokens_and_the_l2_to_the_true_conditioning():
    model = _model("resampler").eval()
    clips = _clips()
    features = cap.encode_requests(model.log_mel, model.encoder, clips.waveforms)
    obj = clips.is_object
    target = model.decoder.condition(clips.solid[obj], clips.size[obj])
    with torch.no_grad():
        parts = model.losses(features, obj, target)
        embeds, ids = model._sequence(features, model.answers(obj))
        labels = torch.full_like(ids, -100)
        p = model.num_audio_tokens + len(model.prompt_ids)
        labels[:, p:] = ids[:, p:]
        labels[labels == model.tokenizer.pad_token_id] = -100
        expected = model.lm(inputs_embeds=embeds, labels=labels).loss
        torch.testing.assert_close(parts["nll"], expected)
        hidden = model.lm(inputs_embeds=embeds, output_hidden_states=True).hidden_states[-1]
        k = len(model.signal_ids)
        pred = model.projector(hidden[obj][:, p:p + k])
        torch.testing.assert_close(parts["cond"], ((pred - target) ** 2).sum(-1).mean())


def test_quick_training_lowers_both_losses():
    model = build_audio_to_3d(AudioEncoder(TINY.encoder_config()), TINY, seed=2)
    clips = make_spoken_requests(30, 10, seed=7)
    features = cap.encode_requests(model.log_mel, model.encoder, clips.waveforms)
    log = cap.train_audio_to_3d(model, features, clips, dataclasses.replace(TINY, steps=40, batch_size=16, lr=3e-3), seed=0)
    for k in ("nll", "cond"):
        assert sum(log[k][-5:]) / 5 < 0.7 * sum(log[k][:5]) / 5, (k, log[k][:5], log[k][-5:])


# ------------------------------------------------------------------------------ bad input


def test_bad_audio_gets_a_clear_message():
    model = _model("resampler")
    wave = _clips().waveforms[0]
    with pytest.raises(ValueError, match="16000 Hz"):
        model(wave, sample_rate=8000)
    with pytest.raises(ValueError, match="too short"):
        model(wave[:2000])
    with pytest.raises(ValueError, match="too long"):
        model(torch.cat([wave, wave]))
    with pytest.raises(ValueError, match="silent"):
        model(torch.zeros(16000))
    with pytest.raises(ValueError, match="silent"):
        model(torch.stack([wave, 1e-5 * torch.randn(16000)]))
    with pytest.raises(ValueError, match="NaN"):
        model(torch.full((16000,), float("nan")))
    with pytest.raises(ValueError, match="mono"):
        model(torch.stack([wave, wave])[None])
    with pytest.raises(TypeError):
        model(wave.numpy())


def test_no_signal_tokens_is_a_clear_message_not_a_crash():
    model = _model("resampler")  # untrained: its LM says words, never the signal tokens
    wave = _clips().waveforms[:2]
    with pytest.raises(NoObjectError, match=r"no signal tokens \[3D0\] \[3D1\]"):
        model(wave)
    result = model.generate(wave, steps=2, strict=False)
    assert not result.mapped.any() and result.points.shape == (2, 256, 3) and (result.points == 0).all()
    assert all("names no object" in m for m in result.messages) and all(isinstance(s, str) for s in result.emitted)


def test_failures_name_the_missed_bars():
    good = {"class_accuracy": 0.97, "size_accuracy": 0.95, "chamfer_ratio": 0.25}
    assert capstone_failures(good) == []
    assert capstone_failures(dict(good, class_accuracy=0.9))[0].startswith("class_accuracy")
    assert capstone_failures(dict(good, chamfer_ratio=float("nan")))
    with pytest.raises(ValueError, match="lacks"):
        capstone_failures({"class_accuracy": 1.0})
