"""Chapter 9 end to end: requests -> signal tokens -> projector -> the frozen generator; what trains, what stays frozen, bad input."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mmllm_course.data.shapes import COLORS, POSITIONS, SHAPES, SIZES, caption_for
from mmllm_course.generators import load_chapter9_generator
from mmllm_course.output import (
    CHAPTER9,
    HELD_OUT_TEMPLATES,
    REQUEST_TEMPLATES,
    ImageGeneratingLM,
    OutputProjectorConfig,
    draw_request,
    held_out_requests,
    train_output_side,
)
from mmllm_course.output.recipe import build_model, is_held_out, training_data
from mmllm_course.pretrained import load_chapter5_lm

QUICK = dataclasses.replace(CHAPTER9, train_size=400, row_steps=60, steps=4, batch_size=32, denoise_batch=4, text_batch=16)


@pytest.fixture(scope="module")
def trained():
    return train_output_side(QUICK, seed=0)


def test_held_out_captions_are_a_fifth_and_cover_every_attribute():
    every = [caption_for(s, c, z, p) for s in SHAPES for c in COLORS for z in SIZES for p in POSITIONS]
    held = [c for c in every if is_held_out(c)]
    assert len(every) == 160 and len(held) == 32
    for word in SHAPES + COLORS + SIZES + POSITIONS:  # every value is still seen in training and asked in held-out requests
        assert any(word in c for c in held) and any(word in c for c in every if c not in held)
    requests, captions = held_out_requests(200)
    assert 0.1 < sum(map(is_held_out, captions)) / 200 < 0.3  # about a fifth are combinations training never saw
    assert requests[0] == HELD_OUT_TEMPLATES[0].format(captions[0]) and not set(HELD_OUT_TEMPLATES) & set(REQUEST_TEMPLATES)


def test_request_batch_labels_only_the_signal_tokens_and_eos():
    model = build_model(CHAPTER9, seed=0)
    ids, mask, labels = model.request_batch(["draw a small red circle in the top left", "paint a large blue star in the top right"])
    tok = model.tokenizer
    assert ids[0, 0] == tok.bos_token_id
    kept = labels[0][labels[0] != -100].tolist()
    assert kept == model.signal_ids + [tok.eos_token_id]
    assert (labels[mask == 0] == -100).all()
    hidden = model.signal_hidden(["draw a small red circle in the top left"])
    assert hidden.shape == (1, 4, 64)
    assert model.conditioning(["draw a small red circle in the top left"]).shape == (1, 16, 64)  # what the generator reads


def test_an_untrained_lm_emits_no_signal_tokens_and_gets_a_message_not_a_crash():
    model = build_model(CHAPTER9, seed=0)
    result = model.generate_image("draw a small red circle in the top left")
    assert not result.ok and result.image is None
    assert "did not emit its signal tokens" in result.message and "[IMG0]" in result.message


def test_training_leaves_the_generator_and_the_old_vocabulary_bit_identical(trained):
    model = trained.model
    shipped = load_chapter9_generator().state_dict()
    assert all(torch.equal(v, shipped[k]) for k, v in model.generator.state_dict().items())
    lm, _ = load_chapter5_lm()
    old = lm.get_input_embeddings().weight
    assert torch.equal(model.signal_embedding()[: old.shape[0]], old)  # only the new rows moved
    assert not torch.equal(model.signal_embedding()[model.signal_ids], build_model(QUICK, 0).signal_embedding()[model.signal_ids])
    assert all(not p.requires_grad for p in model.generator.parameters())


def test_the_signal_nll_teaches_the_lm_to_ask_for_an_image(trained):
    requests, _ = held_out_requests(32)
    emitted = [trained.model._emitted_signals(e) for e in trained.model.emit(requests)]
    assert sum(emitted) / len(emitted) >= 0.9  # held-out phrasings of held-out captions
    assert trained.losses["nll"][-1] < 0.2 * trained.losses["nll"][0]
    result = trained.model.generate_image(requests[0], num_inference_steps=2)
    assert result.ok and result.image.shape == (3, 32, 32) and result.message == "ok"


def test_training_data_never_holds_a_held_out_caption():
    model = build_model(QUICK, 0)
    data = training_data(model, QUICK, 0)
    texts = model.tokenizer.batch_decode(data["input_ids"], skip_special_tokens=True)
    prefixes = sorted((t.split("{}")[0] for t in REQUEST_TEMPLATES), key=len, reverse=True)
    captions = [next(t[len(p):] for p in prefixes if t.startswith(p)) for t in texts]
    assert len(set(captions)) > 100 and not any(is_held_out(c) for c in captions)
    assert data["latents"].shape[1:] == (4, 8, 8) and data["target"].shape[1:] == (16, 64)


def test_bad_input_gets_a_clear_error():
    lm, tok = load_chapter5_lm()
    generator = load_chapter9_generator()
    with pytest.raises(ValueError, match=r"conditioning \(L, D_cond\) = \(16, 64\)"):
        ImageGeneratingLM(lm, tok, generator, projector=OutputProjectorConfig(lm_dim=64, cond_dim=32, num_queries=16))
    with pytest.raises(TypeError, match="LatentDiffusionGenerator"):
        ImageGeneratingLM(lm, tok, torch.nn.Linear(2, 2))
    model = ImageGeneratingLM(lm, tok, generator)
    with pytest.raises(TypeError, match="prompt must be a str"):
        model.generate_image(["draw a red circle"])
    with pytest.raises(ValueError, match="context"):
        model.generate_image("draw " + "a small red circle " * 20)
    with pytest.raises(ValueError, match=r"conditioning must be \(B, L, D_cond\) = \(B >= 1, 16, 64\)"):
        generator.sample(torch.zeros(1, 16, 32))  # a projector of the wrong width
    with pytest.raises(ValueError, match="num_inference_steps"):
        generator.sample(torch.zeros(1, 16, 64), num_inference_steps=5000)  # a scheduler asked for more steps than it has
    with pytest.raises(ValueError, match="exactly once"):
        model.lm_forward(torch.tensor([[2, 5, 6]]))
    with pytest.raises(ValueError, match="template"):
        draw_request("a small red circle in the top left", "draw")


def test_the_projector_reads_standardised_signal_states(trained):
    model = trained.model
    requests = [draw_request(caption_for("circle", c, "small", "top left"), REQUEST_TEMPLATES[0]) for c in COLORS]
    with torch.no_grad():
        hidden = model.signal_hidden(requests)  # (5, K, D)
        # training set the statistics from its own requests: not the identity any more
        assert not torch.equal(model.signal_mean, torch.zeros_like(model.signal_mean))
        expected = model.projector((hidden - model.signal_mean) / model.signal_std)
        assert torch.equal(model.project(hidden), expected) and torch.equal(model.conditioning(requests), expected)
        fresh = build_model(QUICK, seed=0)
        fresh.set_signal_statistics(hidden)
        standardised = (hidden - fresh.signal_mean) / fresh.signal_std
        torch.testing.assert_close(standardised.mean(0), torch.zeros_like(standardised[0]), atol=1e-3, rtol=0)
        assert standardised.std(0).mean() > 0.9  # unit spread per feature (std + 1e-4 in the denominator)
        assert "signal_mean" in fresh.state_dict() and "signal_std" in fresh.state_dict()  # saved with the model
    for bad in (hidden[:1], hidden[:, :2], hidden.long()):
        with pytest.raises((ValueError, TypeError), match="hidden"):
            fresh.set_signal_statistics(bad)
