"""Fuzz specs of chapter 9's generator part (the latent diffusion generator and its judge)."""

from __future__ import annotations

import functools

import torch


def specs(fuzz):
    """fuzz is tests/test_api_fuzz.py itself (Spec, Call, _rand, _fs, CONSTANT...)."""
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
        sampling_seconds_per_image,
    )

    Spec, Call, _rand, _fs = fuzz.Spec, fuzz.Call, fuzz._rand, fuzz._fs
    tiny = dict(ae_channels=(8, 8, 8), ae_norm_groups=4, unet_channels=(16, 16), unet_heads=2, unet_norm_groups=4,
                num_train_timesteps=50)

    @functools.lru_cache(maxsize=1)
    def generator() -> LatentDiffusionGenerator:
        torch.manual_seed(0)
        return LatentDiffusionGenerator(GeneratorConfig(**tiny)).eval()

    @functools.lru_cache(maxsize=1)
    def judge() -> ShapesJudge:
        torch.manual_seed(0)
        return ShapesJudge(JudgeConfig(channels=8, hidden=16)).eval()

    def cond(b: int = 2) -> torch.Tensor:
        return _rand(b, 16, 64)

    captions = ["a small red circle in the top left", "a large blue star in the bottom right"]

    return {
        "PREDICTION_TYPES": fuzz.CONSTANT,
        "GeneratorConfig": Spec(
            lambda: [Call(GeneratorConfig, kwargs=dict(latent_channels=4, cond_dim=64, cond_length=16, num_train_timesteps=100,
                                                       latent_scale=0.5, ae_channels=(16, 32, 64), unet_channels=(32, 64)))],
            lambda: [("prediction_type", lambda: GeneratorConfig(prediction_type="noise")),
                     ("beta_schedule", lambda: GeneratorConfig(beta_schedule="cosine")),
                     ("channels not divisible by groups", lambda: GeneratorConfig(ae_channels=(12, 32, 64))),
                     ("channel of 0", lambda: GeneratorConfig(unet_channels=(0, 64))),
                     ("image not divisible", lambda: GeneratorConfig(image_size=36, ae_channels=(8, 8, 8, 8), ae_norm_groups=4))]),
        "LatentDiffusionGenerator": Spec(
            lambda: [Call(LatentDiffusionGenerator, (GeneratorConfig(**tiny),)),
                     Call(generator().sample, (cond(),), dict(num_inference_steps=2, guidance_scale=2.0, seed=0, eta=0.5),
                          zero_ok=_fs("seed"), fixed=_fs("scheduler")),
                     Call(generator().encode_prompt, (captions,)),
                     Call(generator().decode_latents, (_rand(2, 4, 8, 8),)),
                     Call(generator().encode_images, (_rand(2, 3, 32, 32),))],
            lambda: [("conditioning of the wrong width", lambda: generator().sample(_rand(2, 16, 32), num_inference_steps=1)),
                     ("conditioning of the wrong length", lambda: generator().sample(_rand(2, 9, 64), num_inference_steps=1)),
                     ("NaN conditioning", lambda: generator().sample(torch.full((1, 16, 64), float("nan")), num_inference_steps=1)),
                     ("more steps than the schedule", lambda: generator().sample(cond(), num_inference_steps=51)),
                     ("unknown scheduler", lambda: generator().sample(cond(), num_inference_steps=1, scheduler="euler")),
                     ("eta above 1", lambda: generator().sample(cond(), num_inference_steps=1, eta=1.5)),
                     ("a caption too long", lambda: generator().encode_prompt([" ".join(["red"] * 20)])),
                     ("a single str", lambda: generator().encode_prompt("a small red circle in the top left")),
                     ("images of another size", lambda: generator().encode_images(_rand(2, 3, 16, 16))),
                     ("a text encoder of another width", lambda: LatentDiffusionGenerator(
                         GeneratorConfig(**tiny), text_encoder=_text(32))),
                     ("a text encoder that is no TextTransformer", lambda: LatentDiffusionGenerator(
                         GeneratorConfig(**tiny), text_encoder=torch.nn.Linear(2, 2)))]),
        "diffusion_loss": Spec(
            lambda: [Call(diffusion_loss, (generator().unet, make_train_scheduler(generator().config), _rand(2, 4, 8, 8), cond()),
                          dict(generator=torch.Generator().manual_seed(0)))],
            lambda: [("batch mismatch", lambda: diffusion_loss(generator().unet, make_train_scheduler(generator().config),
                                                                _rand(2, 4, 8, 8), cond(3))),
                     ("wrong latent channels", lambda: diffusion_loss(generator().unet, make_train_scheduler(generator().config),
                                                                      _rand(2, 3, 8, 8), cond())),
                     ("a sampler as the UNet", lambda: diffusion_loss(make_sampler(generator().config), make_train_scheduler(
                         generator().config), _rand(2, 4, 8, 8), cond()))]),
        "diffusion_target": Spec(
            lambda: [Call(diffusion_target, (make_train_scheduler(generator().config), _rand(2, 4, 8, 8), _rand(2, 4, 8, 8),
                                             torch.tensor([3, 40])))],
            lambda: [("timestep out of range", lambda: diffusion_target(make_train_scheduler(generator().config), _rand(2, 4, 8, 8),
                                                                         _rand(2, 4, 8, 8), torch.tensor([3, 50]))),
                     ("noise of another shape", lambda: diffusion_target(make_train_scheduler(generator().config), _rand(2, 4, 8, 8),
                                                                          _rand(2, 4, 4, 4), torch.tensor([3, 4]))),
                     ("one timestep for two latents", lambda: diffusion_target(make_train_scheduler(generator().config),
                                                                                _rand(2, 4, 8, 8), _rand(2, 4, 8, 8), torch.tensor([3])))]),
        "make_train_scheduler": Spec(lambda: [Call(make_train_scheduler, (GeneratorConfig(),))]),
        "make_sampler": Spec(lambda: [Call(make_sampler, (GeneratorConfig(),), dict(kind="ddim"))],
                             lambda: [("unknown kind", lambda: make_sampler(GeneratorConfig(), kind="euler"))]),
        "JudgeConfig": Spec(
            lambda: [Call(JudgeConfig, kwargs=dict(channels=8, hidden=16, steps=10, batch_size=8, lr=1e-3, weight_decay=0.1,
                                                   train_size=30, noise_levels=(0.0, 0.04), data_seed=3),
                          zero_ok=_fs("steps", "data_seed"))],
            lambda: [("image size not a multiple of 8", lambda: JudgeConfig(image_size=20)),
                     ("no noise levels", lambda: JudgeConfig(noise_levels=())),
                     ("noise above 1", lambda: JudgeConfig(noise_levels=(2.0,)))]),
        "ShapesJudge": Spec(
            lambda: [Call(ShapesJudge, (JudgeConfig(channels=8, hidden=16),)),
                     Call(judge(), (_rand(2, 3, 32, 32),)),
                     Call(judge().predict, (_rand(3, 3, 32, 32),), dict(batch_size=2))],
            lambda: [("images of another size", lambda: judge()(_rand(2, 3, 16, 16))),
                     ("grey images", lambda: judge()(_rand(2, 1, 32, 32)))]),
        "caption_labels": Spec(
            lambda: [Call(caption_labels, (captions,))],
            lambda: [("two objects", lambda: caption_labels(["a small red circle in the top left and a large blue star in the top right"])),
                     ("unknown colour", lambda: caption_labels(["a small pink circle in the top left"])),
                     ("a single str", lambda: caption_labels("a small red circle in the top left"))]),
        "judge_images": Spec(
            lambda: [Call(judge_images, (judge(), _rand(2, 3, 32, 32), captions)),
                     Call(judge_images, (judge(), _rand(2, 3, 32, 32), torch.tensor([[0, 1, 0, 2], [4, 3, 1, 0]])))],
            lambda: [("fewer captions than images", lambda: judge_images(judge(), _rand(3, 3, 32, 32), captions)),
                     ("label out of range", lambda: judge_images(judge(), _rand(1, 3, 32, 32), torch.tensor([[5, 0, 0, 0]]))),
                     ("labels of 3 columns", lambda: judge_images(judge(), _rand(1, 3, 32, 32), torch.tensor([[0, 0, 0]])))]),
        "evaluate_generator": Spec(
            lambda: [Call(evaluate_generator, (generator(), judge()), dict(n=2, num_inference_steps=1, guidance_scale=2.0, seed=0,
                                                                          batch_size=2), zero_ok=_fs("seed"))]),
        "sampling_seconds_per_image": Spec(
            lambda: [Call(sampling_seconds_per_image, (generator(),), dict(n=2, num_inference_steps=1, guidance_scale=2.0, repeats=1))]),
        "load_chapter9_generator": Spec(
            lambda: [Call(load_chapter9_generator)],
            lambda: [("a number as path", lambda: load_chapter9_generator(3)),
                     ("a missing file", lambda: load_chapter9_generator("/no/such/file.safetensors"))]),
        "load_judge": Spec(
            lambda: [Call(load_judge)],
            lambda: [("a number as path", lambda: load_judge(3)),
                     ("a missing file", lambda: load_judge("/no/such/file.safetensors"))]),
    }


def _text(width: int):
    from mmllm_course.encoders import TextTransformer, TextTransformerConfig

    return TextTransformer(TextTransformerConfig(vocab_size=512, context_length=16, dim=width))
