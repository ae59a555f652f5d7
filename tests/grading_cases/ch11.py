"""Grader cases for chapter 11, the capstone: correct versions written several ways, and the mistakes learners make.

Besides ``correct`` and ``wrong``, an exercise may list ``diagnoses``: ``{label: (answer, words)}``, a
wrong answer whose ``fail`` message must contain ``words`` (the check names that mistake, not another).
"""

import torch

from mmllm_course.grading.checks.ch11 import audio_to_lm_inputs_reference, capstone_reference_flow
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


def flow_reference():
    """Correct: the check's own stages (as a function that returns them)."""
    return capstone_reference_flow()


def flow_merged_encoder():
    """Correct, written differently: log-mel inside one encoder stage, other names, 'L' for the sequence, no output end
    stage but the cloud as part 'output' only once."""
    return [
        FlowStage("speech", "input", ("B", 16000), ("B", 16000)),
        FlowStage("Whisper-style encoder (with its log-mel)", "encoder", ("B", 16000), ("B", 50, 64)),
        FlowStage("2-layer MLP", "input bridge", ("B", 50, 64), ("B", 50, 128)),
        FlowStage("causal LM + signal hidden states", "LLM backbone", ("B", 50, 128), ("B", 4, 128)),
        FlowStage("NExT-GPT-style projector", "output projector", ("B", 4, 128), ("B", 2, 64)),
        FlowStage("DDIM sampler", "generator", ("B", 2, 64), ("B", 256, 3)),
        FlowStage("object", "output", ("B", 256, 3), ("B", 256, 3)),
    ]


def _edited(**changes):
    """The reference flow with some stages replaced: ``changes`` maps a stage index to a FlowStage (or None: removed)."""
    def flow():
        stages = capstone_reference_flow()
        for i, stage in sorted(changes.items(), key=lambda kv: -int(kv[0][1:])):
            idx = int(i[1:])
            if stage is None:
                del stages[idx]
            else:
                stages[idx] = stage
        return stages

    return flow


flow_mel_transposed = _edited(
    s1=FlowStage("log-mel", "encoder", ("B", 16000), ("B", 100, 80)),
    s2=FlowStage("audio encoder", "encoder", ("B", 100, 80), ("B", 50, 64)),
)
flow_no_projector = _edited(
    s6=None,
    s7=FlowStage("point diffusion decoder", "generator", ("B", 4, 128), ("B", 256, 3)),
)
flow_projector_reads_all = _edited(
    s5=None,
    s6=FlowStage("output projector", "output projector", ("B", "T", 128), ("B", 2, 64)),
)
flow_bridge_keeps_width = _edited(
    s3=FlowStage("MLP bridge", "input bridge", ("B", 50, 64), ("B", 50, 64)),
    s4=FlowStage("LM", "LLM backbone", ("B", 50, 64), ("B", "T", 128)),
)
flow_cloud_transposed = _edited(
    s7=FlowStage("point diffusion decoder", "generator", ("B", 2, 64), ("B", 3, 256)),
    s8=FlowStage("point cloud", "output", ("B", 3, 256), ("B", 3, 256)),
)
flow_bridge_after_lm = _edited(
    s3=FlowStage("LM", "LLM backbone", ("B", 50, 64), ("B", 50, 64)),
    s4=FlowStage("MLP bridge", "input bridge", ("B", 50, 64), ("B", "T", 128)),
)
flow_chain_broken = _edited(s5=FlowStage("[3D] hidden states", "LLM backbone", ("B", 50, 128), ("B", 4, 128)))
flow_unknown_part = _edited(s6=FlowStage("output projector", "projector", ("B", 4, 128), ("B", 2, 64)))


def flow_one_stage():
    """Wrong: a single stage, not the list."""
    return capstone_reference_flow()[1]


def flow_of_dicts():
    """Wrong: dicts instead of FlowStage."""
    return [{"name": s.name, "part": s.part} for s in capstone_reference_flow()]


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
            "bridge keeps the encoder's width": flow_bridge_keeps_width,
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
            "projector reads every position": (flow_projector_reads_all, "AT the 4 signal tokens"),
            "bridge keeps the encoder's width": (flow_bridge_keeps_width, "dimension matching"),
            "cloud transposed": (flow_cloud_transposed, "another order"),
            "bridge after the LM": (flow_bridge_after_lm, "comes after"),
            "chain broken": (flow_chain_broken, "does not match"),
            "unknown part": (flow_unknown_part, "unknown part"),
            "one stage": (flow_one_stage, "LIST"),
            "dicts": (flow_of_dicts, "must be a FlowStage"),
        },
    },
    "ch11.q1": {"answer": "b", "wrong": ["a", "c", "d"]},
    "ch11.q2": {"answer": "c", "wrong": ["a", "b", "d"]},
    "ch11.q3": {"answer": "b", "wrong": ["a", "c", "d"]},
    "ch11.q4": {"answer": "c", "wrong": ["a", "b", "d"]},
}
