"""Chapter 9's frozen generator and its judge: the shipped weights reach their bars, the script runs, the math is diffusers'."""

from __future__ import annotations

import pytest
import torch

from mmllm_course.data import ShapesWorldConfig, generate_shapes
from mmllm_course.generators import (
    GeneratorConfig,
    JudgeConfig,
    LatentDiffusionGenerator,
    ShapesJudge,
    caption_labels,
    diffusion_loss,
    diffusion_target,
    evaluate_generator,
    judge_images,
    load_chapter9_generator,
    load_judge,
    make_sampler,
    make_train_scheduler,
)
from mmllm_course.generators import pretrain
from mmllm_course.generators.judge import evaluate_judge

# What the shipped generator reaches (recipe of pretrain.GeneratorRecipe, seed 0), with a margin: 256 held-out requests
# gave colour, size and position 100% and shape 94.9% when it was made (issue 12's target: 95% colour and shape).
REACHED = {"color": 0.95, "position": 0.95, "size": 0.95, "shape": 0.90}
TINY = dict(ae_channels=(8, 8, 8), ae_norm_groups=4, unet_channels=(16, 16), unet_heads=2, unet_norm_groups=4)


@pytest.fixture(scope="module")
def generator() -> LatentDiffusionGenerator:
    return load_chapter9_generator()


@pytest.fixture(scope="module")
def judge() -> ShapesJudge:
    return load_judge()


# ----------------------------------------------------------------------------- the shipped weights


def test_shipped_judge_reads_real_held_out_images(judge):
    assert not judge.training and not any(p.requires_grad for p in judge.parameters())
    metrics = evaluate_judge(judge, n=1000)  # real images of a seed the judge never trained on
    assert metrics["shape"] >= 0.98 and metrics["color"] >= 0.99, metrics
    assert metrics["size"] >= 0.95 and metrics["position"] >= 0.99, metrics
    assert abs(judge.pretrained_metrics["shape"] - evaluate_judge(judge)["shape"]) < 1e-3  # stored = measured


def test_shipped_generator_draws_what_true_captions_ask(generator, judge):
    assert not generator.training and not any(p.requires_grad for p in generator.parameters())
    metrics = evaluate_generator(generator, judge, n=128, num_inference_steps=10, guidance_scale=3.0)
    assert all(metrics[k] >= bar for k, bar in REACHED.items()), metrics
    assert metrics["color_shape"] >= 10 * 0.05, metrics  # 10x the chance of 20 colour x shape classes


def test_random_conditioning_draws_at_chance(generator, judge):
    """The bar above is not the judge being easy: conditioning that names nothing scores near chance."""
    captions = pretrain.held_out_captions(64)
    true = generator.encode_prompt(captions)
    g = torch.Generator().manual_seed(0)
    random = true.mean((0, 1)) + true.std((0, 1)) * torch.randn(true.shape, generator=g)  # same per-dim statistics
    metrics = judge_images(judge, generator.sample(random, num_inference_steps=10), captions)
    assert metrics["color_shape"] <= 0.25, metrics  # 20 colour x shape classes: chance is 5%


def test_generator_is_deterministic_in_its_seed(generator):
    cond = generator.encode_prompt(["a small red circle in the top left"] * 2)
    a = generator.sample(cond, num_inference_steps=4, seed=3)
    assert torch.equal(a, generator.sample(cond, num_inference_steps=4, seed=3))
    assert not torch.equal(a, generator.sample(cond, num_inference_steps=4, seed=4))
    assert a.shape == (2, 3, 32, 32) and 0 <= float(a.min()) and float(a.max()) <= 1


def test_autoencoder_keeps_what_the_judge_reads(generator, judge):
    held = generate_shapes(256, seed=pretrain.HELD_OUT_SEED + 1, config=ShapesWorldConfig(noise=0.0))  # the generator's world
    recon = generator.decode_latents(generator.encode_images(held.images))
    metrics = judge_images(judge, recon, held)
    assert metrics["color"] >= 0.99 and metrics["position"] >= 0.99 and metrics["shape"] >= 0.92, metrics  # 96% at shipping


# ----------------------------------------------------------------------------- the script


def test_quick_mode_writes_the_shipped_layout(tmp_path):
    path = pretrain.make_chapter9_generator(str(tmp_path / "gen.safetensors"), quick=True, log=None)
    quick, shipped = load_chapter9_generator(path), load_chapter9_generator()
    a, b = quick.state_dict(), shipped.state_dict()
    assert a.keys() == b.keys()
    assert all(a[k].shape == b[k].shape and a[k].dtype == b[k].dtype for k in a)
    assert not all(torch.equal(a[k], b[k]) for k in a)  # it trained something else: 3 steps
    assert quick.pretrained_metrics["ae_l1"] > shipped.pretrained_metrics["ae_l1"]

    path = pretrain.make_chapter9_judge(str(tmp_path / "judge.safetensors"), quick=True, log=None)
    quick_judge, shipped_judge = load_judge(path), load_judge()
    a, b = quick_judge.state_dict(), shipped_judge.state_dict()
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    assert quick_judge.pretrained_metrics["shape"] < 0.9 < shipped_judge.pretrained_metrics["shape"]


# ----------------------------------------------------------------------------- the math is diffusers'


def test_training_target_and_noising_follow_the_formulas():
    config = GeneratorConfig(**TINY)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([0, 500, 999])
    for kind in ("epsilon", "v_prediction", "sample"):
        sched = make_train_scheduler(GeneratorConfig(**TINY, prediction_type=kind))
        a = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
        assert torch.allclose(sched.add_noise(x0, eps, t), a.sqrt() * x0 + (1 - a).sqrt() * eps, atol=1e-6)
        want = {"epsilon": eps, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0, "sample": x0}[kind]
        assert torch.allclose(diffusion_target(sched, x0, eps, t), want, atol=1e-6)
    assert config.latent_size == 8


def test_sampling_equals_a_hand_written_ddim_loop_with_guidance():
    torch.manual_seed(0)
    gen = LatentDiffusionGenerator(GeneratorConfig(**TINY)).eval()
    cond = torch.randn(2, 16, 64)
    steps, w = 3, 2.5
    got = gen.sample(cond, num_inference_steps=steps, guidance_scale=w, seed=7, return_latents=True)
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
                          clip_sample=False, timestep_spacing="trailing", set_alpha_to_one=True)
    sched.set_timesteps(steps)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(7))
    null = gen.encode_prompt(["", ""])
    with torch.no_grad():
        for t in sched.timesteps:
            u = gen.unet(x, t, encoder_hidden_states=null).sample
            c = gen.unet(x, t, encoder_hidden_states=cond).sample
            x = sched.step(u + w * (c - u), t, x).prev_sample
    assert torch.allclose(got, x, atol=1e-5)


def test_diffusion_loss_trains_the_unet_only_through_its_arguments():
    torch.manual_seed(0)
    gen = LatentDiffusionGenerator(GeneratorConfig(**TINY))
    sched = make_train_scheduler(gen.config)
    lat, cond = torch.randn(4, 4, 8, 8), torch.randn(4, 16, 64, requires_grad=True)
    loss = diffusion_loss(gen.unet, sched, lat, cond, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.dim() == 0 and cond.grad is not None and cond.grad.abs().sum() > 0  # gradients reach the conditioning
    again = diffusion_loss(gen.unet, sched, lat, cond, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loss.detach(), again.detach())  # the generator fixes noise and timesteps


# ----------------------------------------------------------------------------- bad input


def test_bad_conditioning_and_scheduler_settings_are_named():
    torch.manual_seed(0)
    gen = LatentDiffusionGenerator(GeneratorConfig(**TINY))
    with pytest.raises(ValueError, match=r"\(B, L, D_cond\) = \(B >= 1, 16, 64\).*\(2, 16, 32\)"):
        gen.sample(torch.randn(2, 16, 32))
    with pytest.raises(ValueError, match=r"16, 64.*\(2, 8, 64\)"):
        gen.sample(torch.randn(2, 8, 64))
    with pytest.raises(ValueError, match="num_inference_steps must be in"):
        gen.sample(torch.randn(1, 16, 64), num_inference_steps=2000)
    with pytest.raises(ValueError, match="guidance_scale"):
        gen.sample(torch.randn(1, 16, 64), guidance_scale=-1.0)
    with pytest.raises(ValueError, match="scheduler must be one of"):
        gen.sample(torch.randn(1, 16, 64), scheduler="euler")
    with pytest.raises(ValueError, match="prediction_type must be one of"):
        GeneratorConfig(prediction_type="noise")
    with pytest.raises(ValueError, match="beta_schedule must be one of"):
        GeneratorConfig(beta_schedule="cosine")
    with pytest.raises(ValueError, match="kind must be one of"):
        make_sampler(GeneratorConfig(), kind="euler")
    with pytest.raises(ValueError, match="timesteps must lie in"):
        diffusion_target(make_train_scheduler(GeneratorConfig()), torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8), torch.tensor([1000]))


def test_judge_inputs_and_captions_are_checked():
    judge = ShapesJudge(JudgeConfig(channels=8, hidden=16))
    assert caption_labels(["a large yellow cross in the bottom right"]).tolist() == [[4, 3, 1, 3]]
    with pytest.raises(ValueError, match="one object"):
        caption_labels(["a small red circle in the top left and a large blue star in the top right"])
    with pytest.raises(ValueError, match="2 images but 1"):
        judge_images(judge, torch.rand(2, 3, 32, 32), ["a small red circle in the top left"])
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\)"):
        judge(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match="unknown weights"):
        pretrain.weights_path("chapter99")
    with pytest.raises(ValueError, match="no weights file"):
        load_chapter9_generator("/no/such/file.safetensors")
    with pytest.raises(TypeError, match="path must be"):
        load_judge(3)
