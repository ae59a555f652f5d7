# %% [markdown]
# # 11 · Exercises: the capstone, audio in and a 3-D object out
#
# Read chapter 11 (`notebooks/11_capstone_audio_to_3d.ipynb`) first. You build the capstone's three
# steps yourself, from the library's parts:
#
# 1. **Core** (exercises 1-4): the audio-to-token path (waveform -> log-mel -> audio encoder ->
#    bridge -> the LM's inputs), the hidden states at the signal tokens `[3D0] [3D1]`, the
#    v-prediction target, and one conditional denoising step of the frozen point decoder, checked
#    against `diffusers`' schedulers.
# 2. **The diagram** (exercise 5): the flow from waveform to point cloud as a list of stages with their
#    tensor shapes, checked against the real pipeline and drawn by the library.
# 3. **Build** (exercise 6): wire your functions into the whole path, waveform -> point cloud; the
#    check compares your conditioning and your clouds with the library pipeline's, noise for noise.
# 4. **Train** (exercise 7): train the output projector with your own loop; the check draws objects
#    with the frozen decoder from your conditioning and has the frozen judge read them.
#
# Then four checked questions, one per step and one on continuous signals vs discrete tokens. Each
# exercise ends with `check(...)`: **pass**, **todo**, **fail** (what was expected, what came, and the
# usual mistake when it recognises it) or **error**.
#
# Dims: `B` clips, `T` samples, `M` mel bands, `F` frames, `N_a` audio tokens, `K_a` bridge tokens,
# `P` prompt tokens, `D` the LM's width, `K` signal tokens, `L` conditioning tokens of width `C`, `N` points.

# %%
import torch
import torch.nn.functional as F  # noqa: F401  (you may use it)

from mmllm_course.grading import check

_ = torch.manual_seed(0)

# %% [markdown]
# The capstone's parts as the library builds them (`build_audio_to_3d`): the log-mel front end and a
# Whisper-style audio encoder (chapter 8), the bridge (chapters 3-4), chapter 5's LM
# with the two signal tokens `[3D0] [3D1]` added (chapter 9), an output projector, and the frozen
# point diffusion decoder. The encoder, bridge and projector here are **untrained**: exercises 1-6
# are about the wiring and the shapes, which do not depend on training. (The chapter trains them.)

# %%
from mmllm_course.grading.checks.ch11 import capstone_model

capstone = capstone_model()  # an AudioTo3D, eval mode
print(type(capstone.bridge).__name__, "| LM width", capstone.lm.get_input_embeddings().embedding_dim,
      "| prompt ids", capstone.prompt_ids, "| signal tokens", capstone.signal_tokens, capstone.signal_ids)

# %% [markdown]
# ## Part 1: core functions
#
# ## Exercise 1: `audio_to_lm_inputs`
#
# Turn clips `waveforms (B, T)` into what the LM reads, its `inputs_embeds (B, K_a + P', D)`:
#
# 1. `to_mel(waveforms)`: log-mel features `(B, M, F)`, which the encoder reads **as they are**;
# 2. `encoder(...)`: audio tokens `(B, N_a, D_a)`, one per 20 ms;
# 3. `bridge(...)`: `(B, K_a, D)` at the LM's width (`capstone.num_audio_tokens` tokens per clip);
# 4. after them, the embeddings of `prompt_ids (B, P')` from the LM's own table,
#    `lm.get_input_embeddings()`: `torch.cat([audio, text], dim=1)`.
#
# Audio first, then text: the prompt and the signal tokens can then attend to the audio (causal
# attention looks backwards). Do not run the LM: return its inputs.

# %%
def audio_to_lm_inputs(waveforms: torch.Tensor, to_mel, encoder, bridge, lm, prompt_ids: torch.Tensor) -> torch.Tensor:
    """waveforms (B, T), prompt_ids (B, P') -> inputs_embeds (B, K_a + P', D): the bridged audio tokens, then the prompt."""
    # BEGIN SOLUTION
    audio = bridge(encoder(to_mel(waveforms)))  # (B, K_a, D)
    text = lm.get_input_embeddings()(prompt_ids)  # (B, P', D)
    return torch.cat([audio, text], dim=1)
    # END SOLUTION


# %%
check("ch11.audio_tokens", audio_to_lm_inputs)

# %%
from mmllm_course.pipelines import make_spoken_requests

requests = make_spoken_requests(2, seed=0)  # two spoken requests, e.g. "large red cone"
ids = torch.tensor(capstone.prompt_ids + capstone.signal_ids).expand(2, -1)  # <bos> Build the object. [3D0] [3D1]
try:
    with torch.no_grad():
        embeds = audio_to_lm_inputs(requests.waveforms, capstone.log_mel, capstone.encoder, capstone.bridge, capstone.lm, ids)
    print(requests.captions, "->", tuple(requests.waveforms.shape), "->", tuple(embeds.shape),
          f"= (B, {capstone.num_audio_tokens} audio tokens + {ids.shape[1]} text tokens, D)")
except NotImplementedError:
    print("audio_to_lm_inputs is not written yet")

# %% [markdown]
# ## Exercise 2: `signal_hidden_states`
#
# The LM's last hidden states `hidden (B, T, D)` (`lm(..., output_hidden_states=True).hidden_states[-1]`)
# at the positions where `input_ids (B, T)` holds the `K` signal tokens: `(B, K, D)`, what the
# output projector reads. Each row holds each signal token once, but rows differ in where (prompts
# and padding differ in length). Return them **in the order of `signal_ids`** (`[3D0]` first), even
# for a row that holds them in another order. Take the hidden state **at** each signal token (the
# LM's output for that input position), not the one before it (where the LM predicted it).

# %%
def signal_hidden_states(hidden: torch.Tensor, input_ids: torch.Tensor, signal_ids: list[int]) -> torch.Tensor:
    """hidden (B, T, D), input_ids (B, T), K signal ids -> (B, K, D): the hidden state at each signal token, in order."""
    # BEGIN SOLUTION
    positions = torch.stack([(input_ids == s).float().argmax(dim=1) for s in signal_ids], dim=1)  # (B, K)
    return torch.gather(hidden, 1, positions[..., None].expand(-1, -1, hidden.shape[-1]))
    # END SOLUTION


# %%
check("ch11.signal_hidden", signal_hidden_states)

# %% [markdown]
# ## Exercise 3: `v_target`
#
# The frozen point decoder predicts **v** (`prediction_type="v_prediction"`, Salimans & Ho 2022,
# [arXiv:2202.00512](https://arxiv.org/abs/2202.00512)). For clean clouds `x0 (B, N, 3)`, noise
# `eps (B, N, 3)` and one timestep per cloud `t (B,)`:
#
# $$x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon, \qquad v = \sqrt{\bar\alpha_t}\,\epsilon - \sqrt{1-\bar\alpha_t}\,x_0,$$
#
# with $\bar\alpha_t$ = `scheduler.alphas_cumprod[t]` (alpha-**bar**, the product of the alphas up to
# `t`; `scheduler.alphas` holds one step's). Reshape it to `(B, 1, 1)` so each cloud gets its own.
# The check compares with `diffusers`' `DDPMScheduler.get_velocity`. Why v? At the noisy end
# ($\bar\alpha_t \approx 0$) predicting `eps` is nearly the identity and says nothing about the
# shape, while v is about `-x0` there: the chapter measured class-correct samples reliable with v
# and not with eps.

# %%
def v_target(x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, scheduler) -> torch.Tensor:
    """x0, noise (B, N, 3), timesteps (B,) -> v (B, N, 3), as DDPMScheduler.get_velocity."""
    # BEGIN SOLUTION
    abar = scheduler.alphas_cumprod.to(x0.dtype)[timesteps][:, None, None]  # (B, 1, 1)
    return abar.sqrt() * noise - (1 - abar).sqrt() * x0
    # END SOLUTION


# %%
check("ch11.v_target", v_target)

# %% [markdown]
# ## Exercise 4: `denoise_step`, one conditional DDIM step
#
# One step of sampling, from `x_t (B, N, 3)` at timestep `t` to the previous timestep of a
# `DDIMScheduler` set to `S` steps (`prev_t = t - 1000 // S`), with classifier-free guidance `w`:
#
# 1. two predictions: `v_cond = denoiser(x_t, t, cond)` and `v_null = denoiser(x_t, t, null_cond)`
#    (`null_cond (1, L, C)` expanded to the batch); `v = v_null + w (v_cond - v_null)`;
# 2. from v: $x_0 = \sqrt{\bar\alpha_t}\,x_t - \sqrt{1-\bar\alpha_t}\,v$ and
#    $\epsilon = \sqrt{\bar\alpha_t}\,v + \sqrt{1-\bar\alpha_t}\,x_t$;
# 3. $x_{prev} = \sqrt{\bar\alpha_{prev}}\,x_0 + \sqrt{1-\bar\alpha_{prev}}\,\epsilon$, with
#    $\bar\alpha_{prev} = 1$ when `prev_t < 0` (the last step, `set_alpha_to_one=True`).
#
# The check compares with `scheduler.step(v, t, x_t).prev_sample` at the first, middle and last
# timesteps (you may call it too, once you have written the formulas out).

# %%
def denoise_step(denoiser, x_t: torch.Tensor, t: int, cond: torch.Tensor, null_cond: torch.Tensor, scheduler,
                 guidance_scale: float) -> torch.Tensor:
    """x_t (B, N, 3) at timestep t -> x at the sampler's previous timestep, guided by cond (B, L, C)."""
    # BEGIN SOLUTION
    b = x_t.shape[0]
    v_cond = denoiser(x_t, t, cond)
    v_null = denoiser(x_t, t, null_cond.expand(b, -1, -1))
    v = v_null + guidance_scale * (v_cond - v_null)
    prev = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    abar = scheduler.alphas_cumprod[t]
    abar_prev = scheduler.alphas_cumprod[prev] if prev >= 0 else torch.tensor(1.0)
    x0 = abar.sqrt() * x_t - (1 - abar).sqrt() * v
    eps = abar.sqrt() * v + (1 - abar).sqrt() * x_t
    return abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps
    # END SOLUTION


# %%
check("ch11.denoise_step", denoise_step)

# %% [markdown]
# ## Part 2: the diagram
#
# ## Exercise 5: the capstone's flow as data
#
# Write `capstone_flow()`, which returns the list. Describe every step a tensor goes through, from the waveform to the point cloud, as a list of
# `FlowStage(name, part, input_shape, output_shape)`. `part` places the stage on the five-part map:
# `"encoder"`, `"input bridge"`, `"LLM backbone"`, `"output projector"`, `"generator"`, or `"input"` /
# `"output"` for the waveform and the cloud. Two rules hold (`check_flow` tests them): parts never go
# backwards along the map, and each stage's `input_shape` is the previous stage's `output_shape`.
# Write the batch as `"B"`; the LM's sequence length may be a number or a name such as `"T"`.
#
# Find the sizes in the parts' configs (printed below): the clip's samples, the mel bands and frames,
# the encoder's tokens and width, the bridge's tokens, the LM's width, the number of signal tokens,
# the decoder's conditioning `(L, C)` and its number of points. The check compares your shapes, where
# the data enters and leaves each part, with the real pipeline's; then the library draws your flow.

# %%
from mmllm_course.viz import FlowStage, draw_flow

print("log-mel:", capstone.log_mel.config)
print("encoder:", capstone.encoder.config)
print("bridge:", type(capstone.bridge).__name__, "tokens out:", capstone.num_audio_tokens)
print("LM width:", capstone.lm.get_input_embeddings().embedding_dim, "| signal tokens:", capstone.signal_tokens)
print("projector:", capstone.projector.config)
print("decoder: cond_len", capstone.decoder.config.cond_len, "cond_dim", capstone.decoder.config.cond_dim,
      "num_points", capstone.decoder.config.num_points)

# %%
def capstone_flow() -> list[FlowStage]:
    """Every stage of the capstone, waveform ("input") to point cloud ("output"), with its tensor shapes."""
    # BEGIN SOLUTION
    lc, ec, dc = capstone.log_mel.config, capstone.encoder.config, capstone.decoder.config
    t, m, f = lc.num_samples, lc.n_mels, lc.num_frames()  # 1 s of samples, mel bands, frames (one per 10 ms)
    n_a = (f + 1) // 2  # the stem's stride 2: a token per 20 ms
    k_a = capstone.num_audio_tokens  # what the bridge gives
    d = capstone.lm.get_input_embeddings().embedding_dim
    k, cond, cloud = len(capstone.signal_ids), ("B", dc.cond_len, dc.cond_dim), ("B", dc.num_points, 3)
    return [
        FlowStage("waveform", "input", ("B", t), ("B", t), f"{lc.sample_rate} Hz"),
        FlowStage("log-mel", "encoder", ("B", t), ("B", m, f), f"{m} mel bands"),
        FlowStage("audio encoder", "encoder", ("B", m, f), ("B", n_a, ec.dim), "a token per 20 ms"),
        FlowStage(type(capstone.bridge).__name__, "input bridge", ("B", n_a, ec.dim), ("B", k_a, d), "to the LM's space"),
        FlowStage("LM + prompt", "LLM backbone", ("B", k_a, d), ("B", "T", d), "emits [3D0] [3D1]"),
        FlowStage("[3D] hidden states", "LLM backbone", ("B", "T", d), ("B", k, d), "at the signal tokens"),
        FlowStage("output projector", "output projector", ("B", k, d), cond, "the decoder's conditioning"),
        FlowStage("point diffusion decoder", "generator", cond, cloud, "frozen, DDIM"),
        FlowStage("point cloud", "output", cloud, cloud),
    ]
    # END SOLUTION

# %%
result = check("ch11.flow", capstone_flow)
if result.status == "pass":
    _ = draw_flow(capstone_flow(), title="The capstone, stage by stage (your flow)")

# %% [markdown]
# ## Part 3: build the whole path
#
# ## Exercise 6: `waveform_to_cloud`
#
# Wire exercises 1, 2 and 4 into the capstone's path, for the library's `model` (an `AudioTo3D`):
#
# 1. `audio_to_lm_inputs` with `model.log_mel`, `model.encoder`, `model.bridge`, `model.lm`, and the
#    ids `model.prompt_ids + model.signal_ids` for every clip: the sequence as it stands once the LM
#    has said `[3D0] [3D1]` (the untrained LM here would not say them; feeding them is what training
#    does too, teacher forcing);
# 2. the LM's last hidden states, `model.lm(inputs_embeds=..., output_hidden_states=True).hidden_states[-1]`,
#    and your `signal_hidden_states` at the signal tokens (the ids of the whole sequence: give the
#    audio positions any id that is not a signal token, e.g. `model.tokenizer.pad_token_id`);
# 3. `model.projector(...)`: the conditioning `(B, L, C)`;
# 4. sampling: `x = torch.randn((B, N, 3), generator=generator)`, then your `denoise_step` for every
#    timestep of `make_point_schedulers(model.decoder.config, steps)[1]` (the DDIM sampler), with
#    `model.decoder.denoiser`, `model.decoder.null_cond` and `guidance_scale`; the decoder diffuses
#    points times `model.decoder.config.point_scale`, so the cloud is `x / point_scale`.
#
# Return `(conditioning, clouds)`. The check runs `model.decoder.sample` and the library's path on
# the same clips and the same noise, and compares both.

# %%
from mmllm_course.generators.point_diffusion import make_point_schedulers


@torch.no_grad()
def waveform_to_cloud(model, waveforms: torch.Tensor, generator: torch.Generator, steps: int = 10,
                      guidance_scale: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """waveforms (B, T) -> (conditioning (B, L, C), clouds (B, N, 3)) through every part of the capstone."""
    # BEGIN SOLUTION
    b = waveforms.shape[0]
    ids = torch.tensor(model.prompt_ids + model.signal_ids).expand(b, -1)  # (B, P + K)
    embeds = audio_to_lm_inputs(waveforms, model.log_mel, model.encoder, model.bridge, model.lm, ids)
    hidden = model.lm(inputs_embeds=embeds, output_hidden_states=True).hidden_states[-1]  # (B, K_a + P + K, D)
    audio_ids = torch.full((b, embeds.shape[1] - ids.shape[1]), model.tokenizer.pad_token_id)
    cond = model.projector(signal_hidden_states(hidden, torch.cat([audio_ids, ids], dim=1), model.signal_ids))
    dec = model.decoder
    scheduler = make_point_schedulers(dec.config, steps)[1]
    x = torch.randn((b, dec.config.num_points, 3), generator=generator)
    for t in scheduler.timesteps:
        x = denoise_step(dec.denoiser, x, int(t), cond, dec.null_cond, scheduler, guidance_scale)
    return cond, x / dec.config.point_scale
    # END SOLUTION


# %%
check("ch11.build_pipeline", waveform_to_cloud)

# %% [markdown]
# ## Part 4: train the output projector with your own loop
#
# ## Exercise 7: `train_projector`
#
# The output projector (NExT-GPT's, chapter 9) maps the LM's hidden states at `[3D0] [3D1]`
# `(n, 2, 64)` to the conditioning the frozen decoder was pretrained with, `decoder.condition(solid,
# size)` `(n, 2, 64)`. The audio path needs a trained encoder and bridge first (the chapter trains
# them); here the frozen LM reads the request **written**, "a large red cone", followed by the signal
# tokens, so that only the projector is left to train. The features and targets are set up below for
# all 40 requests (5 solids x 2 sizes x 4 colours: the colour has no 3-D meaning, the projector must
# ignore it).
#
# Write `train_projector`: Adam on the projector's parameters, then `steps` times a random batch of
# rows, `conditioning_l2_loss(projector(features[idx]), targets[idx])`, `backward()`, a step; return
# the projector in eval mode. What the course found to work: learning rate `1e-3`, batches of 32,
# 1,000 steps, and no dropout (40 requests are little data; dropout 0.1 slowed the fit).
#
# **What the check does:** it asks your `TextTo3D` below for the conditioning of every request, has
# the frozen decoder draw one object from each (25 DDIM steps, guidance 2, its own noise) and the
# frozen judge read it. Bars: your conditioning is nearest the described object's true conditioning
# for 60% of the requests (chance: 10%); the size is right for 90%; the solid is read right at most
# 35 points less often than from the true conditioning with the same noise (the decoder and the
# judge have errors of their own, which the check prints). The bars are low because the solution
# itself varies over seeds: most seeds fit all 40 requests, one in five left 25% of them pointing at
# a neighbouring solid.

# %%
import time

from mmllm_course.grading.checks.ch11 import capstone_requests, text_signal_features
from mmllm_course.output import OutputProjector, OutputProjectorConfig, conditioning_l2_loss  # noqa: F401

captions, solid, size = capstone_requests()
features = text_signal_features(capstone, captions)  # (40, 2, 64): the frozen LM at [3D0] [3D1]
with torch.no_grad():
    targets = capstone.decoder.condition(solid, size)  # (40, 2, 64): what the frozen decoder was pretrained with
print(captions[:3], "...", tuple(features.shape), "->", tuple(targets.shape))


def train_projector(projector: torch.nn.Module, features: torch.Tensor, targets: torch.Tensor, steps: int = 1000,
                    batch_size: int = 32, lr: float = 1e-3, seed: int = 0) -> torch.nn.Module:
    """Train ``projector`` so that projector(features[i]) ~ targets[i] (conditioning l2); return it in eval mode."""
    # BEGIN SOLUTION
    generator = torch.Generator().manual_seed(seed)  # the batch order
    optimizer = torch.optim.Adam(projector.parameters(), lr=lr)
    projector.train()
    for _ in range(steps):
        idx = torch.randint(len(features), (batch_size,), generator=generator)
        loss = conditioning_l2_loss(projector(features[idx]), targets[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return projector.eval()
    # END SOLUTION


class TextTo3D(torch.nn.Module):
    """A written request -> the decoder's conditioning (n, 2, 64), as the check calls it: conditioning(requests)."""

    def __init__(self, projector: torch.nn.Module):
        super().__init__()
        self.projector = projector

    @torch.no_grad()
    def conditioning(self, requests: list[str]) -> torch.Tensor:
        return self.projector(text_signal_features(capstone, requests))

    def forward(self, requests: list[str]) -> torch.Tensor:
        return self.conditioning(requests)


torch.manual_seed(0)
projector = OutputProjector(OutputProjectorConfig(lm_dim=64, cond_dim=64, num_queries=2, dropout=0.0))
start = time.perf_counter()
try:
    my_text_to_3d = TextTo3D(train_projector(projector, features, targets, seed=0))
    print(f"trained the projector in {time.perf_counter() - start:.0f} s")
except NotImplementedError:
    print("train_projector is not written yet")
    my_text_to_3d = ...  # the check says todo
check("ch11.train_projector", my_text_to_3d)

# %% [markdown]
# ## Checked questions
#
# Answer with the letter, as a string (`"a"`).
#
# **Q1.** Step 1: which encoder turns the raw waves into something the LM can read, and why?
#
# a) The LM's own tokenizer: 16,000 samples a second are 16,000 tokens, and the LM's attention finds the words.
#
# b) A Whisper-style audio encoder: a log-mel front end, a strided convolution stem and a transformer
# turn 16,000 samples a second into 50 feature vectors that describe what was said, trained on audio
# before the LM ever sees them.
#
# c) Chapter 2's ViT on a picture of the waveform, since the LM was aligned to vision.
#
# d) Chapter 8's point-cloud encoder, since the output is 3-D and the encoder should match the decoder.

# %%
q1 = "b"  # SOLUTION
check("ch11.q1", q1)

# %% [markdown]
# **Q2.** Step 2: what decides between an MLP bridge and a resampler here?
#
# a) Neither is needed: the LM can read the encoder's 64-wide features directly, since the widths happen to match.
#
# b) A resampler is always better: cross-attention is more accurate than an MLP on any input, whatever it costs.
#
# c) An MLP keeps every audio token (one per 20 ms: 50 for a 1 s clip), which the LM's 64 positions
# must hold with the prompt and the signal tokens; a resampler gives a fixed number of learned
# queries whatever the clip's length, at the price of an attention module to train; which one wins
# here is measured on held-out clips.
#
# d) A single linear layer, since a non-linearity would destroy the encoder's information.

# %%
q2 = "c"  # SOLUTION
check("ch11.q2", q2)

# %% [markdown]
# **Q3.** Step 3: what does the LM emit, and what turns it into an object?
#
# a) The LM writes the 256 points' coordinates as text, and a parser reads them into a cloud.
#
# b) The LM emits the signal tokens [3D0] [3D1]; their hidden states, not the tokens' ids, go through
# the output projector to the (2, 64) conditioning of a frozen point diffusion decoder, which turns
# Gaussian noise into the cloud by DDIM steps.
#
# c) The LM emits a class word ("cube"), and the decoder looks up a stored cloud of that class.
#
# d) The LM's last hidden state is the point cloud, reshaped to (256, 3).

# %%
q3 = "b"  # SOLUTION
check("ch11.q3", q3)

# %% [markdown]
# **Q4.** Continuous signals or discrete tokens: which route suits the 3-D output here, and why?
#
# a) Discrete tokens always: an LM can only produce discrete outputs, so continuous signals cannot reach a decoder.
#
# b) They are the same: a signal token's hidden state is a discrete code.
#
# c) Continuous signals: a small output projector ties the LM to a generator pretrained on 3-D
# shapes, and real-valued conditioning carries attributes such as size; discrete 3-D tokens would need
# a vector-quantised 3-D tokenizer first and an LM that predicts many codes per object, with the
# codebook's quantisation loss.
#
# d) Discrete tokens, because a diffusion decoder cannot be conditioned on vectors.

# %%
q4 = "c"  # SOLUTION
check("ch11.q4", q4)

# %% [markdown]
# ## Done?
#
# From a shell, `python -m mmllm_course.grade exercises/11_capstone_audio_to_3d.ipynb` grades this
# whole notebook at once. You have built every step of an "any-to-any" model in miniature: an encoder
# for a new modality, a bridge into an LM, signal tokens out of it, and a frozen generator that turns
# them into a new modality. NExT-GPT, GILL and AnyGPT are these parts at scale.
