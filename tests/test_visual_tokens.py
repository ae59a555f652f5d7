"""Chapter 10's quantiser: parity with diffusers' VectorQuantizer, the straight-through gradient, the losses, bad input."""

from __future__ import annotations

import pytest
import torch

from mmllm_course.visual_tokens import (
    CodebookQuantizer,
    codes_to_vectors,
    nearest_code,
    perplexity_of,
    restart_dead_codes,
    straight_through,
    vq_losses,
)


def _diffusers_vq(num_codes: int, code_dim: int, beta: float, legacy: bool):
    from diffusers.models.autoencoders.vae import VectorQuantizer

    return VectorQuantizer(num_codes, code_dim, beta=beta, legacy=legacy)


def _pair(legacy: bool = False, num_codes: int = 32, code_dim: int = 6, beta: float = 0.25):
    torch.manual_seed(0)
    ours = CodebookQuantizer(num_codes, code_dim, beta)
    ours.embedding.weight.data.normal_()  # spread codes, so that nearest codes are well separated
    ref = _diffusers_vq(num_codes, code_dim, beta, legacy)
    ref.load_state_dict(ours.state_dict())  # same parameter name: the state_dict loads as it is
    z = torch.randn(3, code_dim, 5, 4, requires_grad=True)
    return ours, ref, z


def test_parity_with_diffusers_indices_output_loss():
    ours, ref, z = _pair(legacy=False)
    out = ours(z)
    z_q, loss, (_, _, idx) = ref(z)
    assert torch.equal(out.indices.flatten(), idx.flatten())
    assert torch.allclose(out.z_q, z_q, atol=1e-6)
    assert torch.allclose(out.loss, loss, atol=1e-6)
    # the straight-through gradient: d(sum z_q)/dz = 1 everywhere, in both
    g_ours, = torch.autograd.grad(out.z_q.sum(), z)
    g_ref, = torch.autograd.grad(z_q.sum(), z)
    assert torch.equal(g_ours, torch.ones_like(z)) and torch.equal(g_ref, g_ours)


def test_state_dict_loads_both_ways():
    ref = _diffusers_vq(16, 4, 0.25, legacy=False)
    ours = CodebookQuantizer(16, 4)
    ours.load_state_dict(ref.state_dict())
    assert torch.equal(ours.embedding.weight, ref.embedding.weight)


def test_diffusers_legacy_puts_beta_on_the_codebook_term():
    ours, ref, z = _pair(legacy=True, beta=0.25)
    out = ours(z)
    _, legacy_loss, _ = ref(z)
    # legacy=True: 1 x commitment mse + beta x codebook mse; ours (the paper): codebook + beta x commitment
    mse = out.codebook_loss  # both mse terms have the same value in the forward pass
    assert torch.allclose(out.commitment_loss, 0.25 * mse)
    assert torch.allclose(legacy_loss, mse + 0.25 * mse)  # same value ...
    # ... but not the same gradients: the codebook gets beta x less, the encoder 4x more
    g_codes_ours, g_z_ours = torch.autograd.grad(out.loss, [ours.embedding.weight, z])
    g_codes_ref, g_z_ref = torch.autograd.grad(legacy_loss, [ref.embedding.weight, z])
    assert torch.allclose(g_codes_ref, 0.25 * g_codes_ours, atol=1e-7)
    assert torch.allclose(g_z_ref, 4 * g_z_ours, atol=1e-7)
    assert not torch.allclose(g_z_ref, g_z_ours)


def test_nearest_code_is_the_argmin_of_squared_distances():
    g = torch.Generator().manual_seed(1)
    z, codebook = torch.randn(50, 3, generator=g), torch.randn(7, 3, generator=g)
    expected = ((z[:, None] - codebook[None]) ** 2).sum(-1).argmin(1)
    assert torch.equal(nearest_code(z, codebook), expected)
    # ties go to the lowest index
    assert nearest_code(torch.zeros(1, 2), torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])).item() == 0


def test_losses_move_the_right_side():
    z = torch.randn(4, 3, requires_grad=True)
    e = torch.randn(4, 3, requires_grad=True)
    codebook_loss, commitment_loss = vq_losses(z, e, beta=0.5)
    assert torch.allclose(commitment_loss, 0.5 * codebook_loss)
    gz, ge = torch.autograd.grad(codebook_loss, [z, e], allow_unused=True)
    assert gz is None and ge is not None  # codebook term: only the codes move
    gz, ge = torch.autograd.grad(commitment_loss, [z, e], allow_unused=True)
    assert gz is not None and ge is None  # commitment term: only the encoder moves


def test_straight_through_value_and_gradient():
    z = torch.randn(2, 5, requires_grad=True)
    z_q = torch.randn(2, 5)
    out = straight_through(z, z_q)
    assert torch.equal(out, z + (z_q - z))  # value of z_q (up to rounding of z + (z_q - z))
    assert torch.allclose(out, z_q)
    (out * torch.arange(5.0)).sum().backward()
    assert torch.equal(z.grad, torch.arange(5.0).expand(2, 5))


def test_quantizer_output_fields_and_codes_to_vectors():
    q = CodebookQuantizer(8, 4)
    q.embedding.weight.data = torch.eye(8, 4) * 3
    z = q.embedding.weight[torch.tensor([[0, 1], [2, 2]])].permute(2, 0, 1)[None].detach()  # (1, 4, 2, 2) exactly on codes
    out = q(z)
    assert out.indices.tolist() == [[[0, 1], [2, 2]]]
    assert out.codes_used == 3 and float(out.loss.detach()) == 0.0
    assert torch.allclose(out.perplexity, torch.tensor(2 ** 1.5))  # p = (1/4, 1/4, 1/2)
    assert torch.equal(codes_to_vectors(q, out.indices), z)
    assert float(perplexity_of(torch.arange(8), 8)) == pytest.approx(8.0)


def test_restart_moves_only_dead_codes():
    torch.manual_seed(0)
    q = CodebookQuantizer(6, 2)
    before = q.embedding.weight.detach().clone()
    z = torch.randn(20, 2) + 10
    moved = restart_dead_codes(q, z, torch.tensor([3, 0, 5, 0, 0, 1]))
    assert moved == 3
    after = q.embedding.weight.detach()
    assert torch.equal(after[[0, 2, 5]], before[[0, 2, 5]])
    assert (after[[1, 3, 4]] > 5).all()  # now where the data is


def test_bad_input_names_the_sizes():
    q = CodebookQuantizer(8, 4)
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\).*\(2, 3, 5, 5\)"):
        q(torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match=r"\[0, 8\).*\[0, 8\]"):
        codes_to_vectors(q, torch.tensor([[[0, 8]]]))
    with pytest.raises(ValueError, match="share D"):
        nearest_code(torch.randn(3, 4), torch.randn(5, 3))
    with pytest.raises(ValueError, match="same shape"):
        vq_losses(torch.randn(3, 4), torch.randn(3, 5))


# ----------------------------------------------------------------------------------- the tokenizer

from mmllm_course.visual_tokens import (  # noqa: E402
    TokenizerTrainConfig,
    VQTokenizer,
    VQTokenizerConfig,
    tokenizer_metrics,
    train_tokenizer,
)


def _tiny_tokenizer(**kw) -> VQTokenizer:
    torch.manual_seed(0)
    return VQTokenizer(VQTokenizerConfig(**{**dict(channels=(8,), patch_size=2, code_dim=4, num_codes=16), **kw}))


def test_tokenizer_round_trip_shapes_and_bits():
    tok = _tiny_tokenizer()
    images = torch.rand(3, 3, 32, 32)
    codes = tok.encode(images)
    assert codes.shape == (3, 8, 8) and codes.dtype == torch.long and int(codes.max()) < 16
    assert tok.decode(codes).shape == (3, 3, 32, 32)
    assert tok.config.bits_per_image() == 64 * 4  # 64 tokens of log2(16) bits
    cont = VQTokenizerConfig(channels=(8,), patch_size=2, code_dim=4, quantize=False)
    assert cont.bits_per_image() == 64 * 4 * 32 and cont.bits_per_image(16) == 64 * 4 * 16
    # decoding the tokens of an image gives the forward pass's reconstruction
    assert torch.allclose(tok.decode(codes), tok.reconstruct(images), atol=1e-6)


def test_tokenizer_learns_and_restarts_revive_dead_codes():
    from mmllm_course.data.shapes import ShapesWorldConfig, generate_shapes

    images = generate_shapes(256, seed=1, config=ShapesWorldConfig(noise=0.0)).images
    held = generate_shapes(64, seed=2, config=ShapesWorldConfig(noise=0.0)).images
    runs = {}
    for restart in (0, 10):
        tok = _tiny_tokenizer(num_codes=32)
        before = tokenizer_metrics(tok, held)["mse"]
        hist = train_tokenizer(tok, images, TokenizerTrainConfig(steps=60, batch_size=16, lr=3e-3, restart_every=restart), seed=0)
        runs[restart] = tokenizer_metrics(tok, held)
        assert runs[restart]["mse"] < 0.9 * before  # it learns (60 steps of a tiny model: a little)
        assert (sum(hist["restarted"]) > 0) == (restart > 0)
    assert runs[10]["codes_used"] >= runs[0]["codes_used"] + 5  # measured: 32 of 32 codes used against 21


def test_tokenizer_bad_input_names_the_sizes():
    tok = _tiny_tokenizer()
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\).*\(2, 3, 16, 16\)"):
        tok.encode(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\).*\(2, 1, 32, 32\)"):
        tok.encode(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\[0, 16\).*\[16, 16\]"):
        tok.decode(torch.full((1, 8, 8), 16))
    with pytest.raises(ValueError, match=r"\(B, 8, 8\).*\(1, 4, 4\)"):
        tok.decode(torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible"):
        VQTokenizerConfig(image_size=32, patch_size=3)


# ------------------------------------------------------------------------------ the image-token LM

from mmllm_course.visual_tokens import ImageLMConfig, ImageLMTrainConfig, ImageTokenLM, image_token, train_image_lm  # noqa: E402

REQUESTS = ["draw a small red circle in the top left", "draw a large blue star in the bottom right"]


def _tiny_lm() -> ImageTokenLM:
    return ImageTokenLM(ImageLMConfig(num_codes=16, grid_size=4, dim=32, depth=1, num_heads=2, num_kv_heads=1, mlp_dim=64,
                                      context_length=40), seed=0)


def test_codebook_is_extra_vocabulary_and_sequences_interleave():
    lm = _tiny_lm()
    tok = lm.tokenizer
    assert lm.lm.get_input_embeddings().num_embeddings == len(tok) == lm.text_vocab_size + 2 + 16
    assert tok.convert_tokens_to_ids(image_token(5)) == int(lm.code_ids[5])
    codes = torch.arange(32).view(2, 4, 4) % 16
    batch = lm.sequences(REQUESTS, codes)
    ids, labels = batch["input_ids"], batch["labels"]
    boi = (ids[0] == lm.boi_id).nonzero().item()
    assert torch.equal(ids[0, boi + 1:boi + 17], lm.code_ids[codes[0].flatten()])  # the grid in reading order
    assert int(ids[0, boi + 17]) == lm.eoi_id
    assert (labels[0, :boi + 1] == -100).all() and torch.equal(labels[0, boi + 1:boi + 18], ids[0, boi + 1:boi + 18])


def test_generate_writes_only_image_tokens_and_learns_a_request():
    lm = _tiny_lm()
    # two requests, two fixed grids: after training, sampling at temperature 0 gives each request its grid back
    codes = torch.stack([torch.zeros(4, 4, dtype=torch.long), torch.full((4, 4), 7)])
    codes[1, 0, 0] = 3
    before = lm.generate(REQUESTS, temperature=1.0, seed=0)
    assert before.shape == (2, 4, 4) and int(before.min()) >= 0 and int(before.max()) < 16
    assert torch.equal(lm.generate(REQUESTS, seed=4), lm.generate(REQUESTS, seed=4))  # seeded
    hist = train_image_lm(lm, REQUESTS * 4, codes.repeat(4, 1, 1), ImageLMTrainConfig(steps=60, batch_size=8, lr=1e-2, warmup=5))
    assert hist["loss"][-1] < 0.1 * hist["loss"][0]
    assert torch.equal(lm.generate(REQUESTS, temperature=0.0), codes)
    assert torch.equal(lm.generate(REQUESTS, temperature=1.0, top_k=1, seed=3), codes)  # top-1 sampling is greedy


def test_lm_bad_input_names_the_sizes():
    lm = _tiny_lm()
    with pytest.raises(ValueError, match=r"\[0, 16\).*\[16, 16\]"):
        lm.loss(REQUESTS, torch.full((2, 4, 4), 16))
    with pytest.raises(ValueError, match=r"\(2, 4, 4\).*\(2, 8, 8\)"):
        lm.loss(REQUESTS, torch.zeros(2, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="context_length"):
        lm.generate([" ".join(["red"] * 30)])


# ------------------------------------------------------------------ the script and the shipped weights


def test_pretrain_script_quick_mode_writes_a_loadable_file(tmp_path):
    from mmllm_course.visual_tokens import load_chapter10
    from mmllm_course.visual_tokens.pretrain import main

    path = tmp_path / "chapter10.safetensors"
    main(["--quick", "--out", str(path)])
    tokenizer, model = load_chapter10(path)
    assert model.recipe == "CHAPTER10 quick"
    assert {"tokenizer_psnr", "generated_color_shape", "chance_color_shape"} <= set(model.pretrained_metrics)
    codes = model.generate(["draw a small red circle in the top left"], seed=0)
    assert tokenizer.decode(codes).shape == (1, 3, 32, 32)
    assert path.stat().st_size < 8e6


def test_shipped_weights_reach_the_notebook_bars():
    from mmllm_course.generators import judge_images, load_judge
    from mmllm_course.visual_tokens import evaluate_image_lm, load_chapter10, tokenizer_metrics
    from mmllm_course.visual_tokens.chapter import BARS
    from mmllm_course.visual_tokens.pretrain import CHAPTER10, HELD_OUT_IMAGES_SEED, training_data

    tokenizer, model = load_chapter10()
    judge = load_judge()
    held = training_data(128, HELD_OUT_IMAGES_SEED)
    m = tokenizer_metrics(tokenizer, held.images)
    assert m["psnr"] > 25 and m["codes_used"] > 100
    assert judge_images(judge, tokenizer.reconstruct(held.images), held)["color"] > 0.95
    gen = evaluate_image_lm(tokenizer, model, judge, n=128, temperature=CHAPTER10.temperature, top_k=CHAPTER10.top_k, seed=0)
    assert gen["generated_color"] > BARS["generated_color"]
    assert gen["generated_color_shape"] > BARS["generated_color_shape"]
    assert gen["generated_color_shape"] - gen["chance_color_shape"] > BARS["chance_margin"]
