"""Checks for chapter 11, the capstone: audio in, 3-D object out.

The tiers, as in every chapter:

- **core** functions, each run next to the library's on several inputs, naming the usual mistake
  when the learner's output equals what that mistake gives: the audio-to-token path (waveform ->
  log-mel -> audio encoder -> bridge, then the prompt's embeddings after it: the LM's
  ``inputs_embeds``); the hidden states at the signal tokens ``[3D0]..`` (against
  :func:`mmllm_course.output.signal_hidden_states`); the v-prediction target (against
  ``diffusers``' ``DDPMScheduler.get_velocity``); one conditional, guided DDIM step of the frozen
  point decoder (against ``diffusers``' ``DDIMScheduler.step`` with ``prediction_type="v_prediction"``);
- **the diagram**: the learner's list of :class:`~mmllm_course.viz.FlowStage` s must obey the
  chaining and map-order rules (:func:`~mmllm_course.viz.check_flow`), hold every part of the map,
  and give the true pipeline's tensor shape where the data enters and leaves each part;
- checked **questions** for the three steps (only hashes of the answers live here).

Every case is sized so that each named mistake gives a different result from the right answer (guards
raise ``RuntimeError`` when a case stops telling them apart).
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

import torch

from mmllm_course.grading.checks.ch02 import _type_name
from mmllm_course.grading.compare import expect_tensor, same_values
from mmllm_course.grading.core import CheckFailed, LearnerError, answer_hash, call, exercise, question


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _expect_or_name(got: Any, expected: torch.Tensor, what: str, mistakes: dict[str, torch.Tensor], atol: float = 1e-5,
                    rtol: float = 1e-4) -> None:
    """:func:`expect_tensor`; when the values are wrong, name the first known mistake they equal (and the right answer does not)."""
    try:
        expect_tensor(got, expected, what, atol=atol, rtol=rtol)
    except CheckFailed as exc:
        for explanation, wrong in mistakes.items():
            if not same_values(wrong, expected, atol, rtol) and same_values(got, wrong, atol, rtol):
                raise CheckFailed(f"{exc}. Your output equals {explanation}.") from None
        raise


def _expect_distinct(expected: torch.Tensor, mistakes: dict[str, torch.Tensor], seen: set[str]) -> None:
    """Record which named mistakes this case tells apart from the right answer (see :func:`_require_all_seen`)."""
    for explanation, wrong in mistakes.items():
        if not same_values(wrong, expected):
            seen.add(explanation)


def _require_all_seen(mistakes: dict[str, torch.Tensor], seen: set[str], what: str) -> None:
    missing = [m for m in mistakes if m not in seen]
    if missing:
        raise RuntimeError(f"{what}: no case tells the right answer from {missing[0]!r}")


# --------------------------------------------------------------------------------------------------
# ch11.audio_tokens: waveform -> log-mel -> encoder -> bridge, then the prompt: the LM's inputs_embeds
# --------------------------------------------------------------------------------------------------
# (B, samples, n_mels, encoder width, LM width, prompt length T)
_AUDIO_CASES = [(2, 8000, 16, 32, 48, 6), (3, 4800, 12, 24, 40, 9)]


@lru_cache(maxsize=None)
def _audio_parts(case_index: int) -> tuple:
    """Small, randomly initialised library parts for one case: (to_mel, encoder, bridge, lm)."""
    from mmllm_course.bridges import MLPBridge, MLPBridgeConfig
    from mmllm_course.encoders.audio import AudioEncoder, AudioEncoderConfig, LogMelConfig, LogMelSpectrogram
    from mmllm_course.language.lm import CausalLMConfig, make_causal_lm

    _, samples, n_mels, enc_dim, lm_dim, _ = _AUDIO_CASES[case_index]
    to_mel = LogMelSpectrogram(LogMelConfig(n_mels=n_mels, chunk_length=None))
    frames = to_mel.config.num_frames(samples)
    with torch.random.fork_rng():
        torch.manual_seed(1100 + case_index)
        encoder = AudioEncoder(AudioEncoderConfig(n_mels=n_mels, dim=enc_dim, depth=1, num_heads=2, mlp_dim=2 * enc_dim,
                                                  max_positions=(frames + 1) // 2)).eval()
        bridge = MLPBridge(MLPBridgeConfig(in_dim=enc_dim, out_dim=lm_dim)).eval()
    lm = make_causal_lm(CausalLMConfig(dim=lm_dim, depth=1, num_heads=2, num_kv_heads=1, mlp_dim=2 * lm_dim), seed=1200 + case_index)
    for module in (to_mel, encoder, bridge, lm):
        module.requires_grad_(False)
    return to_mel, encoder, bridge, lm


def _audio_inputs(case_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    b, samples, _, _, _, t = _AUDIO_CASES[case_index]
    g = _gen(1300 + case_index)
    waves = 0.3 * torch.randn(b, samples, generator=g)
    ids = torch.randint(4, 40, (b, t), generator=g)  # ordinary token ids of the course tokenizer
    return waves, ids


def audio_to_lm_inputs_reference(waveforms: torch.Tensor, to_mel, encoder, bridge, lm, prompt_ids: torch.Tensor) -> torch.Tensor:
    """waveforms (B, S) -> log-mel (B, M, F) -> encoder (B, N, D_enc) -> bridge (B, N, D); then the prompt's embeddings
    (B, T, D) after them: the LM's ``inputs_embeds`` (B, N + T, D)."""
    audio = bridge(encoder(to_mel(waveforms)))  # (B, N, D)
    return torch.cat([audio, lm.get_input_embeddings()(prompt_ids)], dim=1)


def _audio_mistakes(waves, to_mel, encoder, bridge, lm, ids) -> dict[str, torch.Tensor]:
    audio = bridge(encoder(to_mel(waves)))
    text = lm.get_input_embeddings()(ids)
    return {
        "the prompt's embeddings FIRST and the audio tokens after them: in the capstone (as in LLaVA and Qwen-Audio) the "
        "audio tokens come first, so the prompt and the signal tokens the LM emits can attend to them":
            torch.cat([text, audio], dim=1),
        "the audio tokens alone: the prompt's token embeddings (lm.get_input_embeddings()(prompt_ids)) follow them":
            audio,
        "one audio token per clip (the tokens averaged): the LM reads every one of the encoder's N tokens, one per 20 ms":
            torch.cat([audio.mean(dim=1, keepdim=True), text], dim=1),
    }


@exercise(
    "ch11.audio_tokens",
    "The audio-to-token path: waveform -> log-mel -> encoder -> bridge -> the LM's inputs",
    hint="to_mel(waveforms) is (B, M, F), the encoder reads it as it is and gives (B, N, D_enc), the bridge maps it to "
    "the LM's width (B, N, D); then torch.cat([audio, lm.get_input_embeddings()(prompt_ids)], dim=1).",
    timeout=60.0,  # the first call imports transformers' LLaMA
)
def _check_audio_tokens(fn) -> str:
    seen: set[str] = set()
    all_mistakes: dict[str, torch.Tensor] = {}
    for i in range(len(_AUDIO_CASES)):
        to_mel, encoder, bridge, lm = _audio_parts(i)
        waves, ids = _audio_inputs(i)
        with torch.no_grad():
            expected = audio_to_lm_inputs_reference(waves, to_mel, encoder, bridge, lm, ids)
            mistakes = _audio_mistakes(waves, to_mel, encoder, bridge, lm, ids)
        all_mistakes.update(mistakes)
        _expect_distinct(expected, mistakes, seen)
        b, n, d = expected.shape[0], expected.shape[1] - ids.shape[1], expected.shape[2]
        what = (f"audio_to_lm_inputs(waveforms {tuple(waves.shape)}, ..., prompt_ids {tuple(ids.shape)}) with an encoder "
                f"of width {encoder.config.dim} and an LM of width {d}")
        try:
            with torch.no_grad():
                got = call(fn, waves.clone(), to_mel, encoder, bridge, lm, ids.clone())
        except LearnerError as exc:
            text = str(exc)
            if ("ValueError" in text and "must" in text) or "Sizes of tensors must match" in text:  # the stages do not chain
                raise CheckFailed(f"{what}: {exc}. The stages do not chain: log-mel (B, M, F) goes into the encoder as it "
                                  f"is, the encoder's (B, N, {encoder.config.dim}) into the bridge, the bridge's "
                                  f"(B, N, {d}) next to the prompt's embeddings") from None
            raise
        if isinstance(got, tuple):
            raise CheckFailed(f"{what} returned a tuple of {len(got)}; return one tensor, inputs_embeds {tuple(expected.shape)}")
        if isinstance(got, torch.Tensor) and got.dim() == 3 and got.shape[-1] == len(lm.get_input_embeddings().weight):
            raise CheckFailed(f"{what} returned shape {tuple(got.shape)}, the LM's logits over its vocabulary: return the "
                              f"LM's INPUTS, inputs_embeds (B, N + T, D) = {tuple(expected.shape)}, without running the LM")
        if isinstance(got, torch.Tensor) and got.dim() == 3 and got.shape[-1] == encoder.config.dim != d:
            raise CheckFailed(f"{what} returned width {got.shape[-1]}, the encoder's: the bridge maps the audio tokens to the "
                              f"LM's width {d} (that is its job: dimension matching)")
        if isinstance(got, torch.Tensor) and tuple(got.shape) != tuple(expected.shape) and got.dim() == 3:
            if got.shape[1] == n:
                raise CheckFailed(f"{what} returned shape {tuple(got.shape)}, the audio tokens alone: the prompt's token "
                                  f"embeddings (lm.get_input_embeddings()(prompt_ids)) follow them, (B, N + T, D) = "
                                  f"{tuple(expected.shape)}")
            if got.shape[1] == ids.shape[1] + 1:
                raise CheckFailed(f"{what} returned shape {tuple(got.shape)}: one audio token per clip. Keep every one of the "
                                  f"encoder's N = {n} tokens (one per 20 ms): expected (B, N + T, D) = {tuple(expected.shape)}")
            raise CheckFailed(f"{what} returned shape {tuple(got.shape)}; expected (B, N + T, D) = {tuple(expected.shape)}: "
                              f"B = {b} clips, N = {n} audio tokens then T = {ids.shape[1]} prompt tokens, width D = {d}")
        _expect_or_name(got, expected, what, mistakes)
    _require_all_seen(all_mistakes, seen, "ch11.audio_tokens")
    return ("your path gives the LM exactly the library's inputs: 16 kHz waves -> log-mel -> the encoder's tokens -> the "
            "bridge's tokens at the LM's width, then the prompt's embeddings.")


# --------------------------------------------------------------------------------------------------
# ch11.signal_hidden: the hidden states at the [3D0].. tokens
# --------------------------------------------------------------------------------------------------
_SIGNAL_IDS = (90, 91, 92, 93)  # K = 4 signal tokens [3D0]..[3D3]
_PAD, _EOS = 0, 1


def _signal_case(seed: int, b: int, t: int, d: int, permute_row: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden (B, T, D) and input_ids (B, T): each row = padding on the left, a prompt, the K signal tokens, eos, padding."""
    g = _gen(seed)
    k = len(_SIGNAL_IDS)
    ids = torch.full((b, t), _PAD, dtype=torch.long)
    for r in range(b):
        left = int(torch.randint(0, 3, (1,), generator=g))
        prompt = int(torch.randint(2, t - k - left - 1, (1,), generator=g))
        row = torch.randint(4, 60, (prompt,), generator=g).tolist() + list(_SIGNAL_IDS) + [_EOS]
        if r == permute_row:  # the signal tokens in another order: the output still follows signal_ids
            row[prompt:prompt + k] = [_SIGNAL_IDS[j] for j in (2, 0, 3, 1)]
        ids[r, left:left + len(row)] = torch.tensor(row)
    hidden = torch.randn(b, t, d, generator=g)
    return hidden, ids


_SIGNAL_CASES = [(1500, 3, 14, 5, None), (1501, 4, 16, 6, None), (1502, 2, 12, 3, 1)]


def _signal_positions(ids: torch.Tensor) -> torch.Tensor:
    """(B, K): the position of each signal token, in the order of _SIGNAL_IDS."""
    return torch.stack([(ids == s).long().argmax(dim=1) for s in _SIGNAL_IDS], dim=1)


def _signal_mistakes(hidden: torch.Tensor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    b, t, d = hidden.shape
    pos = _signal_positions(ids)

    def at(p: torch.Tensor) -> torch.Tensor:
        return torch.gather(hidden, 1, p.clamp(0, t - 1)[..., None].expand(-1, -1, d))

    in_position_order = torch.stack([hidden[r][torch.isin(ids[r], torch.tensor(_SIGNAL_IDS))] for r in range(b)])
    return {
        "the hidden states one position BEFORE each signal token (where the LM predicts it): the projector reads the "
        "hidden state AT each signal token, the LM's output for that input position": at(pos - 1),
        "the hidden states one position AFTER each signal token: take the positions where input_ids holds them": at(pos + 1),
        "the last K positions of every row: rows end in eos and padding, so find where input_ids holds each signal token":
            hidden[:, -len(_SIGNAL_IDS):],
        "the positions of row 0 used for every row: prompts and padding differ in length, find them row by row":
            at(pos[:1].expand(b, -1)),
        "the signal tokens in the order they stand in the row: return them in the order of signal_ids ([3D0] first)":
            in_position_order,
    }


@exercise(
    "ch11.signal_hidden",
    "The hidden states at the signal tokens [3D0]..",
    hint="for each signal id s (in the order of signal_ids), the position where input_ids == s in each row, e.g. "
    "(input_ids == s).float().argmax(dim=1); then torch.gather(hidden, 1, positions[..., None].expand(-1, -1, D)).",
)
def _check_signal_hidden(fn) -> str:
    from mmllm_course.output import signal_hidden_states

    seen: set[str] = set()
    all_mistakes: dict[str, torch.Tensor] = {}
    for seed, b, t, d, permute in _SIGNAL_CASES:
        hidden, ids = _signal_case(seed, b, t, d, permute)
        expected = signal_hidden_states(hidden, ids, list(_SIGNAL_IDS))
        mistakes = _signal_mistakes(hidden, ids)
        all_mistakes.update(mistakes)
        _expect_distinct(expected, mistakes, seen)
        what = f"signal_hidden_states(hidden {tuple(hidden.shape)}, input_ids {tuple(ids.shape)}, signal_ids={list(_SIGNAL_IDS)})"
        got = call(fn, hidden.clone(), ids.clone(), list(_SIGNAL_IDS))
        if isinstance(got, torch.Tensor) and got.dim() == 2 and got.shape == (b * len(_SIGNAL_IDS), d):
            raise CheckFailed(f"{what} returned shape {tuple(got.shape)}, the rows of the whole batch flattened: keep the "
                              f"batch axis, (B, K, D) = {tuple(expected.shape)}")
        _expect_or_name(got, expected, what, mistakes)
    _require_all_seen(all_mistakes, seen, "ch11.signal_hidden")
    return ("your hidden states are the library's: for every row, the LM's output AT each signal token, in the order of "
            "signal_ids, (B, K, D): what the output projector reads.")


# --------------------------------------------------------------------------------------------------
# ch11.v_target: the v-prediction target (Salimans & Ho 2022), against DDPMScheduler.get_velocity
# --------------------------------------------------------------------------------------------------
# (B, N, dtype); B = 3 = the coordinates axis once, so abar_t broadcast along the wrong axis gives values, not an error
_V_CASES = [(2, 16, torch.float32), (3, 3, torch.float64), (4, 32, torch.float32)]


def _train_scheduler():
    from mmllm_course.generators.point_diffusion import PointDecoderConfig, make_point_schedulers

    return make_point_schedulers(PointDecoderConfig())[0]  # DDPM, 1000 steps, squaredcos_cap_v2, v_prediction


def _v_mistakes(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, scheduler) -> dict[str, torch.Tensor]:
    abar = scheduler.alphas_cumprod.to(x0.dtype)[t][:, None, None]
    alpha = scheduler.alphas.to(x0.dtype)[t][:, None, None]
    wrong_axis = scheduler.alphas_cumprod.to(x0.dtype)[t]  # (B,), broadcast over the last axis (needs B == 3)
    out = {
        "the noise itself, eps: that is the target of epsilon prediction; v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0":
            noise.clone(),
        "minus v (sqrt(1 - abar_t) x0 - sqrt(abar_t) eps): v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0":
            (1 - abar).sqrt() * x0 - abar.sqrt() * noise,
        "v computed with alpha_t (scheduler.alphas), one step's factor: v uses alpha-BAR_t = prod of alphas up to t, "
        "scheduler.alphas_cumprod": alpha.sqrt() * noise - (1 - alpha).sqrt() * x0,
        "v without the square roots (abar_t eps - (1 - abar_t) x0)": abar * noise - (1 - abar) * x0,
        "the noisy sample x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, the network's INPUT, not its target":
            abar.sqrt() * x0 + (1 - abar).sqrt() * noise,
        "the x0 target (prediction_type='sample')": x0.clone(),
    }
    if x0.shape[-1] == wrong_axis.shape[0]:
        out["abar_t of cloud i applied to coordinate i: index alphas_cumprod[timesteps] and reshape it to (B, 1, 1) "
            "so that each cloud gets its own timestep's factor"] = wrong_axis.sqrt() * noise - (1 - wrong_axis).sqrt() * x0
    return out


@exercise(
    "ch11.v_target",
    "The v-prediction target, as diffusers' get_velocity",
    hint="abar = scheduler.alphas_cumprod[timesteps] reshaped to (B, 1, 1); v = abar.sqrt() * noise - (1 - abar).sqrt() * x0.",
)
def _check_v_target(fn) -> str:
    scheduler = _train_scheduler()
    seen: set[str] = set()
    all_mistakes: dict[str, torch.Tensor] = {}
    for i, (b, n, dtype) in enumerate(_V_CASES):
        g = _gen(1600 + i)
        x0 = torch.randn(b, n, 3, generator=g, dtype=torch.float64).to(dtype)
        noise = torch.randn(b, n, 3, generator=g, dtype=torch.float64).to(dtype)
        t = torch.randint(50, 950, (b,), generator=g)
        t[0] = 999 if i == 1 else t[0]  # the noisy end once, where v is almost -x0
        expected = scheduler.get_velocity(x0, noise, t)
        mistakes = _v_mistakes(x0, noise, t, scheduler)
        all_mistakes.update(mistakes)
        _expect_distinct(expected, mistakes, seen)
        what = f"v_target(x0 {tuple(x0.shape)}, noise, timesteps {t.tolist()}, scheduler) in {dtype}"
        got = call(fn, x0.clone(), noise.clone(), t.clone(), copy.deepcopy(scheduler))
        _expect_or_name(got, expected, what, mistakes)
    _require_all_seen(all_mistakes, seen, "ch11.v_target")
    return ("your target equals diffusers' DDPMScheduler.get_velocity: v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0, a target "
            "of unit size at every t (eps at the clean end, -x0 at the noisy end).")


# --------------------------------------------------------------------------------------------------
# ch11.denoise_step: one conditional, guided DDIM step of the frozen point decoder
# --------------------------------------------------------------------------------------------------
_STEP_SAMPLE_STEPS = 10  # DDIM steps of the sampler handed to the learner: timesteps 999, 899, ..., 99
# (timestep index in the sampler, guidance scale, B)
_STEP_CASES = [(0, 2.0, 2), (4, 2.0, 3), (9, 2.0, 2), (6, 1.0, 2), (2, 3.0, 1)]


@lru_cache(maxsize=1)
def _frozen_decoder():
    from mmllm_course.generators.point_diffusion import load_point_decoder

    return load_point_decoder()


def _sample_scheduler(decoder):
    from mmllm_course.generators.point_diffusion import make_point_schedulers

    return make_point_schedulers(decoder.config, _STEP_SAMPLE_STEPS)[1]


def _ddim_from(pred_v: torch.Tensor, x_t: torch.Tensor, abar: torch.Tensor, abar_prev: torch.Tensor, as_eps: bool = False,
               return_x0: bool = False) -> torch.Tensor:
    if as_eps:
        eps = pred_v
        x0 = (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()
    else:
        x0 = abar.sqrt() * x_t - (1 - abar).sqrt() * pred_v
        eps = abar.sqrt() * pred_v + (1 - abar).sqrt() * x_t
    return x0 if return_x0 else abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps


def _step_mistakes(v_cond, v_null, w, x_t, t, scheduler) -> dict[str, torch.Tensor]:
    stride = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    ac, al = scheduler.alphas_cumprod, scheduler.alphas
    prev = t - stride
    abar, abar_prev = ac[t], (ac[prev] if prev >= 0 else scheduler.final_alpha_cumprod)
    a, a_prev = al[t], (al[prev] if prev >= 0 else torch.tensor(1.0))
    v = v_null + w * (v_cond - v_null)
    out = {
        "the network's output used as eps: this decoder predicts v (prediction_type='v_prediction'); recover x0 = "
        "sqrt(abar_t) x_t - sqrt(1 - abar_t) v and eps = sqrt(abar_t) v + sqrt(1 - abar_t) x_t first":
            _ddim_from(v, x_t, abar, abar_prev, as_eps=True),
        "the step computed with alpha_t (scheduler.alphas): DDIM's formulas use alpha-BAR, scheduler.alphas_cumprod":
            _ddim_from(v, x_t, a, a_prev),
        "the predicted clean cloud x0 (pred_original_sample): one step goes to the previous timestep, "
        "sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps": _ddim_from(v, x_t, abar, abar_prev, return_x0=True),
        "no guidance (the conditional prediction alone): with guidance w the prediction is v_null + w (v_cond - v_null)":
            _ddim_from(v_cond, x_t, abar, abar_prev),
        "guidance the wrong way round (v_cond + w (v_null - v_cond)): it pushes AWAY from the description":
            _ddim_from(v_cond + w * (v_null - v_cond), x_t, abar, abar_prev),
        "the unconditional prediction alone: the description never reaches the step":
            _ddim_from(v_null, x_t, abar, abar_prev),
    }
    if prev >= 0:
        out[f"a step to t - 1 (one training timestep): this sampler takes {scheduler.num_inference_steps} steps, so the "
            f"previous timestep is t - {stride} (num_train_timesteps // num_inference_steps)"] = (
            _ddim_from(v, x_t, abar, ac[t - 1]))
    return out


@exercise(
    "ch11.denoise_step",
    "One conditional DDIM step for point clouds, as diffusers' DDIMScheduler.step",
    hint="v = v_null + w (v_cond - v_null) from two denoiser calls; prev_t = t - num_train_timesteps // num_inference_steps; "
    "abar_prev = alphas_cumprod[prev_t] (1.0 when prev_t < 0); x0 = sqrt(abar) x_t - sqrt(1 - abar) v, "
    "eps = sqrt(abar) v + sqrt(1 - abar) x_t; return sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps.",
    timeout=30.0,
)
def _check_denoise_step(fn) -> str:
    decoder = _frozen_decoder()
    denoiser, null = decoder.denoiser, decoder.null_cond.detach()
    scheduler = _sample_scheduler(decoder)
    seen: set[str] = set()
    all_mistakes: dict[str, torch.Tensor] = {}
    for i, (k, w, b) in enumerate(_STEP_CASES):
        g = _gen(1700 + i)
        t = int(scheduler.timesteps[k])
        x_t = torch.randn(b, decoder.config.num_points, 3, generator=g)
        solid, size = torch.randint(0, 5, (b,), generator=g), torch.randint(0, 2, (b,), generator=g)
        with torch.no_grad():
            cond = decoder.condition(solid, size)
            v_cond = denoiser(x_t, t, cond)
            v_null = denoiser(x_t, t, null.expand(b, -1, -1))
            v = v_null + w * (v_cond - v_null)
            expected = copy.deepcopy(scheduler).step(v, t, x_t).prev_sample
            mistakes = _step_mistakes(v_cond, v_null, w, x_t, t, scheduler)
        all_mistakes.update(mistakes)
        _expect_distinct(expected, mistakes, seen)
        what = (f"denoise_step(denoiser, x_t {tuple(x_t.shape)}, t={t}, cond {tuple(cond.shape)}, null_cond, scheduler "
                f"({_STEP_SAMPLE_STEPS} DDIM steps), guidance_scale={w:g})")
        with torch.no_grad():
            got = call(fn, denoiser, x_t.clone(), t, cond.clone(), null.clone(), copy.deepcopy(scheduler), w)
        if isinstance(got, tuple) or (got is not None and hasattr(got, "prev_sample")):
            raise CheckFailed(f"{what} returned {_type_name(got)}; return the tensor x_prev {tuple(expected.shape)} "
                              "(scheduler.step(...).prev_sample, if you used the scheduler)")
        _expect_or_name(got, expected, what, mistakes, atol=1e-4, rtol=1e-4)
    _require_all_seen(all_mistakes, seen, "ch11.denoise_step")
    return ("your step equals diffusers' DDIMScheduler.step on the frozen decoder's guided v prediction, at the first, middle "
            "and last timesteps: v -> (x0, eps) -> the previous timestep's sample.")


# --------------------------------------------------------------------------------------------------
# ch11.flow: the capstone's diagram as data
# --------------------------------------------------------------------------------------------------


def capstone_reference_flow():
    """The true pipeline's stages (:class:`~mmllm_course.viz.FlowStage`), from the library's capstone configs.

    One clip of 1 s at 16 kHz -> 80-band log-mel (100 frames) -> the Whisper-style encoder (50 tokens of
    width 64) -> the bridge (50 tokens at the LM's width 128) -> the LM (the audio tokens, the prompt and
    the emitted signal tokens: T positions) -> its hidden states at the 4 signal tokens -> the output
    projector (the decoder's conditioning, 2 tokens of width 64) -> the point diffusion decoder (256 points).
    """
    from mmllm_course.viz import FlowStage

    return [
        FlowStage("waveform", "input", ("B", 16000), ("B", 16000), "1 s at 16 kHz"),
        FlowStage("log-mel", "encoder", ("B", 16000), ("B", 80, 100), "80 mel bands, a frame every 10 ms"),
        FlowStage("audio encoder", "encoder", ("B", 80, 100), ("B", 50, 64), "Whisper-style, a token per 20 ms"),
        FlowStage("MLP bridge", "input bridge", ("B", 50, 64), ("B", 50, 128), "to the LM's width"),
        FlowStage("LM", "LLM backbone", ("B", 50, 128), ("B", "T", 128), "audio tokens, prompt, [3D0].. [3D3]"),
        FlowStage("[3D] hidden states", "LLM backbone", ("B", "T", 128), ("B", 4, 128), "at the 4 signal tokens"),
        FlowStage("output projector", "output projector", ("B", 4, 128), ("B", 2, 64), "the decoder's conditioning"),
        FlowStage("point diffusion decoder", "generator", ("B", 2, 64), ("B", 256, 3), "DDIM, v-prediction, frozen"),
        FlowStage("point cloud", "output", ("B", 256, 3), ("B", 256, 3)),
    ]


def _same_dims(got: tuple, want: tuple) -> bool:
    """Shapes agree when every dim is equal, a symbolic dim (a name) matching any other name."""
    return len(got) == len(want) and all((isinstance(a, str) and isinstance(b, str)) or a == b for a, b in zip(got, want))


def _fmt(shape: tuple) -> str:
    from mmllm_course.viz import format_shape

    return format_shape(shape)


def _flow_answer(answer: Any) -> list:
    from mmllm_course.viz import FlowStage

    if callable(answer) and not isinstance(answer, (list, tuple)):
        answer = call(answer)  # a function that builds the list
    if answer is None:
        raise CheckFailed("got None instead of a list of FlowStage: did a function forget `return`?")
    if isinstance(answer, FlowStage):
        raise CheckFailed("got one FlowStage; pass the LIST of every stage of the capstone, waveform first")
    if not isinstance(answer, (list, tuple)):
        raise CheckFailed(f"expected a list of FlowStage (the capstone's stages, in order), got {_type_name(answer)}")
    bad = [i for i, s in enumerate(answer) if not isinstance(s, FlowStage)]
    if bad:
        raise CheckFailed(f"item {bad[0]} of your flow is {_type_name(answer[bad[0]])}; every item must be a FlowStage(name, "
                          f"part, input_shape, output_shape)")
    return list(answer)


@exercise(
    "ch11.flow",
    "The capstone's flow as a diagram: stages, parts and tensor shapes",
    hint="one FlowStage per step a tensor goes through, waveform ('input') to point cloud ('output'), each part of the "
    "map in order; every stage's input_shape is the previous stage's output_shape; print the pipeline's configs for the sizes.",
)
def _check_flow(answer) -> str:
    from mmllm_course.viz import PARTS, check_flow

    stages = _flow_answer(answer)
    try:
        check_flow(stages)
    except ValueError as exc:
        raise CheckFailed(f"your flow breaks a rule of the diagram: {exc}") from None
    reference = capstone_reference_flow()
    parts_got = [s.part for s in stages]
    for part in ("input", *PARTS, "output"):
        if part not in parts_got:
            ref = [s for s in reference if s.part == part]
            raise CheckFailed(f"your flow has no stage in the part {part!r}: the capstone's data passes through "
                              f"{', '.join(s.name for s in ref)} there, {_fmt(ref[0].input_shape)} -> {_fmt(ref[-1].output_shape)}")
    real = [shape for s in reference for shape in (s.input_shape, s.output_shape)]
    for s in stages:
        if not any(_same_dims(s.output_shape, shape) for shape in real):
            hint = ""
            if any(sorted(map(str, s.output_shape)) == sorted(map(str, shape)) for shape in real):
                hint = " (the capstone has these sizes in another order: check which axis is which)"
            raise CheckFailed(f"your stage {s.name!r} gives a tensor of shape {_fmt(s.output_shape)}, which the capstone "
                              f"never holds{hint}. Its tensors: {', '.join(dict.fromkeys(_fmt(r) for r in real))}")
    for part in ("input", *PARTS, "output"):
        mine = [s for s in stages if s.part == part]
        ref = [s for s in reference if s.part == part]
        for side, got, want, stage in (("enters", mine[0].input_shape, ref[0].input_shape, mine[0]),
                                       ("leaves", mine[-1].output_shape, ref[-1].output_shape, mine[-1])):
            if _same_dims(got, want):
                continue
            hint = ""
            if sorted(map(str, got)) == sorted(map(str, want)):
                hint = " (the same sizes in another order: check which axis is which)"
            elif ((part, side) in (("output projector", "enters"), ("LLM backbone", "leaves")) and len(got) == 3
                  and isinstance(got[1], str)):
                hint = (" (the projector reads only the hidden states AT the 4 signal tokens, not every position of the "
                        "sequence)")
            elif part == "input bridge" and side == "leaves" and got[-1] == 64:
                hint = " (the bridge's job is dimension matching: its output has the LM's width)"
            raise CheckFailed(f"the data {side} the part {part!r} (your stage {stage.name!r}) with shape {_fmt(got)}; the "
                              f"capstone's is {_fmt(want)}{hint}")
    return (f"your {len(stages)} stages chain and give the capstone's shapes at every part of the map: "
            f"{_fmt(reference[0].input_shape)} waves -> {_fmt(reference[-1].output_shape)} points.")


# --------------------------------------------------------------------------------------------------
# Questions (only hashes of the answers live here)
# --------------------------------------------------------------------------------------------------
question(
    "ch11.q1",
    "Step 1: the encoder for raw waves",
    {
        "a": "The LM's own tokenizer: 16,000 samples a second are 16,000 tokens, and the LM's attention finds the words.",
        "b": "A Whisper-style audio encoder: a log-mel front end, a strided convolution stem and a transformer turn "
        "16,000 samples a second into 50 feature vectors that describe what was said, trained on audio before the LM "
        "ever sees them.",
        "c": "Chapter 2's ViT on a picture of the waveform, since the LM was aligned to vision.",
        "d": "Chapter 8's point-cloud encoder, since the output is 3-D and the encoder should match the decoder.",
    },
    [answer_hash("b")],
    explanation="A waveform is far too long and too low-level for an LM: Whisper's front end turns it into a mel "
    "spectrogram (10 ms frames), the stride-2 stem halves that to a token every 20 ms, and the transformer makes each "
    "token describe a stretch of speech. HuBERT and wav2vec 2.0 read raw samples through a convolutional feature "
    "encoder instead; both end in tens of vectors per second, not thousands.",
    hint="Count the tokens per second each option gives the LM, and ask which was trained to hear.",
)

question(
    "ch11.q2",
    "Step 2: the projection, MLP or resampler",
    {
        "a": "Neither is needed: the LM can read the encoder's 64-wide features directly.",
        "b": "A resampler always, because cross-attention is more accurate than an MLP on any input.",
        "c": "An MLP bridge (LLaVA-1.5's choice) maps each of the encoder's tokens to the LM's width with a non-linearity, "
        "keeping one token per 20 ms; a resampler is worth its extra training when the token count must shrink (long "
        "clips), since it gives a fixed number of tokens whatever the length.",
        "d": "A single linear layer, since a non-linearity would destroy the encoder's information.",
    },
    [answer_hash("c")],
    explanation="The bridge's job is dimension matching into the LM's semantic space: 64 -> 128 here. An MLP keeps every "
    "token and is the simplest bridge that does better than a linear layer (chapters 3 and 5). A 1 s clip gives only 50 "
    "tokens, which the LM's context holds easily; for 30 s of Whisper audio (1,500 tokens) a Q-Former or Perceiver "
    "resampler's fixed K tokens buy the LM's context back (chapter 4).",
    hint="How many tokens does a 1 s clip give, and how many would 30 s give?",
)

question(
    "ch11.q3",
    "Step 3: what the LM emits and what decodes it",
    {
        "a": "The LM writes the 256 points' coordinates as text, and a parser reads them into a cloud.",
        "b": "The LM emits the signal tokens [3D0]..[3D3]; their hidden states, not the tokens' ids, go through the "
        "output projector to the (2, 64) conditioning of a frozen point diffusion decoder, which turns Gaussian noise "
        "into the cloud by DDIM steps.",
        "c": "The LM emits a class word (\"cube\"), and the decoder looks up a stored cloud of that class.",
        "d": "The LM's last hidden state is the point cloud, reshaped to (256, 3).",
    },
    [answer_hash("b")],
    explanation="As NExT-GPT and GILL do for images: the signal tokens are ordinary vocabulary the LM learns to emit, and "
    "their final hidden states carry continuous information (the solid and its size) that the output projector maps "
    "into the generator's conditioning space. The generator, pretrained on 3-D shapes and frozen, does the decoding.",
    hint="Which tensor does the output projector read, and what produces the points?",
)

question(
    "ch11.q4",
    "Continuous signals or discrete tokens for 3-D",
    {
        "a": "Discrete tokens always: an LM can only produce discrete outputs, so continuous signals cannot reach a decoder.",
        "b": "They are the same: a signal token's hidden state is a discrete code.",
        "c": "Continuous signals: a small output projector ties the LM to a generator pretrained on 3-D shapes, and "
        "real-valued conditioning carries attributes such as size; discrete 3-D tokens would need a vector-quantised "
        "3-D tokenizer first and an LM that predicts many codes per object, with the codebook's quantisation loss.",
        "d": "Discrete tokens, because a diffusion decoder cannot be conditioned on vectors.",
    },
    [answer_hash("c")],
    explanation="Chapter 9's route (NExT-GPT) reuses a frozen generator and trains only the projector (and the signal "
    "tokens); chapter 10's route (VQ tokens, as in Chameleon) makes the LM itself the generator, at the cost of a "
    "tokenizer for the modality and long code sequences. For 3-D, with a pretrained point decoder at hand, the "
    "continuous route is cheaper and keeps fine attributes.",
    hint="What would each route need that the course does not have yet for 3-D, and what does the projector carry?",
)
