# %% [markdown]
# # 09 · Exercises: signal tokens, an output projector and a frozen diffusion generator
#
# Read chapter 9 first. The exercises come in four parts:
#
# 1. **Core** (exercises 1-6): the labels of the signal-token loss; the output projector's forward from
#    its parts; the l2 alignment loss; one DDPM training example (noise, timestep, target), checked
#    against `diffusers`' `DDPMScheduler`; one DDIM and one DDPM sampling step, checked against the
#    schedulers' own `step`.
# 2. **Build** (exercise 7): NExT-GPT's output projector as a whole module. The check loads the
#    library's weights into yours, so your parameters must carry the library's names, and compares
#    outputs and gradients.
# 3. **Train** (exercise 8): train your projector with your loss on the frozen LM's signal-token hidden
#    states; the check draws new requests, lets the frozen generator draw from your projector's
#    conditioning and asks the judge what it drew.
# 4. **Stretch** (exercise 9, optional): classifier-free guidance.
#
# Then three checked questions. Each exercise ends with `check(...)`: it runs your code next to the
# library's (or `diffusers`') on several inputs and prints **pass**, **todo**, **fail** (with what was
# expected and what came back, and the usual mistake when it recognises it) or **error**.
#
# Dims: `B` batch, `T` tokens in a row, `K` signal tokens, `D` the LM's width, `L` conditioning tokens,
# `D_cond` their width (the generator's cross-attention), `W` the projector's width, `C, h, w` a
# latent's channels and side.

# %%
import math  # noqa: F401  (you may use it)
import time

import torch
import torch.nn.functional as F  # noqa: F401  (you may use it)
from torch import nn

from mmllm_course.grading import check

_ = torch.manual_seed(0)

# %% [markdown]
# ## Part 1: core functions
#
# ## Exercise 1: `signal_token_labels`
#
# NExT-GPT and GILL add `K` new tokens `[IMG0] .. [IMG{K-1}]` to the LM's vocabulary. The LM learns to
# emit them after a request such as "draw a small red circle in the top left", with a plain
# next-token loss on rows like
#
# `<bos> draw a small red circle in the top left [IMG0] [IMG1] [IMG2] [IMG3] <eos> <pad> <pad>`
#
# where only the signal tokens (and, with `keep_ids=[eos]`, the end of the answer) take the loss: the
# LM should learn **when** to ask for an image, not to write the user's request. Given `input_ids (B, T)`
# (integers), return the labels `(B, T)`: the id where the token is one of `signal_ids` or `keep_ids`,
# **-100** everywhere else (the `ignore_index` of the cross-entropy). Do **not** shift them: the
# `transformers` causal LM shifts by one itself. `torch.isin` tests membership in a list of ids.

# %%
def signal_token_labels(input_ids: torch.Tensor, signal_ids: list[int], keep_ids: tuple[int, ...] = ()) -> torch.Tensor:
    """input_ids (B, T) -> labels (B, T): the id at signal tokens and keep_ids, -100 elsewhere, not shifted."""
    # BEGIN SOLUTION
    kept = torch.isin(input_ids, torch.tensor(list(signal_ids) + list(keep_ids), dtype=input_ids.dtype))
    return torch.where(kept, input_ids, torch.full_like(input_ids, -100))
    # END SOLUTION


# %%
check("ch09.signal_labels", signal_token_labels)

# %% [markdown]
# ## Exercise 2: the output projector's forward
#
# The LM's hidden states at the `K` signal tokens, `(B, K, D)`, live in the LM's space; the frozen
# generator's cross-attention reads a conditioning sequence of its own shape, `(B, L, D_cond) =
# (B, 16, 64)` (what its text encoder makes of a caption). NExT-GPT's output projector translates with
# a small encoder-decoder transformer whose decoder reads `L` **learned queries**, so the output has
# `L` rows whatever `K` is (the Q-Former's trick from chapter 4, on the output side):
#
# | part | shape | does |
# |---|---|---|
# | `projector.in_proj` | `nn.Linear(D, W)` | signal states `(B, K, D)` -> `x (B, K, W)` |
# | `projector.queries` | `nn.Parameter (1, L, W)` | the learned queries, **one copy for the whole batch** |
# | `projector.transformer` | `nn.Transformer(batch_first=True, norm_first=True)` | `src` = the encoder's input, `tgt` = the decoder's |
# | `projector.out_proj` | `nn.Linear(W, D_cond)` | `(B, L, W)` -> the conditioning `(B, L, D_cond)` |
#
# Write the forward from these parts: project the signal states, expand the queries over the batch
# (`expand(B, -1, -1)`, a view), run `transformer(src=x, tgt=queries)` (no mask: the queries are not a
# sequence being generated, each reads all the others) and project out. The check builds the library's
# projector with random weights and compares your output and its gradients.

# %%
def output_projector_forward(projector: nn.Module, signal_hidden: torch.Tensor) -> torch.Tensor:
    """signal_hidden (B, K, D) -> conditioning (B, L, D_cond), with the projector's four parts."""
    # BEGIN SOLUTION
    x = projector.in_proj(signal_hidden)  # (B, K, W): the encoder's input
    queries = projector.queries.expand(x.shape[0], -1, -1)  # (B, L, W): the decoder's input
    return projector.out_proj(projector.transformer(src=x, tgt=queries))  # (B, L, D_cond)
    # END SOLUTION


# %%
check("ch09.projector_forward", output_projector_forward)

# %% [markdown]
# ## Exercise 3: `conditioning_l2_loss`
#
# NExT-GPT aligns the projector's output with the conditioning the generator's own text encoder gives
# the caption, `target = generator.encode_prompt([caption])`: the projector learns to speak the language
# the frozen generator already reads. The loss is the **squared Euclidean distance over the feature
# axis** `D_cond`, averaged over the batch and the `L` tokens:
#
# $$\mathcal{L}_{l2} = \frac{1}{B L} \sum_{b, l} \lVert \text{pred}_{b,l} - \text{target}_{b,l} \rVert_2^2 .$$
#
# Return a 0-d tensor; the check compares the value and the gradients with respect to both inputs.
# You train with it in exercise 8.

# %%
def conditioning_l2_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pred, target (B, L, D) -> the squared distance over D, averaged over B and L (0-d)."""
    # BEGIN SOLUTION
    return ((pred - target) ** 2).sum(dim=-1).mean()
    # END SOLUTION


# %%
check("ch09.l2_loss", conditioning_l2_loss)

# %% [markdown]
# ## Exercise 4: one DDPM training example
#
# The third loss, the generator's own denoising loss, needs one DDPM training example (Ho et al. 2020,
# [arXiv:2006.11239](https://arxiv.org/abs/2006.11239)). A `diffusers.DDPMScheduler` holds the noise
# schedule: `scheduler.betas` `(T,)`, `scheduler.alphas = 1 - betas`, and their cumulative product
# `scheduler.alphas_cumprod` $\bar\alpha_t = \prod_{s \le t} \alpha_s$. Noising jumps straight to step `t`:
#
# $$x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, \epsilon, \qquad \epsilon \sim \mathcal N(0, I),$$
#
# and the denoiser regresses a target that depends on `scheduler.config.prediction_type`:
#
# - `"epsilon"`: the noise $\epsilon$ itself;
# - `"v_prediction"` (Salimans & Ho 2022, [arXiv:2202.00512](https://arxiv.org/abs/2202.00512); the
#   chapter's generator): $v = \sqrt{\bar\alpha_t}\, \epsilon - \sqrt{1 - \bar\alpha_t}\, x_0$.
#
# Given `latents (B, C, h, w)` ($x_0$), `noise` of the same shape and `timesteps (B,)` (one integer per
# latent, `0 <= t < T`), return the pair `(noisy_latents, target)`, each `(B, C, h, w)` in the latents'
# dtype. Index `alphas_cumprod` with the timesteps and reshape to `(B, 1, 1, 1)` so that every latent
# gets its own. The check compares with `scheduler.add_noise` and the scheduler's target on four
# schedules.

# %%
def noisy_latents_and_target(scheduler, latents: torch.Tensor, noise: torch.Tensor,
                             timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x_0 (B, C, h, w), eps (B, C, h, w), t (B,) -> (x_t, the target of the scheduler's prediction_type)."""
    # BEGIN SOLUTION
    a = scheduler.alphas_cumprod.to(latents.dtype)[timesteps].reshape(-1, 1, 1, 1)  # (B, 1, 1, 1): alpha-bar_t
    noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
    if scheduler.config.prediction_type == "v_prediction":
        return noisy, a.sqrt() * noise - (1 - a).sqrt() * latents
    return noisy, noise
    # END SOLUTION


# %%
check("ch09.ddpm_training_example", noisy_latents_and_target)

# %% [markdown]
# ## Exercise 5: one DDIM sampling step
#
# The generator samples with DDIM (Song et al. 2020, [arXiv:2010.02502](https://arxiv.org/abs/2010.02502)):
# a few big deterministic steps from `timestep` to `prev_timestep` (the timestep minus
# `T // num_inference_steps`). With $a_t = \bar\alpha_{t}$ and $a_{prev} = \bar\alpha_{prev}$ (and
# $a_{prev} = 1$ when `prev_timestep < 0`, the end of sampling: `scheduler.final_alpha_cumprod`):
#
# 1. read the model output as the scheduler's `prediction_type` and get both the clean latents and the noise:
#    - `"epsilon"`: $\epsilon = o$, $\hat x_0 = (x_t - \sqrt{1 - a_t}\, \epsilon) / \sqrt{a_t}$;
#    - `"v_prediction"`: $\hat x_0 = \sqrt{a_t}\, x_t - \sqrt{1 - a_t}\, v$, $\epsilon = \sqrt{a_t}\, v + \sqrt{1 - a_t}\, x_t$;
# 2. step: $x_{prev} = \sqrt{a_{prev}}\, \hat x_0 + \sqrt{1 - a_{prev}}\, \epsilon$.
#
# Return $x_{prev}$ `(B, C, h, w)`. The check compares with `DDIMScheduler.step(..., eta=0)` at the first,
# a middle and the last step of three samplers (v and epsilon).

# %%
def ddim_step(scheduler, model_output: torch.Tensor, timestep: int, prev_timestep: int,
              sample: torch.Tensor) -> torch.Tensor:
    """One deterministic DDIM step: x_t (B, C, h, w) and the model output at t -> x_prev (B, C, h, w)."""
    # BEGIN SOLUTION
    a_t = scheduler.alphas_cumprod[timestep]
    a_prev = scheduler.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else scheduler.final_alpha_cumprod
    if scheduler.config.prediction_type == "v_prediction":
        x0 = a_t.sqrt() * sample - (1 - a_t).sqrt() * model_output
        eps = a_t.sqrt() * model_output + (1 - a_t).sqrt() * sample
    else:
        eps = model_output
        x0 = (sample - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    # END SOLUTION


# %%
check("ch09.ddim_step", ddim_step)

# %% [markdown]
# ## Exercise 6: one DDPM sampling step
#
# DDPM itself samples with all `T` small steps, each a draw from the posterior $q(x_{t-1} \mid x_t, \hat x_0)$.
# With $a_t = \bar\alpha_t$, $a_{prev} = \bar\alpha_{t-1}$ ($1$ at $t = 0$), this step's
# $\alpha_t = a_t / a_{prev}$ and $\beta_t = 1 - \alpha_t$:
#
# 1. $\hat x_0$ from the model output, as in exercise 5;
# 2. the posterior mean $\mu = \frac{\sqrt{a_{prev}}\, \beta_t}{1 - a_t}\, \hat x_0 + \frac{\sqrt{\alpha_t}\, (1 - a_{prev})}{1 - a_t}\, x_t$;
# 3. for $t > 0$, $x_{t-1} = \mu + \sigma_t z$ with the posterior's variance $\sigma_t^2 = \frac{1 - a_{prev}}{1 - a_t}\, \beta_t$
#    (the scheduler's `variance_type="fixed_small"`) and the given standard normal `noise` $z$; at $t = 0$,
#    the last step, no noise is added: return $\mu$.
#
# Return $x_{t-1}$ `(B, C, h, w)`. The check gives you the noise the scheduler would draw and compares with
# `DDPMScheduler.step` at four timesteps (the last and the first included) of two schedulers.

# %%
def ddpm_step(scheduler, model_output: torch.Tensor, timestep: int, sample: torch.Tensor,
              noise: torch.Tensor) -> torch.Tensor:
    """One DDPM step from x_t (B, C, h, w) and the model output at t to x_(t-1), with the given noise z (B, C, h, w)."""
    # BEGIN SOLUTION
    a_t = scheduler.alphas_cumprod[timestep]
    a_prev = scheduler.alphas_cumprod[timestep - 1] if timestep > 0 else torch.tensor(1.0)
    alpha, beta = a_t / a_prev, 1 - a_t / a_prev  # this one step's alpha_t and beta_t
    if scheduler.config.prediction_type == "v_prediction":
        x0 = a_t.sqrt() * sample - (1 - a_t).sqrt() * model_output
    else:
        x0 = (sample - (1 - a_t).sqrt() * model_output) / a_t.sqrt()
    mean = a_prev.sqrt() * beta / (1 - a_t) * x0 + alpha.sqrt() * (1 - a_prev) / (1 - a_t) * sample
    if timestep == 0:
        return mean
    return mean + ((1 - a_prev) / (1 - a_t) * beta).sqrt() * noise
    # END SOLUTION


# %%
check("ch09.ddpm_step", ddpm_step)

# %% [markdown]
# ## Part 2: build the module
#
# ## Exercise 7: NExT-GPT's output projector
#
# `OutputProjector(lm_dim, cond_dim, num_queries, width=64, heads=4, layers=2, dropout=0.1)` with
# exercise 2's four parts, under these names (the check builds your class, **loads the library's
# weights into it** with `load_state_dict(..., strict=True)` and compares outputs and the gradients
# of every parameter):
#
# | name | module |
# |---|---|
# | `in_proj` | `nn.Linear(lm_dim, width)` |
# | `queries` | `nn.Parameter` of shape `(1, num_queries, width)`, drawn at random (`torch.randn(...) * 0.02`) |
# | `transformer` | `nn.Transformer(d_model=width, nhead=heads, num_encoder_layers=layers, num_decoder_layers=layers, dim_feedforward=4 * width, dropout=dropout, batch_first=True, norm_first=True)` |
# | `out_proj` | `nn.Linear(width, cond_dim)` |
#
# Two of `nn.Transformer`'s defaults are not what we want: `batch_first=False` (it would read
# `(B, K, W)` as sequence-first) and `norm_first=False` (post-norm; NExT-GPT's projector is pre-norm).
# The queries must start out **different** from each other: identical queries (zeros) get identical
# outputs and gradients forever. `forward(signal_hidden)` is exercise 2.

# %%
class OutputProjector(nn.Module):
    """Signal-token hidden states (B, K, lm_dim) -> the generator's conditioning (B, num_queries, cond_dim)."""

    def __init__(self, lm_dim: int, cond_dim: int, num_queries: int, width: int = 64, heads: int = 4, layers: int = 2,
                 dropout: float = 0.1):
        super().__init__()
        # BEGIN SOLUTION
        self.in_proj = nn.Linear(lm_dim, width)
        self.queries = nn.Parameter(torch.randn(1, num_queries, width) * 0.02)
        self.transformer = nn.Transformer(d_model=width, nhead=heads, num_encoder_layers=layers, num_decoder_layers=layers,
                                          dim_feedforward=4 * width, dropout=dropout, batch_first=True, norm_first=True)
        self.out_proj = nn.Linear(width, cond_dim)
        # END SOLUTION

    def forward(self, signal_hidden: torch.Tensor) -> torch.Tensor:
        """(B, K, lm_dim) -> (B, num_queries, cond_dim)."""
        # BEGIN SOLUTION
        return output_projector_forward(self, signal_hidden)
        # END SOLUTION


# %%
check("ch09.output_projector", OutputProjector)

# %% [markdown]
# ## Part 3: train the output side
#
# ## Exercise 8: a projector the frozen generator understands
#
# The pieces, set up below:
#
# - the frozen chapter-5 LM with the four signal tokens added (`make_signal_lm`). Their new embedding
#   rows are random (seeded) and **stay untrained** here: the hidden state at a signal token attends to
#   the whole request before it, so it carries the request even though the token itself means nothing
#   yet (the chapter trains them, with the signal-token loss, so that the LM also *emits* them);
# - 2,000 requests ("draw ...", "show me ...", "paint ...", "make a picture of ..." plus a caption of the
#   world) and the LM's last hidden states at the four signal tokens after each, `(2000, 4, 64)`;
# - the frozen generator (`load_chapter9_generator`, the chapter's "Stable Diffusion"), whose text
#   encoder gives the target of every request, `encode_prompt(captions)`: `(2000, 16, 64)`.
#
# Write `train_projector(projector, features, targets, steps, ...)`: an optimiser, then `steps` times a
# random batch of rows, **your** `conditioning_l2_loss(projector(features[idx]), targets[idx])`,
# `backward()`, a step. Return the projector in eval mode. What the course found to work: **AdamW** at
# `3e-3`, a warmup over the first 5% of the steps then a cosine decay, batches of 64, 400 steps, and
# your projector built with **`dropout=0.0`** (NExT-GPT's 0.1 regularises long runs; over 400 steps it
# cost accuracy here: 87% instead of 93% of the requests drawn right, seed 0).
#
# **What the check does:** it never trains. It draws 100 new requests with its own seed (new draws of
# caption and phrasing, not unseen captions: the world has 160 of them), computes the signal states
# with its own copy of the LM, runs your projector, lets the frozen generator sample from
# that conditioning (10 DDIM steps, guidance 3) and asks the chapter's judge, a CNN trained on real
# images, what each image shows. The bar is **80%** of the images with colour and shape right (chance:
# 1 in 20; the generator driven by the true captions' own conditioning reaches the figure the next cell
# prints, measured when it was trained).

# %%
from mmllm_course.data import generate_shapes
from mmllm_course.generators import load_chapter9_generator
from mmllm_course.grading.checks.ch09 import make_requests, make_signal_lm, request_signal_features
from mmllm_course.utils import one_thread

lm, tok, signal_ids = make_signal_lm()  # frozen; signal_ids: the ids of [IMG0] .. [IMG3]
generator = load_chapter9_generator()  # frozen, eval mode
captions = generate_shapes(2000, seed=1).captions
requests = make_requests(captions, seed=1)
features = request_signal_features(lm, tok, signal_ids, requests)  # (2000, 4, 64): the LM's states at [IMG0..3]
targets = generator.encode_prompt(captions)  # (2000, 16, 64): what the generator's text encoder makes of each caption
print("signal ids", signal_ids, "| features", tuple(features.shape), "-> targets", tuple(targets.shape),
      "| e.g.", repr(requests[0]))
print(f"the generator from true captions: colour and shape right for {generator.pretrained_metrics['color_shape']:.0%} "
      "of 256 held-out requests (its upper bound here)")

# %%
def train_projector(projector: nn.Module, features: torch.Tensor, targets: torch.Tensor, steps: int = 400,
                    batch_size: int = 64, lr: float = 3e-3, seed: int = 0) -> nn.Module:
    """Train ``projector`` so that projector(features[i]) lands on targets[i] (your l2 loss); return it in eval mode."""
    # BEGIN SOLUTION
    optimizer = torch.optim.AdamW(projector.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    generator = torch.Generator().manual_seed(seed)  # the batch order
    projector.train()
    for _ in range(steps):
        idx = torch.randint(len(features), (batch_size,), generator=generator)
        loss = conditioning_l2_loss(projector(features[idx]), targets[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return projector.eval()
    # END SOLUTION


# %% [markdown]
# The next cell builds your projector from exercise 7 (LM width 64 in, the generator's `(16, 64)` out),
# trains it (it prints how long that took and the l2 loss on the first 500 requests) and hands it to the
# check. Until your functions are written, it says `todo`.

# %%
torch.manual_seed(0)
start = time.perf_counter()
try:
    my_projector = OutputProjector(lm_dim=64, cond_dim=64, num_queries=16, dropout=0.0)
    with one_thread():  # matrices this small train faster on one thread (and far faster on a busy machine)
        my_projector = train_projector(my_projector, features, targets, seed=0)
        with torch.no_grad():
            l2 = conditioning_l2_loss(my_projector(features[:500]), targets[:500]).item()
    print(f"trained in {time.perf_counter() - start:.0f} s; l2 on 500 training requests {l2:.2f} "
          f"(the targets' own spread: {((targets - targets.mean(0)) ** 2).sum(-1).mean().item():.1f})")
except NotImplementedError:
    print("one of your functions is not written yet")
    my_projector = ...  # the check says todo
check("ch09.train_projector", my_projector)

# %% [markdown]
# What your projector makes the frozen generator draw for eight new requests (top), next to what the
# same generator draws from the true captions' conditioning (bottom).

# %%
import textwrap

import matplotlib.pyplot as plt

shown = generate_shapes(8, seed=5).captions
shown_requests = make_requests(shown, seed=5)
try:
    with torch.no_grad():
        mine = generator.sample(my_projector(request_signal_features(lm, tok, signal_ids, shown_requests)),
                                num_inference_steps=10, seed=0)
        truth = generator.generate(shown, num_inference_steps=10, seed=0)
    fig, axes = plt.subplots(2, 8, figsize=(12, 4))
    for i in range(8):
        for row, images in enumerate((mine, truth)):
            axes[row, i].imshow(images[i].permute(1, 2, 0).numpy())
            axes[row, i].axis("off")
        axes[0, i].set_title("\n".join(textwrap.wrap(shown_requests[i], 18)), fontsize=7)
    axes[0, 0].text(-12, 16, "yours", rotation=90, va="center")
    axes[1, 0].text(-12, 16, "true", rotation=90, va="center")
    plt.tight_layout()
    plt.show()
except (NotImplementedError, TypeError):
    print("train your projector first")

# %% [markdown]
# ## Part 4 (stretch, optional): classifier-free guidance
#
# ## Exercise 9: `guided_prediction`
#
# The generator was trained with the caption dropped to the empty one 10% of the time, so its UNet
# predicts both with the conditioning and without it (the empty caption's conditioning,
# `generator.null_conditioning(B)`). Classifier-free guidance (Ho & Salimans 2022,
# [arXiv:2207.12598](https://arxiv.org/abs/2207.12598)) extrapolates from the unconditional prediction
# towards the conditional one, in `diffusers`' convention:
#
# $$\hat o = o_{\varnothing} + w\,(o_c - o_{\varnothing}),$$
#
# so `w = 1` is plain conditional sampling and `w > 1` follows the conditioning harder.
# `unet(latents, timestep, encoder_hidden_states=...)` returns an output object whose `.sample` is the
# prediction `(B, C, h, w)`. Return the guided prediction `(B, C, h, w)`. One UNet pass over the doubled
# batch (`torch.cat`) is what `diffusers`' pipelines do; two passes give the same. The check compares
# with the shipped UNet at three timesteps, then runs a whole DDIM loop with your function and compares
# the result with `generator.sample`.

# %%
def guided_prediction(unet, latents: torch.Tensor, timestep, conditioning: torch.Tensor,
                      null_conditioning: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance: latents (B, C, h, w), conditionings (B, L, D) -> the guided prediction (B, C, h, w)."""
    # BEGIN SOLUTION
    out = unet(torch.cat([latents, latents]), timestep,
               encoder_hidden_states=torch.cat([null_conditioning, conditioning])).sample
    uncond, cond = out.chunk(2)
    return uncond + guidance_scale * (cond - uncond)
    # END SOLUTION


# %%
check("ch09.guidance", guided_prediction)

# %% [markdown]
# ## Checked questions
#
# Answer with the letter, as a string (`"a"`).
#
# **Q1.** Why does the LM emit signal tokens, whose hidden states go through a projector, rather than
# write a caption for the generator's text encoder?
#
# a) The generator cannot read text: it has no text encoder, only cross-attention to vectors.
#
# b) The hidden states at the signal tokens are continuous vectors that can carry whatever the
# generator's conditioning needs, not squeezed through a few discrete words, and the path from the LM
# to the conditioning is differentiable, so the generator's own losses can train it.
#
# c) Four signal tokens are shorter than a caption, so generation is faster; the images are the same.
#
# d) An LM cannot write text after a request; it can only emit special tokens.

# %%
q1 = "b"  # SOLUTION
check("ch09.q1", q1)

# %% [markdown]
# **Q2.** NExT-GPT trains its output side with three losses. What does each align?
#
# a) The NLL teaches the LM to emit the signal tokens when an image is asked for; the l2 loss pulls the
# projector's output onto the generator's own text conditioning for the caption; the denoising loss
# makes the projector's output produce the right image through the frozen generator.
#
# b) The NLL trains the generator's UNet, the l2 loss trains the LM's embeddings, the denoising loss
# trains the judge.
#
# c) All three align the LM's written caption with the true caption, at three different temperatures.
#
# d) The NLL aligns pixels, the l2 loss aligns latents, and the denoising loss aligns the text encoder
# with the LM.

# %%
q2 = "a"  # SOLUTION
check("ch09.q2", q2)

# %% [markdown]
# **Q3.** Why does the generator stay frozen while the output side trains?
#
# a) diffusers models cannot be trained once loaded.
#
# b) A frozen generator samples faster than a trainable one.
#
# c) Its weights hold what it learned from far more image-caption pairs than the instruction data, and
# its conditioning space is the fixed target the projector learns to hit; training it on the small
# output-side data would cost far more and could forget what it can draw and move that target.
#
# d) Gradients cannot flow through a UNet, so only the LM can be trained.

# %%
q3 = "c"  # SOLUTION
check("ch09.q3", q3)

# %% [markdown]
# ## Done?
#
# From a shell, `python -m mmllm_course.grade exercises/09_signal_tokens_and_generation.ipynb` grades
# this whole notebook at once (with your training done, that includes its training). Chapter 10 turns
# to the other way of producing images: discrete visual tokens that the LM writes one by one.
