"""Grader cases for chapter 11, the capstone: correct versions written several ways, and the mistakes learners make.

Besides ``correct`` and ``wrong``, an exercise may list ``diagnoses``: ``{label: (answer, words)}``, a
wrong answer whose ``fail`` message must contain ``words`` (the check names that mistake, not another).
"""

import dataclasses

import torch

from mmllm_course.generators.point_diffusion import make_point_schedulers
from mmllm_course.grading.checks.ch11 import (
    audio_to_lm_inputs_reference,
    capstone_model,
    capstone_reference_flow,
    waveform_to_cloud_reference,
)
from mmllm_course.viz import FlowStage

# ------------------------------------------------------------------------------------------- audio_tokens


def audio_reference(waveforms, to_mel, encoder, bridge, lm, prompt_ids):
    """Correct: the check's reference."""
    return audio_to_lm_inputs_reference(waveforms, to_mel, encoder, bridge, lm, prompt_ids)


def audio_table_lookup(waveforms, to_mel, encoder, bridge, lm, prompt_ids):
    """Correct, written differently: the embedding table indexed directly, the result filled into a preallocated tensor."""
    mel = to_mel(waveforms)  # (B, M, F)
    audio = bridge(encoder(mel))  # (B, N, D)
    table = lm.get_input_embeddings().weight  # (V, D)
    b, n, d = audio.shape
    out = torch.empty(b, n + prompt_ids.shape[1], d, dtype=audio.dtype)
    out[:, :n] = audio
    out[:, n:] = table[prompt_ids]
    return out


def audio_text_first(waveforms, to_mel, encoder, bridge, lm, prompt_ids):
    """Wrong: the prompt before the audio tokens."""
    audio = bridge(encoder(to_mel(waveforms)))
    return torch.cat([lm.get_input_embeddings()(prompt_ids), audio], dim=1)


def audio_alone(waveforms, to_mel, encoder, bridge, lm, prompt_ids):
    """Wrong: the audio tokens without the prompt."""
    return bridge(encoder(to_mel(waveforms)))


def audio_pooled(waveforms, to_mel, encoder, bridge, lm, prompt_ids):
    """Wrong: the audio tokens averaged into one."""
    audio = bridge(encoder(to_mel(waveforms))).mean(dim=1, keepdim=True)
    return torch.cat([audio, lm.get_input_embeddings()(prompt_ids)], dim=1)


def audio_no_bridge(waveforms, to_mel, encoder, bridge, lm, prompt_ids):
    """Wrong: the encoder's tokens straight into the LM (widths differ)."""
    return torch.cat([encoder(to_mel(waveforms)), lm.get_input_embeddings()(prompt_ids)], dim=1)


def audio_mel_transposed(waveforms, to_mel, encoder, bridge, lm, prompt_ids):
    """Wrong: the log-mel transposed to (B, F, M) before the encoder."""
    audio = bridge(encoder(to_mel(waveforms).transpose(1, 2)))
    return torch.cat([audio, lm.get_input_embeddings()(prompt_ids)], dim=1)


def audio_logits(waveforms, to_mel, encoder, bridge, lm, prompt_ids):
    """Wrong: runs the LM and returns its logits."""
    embeds = audio_to_lm_inputs_reference(waveforms, to_mel, encoder, bridge, lm, prompt_ids)
    return lm(inputs_embeds=embeds).logits


# ------------------------------------------------------------------------------------------- signal_hidden


def signal_library(hidden, input_ids, signal_ids):
    """Correct: the library's."""
    from mmllm_course.output import signal_hidden_states

    return signal_hidden_states(hidden, input_ids, signal_ids)


def signal_loops(hidden, input_ids, signal_ids):
    """Correct, written differently: row by row with nonzero()."""
    rows = []
    for r in range(hidden.shape[0]):
        rows.append(torch.stack([hidden[r, int((input_ids[r] == s).nonzero()[0])] for s in signal_ids]))
    return torch.stack(rows)


def signal_one_hot(hidden, input_ids, signal_ids):
    """Correct, written differently: a (B, K, T) one-hot selection matrix times the hidden states."""
    ids = torch.as_tensor(list(signal_ids))
    select = (input_ids[:, None, :] == ids[None, :, None]).to(hidden.dtype)  # (B, K, T)
    return select @ hidden


def _signal_positions(input_ids, signal_ids):
    return torch.stack([(input_ids == s).long().argmax(dim=1) for s in signal_ids], dim=1)


def signal_one_before(hidden, input_ids, signal_ids):
    """Wrong: the position before each signal token."""
    pos = (_signal_positions(input_ids, signal_ids) - 1).clamp(min=0)
    return torch.gather(hidden, 1, pos[..., None].expand(-1, -1, hidden.shape[-1]))


def signal_one_after(hidden, input_ids, signal_ids):
    """Wrong: the position after each signal token."""
    pos = (_signal_positions(input_ids, signal_ids) + 1).clamp(max=hidden.shape[1] - 1)
    return torch.gather(hidden, 1, pos[..., None].expand(-1, -1, hidden.shape[-1]))


def signal_last_k(hidden, input_ids, signal_ids):
    """Wrong: the last K positions."""
    return hidden[:, -len(signal_ids):]


def signal_row0_positions(hidden, input_ids, signal_ids):
    """Wrong: row 0's positions for every row."""
    pos = _signal_positions(input_ids, signal_ids)[:1].expand(hidden.shape[0], -1)
    return torch.gather(hidden, 1, pos[..., None].expand(-1, -1, hidden.shape[-1]))


def signal_mask_select(hidden, input_ids, signal_ids):
    """Wrong (subtly): a mask keeps the row's own order, not the order of signal_ids."""
    mask = torch.isin(input_ids, torch.as_tensor(list(signal_ids)))
    return hidden[mask].reshape(hidden.shape[0], len(signal_ids), hidden.shape[-1])


def signal_flattened(hidden, input_ids, signal_ids):
    """Wrong: the batch axis lost, (B * K, D)."""
    return signal_library(hidden, input_ids, signal_ids).reshape(-1, hidden.shape[-1])


# ------------------------------------------------------------------------------------------- v_target


def v_formula(x0, noise, timesteps, scheduler):
    """Correct: the formula from alphas_cumprod."""
    abar = scheduler.alphas_cumprod.to(x0.dtype)[timesteps][:, None, None]
    return abar.sqrt() * noise - (1 - abar).sqrt() * x0


def v_diffusers(x0, noise, timesteps, scheduler):
    """Correct, written differently: diffusers itself."""
    return scheduler.get_velocity(x0, noise, timesteps)


def v_float64_view(x0, noise, timesteps, scheduler):
    """Correct, written differently: in float64 with view(-1, 1, 1), cast back."""
    abar = scheduler.alphas_cumprod.double()[timesteps].view(-1, 1, 1)
    return (abar.sqrt() * noise.double() - (1 - abar).sqrt() * x0.double()).to(x0.dtype)


def v_is_noise(x0, noise, timesteps, scheduler):
    """Wrong: the epsilon target."""
    return noise.clone()


def v_negated(x0, noise, timesteps, scheduler):
    """Wrong: the sign flipped."""
    return -v_formula(x0, noise, timesteps, scheduler)


def v_alpha_not_bar(x0, noise, timesteps, scheduler):
    """Wrong: alpha_t instead of alpha-bar_t."""
    a = scheduler.alphas.to(x0.dtype)[timesteps][:, None, None]
    return a.sqrt() * noise - (1 - a).sqrt() * x0


def v_no_sqrt(x0, noise, timesteps, scheduler):
    """Wrong: no square roots."""
    abar = scheduler.alphas_cumprod.to(x0.dtype)[timesteps][:, None, None]
    return abar * noise - (1 - abar) * x0


def v_is_x_t(x0, noise, timesteps, scheduler):
    """Wrong: the noisy sample."""
    abar = scheduler.alphas_cumprod.to(x0.dtype)[timesteps][:, None, None]
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def v_wrong_axis(x0, noise, timesteps, scheduler):
    """Wrong: abar (B,) broadcast along the last axis (runs only where B == 3; elsewhere it raises)."""
    abar = scheduler.alphas_cumprod.to(x0.dtype)[timesteps]
    if x0.shape[-1] != abar.shape[0]:
        abar = abar[:, None, None]  # what a learner would notice and fix only for the shapes that crash
    return abar.sqrt() * noise - (1 - abar).sqrt() * x0


# ------------------------------------------------------------------------------------------- denoise_step


def step_diffusers(denoiser, x_t, t, cond, null_cond, scheduler, guidance_scale):
    """Correct: two denoiser calls, guidance, diffusers' step."""
    b = x_t.shape[0]
    v_c = denoiser(x_t, t, cond)
    v_u = denoiser(x_t, t, null_cond.expand(b, -1, -1))
    return scheduler.step(v_u + guidance_scale * (v_c - v_u), t, x_t).prev_sample


def step_by_hand(denoiser, x_t, t, cond, null_cond, scheduler, guidance_scale):
    """Correct, written differently: one batched denoiser call, the DDIM formulas by hand."""
    b = x_t.shape[0]
    ts = torch.full((2 * b,), t, dtype=torch.long)
    v_u, v_c = denoiser(torch.cat([x_t, x_t]), ts, torch.cat([null_cond.expand(b, -1, -1), cond])).chunk(2)
    v = v_u + guidance_scale * (v_c - v_u)
    prev = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    ac = scheduler.alphas_cumprod
    abar, abar_prev = ac[t], (ac[prev] if prev >= 0 else torch.tensor(1.0))
    x0 = abar.sqrt() * x_t - (1 - abar).sqrt() * v
    eps = abar.sqrt() * v + (1 - abar).sqrt() * x_t
    return abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps


def _step_by_hand_variant(kind):
    def step(denoiser, x_t, t, cond, null_cond, scheduler, guidance_scale):
        b = x_t.shape[0]
        v_c = denoiser(x_t, t, cond)
        v_u = denoiser(x_t, t, null_cond.expand(b, -1, -1))
        w = guidance_scale
        v = {"reversed": v_c + w * (v_u - v_c), "none": v_c, "uncond": v_u}.get(kind, v_u + w * (v_c - v_u))
        stride = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
        prev = t - 1 if kind == "t-1" else t - stride
        table = scheduler.alphas if kind == "alpha" else scheduler.alphas_cumprod
        abar, abar_prev = table[t], (table[prev] if prev >= 0 else torch.tensor(1.0))
        if kind == "eps":
            eps = v
            x0 = (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()
        else:
            x0 = abar.sqrt() * x_t - (1 - abar).sqrt() * v
            eps = abar.sqrt() * v + (1 - abar).sqrt() * x_t
        if kind == "x0":
            return x0
        return abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps

    return step


step_eps = _step_by_hand_variant("eps")
step_alpha = _step_by_hand_variant("alpha")
step_returns_x0 = _step_by_hand_variant("x0")
step_no_guidance = _step_by_hand_variant("none")
step_reversed_guidance = _step_by_hand_variant("reversed")
step_unconditional = _step_by_hand_variant("uncond")
step_t_minus_one = _step_by_hand_variant("t-1")


def step_returns_output(denoiser, x_t, t, cond, null_cond, scheduler, guidance_scale):
    """Wrong: the scheduler's output object instead of the tensor."""
    b = x_t.shape[0]
    v_c, v_u = denoiser(x_t, t, cond), denoiser(x_t, t, null_cond.expand(b, -1, -1))
    return scheduler.step(v_u + guidance_scale * (v_c - v_u), t, x_t)


# ------------------------------------------------------------------------------------------- flow
# The wrong flows are edits of the check's reference (AudioTo3D.describe()), so they follow the pipeline's sizes.


def flow_reference():
    """Correct: the check's own stages (as a function that returns them)."""
    return capstone_reference_flow()


def flow_merged_encoder():
    """Correct, written differently: log-mel inside one encoder stage, the LM and its signal hidden states as one stage,
    other names, the sequence length as a number."""
    flow = capstone_reference_flow()
    ref = {name: flow[_stage(flow, name)] for name in _WHERE}
    wave, mel, enc = ref["waveform"].output_shape, ref["log-mel"].output_shape, ref["audio encoder"].output_shape
    bridged, sig = ref["LM + prompt"].input_shape, ref["[3D] hidden states"].output_shape
    cond, cloud = ref["output projector"].output_shape, ref["point diffusion decoder"].output_shape
    assert mel
    return [
        FlowStage("speech", "input", wave, wave),
        FlowStage("Whisper-style encoder (with its log-mel)", "encoder", wave, enc),
        FlowStage("Perceiver resampler", "input bridge", enc, bridged),
        FlowStage("causal LM, then its states at [3D0] [3D1]", "LLM backbone", bridged, sig),
        FlowStage("NExT-GPT-style projector", "output projector", sig, cond),
        FlowStage("DDIM sampler", "generator", cond, cloud),
        FlowStage("object", "output", cloud, cloud),
    ]


_WHERE = {"waveform": ("input", 0), "log-mel": ("encoder", 0), "audio encoder": ("encoder", -1), "bridge": ("input bridge", 0),
          "LM + prompt": ("LLM backbone", 0),
          "[3D] hidden states": ("LLM backbone", -1), "output projector": ("output projector", 0),
          "point diffusion decoder": ("generator", -1), "point cloud": ("output", -1)}


def _stage(flow, name):
    """The index of a stage, found by its place on the map (so the cases follow the pipeline's own stage names)."""
    part, pos = _WHERE[name]
    return [i for i, s in enumerate(flow) if s.part == part][pos]


def _replace(flow, name, **changes):
    i = _stage(flow, name)
    flow[i] = dataclasses.replace(flow[i], **changes)


def flow_mel_transposed():
    """Wrong: the log-mel written (B, F, M)."""
    flow = capstone_reference_flow()
    b, m, f = flow[_stage(flow, "log-mel")].output_shape
    _replace(flow, "log-mel", output_shape=(b, f, m))
    _replace(flow, "audio encoder", input_shape=(b, f, m))
    return flow


def flow_no_projector():
    """Wrong: the signal hidden states straight into the decoder."""
    flow = capstone_reference_flow()
    sig = flow[_stage(flow, "[3D] hidden states")].output_shape
    del flow[_stage(flow, "output projector")]
    _replace(flow, "point diffusion decoder", input_shape=sig)
    return flow


def flow_projector_reads_all():
    """Wrong: the projector fed every position of the sequence."""
    flow = capstone_reference_flow()
    seq = flow[_stage(flow, "[3D] hidden states")].input_shape
    del flow[_stage(flow, "[3D] hidden states")]
    _replace(flow, "output projector", input_shape=seq)
    return flow


def flow_other_bridge_tokens():
    """Wrong: the other bridge's token count (a resampler's 8 queries where the capstone's MLP keeps all, or the reverse)."""
    from mmllm_course.pipelines import CHAPTER11

    flow = capstone_reference_flow()
    i = next(i for i, s in enumerate(flow) if s.part == "input bridge")
    b, k_a, d = flow[i].output_shape
    n_a = flow[i].input_shape[1]
    other = CHAPTER11.num_queries if k_a == n_a else n_a
    flow[i] = dataclasses.replace(flow[i], output_shape=(b, other, d))
    _replace(flow, "LM + prompt", input_shape=(b, other, d))
    return flow


def flow_no_stride():
    """Wrong: one encoder token per mel frame (the stem's stride 2 forgotten)."""
    flow = capstone_reference_flow()
    b, m, f = flow[_stage(flow, "log-mel")].output_shape
    d = flow[_stage(flow, "audio encoder")].output_shape[-1]
    _replace(flow, "audio encoder", output_shape=(b, f, d))
    _replace(flow, "bridge", input_shape=(b, f, d))
    return flow


def flow_cloud_transposed():
    """Wrong: the cloud written (B, 3, N)."""
    flow = capstone_reference_flow()
    b, n, three = flow[_stage(flow, "point cloud")].output_shape
    _replace(flow, "point diffusion decoder", output_shape=(b, three, n))
    _replace(flow, "point cloud", input_shape=(b, three, n), output_shape=(b, three, n))
    return flow


def flow_bridge_after_lm():
    """Wrong: the bridge placed after the LM."""
    flow = capstone_reference_flow()
    i = next(i for i, s in enumerate(flow) if s.part == "input bridge")
    j = _stage(flow, "LM + prompt")
    bridge, lm = flow[i], flow[j]
    flow[i] = dataclasses.replace(lm, input_shape=bridge.input_shape, output_shape=bridge.input_shape)
    flow[j] = dataclasses.replace(bridge, input_shape=bridge.input_shape, output_shape=lm.output_shape)
    return flow


def flow_chain_broken():
    """Wrong: a stage's input is not the previous stage's output."""
    flow = capstone_reference_flow()
    _replace(flow, "[3D] hidden states", input_shape=flow[_stage(flow, "LM + prompt")].input_shape)
    return flow


def flow_unknown_part():
    """Wrong: a part the map does not have."""
    flow = capstone_reference_flow()
    _replace(flow, "output projector", part="projector")
    return flow


def flow_one_stage():
    """Wrong: a single stage, not the list."""
    return capstone_reference_flow()[1]


def flow_of_dicts():
    """Wrong: dicts instead of FlowStage."""
    return [{"name": s.name, "part": s.part} for s in capstone_reference_flow()]


# ------------------------------------------------------------------------------------------- build_pipeline


def build_reference(model, waveforms, generator, steps, guidance_scale):
    """Correct: the check's reference."""
    return waveform_to_cloud_reference(model, waveforms, generator, steps, guidance_scale)


def _own_path(model, waveforms, generator, steps, guidance_scale, *, prompt=True, audio_first=True, shift=0,
              scale=True, guided=True, step_delta=0, embeddings=False):
    """Written out by hand (a DDIM loop of its own, the last K positions as the signal tokens); the options make mistakes."""
    b = waveforms.shape[0]
    table = model.lm.get_input_embeddings()
    audio = model.bridge(model.encoder(model.log_mel(waveforms)))
    parts = [table(torch.tensor(model.prompt_ids).expand(b, -1))] if prompt else []
    parts = [audio] + parts if audio_first else parts + [audio]
    signal = table(torch.tensor(model.signal_ids).expand(b, -1))
    embeds = torch.cat(parts + [signal], dim=1)
    k = len(model.signal_ids)
    hidden = model.lm(inputs_embeds=embeds, output_hidden_states=True).hidden_states[-1]
    sig = signal if embeddings else hidden[:, hidden.shape[1] - k - shift: hidden.shape[1] - shift]
    cond = model.projector(sig)
    dec = model.decoder
    scheduler = make_point_schedulers(dec.config, max(1, steps + step_delta))[1]
    x = torch.randn((b, dec.config.num_points, 3), generator=generator)
    w = guidance_scale if guided else 1.0
    for t in scheduler.timesteps:
        t = int(t)
        v_c = dec.denoiser(x, t, cond)
        v_u = dec.denoiser(x, t, dec.null_cond.expand(b, -1, -1))
        v = v_u + w * (v_c - v_u)
        x = scheduler.step(v, t, x).prev_sample
    return cond, x / dec.config.point_scale if scale else x


def build_by_hand(model, waveforms, generator, steps, guidance_scale):
    """Correct, written differently."""
    return _own_path(model, waveforms, generator, steps, guidance_scale)


def build_library_sample(model, waveforms, generator, steps, guidance_scale):
    """Correct, written differently: the hand-made conditioning, then the decoder's own sampler."""
    cond, _ = _own_path(model, waveforms, torch.Generator().manual_seed(0), 1, 1.0)
    return cond, model.decoder.sample(cond, steps=steps, guidance_scale=guidance_scale, generator=generator)


def _build_wrong(**options):
    def build(model, waveforms, generator, steps, guidance_scale):
        return _own_path(model, waveforms, generator, steps, guidance_scale, **options)

    return build


build_no_prompt = _build_wrong(prompt=False)
build_prompt_first = _build_wrong(audio_first=False)
build_one_before = _build_wrong(shift=1)
build_embeddings = _build_wrong(embeddings=True)
build_no_point_scale = _build_wrong(scale=False)
build_no_guidance = _build_wrong(guided=False)
build_one_step_less = _build_wrong(step_delta=-1)


def build_clouds_only(model, waveforms, generator, steps, guidance_scale):
    """Wrong: the clouds alone, not (conditioning, clouds)."""
    return build_reference(model, waveforms, generator, steps, guidance_scale)[1]


# ------------------------------------------------------------------------------------------- train_projector
# Oracles, as chapter 8's cases: no training here (the solution's own training is graded with the solutions notebook
# and measured over seeds by the bench); they give the check conditionings of known quality.


class OracleTextTo3D(torch.nn.Module):
    """The true conditioning of each request, read off its words; ``noise``: added to it; ``wrong_every``: every k-th
    request gets the next solid's conditioning; ``collapse``: the mean conditioning for every request."""

    def __init__(self, noise=0.0, wrong_every=0, collapse=False, tokens=None):
        super().__init__()
        self.noise, self.wrong_every, self.collapse, self.tokens = noise, wrong_every, collapse, tokens

    def conditioning(self, captions):
        from mmllm_course.data.points import SOLIDS
        from mmllm_course.data.shapes import SIZES

        words = [c.split() for c in captions]
        solid = torch.tensor([SOLIDS.index(w[-1]) for w in words])
        size = torch.tensor([SIZES.index(w[1]) for w in words])
        if self.wrong_every:
            rows = torch.arange(len(captions)) % self.wrong_every == 0
            solid = torch.where(rows, (solid + 1) % len(SOLIDS), solid)
        with torch.no_grad():
            cond = capstone_model().decoder.condition(solid, size)
        if self.collapse:
            cond = cond.mean(dim=0, keepdim=True).expand_as(cond).clone()
        if self.noise:
            cond = cond + self.noise * torch.randn(cond.shape, generator=torch.Generator().manual_seed(3))
        return cond[:, : self.tokens] if self.tokens else cond

    def forward(self, captions):
        return self.conditioning(captions)


def projector_oracle_function():
    """Correct: a zero-argument function that returns the trained object."""
    return OracleTextTo3D()


CASES = {
    "ch11.audio_tokens": {
        "correct": [audio_reference, audio_table_lookup],
        "wrong": {
            "prompt first": audio_text_first,
            "audio alone": audio_alone,
            "pooled audio": audio_pooled,
            "no bridge": audio_no_bridge,
            "log-mel transposed": audio_mel_transposed,
            "returns logits": audio_logits,
        },
        "diagnoses": {
            "prompt first": (audio_text_first, "audio tokens come first"),
            "audio alone": (audio_alone, "the audio tokens alone"),
            "pooled audio": (audio_pooled, "one audio token per clip"),
            "no bridge": (audio_no_bridge, "do not chain"),
            "log-mel transposed": (audio_mel_transposed, "do not chain"),
            "returns logits": (audio_logits, "logits"),
        },
    },
    "ch11.signal_hidden": {
        "correct": [signal_library, signal_loops, signal_one_hot],
        "wrong": {
            "one before": signal_one_before,
            "one after": signal_one_after,
            "last K": signal_last_k,
            "row 0's positions": signal_row0_positions,
            "row order": signal_mask_select,
            "flattened": signal_flattened,
        },
        "diagnoses": {
            "one before": (signal_one_before, "one position BEFORE"),
            "one after": (signal_one_after, "one position AFTER"),
            "last K": (signal_last_k, "last K positions"),
            "row 0's positions": (signal_row0_positions, "row 0"),
            "row order": (signal_mask_select, "order of signal_ids"),
            "flattened": (signal_flattened, "flattened"),
        },
    },
    "ch11.v_target": {
        "correct": [v_formula, v_diffusers, v_float64_view],
        "wrong": {
            "eps": v_is_noise,
            "negated": v_negated,
            "alpha not alpha-bar": v_alpha_not_bar,
            "no sqrt": v_no_sqrt,
            "x_t": v_is_x_t,
            "wrong axis": v_wrong_axis,
        },
        "diagnoses": {
            "eps": (v_is_noise, "epsilon prediction"),
            "negated": (v_negated, "minus v"),
            "alpha not alpha-bar": (v_alpha_not_bar, "alpha-BAR"),
            "no sqrt": (v_no_sqrt, "without the square roots"),
            "x_t": (v_is_x_t, "INPUT"),
            "wrong axis": (v_wrong_axis, "(B, 1, 1)"),
        },
    },
    "ch11.denoise_step": {
        "correct": [step_diffusers, step_by_hand],
        "wrong": {
            "v read as eps": step_eps,
            "alpha not alpha-bar": step_alpha,
            "returns x0": step_returns_x0,
            "no guidance": step_no_guidance,
            "guidance reversed": step_reversed_guidance,
            "unconditional": step_unconditional,
            "t - 1": step_t_minus_one,
            "returns the scheduler's output": step_returns_output,
        },
        "diagnoses": {
            "v read as eps": (step_eps, "predicts v"),
            "alpha not alpha-bar": (step_alpha, "alpha-BAR"),
            "returns x0": (step_returns_x0, "pred_original_sample"),
            "no guidance": (step_no_guidance, "no guidance"),
            "guidance reversed": (step_reversed_guidance, "wrong way round"),
            "unconditional": (step_unconditional, "unconditional"),
            "t - 1": (step_t_minus_one, "t - 100"),
            "returns the scheduler's output": (step_returns_output, "prev_sample"),
        },
    },
    "ch11.flow": {
        "correct": [flow_reference, flow_merged_encoder],
        "wrong": {
            "log-mel transposed": flow_mel_transposed,
            "no output projector": flow_no_projector,
            "projector reads every position": flow_projector_reads_all,
            "the other bridge's tokens": flow_other_bridge_tokens,
            "no stride": flow_no_stride,
            "cloud transposed": flow_cloud_transposed,
            "bridge after the LM": flow_bridge_after_lm,
            "chain broken": flow_chain_broken,
            "unknown part": flow_unknown_part,
            "one stage": flow_one_stage,
            "dicts": flow_of_dicts,
        },
        "diagnoses": {
            "log-mel transposed": (flow_mel_transposed, "another order"),
            "no output projector": (flow_no_projector, "no stage in the part 'output projector'"),
            "projector reads every position": (flow_projector_reads_all, "AT the 2 signal tokens"),
            "the other bridge's tokens": (flow_other_bridge_tokens, "tokens per clip"),
            "no stride": (flow_no_stride, "halves the frames"),
            "cloud transposed": (flow_cloud_transposed, "another order"),
            "bridge after the LM": (flow_bridge_after_lm, "comes after"),
            "chain broken": (flow_chain_broken, "does not match"),
            "unknown part": (flow_unknown_part, "unknown part"),
            "one stage": (flow_one_stage, "LIST"),
            "dicts": (flow_of_dicts, "must be a FlowStage"),
        },
    },
    "ch11.build_pipeline": {
        "correct": [build_reference, build_by_hand, build_library_sample],
        "wrong": {
            "no prompt": build_no_prompt,
            "prompt first": build_prompt_first,
            "one position before": build_one_before,
            "token embeddings": build_embeddings,
            "no point_scale": build_no_point_scale,
            "no guidance": build_no_guidance,
            "one step less": build_one_step_less,
            "clouds only": build_clouds_only,
        },
        "diagnoses": {
            "no prompt": (build_no_prompt, "without the prompt"),
            "prompt first": (build_prompt_first, "BEFORE the audio"),
            "one position before": (build_one_before, "one position before"),
            "token embeddings": (build_embeddings, "EMBEDDINGS"),
            "no point_scale": (build_no_point_scale, "point_scale"),
            "no guidance": (build_no_guidance, "without guidance"),
            "one step less": (build_one_step_less, "DDIM step too few"),
            "clouds only": (build_clouds_only, "a pair"),
        },
    },
    "ch11.train_projector": {
        "correct": [OracleTextTo3D(), OracleTextTo3D(noise=0.02), projector_oracle_function],
        "wrong": {
            "half pointed at another solid": OracleTextTo3D(wrong_every=2),
            "one conditioning for every request": OracleTextTo3D(collapse=True),
            "one token": OracleTextTo3D(tokens=1),
            "the class": OracleTextTo3D,
        },
        "diagnoses": {
            "half pointed at another solid": (OracleTextTo3D(wrong_every=2), "does not point at the described object"),
            "one conditioning for every request": (OracleTextTo3D(collapse=True), "does not point at the described object"),
            "one token": (OracleTextTo3D(tokens=1), "(n, L, C)"),
            "the class": (OracleTextTo3D, "not its class"),
        },
    },
    "ch11.q1": {"answer": "b", "wrong": ["a", "c", "d"]},
    "ch11.q2": {"answer": "c", "wrong": ["a", "b", "d"]},
    "ch11.q3": {"answer": "b", "wrong": ["a", "c", "d"]},
    "ch11.q4": {"answer": "c", "wrong": ["a", "b", "d"]},
}
