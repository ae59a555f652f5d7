"""CrossAttentionMLLM (backbone B): identity at init, media masks on two images, hooks, gradients, generation, bad input."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from mmllm_course.backbones import (  # noqa: E402
    CrossAttentionMLLM,
    GatedCrossAttentionBlock,
    GatedCrossAttentionConfig,
    media_attention_mask,
)
from mmllm_course.bridges import make_bridge  # noqa: E402
from mmllm_course.encoders import ViT, ViTConfig  # noqa: E402
from mmllm_course.language import CausalLMConfig, course_lm_tokenizer, make_causal_lm  # noqa: E402
from mmllm_course.training import freeze  # noqa: E402

D = 32
TWO_IMAGES = ["<image>Describe the image.", "A <image> then <image> Describe the image."]


@pytest.fixture(scope="module")
def tok():
    return course_lm_tokenizer()


def _model(tok, depth=2, every=1, bridge="qformer", arch="llama", **kwargs):
    torch.manual_seed(0)
    encoder = ViT(ViTConfig(image_size=32, patch_size=8, dim=16, depth=1, num_heads=2, mlp_dim=32)).eval()
    extra = {"num_queries": 4} if bridge == "qformer" else {}
    lm = make_causal_lm(CausalLMConfig(arch=arch, dim=D, depth=depth, num_heads=4, num_kv_heads=2, mlp_dim=64), tok, seed=0)
    return CrossAttentionMLLM(freeze(encoder), make_bridge(bridge, in_dim=16, out_dim=D, **extra), freeze(lm), tok,
                              every=every, **kwargs).eval()


def _images(n, seed=0):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _open_gates(model, attn=0.7, mlp=-0.5):
    with torch.no_grad():
        for block in model.blocks:
            block.attn_gate.fill_(attn)
            block.mlp_gate.fill_(mlp)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_logits_equal_the_bare_lm_at_initialisation(tok, arch):
    model = _model(tok, arch=arch)
    batch = model.tokenize(TWO_IMAGES, [" a small red circle in the top left", " two"])
    assert all(g == {"layer": g["layer"], "attn": 0.0, "mlp": 0.0} for g in model.gate_values())
    with torch.no_grad():
        ours = model(**batch, images=_images(3))
        bare = model.lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        position_ids=model.position_ids(batch["attention_mask"]), labels=batch["labels"])
    assert torch.equal(ours.logits, bare.logits)
    assert torch.equal(ours.loss, bare.loss)
    _open_gates(model)  # the same call with open gates reads the images: a test that could fail
    with torch.no_grad():
        opened = model(**batch, images=_images(3)).logits
    assert (opened - bare.logits).abs().max() > 1e-3


def test_one_marker_per_image_and_blocks_where_asked(tok):
    model = _model(tok, depth=4, every=2)
    assert model.num_image_tokens == 1 and model.num_bridge_tokens == 4
    assert model.block_layers == (0, 2) and len(model.blocks) == 2
    ids = model.tokenize(["<image>Describe the image."])["input_ids"][0].tolist()
    assert ids.count(model.image_token_id) == 1
    assert len(_model(tok, depth=4, every=1).blocks) == 4 and len(_model(tok, depth=4, every=3).blocks) == 2
    assert len(_model(tok, depth=4, every=4).blocks) == 1


def test_media_mask_on_two_images():
    # [bos, <image>, a, <image>, b, pad]
    ids = torch.tensor([[2, 3, 10, 3, 11, 0], [2, 10, 3, 11, 12, 13]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    last = media_attention_mask(ids, 3, attend="last", attention_mask=mask)
    assert last.shape == (2, 6, 2)
    assert last[0, :, 0].tolist() == [False, True, True, False, False, False]  # image 0 until the next marker
    assert last[0, :, 1].tolist() == [False, False, False, True, True, False]  # padding sees nothing
    assert last[1, :, 0].tolist() == [False, False, True, True, True, True]
    assert not last[1, :, 1].any()  # row 1 has one image: its second column is padding
    every = media_attention_mask(ids, 3, attend="all", attention_mask=mask)
    assert every[0, :, 0].tolist() == [False, True, True, True, True, False]
    assert torch.equal(every[0, :, 1], last[0, :, 1])
    # no token ever sees an image whose marker comes after it
    later = torch.arange(6)[None, :, None] < torch.tensor([[1, 3], [2, 99]])[:, None, :]
    assert not (every & later).any()
    assert media_attention_mask(torch.tensor([[2, 10, 11]]), 3).shape == (1, 3, 0)


def test_a_token_never_reads_a_later_image(tok):
    model = _model(tok)
    _open_gates(model)
    batch = model.tokenize(["A <image> then <image> Describe the image."])
    ids = batch["input_ids"][0]
    first, second = (ids == model.image_token_id).nonzero().flatten().tolist()
    images = _images(2)
    changed = images.clone()
    changed[1] = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        a = model(**batch, images=images).logits[0]
        b = model(**batch, images=changed).logits[0]
    assert torch.equal(a[:second], b[:second])  # the second image changes nothing before its marker
    assert (a[second:] - b[second:]).abs().max() > 1e-4
    with torch.no_grad():  # with attend="all" the text after the second image still reads the first
        model.attend = "all"
        c = model(**batch, images=images).logits[0]
        model.attend = "last"
    assert torch.equal(a[:second], c[:second]) and (a[second:] - c[second:]).abs().max() > 1e-4
    with torch.no_grad():
        bare = model.lm(input_ids=ids[None]).logits[0]
    assert torch.equal(a[:first], bare[:first]) and (a[first:] - bare[first:]).abs().max() > 1e-4  # before any image: the bare LM


def test_gradients_reach_only_the_blocks_and_the_bridge(tok):
    model = _model(tok).train()
    batch = model.tokenize(TWO_IMAGES, [" a small red circle in the top left", " two"])
    loss = model(**batch, images=_images(3)).loss
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(n.startswith(("blocks.", "bridge.")) for n in grads)
    assert not any(p.requires_grad for p in model.lm.parameters()) and not any(p.requires_grad for p in model.encoder.parameters())
    # at zero gates only the gates receive a gradient (tanh(0) = 0 blocks the rest): why training starts gently
    nonzero = {n for n, g in grads.items() if g is not None and g.abs().sum() > 0}
    assert nonzero == {f"blocks.{i}.{g}" for i in range(2) for g in ("attn_gate", "mlp_gate")}
    _open_gates(model)
    model.zero_grad()
    model(**batch, images=_images(3)).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters()
               if p.requires_grad and "norm" not in n)


def test_the_lm_alone_is_unchanged_and_hooks_detach(tok):
    model = _model(tok)
    _open_gates(model)
    ids = model.tokenize(["<image>Describe the image."])["input_ids"]
    with torch.no_grad():
        before = model.lm(input_ids=ids).logits
        with_image = model(ids, images=_images(1)).logits
        after = model.lm(input_ids=ids).logits  # outside a forward of the MLLM the hooks do nothing
    assert torch.equal(before, after) and (with_image - before).abs().max() > 1e-3
    model.remove_hooks()
    with torch.no_grad():
        assert torch.equal(model(ids, images=_images(1)).logits, before)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_generate_matches_greedy_by_hand_with_two_images(tok, arch):
    model = _model(tok, arch=arch)
    _open_gates(model, 0.9, 0.9)
    images = _images(3)
    texts = model.generate(TWO_IMAGES, images=images, max_new_tokens=6, eos_token_id=None)
    batch = model.tokenize(TWO_IMAGES, padding_side="left")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        for _ in range(6):  # full forward each step, no cache: the hook's position-id rule must agree
            nxt = model(ids, mask, images=images).logits[:, -1].argmax(-1)
            ids, mask = torch.cat([ids, nxt[:, None]], 1), torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    by_hand = [t.strip() for t in tok.batch_decode(ids[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)]
    assert texts == by_hand
    one_by_one = [model.generate([p], images=im, max_new_tokens=6, eos_token_id=None)[0]
                  for p, im in ((TWO_IMAGES[0], images[:1]), (TWO_IMAGES[1], images[1:]))]
    assert texts == one_by_one  # left padding and position ids: a row's result does not depend on its batch


def test_block_attention_weights_and_masked_rows():
    torch.manual_seed(0)
    block = GatedCrossAttentionBlock(GatedCrossAttentionConfig(dim=16, num_heads=4, num_kv_heads=2, mlp_dim=32, media_dim=8))
    with torch.no_grad():
        block.attn_gate.fill_(1.0)
        block.mlp_gate.fill_(1.0)
    x, media = torch.randn(2, 5, 16), torch.randn(2, 6, 8)
    mask = torch.ones(2, 5, 6, dtype=torch.bool)
    mask[0, 0] = False  # token 0 of row 0 sees nothing
    mask[1, :, 3:] = False
    y, w = block(x, media, mask, return_attention=True)
    assert torch.allclose(y, block(x, media, mask), atol=1e-6)
    assert w.shape == (2, 4, 5, 6)
    assert torch.equal(y[0, 0], x[0, 0]) and w[0, :, 0].eq(0).all()
    assert torch.allclose(w[0, :, 1:].sum(-1), torch.ones(4, 4)) and w[1, :, :, 3:].eq(0).all()


def test_bad_input_raises_value_errors_naming_sizes(tok):
    model = _model(tok)
    for every in (0, 3):
        with pytest.raises(ValueError, match="every must be an integer from 1 to the LM's 2 decoder layers"):
            _model(tok, every=every)
    for every in (1.5, True):
        with pytest.raises(TypeError, match="every must be an integer"):
            _model(tok, every=every)
    with pytest.raises(ValueError, match="attend"):
        _model(tok, attend="first")
    batch = model.tokenize(TWO_IMAGES)
    with pytest.raises(ValueError, match=r"more placeholders than images: the prompts hold 3 .* but 2 image"):
        model(**batch, images=_images(2))
    with pytest.raises(ValueError, match=r"more images than placeholders: the prompts hold 3 .* but 4 image"):
        model(**batch, images=_images(4))
    with pytest.raises(ValueError, match="no '<image>' placeholder"):
        model.tokenize(["Describe the image."])
    with pytest.raises(ValueError, match=r"image_features must be \(B_img, N, D_enc\) with N = 17"):
        model(**batch, image_features=torch.randn(3, 5, 16))
    with pytest.raises(ValueError, match="bridge's output width must be the LM's width"):
        CrossAttentionMLLM(model.encoder, make_bridge("mlp", in_dim=16, out_dim=8), model.lm, tok)
    with pytest.raises(ValueError, match="block_config must have dim = the LM's width 32"):
        CrossAttentionMLLM(model.encoder, make_bridge("mlp", in_dim=16, out_dim=D), model.lm, tok,
                           block_config=GatedCrossAttentionConfig(dim=16, num_heads=4))
    block = GatedCrossAttentionBlock(GatedCrossAttentionConfig(dim=16, num_heads=4))
    with pytest.raises(ValueError, match=r"media must be \(B, S, D_media\) = \(2, S, 16\)"):
        block(torch.randn(2, 3, 16), torch.randn(2, 4, 8))
    with pytest.raises(ValueError, match=r"media_mask must be \(B, T, S\) = \(2, 3, 4\)"):
        block(torch.randn(2, 3, 16), torch.randn(2, 4, 16), torch.ones(2, 3, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="media_mask must be bool"):
        block(torch.randn(2, 3, 16), torch.randn(2, 4, 16), torch.ones(2, 3, 4))
    with pytest.raises(ValueError, match="divisible"):
        GatedCrossAttentionConfig(dim=30, num_heads=4)
    with pytest.raises(TypeError, match="input_ids must hold integers"):
        media_attention_mask(torch.ones(1, 3), 3)


def test_a_versus_b_recipe_runs_the_same_budget_and_counts_tokens():
    import dataclasses

    from mmllm_course.training.recipes_ch06 import CHAPTER6, chapter6_failures, compare_backbones

    tiny = dataclasses.replace(CHAPTER6, steps=4, train_size=128, held_out_size=8, batch_size=16, warmup_steps=1)
    out = compare_backbones(seed=1, recipe=tiny)
    a, b = out["rows"]
    assert (a["backbone"], b["backbone"]) == ("A", "B")
    run_a, run_b = out["runs"]["A"], out["runs"]["B"]
    assert len(run_a.history.loss) == len(run_b.history.loss) == 4
    from mmllm_course.training.recipes import build_captioner
    from mmllm_course.training.recipes_ch06 import build_cross_attention_captioner

    start_a, start_b = build_captioner(seed=1).bridge.state_dict(), build_cross_attention_captioner(seed=1).bridge.state_dict()
    assert all(torch.equal(start_a[k], start_b[k]) for k in start_a)  # the same bridge at the start
    assert a["lm_tokens"] - b["lm_tokens"] == run_a.model.num_image_tokens - 1 == 7
    blocks = sum(p.numel() for p in run_b.model.blocks.parameters())
    assert b["trainable"] == a["trainable"] + blocks
    steps = [s for s, _ in run_b.history.evaluations]
    assert steps[0] == 0 and steps[-1] == 4 and set(run_b.history.evaluations[0][1].values()) == {0.0}
    assert any(v != 0.0 for v in run_b.history.evaluations[-1][1].values())  # the gates moved
    assert sum(out["wrong"].values()) <= 8
    assert chapter6_failures({"A exact": 1.0, "B exact": 0.5, "B - A": -0.5}) == ["B exact 50.0% < 93%", "|B - A| = 50.0% > 3%"]
    assert chapter6_failures({"A exact": 0.95, "B exact": 0.96, "B - A": 0.01}) == []


def test_trained_parts_save_and_reload(tok, tmp_path):
    from mmllm_course.training import load_trainable, save_trainable

    model = _model(tok)
    _open_gates(model)
    with torch.no_grad():
        model.blocks[1].q_proj.weight.mul_(2.0)
    names = save_trainable(model, str(tmp_path / "b.safetensors"))
    assert names and all(n.startswith(("blocks.", "bridge.")) for n in names)
    assert "blocks.0.attn_gate" in names and not any(n.startswith("lm.") for n in names)
    fresh = _model(tok)
    batch = model.tokenize(TWO_IMAGES)
    with torch.no_grad():
        before = fresh(**batch, images=_images(3)).logits
        load_trainable(fresh, str(tmp_path / "b.safetensors"))
        after = fresh(**batch, images=_images(3)).logits
        want = model(**batch, images=_images(3)).logits
    assert torch.equal(after, want) and (before - want).abs().max() > 1e-3
