"""Fuzz specs of chapter 9: the generator part (the latent diffusion generator and its judge) and the output side (mmllm_course.output)."""

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

    specs = {
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
    specs.update(_output_specs(fuzz))
    specs.update(_pipeline_specs(fuzz, generator, judge))
    return specs


def _tiny_lm():
    from mmllm_course.language import CausalLMConfig, course_lm_tokenizer, make_causal_lm

    tok = course_lm_tokenizer()
    return make_causal_lm(CausalLMConfig(dim=32, depth=1, num_heads=2, num_kv_heads=1, mlp_dim=64), tok, seed=0), tok


def _output_specs(fuzz):
    """Specs of mmllm_course.output and of language.add_special_tokens_to_lm (chapter 9 moved it there)."""
    from mmllm_course.language import add_special_tokens_to_lm
    from mmllm_course.output import (
        OutputProjector,
        OutputProjectorConfig,
        add_signal_tokens,
        conditioning_l2_loss,
        signal_hidden_states,
        signal_token_labels,
        signal_token_names,
        signal_token_nll,
    )

    Spec, Call, _rand, _fs = fuzz.Spec, fuzz.Call, fuzz._rand, fuzz._fs
    names = ["[IMG0]", "[IMG1]"]

    def ids() -> torch.Tensor:
        return torch.tensor([[2, 10, 40, 41, 1], [2, 40, 41, 1, 0]])

    def projector() -> OutputProjector:
        torch.manual_seed(0)
        return OutputProjector(OutputProjectorConfig(lm_dim=8, cond_dim=6, num_queries=3, width=16, heads=2, layers=1)).eval()

    def logits_labels():
        labels = torch.full((2, 5), -100)
        labels[:, 2:4] = torch.tensor([40, 41])
        return _rand(2, 5, 50), labels

    return {
        "add_special_tokens_to_lm": Spec(
            lambda: [Call(add_special_tokens_to_lm, (*_tiny_lm(), names))],
            lambda: [("duplicate tokens", lambda: add_special_tokens_to_lm(*_tiny_lm(), ["[A]", "[A]"])),
                     ("a blank token", lambda: add_special_tokens_to_lm(*_tiny_lm(), [" "])),
                     ("no tokens", lambda: add_special_tokens_to_lm(*_tiny_lm(), [])),
                     ("a single str", lambda: add_special_tokens_to_lm(*_tiny_lm(), "[IMG0]")),
                     ("an int among the tokens", lambda: add_special_tokens_to_lm(*_tiny_lm(), ["[A]", 3]))]),
        "add_signal_tokens": Spec(
            lambda: [Call(add_signal_tokens, (*_tiny_lm(), names))],
            lambda: [("a single str", lambda: add_signal_tokens(*_tiny_lm(), "[IMG0]")),
                     ("a tokenizer that is a dict", lambda: add_signal_tokens(_tiny_lm()[0], {"a": 1}, names)),
                     ("a module without embeddings", lambda: add_signal_tokens(torch.nn.Linear(2, 2), _tiny_lm()[1], names))]),
        "signal_token_names": Spec(
            lambda: [Call(signal_token_names, ("IMG", 4)), Call(signal_token_names, ("3D",), dict(count=2))],
            lambda: [("a bracket in the prefix", lambda: signal_token_names("IMG]")),
                     ("an empty prefix", lambda: signal_token_names("")),
                     ("a number as prefix", lambda: signal_token_names(3))]),
        "signal_token_labels": Spec(
            lambda: [Call(signal_token_labels, (ids(), [40, 41]), dict(keep_ids=[1]))],
            lambda: [("no signal ids", lambda: signal_token_labels(ids(), [])),
                     ("a negative id", lambda: signal_token_labels(ids(), [-3])),
                     ("duplicate ids", lambda: signal_token_labels(ids(), [40, 40])),
                     ("float ids", lambda: signal_token_labels(ids(), [40.0])),
                     ("a 2-d id tensor", lambda: signal_token_labels(ids(), torch.tensor([[40, 41]])))]),
        "signal_hidden_states": Spec(
            lambda: [Call(signal_hidden_states, (_rand(2, 5, 8), ids(), [40, 41]))],
            lambda: [("a row without the signal tokens", lambda: signal_hidden_states(_rand(2, 5, 8), torch.tensor(
                         [[2, 10, 40, 41, 1], [2, 3, 4, 1, 0]]), [40, 41])),
                     ("a signal token twice", lambda: signal_hidden_states(_rand(2, 5, 8), torch.tensor(
                         [[2, 40, 40, 41, 1], [2, 40, 41, 1, 0]]), [40, 41])),
                     ("hidden of another length", lambda: signal_hidden_states(_rand(2, 4, 8), ids(), [40, 41]))]),
        "OutputProjectorConfig": Spec(
            lambda: [Call(OutputProjectorConfig, (8, 6, 3), dict(width=16, heads=2, layers=1, dropout=0.1), zero_ok=_fs())],
            lambda: [("width not divisible by heads", lambda: OutputProjectorConfig(8, 6, 3, width=30, heads=4)),
                     ("dropout of 1", lambda: OutputProjectorConfig(8, 6, 3, dropout=1.0)),
                     ("no queries", lambda: OutputProjectorConfig(8, 6, 0))]),
        "OutputProjector": Spec(
            lambda: [Call(OutputProjector, (OutputProjectorConfig(8, 6, 3, width=16, heads=2, layers=1),)),
                     Call(projector(), (_rand(2, 4, 8),))],
            lambda: [("hidden of another width", lambda: projector()(_rand(2, 4, 7))),
                     ("no signal tokens", lambda: projector()(_rand(2, 0, 8))),
                     ("a dict as config", lambda: OutputProjector({"lm_dim": 8}))]),
        "conditioning_l2_loss": Spec(
            lambda: [Call(conditioning_l2_loss, (_rand(2, 3, 6), _rand(2, 3, 6)))],
            lambda: [("shapes differ", lambda: conditioning_l2_loss(_rand(2, 3, 6), _rand(2, 4, 6))),
                     ("dtypes differ", lambda: conditioning_l2_loss(_rand(2, 3, 6), _rand(2, 3, 6).double()))]),
        "signal_token_nll": Spec(
            lambda: [Call(signal_token_nll, logits_labels())],
            lambda: [("no label kept", lambda: signal_token_nll(_rand(2, 5, 50), torch.full((2, 5), -100))),
                     ("a label beyond the vocabulary", lambda: signal_token_nll(_rand(2, 5, 50), torch.full((2, 5), 60))),
                     ("labels of another length", lambda: signal_token_nll(_rand(2, 5, 50), torch.zeros(2, 4, dtype=torch.long)))]),
    }


def _text(width: int):
    from mmllm_course.encoders import TextTransformer, TextTransformerConfig

    return TextTransformer(TextTransformerConfig(vocab_size=512, context_length=16, dim=width))


def _pipeline_specs(fuzz, generator, judge):
    """Specs of the chapter-9 pipeline and recipe, on a tiny LM and the tiny generator above (untrained: no image is drawn)."""
    import dataclasses

    from mmllm_course.output import (
        CHAPTER9,
        Chapter9Recipe,
        ImageGeneratingLM,
        ImageGeneration,
        draw_request,
        evaluate_output_side,
        held_out_requests,
        train_output_side,
    )

    Spec, Call, _fs = fuzz.Spec, fuzz.Call, fuzz._fs
    prompts = ["draw a small red circle in the top left", "paint a large blue star in the top right"]
    tiny = dataclasses.replace(CHAPTER9, train_size=40, row_steps=2, steps=2, batch_size=8, denoise_batch=2, text_batch=4,
                               warmup_steps=1, eval_requests=2, sample_steps=1)

    def model() -> ImageGeneratingLM:
        torch.manual_seed(0)
        lm, tok = _tiny_lm()
        return ImageGeneratingLM(lm, tok, generator(), num_signal_tokens=2)

    def batch():
        m = model()
        ids, mask, _ = m.request_batch(prompts)
        return m, ids, mask

    return {
        "REQUEST_TEMPLATES": fuzz.CONSTANT,
        "HELD_OUT_TEMPLATES": fuzz.CONSTANT,
        "CHAPTER9": fuzz.CONSTANT,
        "CHAPTER9_BARS": fuzz.CONSTANT,
        "draw_request": Spec(
            lambda: [Call(draw_request, ("a small red circle in the top left",), dict(template="draw {}"))],
            lambda: [("an empty caption", lambda: draw_request(" ")),
                     ("a template without {}", lambda: draw_request("a red circle", "draw")),
                     ("a template with two {}", lambda: draw_request("a red circle", "{} and {}")),
                     ("a number as caption", lambda: draw_request(3))]),
        "ImageGeneration": Spec(lambda: [Call(ImageGeneration, ("draw it", "", None, "no image"))], mutate=False),
        "ImageGeneratingLM": Spec(
            lambda: [Call(ImageGeneratingLM, (*_tiny_lm(), generator()), dict(num_signal_tokens=2)),
                     Call(model(), (batch()[1], batch()[2])),
                     Call(model().lm_forward, (batch()[1], batch()[2])),
                     Call(model().generate_images, (prompts,), dict(num_inference_steps=1, guidance_scale=2.0, seed=0),
                          zero_ok=_fs("seed")),
                     Call(model().generate_image, (prompts[0],), dict(num_inference_steps=1)),
                     Call(model().emit, (prompts,), dict(max_new_tokens=2)),
                     Call(model().signal_hidden, (prompts,)),
                     Call(model().conditioning, (prompts,)),
                     Call(model().request_batch, (prompts,))],
            lambda: [("a single str as prompts", lambda: model().generate_images(prompts[0])),
                     ("a list as one prompt", lambda: model().generate_image(prompts)),
                     ("a prompt beyond the context", lambda: model().generate_image("draw " + "a small red circle " * 40)),
                     ("rows without the signal tokens", lambda: model().lm_forward(torch.tensor([[2, 5, 6, 7]]))),
                     ("ids beyond the vocabulary", lambda: model().lm_forward(torch.tensor([[2, 5, 10_000]]))),
                     ("a projector of the wrong width", lambda: ImageGeneratingLM(*_tiny_lm(), generator(), projector=_projector(33))),
                     ("a module as generator", lambda: ImageGeneratingLM(*_tiny_lm(), torch.nn.Linear(2, 2))),
                     ("more sampling steps than the schedule", lambda: model().generator.sample(torch.zeros(1, 16, 64),
                                                                                                   num_inference_steps=51))]),
        "Chapter9Recipe": Spec(
            lambda: [Call(Chapter9Recipe, kwargs=dict(row_steps=5, steps=5, batch_size=8, denoise_batch=4, lr=1e-3, row_lr=1e-2,
                                                      weight_l2=0.5, data_seed=3), zero_ok=_fs("data_seed"))],
            lambda: [("denoise batch above the batch", lambda: Chapter9Recipe(batch_size=8, denoise_batch=16)),
                     ("guidance above 50", lambda: Chapter9Recipe(guidance_scale=60.0)),
                     ("a negative loss weight", lambda: Chapter9Recipe(weight_nll=-1.0))]),
        "held_out_requests": Spec(lambda: [Call(held_out_requests, (4,), dict(seed=3), zero_ok=_fs("seed"))]),
        "train_output_side": Spec(
            lambda: [Call(train_output_side, (tiny, 0), dict(model=model()), zero_ok=_fs("seed"))],
            lambda: [("unknown stage", lambda: train_output_side(tiny, 0, model=model(), stages=("lm",))),
                     ("a str as stages", lambda: train_output_side(tiny, 0, model=model(), stages="rows"))]),
        "evaluate_output_side": Spec(
            lambda: [Call(evaluate_output_side, (model(), judge(), tiny), dict(n=2, baselines=True))],
            lambda: [("a module as judge", lambda: evaluate_output_side(model(), torch.nn.Linear(2, 2), tiny, n=2))]),
    }


def _projector(width: int):
    from mmllm_course.output import OutputProjectorConfig

    return OutputProjectorConfig(lm_dim=32, cond_dim=width, num_queries=16)
