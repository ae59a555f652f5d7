"""Fuzz specs of chapter 11: the point-cloud diffusion decoder (``generators.point_diffusion``) and the capstone's
pipeline (``mmllm_course.pipelines``)."""

from __future__ import annotations

import dataclasses


def specs(fuzz):
    import torch

    from mmllm_course.generators.point_diffusion import (
        CHAPTER11_DECODER,
        AttributeConditioner,
        AttributedClouds,
        PointDecoderConfig,
        PointDecoderRecipe,
        PointDecoderRun,
        PointDenoiser,
        PointDiffusionDecoder,
        PointJudge,
        add_noise_and_velocity,
        chamfer_distance,
        cloud_radius,
        ddim_step,
        evaluate_point_decoder,
        load_point_decoder,
        load_point_judge,
        make_attributed_clouds,
        make_point_schedulers,
        pairwise_chamfer,
        point_decoder_failures,
        point_sampling_seconds,
        random_conditioning,
        run_point_decoder,
        train_point_decoder,
    )

    Spec, Call, _rand, _fs = fuzz.Spec, fuzz.Call, fuzz._rand, fuzz._fs
    tiny = dict(num_points=16, dim=8, depth=1, hidden_dim=16, num_heads=2, cond_dim=4, sample_steps=2)

    def config() -> PointDecoderConfig:
        return PointDecoderConfig(**tiny)

    def decoder() -> PointDiffusionDecoder:
        torch.manual_seed(0)
        return PointDiffusionDecoder(config())

    def cond(b: int = 2) -> torch.Tensor:
        return _rand(b, 2, 4)

    def recipe() -> PointDecoderRecipe:
        return dataclasses.replace(CHAPTER11_DECODER, train_size=20, held_out_size=40, num_points=16, dim=8, hidden_dim=16,
                                   num_heads=2, cond_dim=4, steps=2, batch_size=4, warmup_steps=1, sample_steps=2,
                                   eval_per_pair=1, reference_per_pair=2)

    def judge() -> PointJudge:
        from mmllm_course.encoders.binding import PointClassifier
        from mmllm_course.encoders.points import PointEncoder, PointEncoderConfig

        torch.manual_seed(0)
        classifier = PointClassifier(PointEncoder(PointEncoderConfig(num_groups=4, group_size=4, dim=8, num_heads=2, mlp_dim=16)), 8, 5)
        return PointJudge(classifier).calibrate(make_attributed_clouds(20, seed=0, num_points=16))

    def alphas() -> torch.Tensor:
        return decoder().train_scheduler.alphas_cumprod

    def nan(*shape: int) -> torch.Tensor:
        return torch.full(shape, float("nan"))

    return {
        "CHAPTER11_DECODER": fuzz.CONSTANT,
        "POINT_DECODER_BARS": fuzz.CONSTANT,
        "PointDecoderConfig": Spec(
            lambda: [Call(PointDecoderConfig, kwargs=dict(tiny, time_dim=8, num_train_timesteps=100, guidance_scale=2.0,
                                                          beta_schedule="linear", prediction_type="epsilon"))],
            lambda: [("beta_schedule cosine", lambda: PointDecoderConfig(beta_schedule="cosine")),
                     ("prediction_type velocity", lambda: PointDecoderConfig(prediction_type="velocity")),
                     ("dim 10 for 4 heads", lambda: PointDecoderConfig(dim=10, num_heads=4)),
                     ("odd time_dim", lambda: PointDecoderConfig(time_dim=7)),
                     ("more sampling steps than training timesteps", lambda: PointDecoderConfig(num_train_timesteps=10, sample_steps=20))],
        ),
        "PointDecoderRecipe": Spec(lambda: [Call(recipe().decoder_config)]),
        "PointDecoderRun": Spec(lambda: [Call(PointDecoderRun, (decoder(), [1.0], 0.5, make_attributed_clouds(2, num_points=16), 0))],
                                mutate=False),
        "AttributedClouds": Spec(
            lambda: [Call(AttributedClouds, (_rand(2, 16, 3), torch.tensor([0, 1]), torch.tensor([1, 0]))),
                     Call(lambda: make_attributed_clouds(2, num_points=16).names)], mutate=False),
        "make_attributed_clouds": Spec(
            lambda: [Call(make_attributed_clouds, (6,), dict(seed=1, num_points=16, rotate=True), zero_ok=_fs("seed"))],
            lambda: [("n '2'", lambda: make_attributed_clouds("2")), ("rotate 'yes'", lambda: make_attributed_clouds(2, rotate="yes"))],
        ),
        "make_point_schedulers": Spec(
            lambda: [Call(make_point_schedulers, (config(),), dict(steps=4))],
            lambda: [("steps above the training timesteps", lambda: make_point_schedulers(config(), steps=1001)),
                     ("a dict config", lambda: make_point_schedulers({"dim": 8}))],
        ),
        "add_noise_and_velocity": Spec(
            lambda: [Call(add_noise_and_velocity, (_rand(2, 16, 3), _rand(2, 16, 3), torch.tensor([0, 999]), alphas()))],
            lambda: [("timestep 1000", lambda: add_noise_and_velocity(_rand(2, 16, 3), _rand(2, 16, 3), torch.tensor([0, 1000]), alphas())),
                     ("noise of another shape", lambda: add_noise_and_velocity(_rand(2, 16, 3), _rand(2, 8, 3), torch.tensor([0, 1]), alphas())),
                     ("3 timesteps for 2 clouds", lambda: add_noise_and_velocity(_rand(2, 16, 3), _rand(2, 16, 3), torch.tensor([0, 1, 2]),
                                                                                 alphas())),
                     ("alphas above 1", lambda: add_noise_and_velocity(_rand(2, 16, 3), _rand(2, 16, 3), torch.tensor([0, 1]),
                                                                       torch.full((10,), 2.0))),
                     ("NaN cloud", lambda: add_noise_and_velocity(nan(2, 16, 3), _rand(2, 16, 3), torch.tensor([0, 1]), alphas()))],
        ),
        "ddim_step": Spec(
            lambda: [Call(ddim_step, (_rand(2, 16, 3), 999, 979, _rand(2, 16, 3), alphas()), zero_ok=_fs("prev_timestep"),
                          negative_ok=_fs("prev_timestep")),
                     Call(ddim_step, (_rand(2, 16, 3), 19, -1, _rand(2, 16, 3), alphas()), zero_ok=_fs("timestep", "prev_timestep"),
                          negative_ok=_fs("prev_timestep"))],
            lambda: [("prev after timestep", lambda: ddim_step(_rand(2, 16, 3), 10, 20, _rand(2, 16, 3), alphas())),
                     ("timestep 1000", lambda: ddim_step(_rand(2, 16, 3), 1000, 10, _rand(2, 16, 3), alphas())),
                     ("v of another shape", lambda: ddim_step(_rand(2, 8, 3), 10, 5, _rand(2, 16, 3), alphas()))],
        ),
        "PointDenoiser": Spec(
            lambda: [Call(PointDenoiser, (config(),)),
                     Call(decoder().denoiser, (_rand(2, 16, 3), torch.tensor([0, 999]), cond())),
                     Call(decoder().denoiser, (_rand(2, 16, 3), 5, cond()), dict(return_weights=True), zero_ok=_fs("timesteps"))],
            lambda: [("cond of width 5", lambda: decoder().denoiser(_rand(2, 16, 3), 5, _rand(2, 2, 5))),
                     ("cond of 3 tokens", lambda: decoder().denoiser(_rand(2, 16, 3), 5, _rand(2, 3, 4))),
                     ("cond for 1 cloud", lambda: decoder().denoiser(_rand(2, 16, 3), 5, _rand(1, 2, 4))),
                     ("NaN cond", lambda: decoder().denoiser(_rand(2, 16, 3), 5, nan(2, 2, 4))),
                     ("timestep 1000", lambda: decoder().denoiser(_rand(2, 16, 3), 1000, cond())),
                     ("xy points", lambda: decoder().denoiser(_rand(2, 16, 2), 5, cond())),
                     ("a dict config", lambda: PointDenoiser({"dim": 8}))],
        ),
        "AttributeConditioner": Spec(
            lambda: [Call(AttributeConditioner, (config(),)),
                     Call(AttributeConditioner(config()), (torch.tensor([0, 4]), torch.tensor([1, 0])))],
            lambda: [("solid 5", lambda: AttributeConditioner(config())(torch.tensor([5]), torch.tensor([0]))),
                     ("size -1", lambda: AttributeConditioner(config())(torch.tensor([0]), torch.tensor([-1]))),
                     ("2 solids, 1 size", lambda: AttributeConditioner(config())(torch.tensor([0, 1]), torch.tensor([0]))),
                     ("float solids", lambda: AttributeConditioner(config())(torch.tensor([0.0]), torch.tensor([0]))),
                     ("cond_len 1", lambda: AttributeConditioner(PointDecoderConfig(cond_len=1)))],
        ),
        "PointDiffusionDecoder": Spec(
            lambda: [Call(PointDiffusionDecoder, (config(),)),
                     Call(decoder().condition, (torch.tensor([0, 1]), torch.tensor([1, 1]))),
                     Call(decoder().loss, (_rand(2, 16, 3), cond()), dict(cond_dropout=0.5, generator=fuzz._g()),
                          zero_ok=_fs("cond_dropout")),
                     Call(decoder().sample, (cond(),), dict(steps=2, guidance_scale=2.0, generator=fuzz._g(), num_points=8),
                          zero_ok=_fs("guidance_scale")),
                     Call(decoder().generate, (torch.tensor([0, 1]), torch.tensor([1, 1])), dict(steps=2))],
            lambda: [("cond of width 5", lambda: decoder().sample(_rand(2, 2, 5), steps=2)),
                     ("cond (B, C) without tokens", lambda: decoder().sample(_rand(2, 4), steps=2)),
                     ("cond_dropout 1.5", lambda: decoder().loss(_rand(2, 16, 3), cond(), cond_dropout=1.5)),
                     ("points for 3 clouds, cond for 2", lambda: decoder().loss(_rand(3, 16, 3), cond())),
                     ("steps 1001", lambda: decoder().sample(cond(), steps=1001)),
                     ("a seed as generator", lambda: decoder().sample(cond(), steps=2, generator=3)),
                     ("a dict config", lambda: PointDiffusionDecoder({"dim": 8}))],
        ),
        "PointJudge": Spec(
            lambda: [Call(PointJudge, (judge().classifier,), dict(num_solids=5, num_sizes=2)),
                     Call(judge().calibrate, (make_attributed_clouds(20, num_points=16),)),
                     Call(judge().solids, (_rand(2, 16, 3),), dict(batch_size=1)),
                     Call(judge().sizes, (_rand(2, 16, 3), torch.tensor([0, 4])))],
            lambda: [("calibration clouds missing pairs", lambda: judge().calibrate(make_attributed_clouds(3, num_points=16))),
                     ("a solid per cloud missing", lambda: judge().sizes(_rand(2, 16, 3), torch.tensor([0]))),
                     ("solid 5", lambda: judge().sizes(_rand(1, 16, 3), torch.tensor([5])))],
        ),
        "cloud_radius": Spec(lambda: [Call(cloud_radius, (_rand(2, 16, 3),))],
                             lambda: [("NaN cloud", lambda: cloud_radius(nan(1, 4, 3)))]),
        "chamfer_distance": Spec(
            lambda: [Call(chamfer_distance, (_rand(2, 16, 3), _rand(2, 8, 3)))],
            lambda: [("3 clouds against 2", lambda: chamfer_distance(_rand(3, 16, 3), _rand(2, 16, 3))),
                     ("xy clouds", lambda: chamfer_distance(_rand(2, 16, 2), _rand(2, 16, 2))),
                     ("float64 against float32", lambda: chamfer_distance(_rand(2, 16, 3).double(), _rand(2, 16, 3)))],
        ),
        "pairwise_chamfer": Spec(
            lambda: [Call(pairwise_chamfer, (_rand(3, 16, 3), _rand(2, 8, 3)), dict(chunk=2))],
            lambda: [("xy clouds", lambda: pairwise_chamfer(_rand(2, 16, 2), _rand(2, 16, 2))),
                     ("NaN cloud", lambda: pairwise_chamfer(nan(2, 16, 3), _rand(2, 16, 3)))],
        ),
        "random_conditioning": Spec(lambda: [Call(random_conditioning, (decoder(), 3), dict(generator=fuzz._g()))]),
        "train_point_decoder": Spec(
            lambda: [Call(train_point_decoder, (1, recipe()), zero_ok=_fs("seed"))],
            lambda: [("a dict recipe", lambda: train_point_decoder(0, {"steps": 2}))],
        ),
        "evaluate_point_decoder": Spec(
            lambda: [Call(evaluate_point_decoder, (decoder(), judge(), 0, recipe()), dict(per_pair=1, steps=2, guidance_scale=1.5),
                          zero_ok=_fs("seed"))],
            lambda: [("the judge's classifier instead of the judge", lambda: evaluate_point_decoder(decoder(), judge().classifier)),
                     ("a denoiser instead of the decoder", lambda: evaluate_point_decoder(decoder().denoiser, judge()))],
        ),
        "point_decoder_failures": Spec(
            lambda: [Call(point_decoder_failures, ({"class_accuracy": 0.9, "size_accuracy": 0.95, "chamfer_ratio": 0.5},))],
            lambda: [("metrics without chamfer_ratio", lambda: point_decoder_failures({"class_accuracy": 1.0, "size_accuracy": 1.0}))],
        ),
        "run_point_decoder": Spec(
            lambda: [Call(run_point_decoder, (0, recipe()), dict(judge=judge()), zero_ok=_fs("seed"))],
            lambda: [("a classifier as judge", lambda: run_point_decoder(0, recipe(), judge=judge().classifier))],
        ),
        "point_sampling_seconds": Spec(
            lambda: [Call(point_sampling_seconds, (decoder(),), dict(count=2, steps=2, guidance_scale=1.0))],
        ),
        "load_point_decoder": Spec(
            lambda: [Call(load_point_decoder)],
            lambda: [("a missing file", lambda: load_point_decoder("/no/such/file.safetensors")), ("a number", lambda: load_point_decoder(3))],
        ),
        "load_point_judge": Spec(
            lambda: [Call(load_point_judge)],
            lambda: [("a missing file", lambda: load_point_judge("/no/such/file.safetensors")), ("a number", lambda: load_point_judge(3))],
        ),
    } | _pipeline_specs(fuzz)


def _pipeline_specs(fuzz):
    import functools

    import torch

    from mmllm_course.encoders.audio import AudioEncoder, LogMelSpectrogram
    from mmllm_course.pipelines import (
        CHAPTER11,
        AudioTo3D,
        AudioTo3DRecipe,
        AudioTo3DResult,
        NoObjectError,
        SpokenRequests,
        build_audio_to_3d,
        capstone_failures,
        evaluate_audio_to_3d,
        make_capstone_data,
        make_spoken_requests,
        run_capstone,
        train_capstone,
    )

    Spec, Call, _rand, _fs = fuzz.Spec, fuzz.Call, fuzz._rand, fuzz._fs
    tiny = dataclasses.replace(CHAPTER11, train_size=10, reject_size=2, held_out_size=10, held_out_reject_size=2,
                               encoder_steps=1, steps=1, batch_size=4, warmup_steps=1)

    @functools.lru_cache(maxsize=1)
    def model() -> AudioTo3D:
        torch.manual_seed(0)
        return build_audio_to_3d(AudioEncoder(tiny.encoder_config()), tiny, seed=0).eval()

    @functools.lru_cache(maxsize=1)
    def clips() -> SpokenRequests:
        return make_spoken_requests(2, 1, seed=0)

    def parts() -> tuple:
        m = model()
        return (LogMelSpectrogram(tiny.log_mel_config()), m.encoder, tiny.make_bridge(64), m.lm, m.tokenizer, m.decoder)

    def judge():
        from mmllm_course.generators.point_diffusion import load_point_judge

        return load_point_judge()

    metrics = {"class_accuracy": 0.97, "size_accuracy": 0.95, "chamfer_ratio": 0.25}
    return {
        "CHAPTER11": fuzz.CONSTANT,
        "CAPSTONE_BARS": fuzz.CONSTANT,
        "AudioTo3DRecipe": Spec(
            lambda: [Call(AudioTo3DRecipe, kwargs=dict(bridge="mlp"))],
            lambda: [("bridge qformer", lambda: AudioTo3DRecipe(bridge="qformer")),
                     ("a bridge outside mlp and resampler", lambda: CHAPTER11.make_bridge(64, name="linear"))]),
        "AudioTo3D": Spec(
            lambda: [Call(AudioTo3D, parts(), dict(num_signal_tokens=2, prompt="Make the shape.", projector_width=32,
                                                  projector_heads=2, projector_layers=1)),
                     Call(model().generate, (clips().waveforms[:2],), dict(steps=2, guidance_scale=1.5, strict=False,
                                                                           generator=torch.Generator().manual_seed(0)),
                          rank_free=_fs("waveform")),
                     Call(model().describe)],
            lambda: [("8 kHz audio", lambda: model().generate(clips().waveforms[:1], sample_rate=8000)),
                     ("a silent clip", lambda: model().generate(torch.zeros(1, 16000))),
                     ("a clip of 0.1 s", lambda: model().generate(clips().waveforms[:1, :1600])),
                     ("a clip of 2 s", lambda: model().generate(torch.randn(1, 32000))),
                     ("no signal tokens (untrained LM), strict", lambda: model()(clips().waveforms[:1])),
                     ("an empty prompt", lambda: AudioTo3D(*parts(), prompt=""))]),
        "AudioTo3DResult": Spec(lambda: [Call(AudioTo3DResult, (_rand(1, 4, 3), torch.ones(1, dtype=torch.bool), ["x"], _rand(1, 2, 4)))],
                                mutate=False),
        "NoObjectError": Spec(lambda: [Call(NoObjectError, ("no object",))], mutate=False),
        "SpokenRequests": Spec(lambda: [Call(SpokenRequests, (_rand(2, 8), torch.tensor([0, -1]), torch.tensor([1, 0]), ["a", "b"])),
                                        Call(clips().subset, (torch.tensor([0, 2]),)), Call(clips().__len__)], mutate=False),
        "make_spoken_requests": Spec(
            lambda: [Call(make_spoken_requests, (2, 1), dict(seed=0), zero_ok=_fs("seed", "objects", "rejects"))],
            lambda: [("no clip at all", lambda: make_spoken_requests(0, 0)),
                     ("a dict config", lambda: make_spoken_requests(1, config={"speed_range": (1, 2)}))]),
        "build_audio_to_3d": Spec(
            lambda: [Call(build_audio_to_3d, (model().encoder, tiny, 0), dict(bridge="mlp"), zero_ok=_fs("seed"))],
            lambda: [("a bridge name of no bridge", lambda: build_audio_to_3d(model().encoder, tiny, bridge="mlpp")),
                     ("an lm without its tokenizer", lambda: build_audio_to_3d(model().encoder, tiny, lm=model().lm))]),
        "capstone_failures": Spec(
            lambda: [Call(capstone_failures, (metrics,))],
            lambda: [("metrics without chamfer_ratio", lambda: capstone_failures({"class_accuracy": 1.0, "size_accuracy": 1.0}))]),
        "evaluate_audio_to_3d": Spec(
            lambda: [Call(evaluate_audio_to_3d, (model(), judge(), clips()), dict(steps=2, seed=0, reference_per_pair=2),
                          zero_ok=_fs("seed"), run_good=False)],
            lambda: [("the judge's classifier", lambda: evaluate_audio_to_3d(model(), judge().classifier, clips())),
                     ("no object request", lambda: evaluate_audio_to_3d(model(), judge(), make_spoken_requests(0, 1)))]),
        "make_capstone_data": Spec(lambda: [Call(make_capstone_data, (0, tiny), zero_ok=_fs("seed"), run_good=False)]),
        "train_capstone": Spec(lambda: [Call(train_capstone, (0, tiny), zero_ok=_fs("seed"), run_good=False)]),
        "run_capstone": Spec(lambda: [Call(run_capstone, (0, tiny), zero_ok=_fs("seed"), run_good=False)]),
    }
