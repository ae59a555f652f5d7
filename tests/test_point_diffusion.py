"""The capstone's point-cloud diffusion decoder: its math equals diffusers', the shipped weights generate the
described solid at the described size, Chamfer separates the classes, random conditioning stays at chance."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from mmllm_course.generators import point_diffusion as pd
from mmllm_course.generators import pretrain_points
from mmllm_course.generators.point_diffusion import (
    AttributeConditioner,
    PointDecoderConfig,
    PointDenoiser,
    PointDiffusionDecoder,
    chamfer_distance,
    ddim_step,
    add_noise_and_velocity,
    make_attributed_clouds,
    make_point_schedulers,
    pairwise_chamfer,
)

TINY = PointDecoderConfig(num_points=32, dim=16, depth=1, hidden_dim=32, num_heads=2, cond_dim=8, sample_steps=5)


def _tiny_decoder(config: PointDecoderConfig = TINY) -> PointDiffusionDecoder:
    torch.manual_seed(0)
    return PointDiffusionDecoder(config)


# ------------------------------------------------------------------------------ the math, against diffusers


def test_training_targets_equal_diffusers_add_noise_and_get_velocity():
    ddpm, _ = make_point_schedulers(PointDecoderConfig())
    assert ddpm.config.prediction_type == "v_prediction" and ddpm.config.beta_schedule == "squaredcos_cap_v2"
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(6, 40, 3, generator=g), torch.randn(6, 40, 3, generator=g)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    x_t, v = add_noise_and_velocity(x0, noise, t, ddpm.alphas_cumprod)
    torch.testing.assert_close(x_t, ddpm.add_noise(x0, noise, t), rtol=0, atol=1e-6)
    torch.testing.assert_close(v, ddpm.get_velocity(x0, noise, t), rtol=0, atol=1e-6)
    # v carries x0 at the noisy end and eps at the clean end
    assert torch.allclose(v[-1], -x0[-1], atol=1e-3) and torch.allclose(v[0], noise[0], atol=5e-2)


def test_one_training_step_is_the_mse_to_diffusers_velocity():
    decoder = _tiny_decoder()
    clouds = make_attributed_clouds(4, seed=0, num_points=32)
    cond = decoder.condition(clouds.solid, clouds.size)
    loss = decoder.loss(clouds.points, cond, cond_dropout=0.0, generator=torch.Generator().manual_seed(3))
    # the draws loss() makes, in its order: noise, timesteps, the dropout coin
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(clouds.points.shape, generator=g)
    t = torch.randint(0, 1000, (4,), generator=g)
    ddpm = decoder.train_scheduler
    expected = F.mse_loss(decoder.denoiser(ddpm.add_noise(clouds.points, noise, t), t, cond), ddpm.get_velocity(clouds.points, noise, t))
    torch.testing.assert_close(loss, expected)
    loss.backward()  # gradients reach the conditioner through the cross-attention
    assert decoder.conditioner.solid.weight.grad.abs().sum() > 0


def test_ddim_step_equals_diffusers_step_at_every_sampling_timestep():
    _, ddim = make_point_schedulers(PointDecoderConfig(), steps=50)
    timesteps = [int(t) for t in ddim.timesteps]
    assert timesteps[0] == 999 and len(timesteps) == 50  # "trailing": sampling starts from pure noise
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 20, 3, generator=g)
    for i, t in enumerate(timesteps):
        v = torch.randn(3, 20, 3, generator=g)
        prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        ours = ddim_step(v, t, prev, x, ddim.alphas_cumprod)
        torch.testing.assert_close(ours, ddim.step(v, t, x).prev_sample, rtol=0, atol=1e-5)
        x = ours


def test_sampling_with_guidance_is_the_ddim_loop_written_out():
    decoder = _tiny_decoder()
    cond = decoder.condition(torch.tensor([0, 3]), torch.tensor([1, 0]))
    samples = decoder.sample(cond, steps=4, guidance_scale=2.0, generator=torch.Generator().manual_seed(5))
    _, ddim = make_point_schedulers(decoder.config, steps=4)
    x = torch.randn(2, 32, 3, generator=torch.Generator().manual_seed(5))
    ts = [int(t) for t in ddim.timesteps] + [-1]
    with torch.no_grad():
        for t, prev in zip(ts[:-1], ts[1:]):
            uncond = decoder.denoiser(x, t, decoder.null_cond.expand(2, -1, -1))
            conditional = decoder.denoiser(x, t, cond)
            x = ddim_step(uncond + 2.0 * (conditional - uncond), t, prev, x, ddim.alphas_cumprod)
    torch.testing.assert_close(samples, x, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------ the network


def test_denoiser_is_order_equivariant_and_reads_its_conditioning():
    decoder = _tiny_decoder()
    with torch.no_grad():
        for p in decoder.parameters():  # fresh output layers are small; make every path count
            p.add_(0.1 * torch.randn_like(p))
    net = decoder.denoiser
    points = torch.randn(2, 32, 3)
    cond = decoder.condition(torch.tensor([0, 1]), torch.tensor([0, 1]))
    out = net(points, torch.tensor([10, 700]), cond)
    assert out.shape == (2, 32, 3)
    perm = torch.randperm(32)
    torch.testing.assert_close(net(points[:, perm], torch.tensor([10, 700]), cond), out[:, perm], rtol=0, atol=1e-5)
    other = decoder.condition(torch.tensor([0, 1]), torch.tensor([1, 0]))  # the same solids, the other sizes
    assert (net(points, torch.tensor([10, 700]), other) - out).abs().max() > 1e-3
    _, weights = net(points, torch.tensor([10, 700]), cond, return_weights=True)
    assert len(weights) == 1 and weights[0].shape == (2, 2, 1, 2)  # (B, H, 1, L): the cloud's summary reads the L tokens
    torch.testing.assert_close(weights[0].sum(dim=-1), torch.ones(2, 2, 1))


def test_conditioner_gives_one_token_for_the_solid_and_one_for_the_size():
    conditioner = AttributeConditioner(TINY)
    a, b, c = conditioner(torch.tensor([2, 2, 4]), torch.tensor([0, 1, 0]))
    assert a.shape == (2, 8)
    torch.testing.assert_close(a[0], b[0])  # same solid token
    assert not torch.allclose(a[1], b[1])  # different size token
    torch.testing.assert_close(a[1], c[1])  # same size token
    assert not torch.allclose(a[0], c[0])


def test_chamfer_distance_is_zero_on_itself_symmetric_order_free_and_brute_force():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 17, 3, generator=g), torch.randn(3, 11, 3, generator=g)
    assert torch.allclose(chamfer_distance(a, a), torch.zeros(3))
    torch.testing.assert_close(chamfer_distance(a, b), chamfer_distance(b, a))
    torch.testing.assert_close(chamfer_distance(a[:, torch.randperm(17)], b), chamfer_distance(a, b))
    brute = []
    for i in range(3):
        d = ((a[i][:, None, :] - b[i][None, :, :]) ** 2).sum(-1)
        brute.append(d.min(dim=1).values.mean() + d.min(dim=0).values.mean())
    torch.testing.assert_close(chamfer_distance(a, b), torch.stack(brute))
    table = pairwise_chamfer(a, torch.randn(4, 17, 3, generator=g), chunk=2)
    assert table.shape == (3, 4)
    torch.testing.assert_close(pairwise_chamfer(a, a)[torch.arange(3), torch.arange(3)], torch.zeros(3), rtol=0, atol=1e-6)


def test_attributed_clouds_are_balanced_upright_and_sized():
    clouds = make_attributed_clouds(200, seed=4)
    counts = torch.bincount(clouds.solid * 2 + clouds.size, minlength=10)
    assert counts.tolist() == [20] * 10
    radius = clouds.points.norm(dim=-1).amax(dim=1)
    small, large = radius[clouds.size == 0], radius[clouds.size == 1]
    assert small.max() < 0.7 and large.min() > 0.75  # SIZE_SCALE_RANGE, plus jitter
    # canonical pose: a cylinder's axis is z, so its z extent differs from its x extent less than under rotation
    again = make_attributed_clouds(200, seed=4)
    assert torch.equal(clouds.points, again.points) and clouds.names[0].split()[0] in ("small", "large")


# ------------------------------------------------------------------------------ the shipped weights


@pytest.fixture(scope="module")
def shipped():
    decoder, judge = pd.load_point_decoder(), pd.load_point_judge()
    metrics = pd.evaluate_point_decoder(decoder, judge, seed=0, per_pair=5, steps=25)
    return decoder, judge, metrics


def test_shipped_judge_is_accurate_on_real_clouds(shipped):
    _, judge, _ = shipped
    assert not any(p.requires_grad for p in judge.parameters())
    held = make_attributed_clouds(300, seed=7)  # neither its calibration (100) nor the decoder's data
    assert (judge.solids(held.points) == held.solid).float().mean() >= 0.95
    assert (judge.sizes(held.points, held.solid) == held.size).float().mean() >= 0.98
    assert judge.pretrained_metrics["classifier_held_out"] >= 0.99  # upright held-out clouds (seed 101)
    assert (judge.solids(held.points) == held.solid).float().mean() >= 0.99  # chapter 8's rotation-trained one read 97%


def test_shipped_decoder_generates_the_described_solid_and_size(shipped):
    decoder, _, m = shipped
    assert not decoder.training and not any(p.requires_grad for p in decoder.parameters())
    assert m["judge_real"] >= 0.95 and m["size_judge_real"] >= 0.98
    assert m["class_accuracy"] >= 0.95, m
    assert m["size_accuracy"] >= 0.90, m
    assert m["chamfer_ratio"] <= 1 / 3, m
    assert pd.point_decoder_failures(m) == []


def test_shipped_decoder_driven_by_random_conditioning_is_at_chance(shipped):
    _, _, m = shipped
    assert m["random_class_accuracy"] <= 0.45, m  # chance is 20%
    assert m["random_size_accuracy"] <= 0.80, m  # chance is 50%
    assert m["random_chamfer_ratio"] > 0.6, m  # no closer to the described solid than to the others


def test_shipped_decoder_size_is_more_than_a_class_label(shipped):
    decoder, judge, _ = shipped
    solid = torch.tensor([2] * 6)  # cylinders
    small = decoder.generate(solid, torch.zeros(6, dtype=torch.long), steps=25, generator=torch.Generator().manual_seed(1))
    large = decoder.generate(solid, torch.ones(6, dtype=torch.long), steps=25, generator=torch.Generator().manual_seed(1))  # the same noise
    # the same starting noise, only the size token differs: every large cylinder comes out bigger than every small one
    assert pd.cloud_radius(large).min() > pd.cloud_radius(small).max()
    assert (judge.sizes(small, solid) == 0).all() and (judge.sizes(large, solid) == 1).all()


def test_stored_metrics_are_the_recipes_and_timing_is_measured(shipped):
    decoder, _, _ = shipped
    stored = decoder.pretrained_metrics
    assert pd.point_decoder_failures(stored) == []
    assert stored["random_class_accuracy"] < 0.5
    seconds = pd.point_sampling_seconds(decoder, count=4, steps=5)
    assert 0 < seconds < 5


def test_judge_recipe_trains_chapter8s_classifier_on_upright_clouds():
    recipe = dataclasses.replace(pd.CHAPTER11_JUDGE, steps=2, train_size=30, warmup_steps=1)
    judge = pd.train_point_judge(seed=0, recipe=recipe)
    shipped = pd.load_point_judge()
    assert judge.state_dict().keys() == shipped.state_dict().keys() and not judge.training
    assert not any(p.requires_grad for p in judge.parameters())
    with pytest.raises(TypeError, match="PointJudgeRecipe"):
        pd.train_point_judge(0, recipe=pd.CHAPTER11_DECODER)


def test_make_script_writes_the_same_layout_in_quick_mode(tmp_path):
    pretrain_points.main(["--quick", "--out", str(tmp_path)])
    quick_decoder = pd.load_point_decoder(tmp_path / pd.DECODER_FILE)
    quick_judge = pd.load_point_judge(tmp_path / pd.JUDGE_FILE)
    for quick, shipped_model in ((quick_decoder, pd.load_point_decoder()), (quick_judge, pd.load_point_judge())):
        a, b = quick.state_dict(), shipped_model.state_dict()
        assert a.keys() == b.keys()
        assert all(a[k].shape == b[k].shape and a[k].dtype == b[k].dtype for k in a)
        assert not all(torch.equal(a[k], b[k]) for k in a)
    shipped_config = pd.load_point_decoder().config
    assert dataclasses.replace(quick_decoder.config, sample_steps=shipped_config.sample_steps) == shipped_config
    assert quick_decoder.pretrained_metrics["class_accuracy"] < 0.95  # 5 steps learn nothing useful


# ------------------------------------------------------------------------------ bad input


def test_bad_input_is_named():
    decoder = _tiny_decoder()
    cond = decoder.condition(torch.tensor([0]), torch.tensor([1]))
    with pytest.raises(ValueError, match="width C=8"):
        decoder.sample(torch.randn(1, 2, 7))
    with pytest.raises(ValueError, match="L=2 conditioning tokens"):
        decoder.sample(torch.randn(1, 3, 8))
    with pytest.raises(ValueError, match=r"\(B, 2, 8\)"):
        decoder.sample(torch.randn(2, 8))
    with pytest.raises(ValueError, match="NaN"):
        decoder.sample(torch.full((1, 2, 8), float("nan")))
    with pytest.raises(ValueError, match=r"\(B, P, 3\)"):
        decoder.loss(torch.randn(1, 32, 2), cond)
    with pytest.raises(ValueError, match="one sequence per cloud"):
        decoder.loss(torch.randn(3, 32, 3), cond)
    with pytest.raises(ValueError, match="timesteps must lie"):
        decoder.denoiser(torch.randn(1, 32, 3), torch.tensor([1000]), cond)
    with pytest.raises(ValueError, match="solid must be indices in"):
        decoder.condition(torch.tensor([5]), torch.tensor([0]))
    with pytest.raises(ValueError, match="same shape"):
        decoder.condition(torch.tensor([1, 2]), torch.tensor([0]))
    with pytest.raises(ValueError, match="beta_schedule"):
        PointDecoderConfig(beta_schedule="cosine")
    with pytest.raises(ValueError, match="prediction_type"):
        PointDecoderConfig(prediction_type="velocity")
    with pytest.raises(ValueError, match="sample_steps=2000"):
        PointDecoderConfig(sample_steps=2000)
    with pytest.raises(ValueError, match="steps=1001"):
        decoder.sample(cond, steps=1001)
    with pytest.raises(ValueError, match="guidance_scale"):
        decoder.sample(cond, guidance_scale=-1.0)
    with pytest.raises(ValueError, match="prev_timestep < timestep"):
        ddim_step(torch.randn(1, 4, 3), 10, 10, torch.randn(1, 4, 3), decoder.sample_scheduler.alphas_cumprod)
    with pytest.raises(ValueError, match="same number of clouds"):
        chamfer_distance(torch.randn(2, 5, 3), torch.randn(3, 5, 3))
    with pytest.raises(ValueError, match="no weights file"):
        pd.load_point_decoder("/no/such/file.safetensors")
    with pytest.raises(ValueError, match="does not fit"):
        pd.load_point_decoder(pd.os.path.join(pd.WEIGHTS_DIR, pd.JUDGE_FILE))


def test_quick_recipe_trains_and_reports():
    recipe = dataclasses.replace(pd.CHAPTER11_DECODER, steps=3, train_size=20, num_points=32, dim=16, hidden_dim=32,
                                 cond_dim=8, warmup_steps=1)
    run = pd.train_point_decoder(seed=1, recipe=recipe)
    assert len(run.loss) == 3 and run.seconds > 0 and not run.decoder.training
    assert run.decoder.config.num_points == 32 and len(run.train) == 20
