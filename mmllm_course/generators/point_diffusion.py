"""A point-cloud diffusion decoder: the generator at the end of the capstone, conditioned by cross-attention.

Dims: ``B`` clouds, ``N`` points per cloud, ``D`` the denoiser's width, ``L`` conditioning tokens of
width ``C`` (``cond_len``, ``cond_dim``), ``T`` training timesteps, ``S`` sampling steps.

Diffusion (Ho et al. 2020, arXiv:2006.11239) learns to undo noise. A training cloud ``x0`` (B, N, 3)
is mixed with Gaussian noise ``eps`` at a random timestep ``t``:

    x_t = sqrt(abar_t) * x0 + sqrt(1 - abar_t) * eps          (abar_t: diffusers' ``alphas_cumprod[t]``)

and a network sees ``(x_t, t, conditioning)``. Sampling starts from pure noise and applies the
network ``S`` times (DDIM, Song et al. 2020, arXiv:2010.02502, deterministic, 50 steps instead of
1000). Point-E (Nichol et al. 2022, arXiv:2212.08751) generates point clouds this way with a
transformer; we use a smaller PointNet-style network (Qi et al. 2017, arXiv:1612.00593) in the spirit
of Luo & Hu's point diffusion (2021, arXiv:2103.01458):

    points (B, N, 3) * point_scale -> MLP -> h (B, N, D)
        -> depth x [ summary = max_N h (B, 1, D) -> cross-attention: the summary reads the L conditioning tokens
                     -> FiLM(time + what it read) on every point -> per-point MLP on [a, max_N a] (global context) ]
        -> LayerNorm -> Linear -> (B, N, 3) the predicted velocity v

**What the network predicts: v, not eps.** With ``prediction_type="v_prediction"`` (Salimans & Ho
2022, arXiv:2202.00512) the target is ``v = sqrt(abar_t) * eps - sqrt(1 - abar_t) * x0``. A trial
here (a development trial: 256 points, 5 solids, a PointNet denoiser, DDPM 1000 steps
``squaredcos_cap_v2``, DDIM 50 steps, 120 s of training) gave 100% class-correct samples with v and
46-91% with eps. Why: at the noisy end of the schedule ``x_t`` is almost all noise, so predicting eps
is nearly the identity and says little about the shape, while the sampler recovers ``x0`` as
``(x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``, dividing the network's small errors by a tiny
``sqrt(abar_t)``: the first, shape-deciding steps are the least accurate. v is ``-x0`` there and
``eps`` at the clean end, a target of unit size at every ``t`` whose errors are not amplified (the
argument of Salimans & Ho).

**Conditioning: cross-attention to a sequence (B, L, C)** rather than FiLM on one vector, because the
capstone's output projector turns the hidden states of L signal tokens ``[3D0]..`` into exactly such
a sequence (as NExT-GPT's output projector feeds a diffusion model's cross-attention). For
pretraining the sequence comes from the true description: :class:`AttributeConditioner` embeds the
solid (5) and the size (``small``/``large``, the shapes world's SIZES that the spoken descriptions
say) as one token each, so the decoder must read more than a class label. A learned "null"
sequence replaces it for 10% of training clouds, which allows classifier-free guidance (Ho &
Salimans 2022, arXiv:2207.12598) when sampling.

**Measured here** (seed 0, 2,500 steps at batch 32, 100 samples judged, DDIM 50 steps; the training
runs shared 2 CPU cores with other work, so their seconds say little): clouds diffused as they are
(coordinates' std about 0.4) gave 72% class-correct samples, clouds doubled (``point_scale=2``, std
about 0.8, closer to the unit variance the noise has) 88%, and with guidance 2 on top 95% (guidance
3: 80%). The size was right on 98-100% in every variant. An earlier version, in which every point
cross-attended to the tokens, trained 2,000 steps at scale 1, gave 63%.

The clouds are chapter 8's solids (``data.points``) in their canonical pose (axis along z, no
rotation), stretched by up to +-20% per axis and scaled to a max norm in chapter 8's
``SIZE_SCALE_RANGE`` of their size. The judge of generated clouds is chapter 8's point classifier
(trained under random rotations, so a canonical pose is one of the poses it knows), plus a size judge
calibrated on real clouds: :class:`PointJudge`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mmllm_course._checks import (
    InputTypeError,
    check_choice,
    check_int,
    check_number,
    check_tensor,
    describe,
    to_module_dtype,
)
from mmllm_course.encoders.points import check_points
from mmllm_course.nn.attention import MultiHeadAttention

PREDICTION_TYPES = ("v_prediction", "epsilon", "sample")
BETA_SCHEDULES = ("squaredcos_cap_v2", "linear", "scaled_linear")


# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------


@dataclass
class PointDecoderConfig:
    """Sizes of the decoder and its noise schedule; defaults: 256 points, width 64, 3 blocks, 2 tokens of width 64."""

    num_points: int = 256  # N, the size of the clouds it generates
    dim: int = 64  # D, the width of every point's feature
    depth: int = 3  # blocks
    hidden_dim: int = 128  # the per-point MLP's hidden width
    num_heads: int = 4  # cross-attention heads
    cond_dim: int = 64  # C, the width of a conditioning token
    cond_len: int = 2  # L, conditioning tokens per cloud
    num_solids: int = 5  # the attribute conditioner's vocabularies (data.points.SOLIDS, data.shapes.SIZES)
    num_sizes: int = 2
    time_dim: int = 64  # sinusoidal timestep features before the time MLP
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "v_prediction"
    sample_steps: int = 50  # DDIM steps
    guidance_scale: float = 1.0  # classifier-free guidance at sampling; 1.0 = none
    point_scale: float = 1.0  # clouds are diffused as points * point_scale (and sampled clouds divided by it)

    def __post_init__(self) -> None:
        for name in ("num_points", "dim", "depth", "hidden_dim", "num_heads", "cond_dim", "cond_len", "num_solids",
                     "num_sizes", "time_dim", "num_train_timesteps", "sample_steps"):
            setattr(self, name, check_int(getattr(self, name), name))
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} is not divisible by num_heads={self.num_heads}: expected dim = num_heads * head_dim")
        if self.time_dim % 2:
            raise ValueError(f"time_dim must be even (sine and cosine halves), got {self.time_dim}")
        if self.num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps must be >= 2, got {self.num_train_timesteps}")
        if self.sample_steps > self.num_train_timesteps:
            raise ValueError(f"sample_steps={self.sample_steps} must be <= num_train_timesteps={self.num_train_timesteps}")
        check_choice(self.beta_schedule, "beta_schedule", BETA_SCHEDULES)
        check_choice(self.prediction_type, "prediction_type", PREDICTION_TYPES)
        self.guidance_scale = check_number(self.guidance_scale, "guidance_scale", low=0.0)
        self.point_scale = check_number(self.point_scale, "point_scale", low=0.0, low_open=True)


# ----------------------------------------------------------------------------------------------
# The two schedulers (diffusers) and the math they do, written out
# ----------------------------------------------------------------------------------------------


def make_point_schedulers(config: PointDecoderConfig, steps: int | None = None):
    """``(DDPMScheduler for training, DDIMScheduler for sampling with ``steps`` set)`` for ``config``.

    DDIM uses ``timestep_spacing="trailing"`` so that sampling starts at ``t = T - 1`` (pure noise
    under the cosine schedule) instead of skipping the noisiest timesteps (Lin et al. 2023,
    arXiv:2305.08891).
    """
    from diffusers import DDIMScheduler, DDPMScheduler

    if not isinstance(config, PointDecoderConfig):
        raise InputTypeError(f"config must be a PointDecoderConfig, got {describe(config)}")
    steps = config.sample_steps if steps is None else check_int(steps, "steps")
    if steps > config.num_train_timesteps:
        raise ValueError(f"steps={steps} must be <= num_train_timesteps={config.num_train_timesteps}")
    ddpm = DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule,
                         prediction_type=config.prediction_type, clip_sample=False)
    ddim = DDIMScheduler.from_config(ddpm.config, timestep_spacing="trailing", clip_sample=False, set_alpha_to_one=True)
    ddim.set_timesteps(steps)
    return ddpm, ddim


def _check_alphas(alphas_cumprod: object) -> torch.Tensor:
    check_tensor(alphas_cumprod, "alphas_cumprod", "(T,)", ndim=1, kind="float")
    if alphas_cumprod.numel() < 2 or not bool(((alphas_cumprod > 0) & (alphas_cumprod <= 1)).all()):
        raise ValueError(f"alphas_cumprod must be (T,) values in (0, 1] with T >= 2 (a scheduler's alphas_cumprod), "
                         f"got shape {tuple(alphas_cumprod.shape)}")
    return alphas_cumprod


def _check_timesteps(timesteps: object, batch: int, num_train: int) -> torch.Tensor:
    check_tensor(timesteps, "timesteps", "(B,)", ndim=1, kind="int")
    if timesteps.shape[0] != batch:
        raise ValueError(f"timesteps must hold one timestep per cloud: expected ({batch},), got shape {tuple(timesteps.shape)}")
    if batch and (int(timesteps.min()) < 0 or int(timesteps.max()) >= num_train):
        raise ValueError(f"timesteps must lie in [0, {num_train}), got values {int(timesteps.min())}..{int(timesteps.max())}")
    return timesteps


def add_noise_and_velocity(x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
                      alphas_cumprod: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One training example's input and v target: ``(x_t, v)``, both (B, N, 3).

    ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` (what ``DDPMScheduler.add_noise`` computes) and
    ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0`` (``DDPMScheduler.get_velocity``). x0, noise
    (B, N, 3); timesteps (B,) integers in [0, T); alphas_cumprod (T,).
    """
    check_points(x0, "x0")
    check_tensor(noise, "noise", "(B, N, 3)", kind="float")
    if noise.shape != x0.shape:
        raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}")
    alphas_cumprod = _check_alphas(alphas_cumprod)
    timesteps = _check_timesteps(timesteps, x0.shape[0], alphas_cumprod.numel())
    abar = alphas_cumprod.to(x0.device, x0.dtype)[timesteps][:, None, None]  # (B, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    v = abar.sqrt() * noise - (1 - abar).sqrt() * x0
    return x_t, v


def ddim_step(v: torch.Tensor, timestep: int, prev_timestep: int, x_t: torch.Tensor,
              alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """One deterministic DDIM step (eta = 0) from a v prediction: x_t (B, N, 3) at ``timestep`` -> x at ``prev_timestep``.

    From v: ``x0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v`` and ``eps = sqrt(abar_t) v + sqrt(1 - abar_t) x_t``;
    then ``x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps``. ``prev_timestep = -1`` means the
    end (``abar = 1``, what ``DDIMScheduler(set_alpha_to_one=True)`` uses). Equals
    ``DDIMScheduler.step(v, timestep, x_t).prev_sample``.
    """
    check_tensor(v, "v", "(B, N, 3)", kind="float")
    check_points(x_t, "x_t")
    if v.shape != x_t.shape:
        raise ValueError(f"v must have the shape of x_t {tuple(x_t.shape)}, got {tuple(v.shape)}")
    alphas_cumprod = _check_alphas(alphas_cumprod)
    t_max = alphas_cumprod.numel()
    timestep, prev_timestep = check_int(timestep, "timestep", minimum=0), check_int(prev_timestep, "prev_timestep", minimum=-1)
    if timestep >= t_max or prev_timestep >= timestep:
        raise ValueError(f"need -1 <= prev_timestep < timestep < {t_max}, got timestep={timestep}, prev_timestep={prev_timestep}")
    abar = alphas_cumprod[timestep].to(x_t.dtype)
    abar_prev = alphas_cumprod[prev_timestep].to(x_t.dtype) if prev_timestep >= 0 else torch.ones((), dtype=x_t.dtype)
    x0 = abar.sqrt() * x_t - (1 - abar).sqrt() * v
    eps = abar.sqrt() * v + (1 - abar).sqrt() * x_t
    return abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps


# ----------------------------------------------------------------------------------------------
# The denoiser
# ----------------------------------------------------------------------------------------------


def timestep_features(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of integer timesteps (B,) -> (B, dim): ``[cos(t w_i), sin(t w_i)]``, as diffusers' ``Timesteps``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=timesteps.device, dtype=torch.float32) / half)
    args = timesteps.float()[:, None] * freqs[None, :]  # (B, dim / 2)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class PointDenoiserBlock(nn.Module):
    """The cloud's summary reads the conditioning by cross-attention; FiLM; a PointNet MLP with global context.

    h (B, N, D), time (B, D), cond (B, L, C) -> h (B, N, D):

        summary  = max_N h                                   (B, 1, D)  the cloud so far (PointNet's max-pool)
        read     = CrossAttention(summary -> cond tokens)     (B, 1, D)  which description, which size
        scale, shift = Linear(SiLU(time + read))              FiLM, as DiT's adaLN
        a        = LayerNorm(h) * (1 + scale) + shift          every point, modulated the same way
        h        = h + MLP([a, max_N a])                       each point sees itself and the whole cloud

    The attention runs once per cloud, not once per point: with a few conditioning tokens, letting
    every point choose its own mix buys little and cost a third of the training time in a trial here.
    """

    def __init__(self, dim: int, hidden_dim: int, num_heads: int, cond_dim: int):
        super().__init__()
        self.norm_summary = nn.LayerNorm(dim)
        self.cross = MultiHeadAttention(dim, num_heads, kv_dim=cond_dim)
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.film = nn.Linear(dim, 2 * dim)  # time + conditioning -> (scale, shift)
        # Linear(2D -> H) on [a, max_N a], split in two: the global half runs once per cloud, not once per point
        self.point_in = nn.Linear(dim, hidden_dim)
        self.global_in = nn.Linear(dim, hidden_dim, bias=False)
        self.point_out = nn.Linear(hidden_dim, dim)

    def forward(self, h: torch.Tensor, time: torch.Tensor, cond: torch.Tensor,
                return_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        summary = self.norm_summary(h.amax(dim=1, keepdim=True))  # (B, 1, D)
        read, weights = self.cross(summary, cond, return_weights=return_weights)  # (B, 1, D), (B, H, 1, L)
        scale, shift = self.film(F.silu(time[:, None, :] + read)).chunk(2, dim=-1)  # (B, 1, D) each
        a = self.norm1(h) * (1 + scale) + shift
        hidden = self.point_in(a) + self.global_in(a.amax(dim=1, keepdim=True))  # (B, N, H) + (B, 1, H)
        return h + self.point_out(F.gelu(hidden)), weights  # (B, N, D)


class PointDenoiser(nn.Module):
    """Noisy points (B, N, 3), timesteps (B,), conditioning (B, L, C) -> the prediction (B, N, 3) (v by default)."""

    def __init__(self, config: PointDecoderConfig | None = None):
        super().__init__()
        self.config = c = PointDecoderConfig() if config is None else config
        if not isinstance(c, PointDecoderConfig):
            raise InputTypeError(f"config must be a PointDecoderConfig, got {describe(c)}")
        self.time_mlp = nn.Sequential(nn.Linear(c.time_dim, c.dim), nn.SiLU(), nn.Linear(c.dim, c.dim))
        self.input = nn.Sequential(nn.Linear(3, c.dim), nn.GELU(), nn.Linear(c.dim, c.dim))
        self.blocks = nn.ModuleList(PointDenoiserBlock(c.dim, c.hidden_dim, c.num_heads, c.cond_dim) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.dim)
        self.output = nn.Linear(c.dim, 3)

    def check_inputs(self, points: object, timesteps: object, cond: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The three inputs when they fit this denoiser; a ``ValueError`` naming expected vs got otherwise."""
        c = self.config
        check_points(points, "points")
        check_cond(cond, c, batch=points.shape[0])
        if isinstance(timesteps, int) and not isinstance(timesteps, bool):
            timesteps = torch.full((points.shape[0],), timesteps, dtype=torch.long, device=points.device)
        timesteps = _check_timesteps(timesteps, points.shape[0], c.num_train_timesteps)
        return points, timesteps, cond

    def forward(self, points: torch.Tensor, timesteps: torch.Tensor | int, cond: torch.Tensor,
                return_weights: bool = False) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        points, timesteps, cond = self.check_inputs(points, timesteps, cond)
        points, cond = to_module_dtype(points, self), to_module_dtype(cond, self)
        time = self.time_mlp(timestep_features(timesteps.to(points.device), self.config.time_dim).to(points.dtype))  # (B, D)
        h = self.input(points)  # (B, N, D)
        weights = []
        for block in self.blocks:
            h, w = block(h, time, cond, return_weights=return_weights)
            weights.append(w)
        out = self.output(self.norm(h))  # (B, N, 3)
        return (out, weights) if return_weights else out


def check_cond(cond: object, config: PointDecoderConfig, batch: int | None = None, name: str = "cond") -> torch.Tensor:
    """``cond`` when it is a finite float tensor (B, L, C) with this decoder's ``cond_len`` and ``cond_dim``."""
    layout = f"(B, {config.cond_len}, {config.cond_dim})"
    check_tensor(cond, name, layout, kind="float")
    if cond.dim() != 3:
        raise ValueError(f"{name} must be {layout} (B clouds, L=cond_len tokens, C=cond_dim), got shape {tuple(cond.shape)}")
    if cond.shape[1] != config.cond_len:
        raise ValueError(f"{name} must hold L={config.cond_len} conditioning tokens per cloud: expected {layout}, "
                         f"got shape {tuple(cond.shape)}")
    if cond.shape[2] != config.cond_dim:
        raise ValueError(f"{name} tokens must have width C={config.cond_dim}: expected {layout}, got shape {tuple(cond.shape)}")
    if cond.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch: got shape {tuple(cond.shape)}")
    if batch is not None and cond.shape[0] != batch:
        raise ValueError(f"{name} must have one sequence per cloud: expected B={batch}, got shape {tuple(cond.shape)}")
    if not bool(torch.isfinite(cond).all()):
        raise ValueError(f"{name} of shape {tuple(cond.shape)} holds NaN or infinite values")
    return cond


# ----------------------------------------------------------------------------------------------
# The conditioning of pretraining: the true description's attributes
# ----------------------------------------------------------------------------------------------


def _check_generator(generator: object) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InputTypeError(f"generator must be a torch.Generator or None, got {describe(generator)}")
    return generator


def _check_labels(labels: object, name: str, count: int) -> torch.Tensor:
    check_tensor(labels, name, "(B,)", ndim=1, kind="int")
    if labels.numel() == 0:
        raise ValueError(f"{name} is empty: expected (B,) indices with B >= 1")
    if int(labels.min()) < 0 or int(labels.max()) >= count:
        raise ValueError(f"{name} must be indices in [0, {count}), got values {int(labels.min())}..{int(labels.max())}")
    return labels


class AttributeConditioner(nn.Module):
    """The true description's conditioning: solid (B,) and size (B,) indices -> (B, L, C) tokens.

    Token 0 is the solid's learned embedding, token 1 the size's, each plus a learned slot embedding
    (so a sphere token and a "small" token never look alike); with ``cond_len > 2`` the remaining
    tokens are learned constants. What an output projector should learn to produce from the LM.
    """

    def __init__(self, config: PointDecoderConfig | None = None):
        super().__init__()
        self.config = c = PointDecoderConfig() if config is None else config
        if not isinstance(c, PointDecoderConfig):
            raise InputTypeError(f"config must be a PointDecoderConfig, got {describe(c)}")
        if c.cond_len < 2:
            raise ValueError(f"AttributeConditioner needs cond_len >= 2 (one token for the solid, one for the size), got {c.cond_len}")
        self.solid = nn.Embedding(c.num_solids, c.cond_dim)
        self.size = nn.Embedding(c.num_sizes, c.cond_dim)
        self.slots = nn.Parameter(torch.randn(c.cond_len, c.cond_dim) * 0.02)

    def forward(self, solid: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        c = self.config
        solid = _check_labels(solid, "solid", c.num_solids)
        size = _check_labels(size, "size", c.num_sizes)
        if solid.shape != size.shape:
            raise ValueError(f"solid and size must have the same shape (B,), got {tuple(solid.shape)} and {tuple(size.shape)}")
        dev = self.slots.device
        tokens = [self.solid(solid.to(dev)), self.size(size.to(dev))]  # 2 x (B, C)
        b = solid.shape[0]
        tokens += [torch.zeros(b, c.cond_dim, device=dev, dtype=self.slots.dtype)] * (c.cond_len - 2)
        return torch.stack(tokens, dim=1) + self.slots  # (B, L, C)


# ----------------------------------------------------------------------------------------------
# The decoder: denoiser + conditioner + null conditioning + schedulers
# ----------------------------------------------------------------------------------------------


class PointDiffusionDecoder(nn.Module):
    """A conditional point-cloud generator: conditioning (B, L, C) -> clouds (B, N, 3) by DDIM sampling.

    ``loss(points, cond)`` is the training objective (MSE to v at random timesteps, 10% null
    conditioning); ``sample(cond)`` runs ``sample_steps`` DDIM steps from Gaussian noise;
    ``condition(solid, size)`` is the true description's conditioning (the upper bound the capstone
    compares the LM's projected conditioning with).
    """

    def __init__(self, config: PointDecoderConfig | None = None):
        super().__init__()
        self.config = c = PointDecoderConfig() if config is None else config
        if not isinstance(c, PointDecoderConfig):
            raise InputTypeError(f"config must be a PointDecoderConfig, got {describe(c)}")
        self.denoiser = PointDenoiser(c)
        self.conditioner = AttributeConditioner(c)
        self.null_cond = nn.Parameter(torch.randn(1, c.cond_len, c.cond_dim) * 0.02)  # "no description", for guidance
        self.train_scheduler, self.sample_scheduler = make_point_schedulers(c)

    def condition(self, solid: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        """The true description's conditioning: solid, size (B,) indices -> (B, L, C)."""
        return self.conditioner(solid, size)

    def loss(self, points: torch.Tensor, cond: torch.Tensor, cond_dropout: float = 0.1,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean squared error between the denoiser's output and v (or eps / x0) at random timesteps: a 0-d tensor.

        points (B, N, 3) clean clouds; cond (B, L, C); ``cond_dropout`` the fraction of clouds that get
        the null conditioning instead (classifier-free guidance needs the unconditional model too).
        """
        c = self.config
        check_points(points, "points")
        check_cond(cond, c, batch=points.shape[0])
        cond_dropout = check_number(cond_dropout, "cond_dropout", low=0.0, high=1.0)
        _check_generator(generator)
        points = to_module_dtype(points, self) * c.point_scale
        b = points.shape[0]
        dev = points.device
        noise = torch.randn(points.shape, generator=generator, dtype=points.dtype).to(dev)
        timesteps = torch.randint(0, c.num_train_timesteps, (b,), generator=generator).to(dev)
        drop = (torch.rand(b, generator=generator) < cond_dropout).to(dev)[:, None, None]
        cond = torch.where(drop, self.null_cond.to(cond.dtype), cond)
        x_t, v = add_noise_and_velocity(points, noise, timesteps, self.train_scheduler.alphas_cumprod)
        target = {"v_prediction": v, "epsilon": noise, "sample": points}[c.prediction_type]
        return F.mse_loss(self.denoiser(x_t, timesteps, cond), target)

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, steps: int | None = None, guidance_scale: float | None = None,
               generator: torch.Generator | None = None, num_points: int | None = None,
               progress: bool = False) -> torch.Tensor:
        """Clouds (B, N, 3) for conditioning (B, L, C): DDIM from Gaussian noise (``diffusers.DDIMScheduler.step``).

        ``guidance_scale`` w (default ``config.guidance_scale``): the prediction is
        ``null + w (cond - null)``; w = 1 is the conditional model alone (one pass per step), w > 1
        pushes samples further towards the condition. ``steps`` DDIM steps (default ``config.sample_steps``).
        """
        c = self.config
        check_cond(cond, c)
        w = c.guidance_scale if guidance_scale is None else check_number(guidance_scale, "guidance_scale", low=0.0)
        n = c.num_points if num_points is None else check_int(num_points, "num_points")
        _check_generator(generator)
        _, scheduler = make_point_schedulers(c, steps)
        was_training = self.training
        self.eval()
        dev = self.null_cond.device
        cond = to_module_dtype(cond, self).to(dev)
        b = cond.shape[0]
        x = torch.randn((b, n, 3), generator=generator).to(dev, cond.dtype)
        guided = w != 1.0
        both = torch.cat([self.null_cond.expand(b, -1, -1), cond]) if guided else cond
        for t in tqdm(scheduler.timesteps, desc="sampling clouds", disable=not progress):
            ts = torch.full((both.shape[0],), int(t), dtype=torch.long, device=dev)
            out = self.denoiser(torch.cat([x, x]) if guided else x, ts, both)
            if guided:
                uncond, conditional = out.chunk(2)
                out = uncond + w * (conditional - uncond)
            x = scheduler.step(out, int(t), x).prev_sample
        self.train(was_training)
        return x / c.point_scale

    def generate(self, solid: torch.Tensor, size: torch.Tensor, steps: int | None = None, guidance_scale: float | None = None,
                 generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:
        """``sample(condition(solid, size))``: clouds (B, N, 3) of the described solids and sizes, (B,) indices each."""
        with torch.no_grad():
            cond = self.condition(solid, size)
        return self.sample(cond, steps=steps, guidance_scale=guidance_scale, generator=generator, progress=progress)


# ----------------------------------------------------------------------------------------------
# Chamfer distance
# ----------------------------------------------------------------------------------------------


def chamfer_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Symmetric Chamfer distance between paired clouds a (B, N, 3) and b (B, M, 3): (B,).

    ``mean_i min_j |a_i - b_j|^2 + mean_j min_i |a_i - b_j|^2`` (squared distances, as PyTorch3D's
    ``chamfer_distance``): small when every point of each cloud has a close partner in the other.
    Order-free, and N need not equal M.
    """
    check_points(a, "a")
    check_points(b, "b")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b must hold the same number of clouds, got a {tuple(a.shape)} and b {tuple(b.shape)}")
    if a.dtype != b.dtype:
        raise InputTypeError(f"a and b must share one dtype, got {a.dtype} and {b.dtype}")
    d = torch.cdist(a, b).square()  # (B, N, M)
    return d.amin(dim=2).mean(dim=1) + d.amin(dim=1).mean(dim=1)


def pairwise_chamfer(a: torch.Tensor, b: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """Chamfer distance of every cloud of a (A, N, 3) to every cloud of b (C, M, 3): (A, C), in chunks of ``chunk`` rows."""
    check_points(a, "a")
    check_points(b, "b")
    chunk = check_int(chunk, "chunk")
    if a.dtype != b.dtype:
        raise InputTypeError(f"a and b must share one dtype, got {a.dtype} and {b.dtype}")
    rows = []
    for i in range(0, a.shape[0], chunk):
        part = a[i:i + chunk]  # (k, N, 3)
        d = torch.cdist(part[:, None], b[None]).square()  # (k, C, N, M)
        rows.append(d.amin(dim=3).mean(dim=2) + d.amin(dim=2).mean(dim=2))
    return torch.cat(rows)


# ----------------------------------------------------------------------------------------------
# Data: attributed clouds in canonical pose
# ----------------------------------------------------------------------------------------------


@dataclass
class AttributedClouds:
    """``points`` (n, N, 3) float32; ``solid`` (n,) indices into SOLIDS; ``size`` (n,) indices into SIZES."""

    points: torch.Tensor
    solid: torch.Tensor
    size: torch.Tensor

    def __len__(self) -> int:
        return int(self.solid.shape[0])

    @property
    def names(self) -> list[str]:
        """``"small cube"``, ... for each cloud."""
        from mmllm_course.data.points import SOLIDS
        from mmllm_course.data.shapes import SIZES

        return [f"{SIZES[z]} {SOLIDS[s]}" for s, z in zip(self.solid.tolist(), self.size.tolist())]


def make_attributed_clouds(n: int, seed: int = 0, num_points: int = 256, rotate: bool = False) -> AttributedClouds:
    """``n`` clouds balanced over (solid, size): canonical pose (``rotate=False``), chapter 8's size ranges.

    Every (solid, size) pair gets ``n / 10`` clouds (the first ``n mod 10`` pairs one more), in random
    order; each solid is stretched +-20% per axis, normalised to max norm 1, scaled into
    ``SIZE_SCALE_RANGE[size]`` (small 0.45-0.6, large 0.8-1.0) and jittered by 0.01. Deterministic in ``seed``.
    """
    import numpy as np

    from mmllm_course.data.points import SOLIDS, PointCloudConfig, make_point_clouds
    from mmllm_course.data.shapes import SIZES
    from mmllm_course.encoders.binding import SIZE_SCALE_RANGE

    n, seed, num_points = check_int(n, "n"), check_int(seed, "seed", minimum=0), check_int(num_points, "num_points")
    if not isinstance(rotate, bool):
        raise InputTypeError(f"rotate must be True or False, got {describe(rotate)}")
    pairs = len(SOLIDS) * len(SIZES)
    rng = np.random.default_rng(seed)
    cls = rng.permutation(np.arange(n) % pairs)
    solid, size = cls // len(SIZES), cls % len(SIZES)
    points = torch.empty(n, num_points, 3)
    for z, name in enumerate(SIZES):
        rows = np.flatnonzero(size == z)
        if len(rows):
            config = PointCloudConfig(num_points=num_points, rotate=rotate, scale_range=SIZE_SCALE_RANGE[name])
            points[torch.from_numpy(rows)] = make_point_clouds(len(rows), config, seed=seed * len(SIZES) + z,
                                                               labels=solid[rows]).points
    return AttributedClouds(points, torch.from_numpy(solid.astype(np.int64)), torch.from_numpy(size.astype(np.int64)))


# ----------------------------------------------------------------------------------------------
# The judge: chapter 8's point classifier and a size judge calibrated on real clouds
# ----------------------------------------------------------------------------------------------


def cloud_radius(points: torch.Tensor) -> torch.Tensor:
    """A cloud's size (B,): the mean distance of its points from its centroid (robust to a few stray points)."""
    check_points(points, "points")
    return (points - points.mean(dim=1, keepdim=True)).norm(dim=-1).mean(dim=1)


class PointJudge(nn.Module):
    """Judges clouds (B, N, 3): ``solids(points)`` (B,) by chapter 8's classifier, ``sizes(points, solid)`` (B,).

    The size judge knows, for every solid, the mean log :func:`cloud_radius` of real small and real
    large clouds (``log_radius`` (num_solids, num_sizes), fitted by :meth:`calibrate`) and picks the
    nearer one for the described solid.
    """

    def __init__(self, classifier: nn.Module, num_solids: int = 5, num_sizes: int = 2):
        super().__init__()
        if not isinstance(classifier, nn.Module):
            raise InputTypeError(f"classifier must be an nn.Module (chapter 8's PointClassifier), got {describe(classifier)}")
        self.classifier = classifier
        self.register_buffer("log_radius", torch.zeros(check_int(num_solids, "num_solids"), check_int(num_sizes, "num_sizes")))

    @torch.no_grad()
    def calibrate(self, clouds: AttributedClouds) -> "PointJudge":
        """Fit the size judge's per-(solid, size) mean log radius on real clouds; returns self."""
        if not isinstance(clouds, AttributedClouds):
            raise InputTypeError(f"clouds must be AttributedClouds (from make_attributed_clouds), got {describe(clouds)}")
        log_r = cloud_radius(clouds.points).log()
        table = torch.zeros_like(self.log_radius)
        for s in range(table.shape[0]):
            for z in range(table.shape[1]):
                rows = (clouds.solid == s) & (clouds.size == z)
                if not bool(rows.any()):
                    raise ValueError(f"clouds hold no cloud of solid {s} and size {z}: the size judge needs every pair")
                table[s, z] = log_r[rows].mean()
        self.log_radius.copy_(table)
        return self

    @torch.no_grad()
    def solids(self, points: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """The classifier's solid (B,) for each cloud."""
        check_points(points, "points")
        batch_size = check_int(batch_size, "batch_size")
        self.classifier.eval()
        return torch.cat([self.classifier(points[i:i + batch_size]).argmax(dim=1) for i in range(0, len(points), batch_size)])

    @torch.no_grad()
    def sizes(self, points: torch.Tensor, solid: torch.Tensor) -> torch.Tensor:
        """The size (B,) whose real clouds of ``solid`` (B,) have the nearest mean log radius."""
        check_points(points, "points")
        solid = _check_labels(solid, "solid", self.log_radius.shape[0])
        if solid.shape[0] != points.shape[0]:
            raise ValueError(f"solid must hold one index per cloud: expected ({points.shape[0]},), got {tuple(solid.shape)}")
        log_r = cloud_radius(points).log()[:, None]  # (B, 1)
        return (log_r - self.log_radius[solid]).abs().argmin(dim=1)


@dataclass(frozen=True)
class PointJudgeRecipe:
    """How the judge is made: chapter 8's point classifier (``CHAPTER8.point_config()``, its optimiser settings)
    trained on upright attributed clouds, the pose, stretch and sizes the decoder generates.

    Chapter 8 trains the classifier under random rotations (it must recognise a solid in any pose);
    judged that way, real upright clouds were read right 96.6-97.5% of the time (cones taken for
    cylinders: 15 of 200), which left no room under a 95% bar for the decoder's own errors. Trained on
    the decoder's pose for the same 450 steps it reads 100% of 1,000 real held-out clouds and 99.5%
    of 200 samples of the shipped decoder (seed 0), where the rotation-trained judge read 97.5%:
    most of the "decoder errors" measured before were judge errors.
    """

    train_size: int = 2000
    steps: int = 450
    batch_size: int = 64
    lr: float = 2e-3
    warmup_steps: int = 20
    weight_decay: float = 0.01
    data_seed: int = 200  # training clouds; calibration uses seed 100, the stored held-out metrics seed 101


CHAPTER11_JUDGE = PointJudgeRecipe()


def train_point_judge(seed: int = 0, recipe: PointJudgeRecipe = CHAPTER11_JUDGE, progress: bool = False) -> PointJudge:
    """Train the judge (:class:`PointJudgeRecipe`) and calibrate its size judge on real clouds; frozen, eval mode."""
    from mmllm_course.data.points import SOLIDS
    from mmllm_course.encoders.binding import CHAPTER8, PointClassifier
    from mmllm_course.encoders.points import PointEncoder
    from mmllm_course.nn.optim import adamw_with_schedule
    from mmllm_course.utils import one_thread

    if not isinstance(recipe, PointJudgeRecipe):
        raise InputTypeError(f"recipe must be a PointJudgeRecipe, got {describe(recipe)}")
    seed = check_int(seed, "seed", minimum=0)
    train = make_attributed_clouds(recipe.train_size, seed=recipe.data_seed + seed, num_points=CHAPTER8.num_points)
    torch.manual_seed(seed)
    model = PointClassifier(PointEncoder(CHAPTER8.point_config()), CHAPTER8.point_dim, len(SOLIDS))
    optimizer, scheduler = adamw_with_schedule(model, recipe.lr, recipe.steps, recipe.warmup_steps, recipe.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    with one_thread():
        for _ in tqdm(range(recipe.steps), desc="training the point judge", disable=not progress):
            idx = torch.randperm(len(train), generator=generator)[: recipe.batch_size]
            loss = F.cross_entropy(model(train.points[idx]), train.solid[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    model.eval()
    judge = PointJudge(model).calibrate(make_attributed_clouds(1000, seed=100, num_points=CHAPTER8.num_points))
    return judge.eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------
# The recipe, its training, its evaluation
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PointDecoderRecipe:
    """How the decoder is pretrained. Run ``s``: training clouds from seed ``2s``, held-out ones from ``2s + 1``,
    initial weights from ``torch.manual_seed(s)``, batches, noise and timesteps from a generator seeded ``s``."""

    train_size: int = 4000
    held_out_size: int = 400
    num_points: int = 256
    dim: int = 64
    depth: int = 3
    hidden_dim: int = 128
    num_heads: int = 4
    cond_dim: int = 64
    steps: int = 2500
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 100
    weight_decay: float = 0.0
    cond_dropout: float = 0.1
    sample_steps: int = 50
    guidance_scale: float = 2.0
    point_scale: float = 2.0
    eval_per_pair: int = 10  # generated clouds per (solid, size) when evaluating
    reference_per_pair: int = 20  # real clouds per (solid, size) the Chamfer distances compare with

    def decoder_config(self) -> PointDecoderConfig:
        return PointDecoderConfig(num_points=self.num_points, dim=self.dim, depth=self.depth, hidden_dim=self.hidden_dim,
                                  num_heads=self.num_heads, cond_dim=self.cond_dim, sample_steps=self.sample_steps,
                                  guidance_scale=self.guidance_scale, point_scale=self.point_scale)


CHAPTER11_DECODER = PointDecoderRecipe()

# Measured on seeds 0-2 with chapter 8's rotation-trained classifier as the judge (100 samples each, guidance 2, DDIM 50):
# class-correct 95%, 92%, 91%, but that judge itself read only 96.6-97.5% of real upright clouds (cones taken for
# cylinders). With the upright judge (CHAPTER11_JUDGE: 100% of 1,000 real held-out clouds) the same seed-0 decoder
# reads 99.5% (200 samples) and the re-made shipped one 100% (100 samples); size 100%, Chamfer same/other 0.23,
# random conditioning 19% (chance 20%). Most of the measured shortfall was the judge's. About 210-230 CPU-seconds of
# training per seed on a quiet machine (1,380 s under a load average of 8).

# What the capstone asserts about the decoder driven by the true description's conditioning.
POINT_DECODER_BARS: dict[str, float] = {"class_accuracy": 0.95, "size_accuracy": 0.90}
POINT_DECODER_CHAMFER_RATIO = 1 / 3  # same-class Chamfer at most a third of other-class


@dataclass
class PointDecoderRun:
    """A trained decoder, its loss per step, training seconds, data and seed."""

    decoder: PointDiffusionDecoder
    loss: list[float]
    seconds: float
    train: AttributedClouds
    seed: int


def _check_recipe(recipe: object, seed: object) -> int:
    if not isinstance(recipe, PointDecoderRecipe):
        raise InputTypeError(f"recipe must be a PointDecoderRecipe, got {describe(recipe)}")
    return check_int(seed, "seed", minimum=0)


def train_point_decoder(seed: int = 0, recipe: PointDecoderRecipe = CHAPTER11_DECODER, progress: bool = False) -> PointDecoderRun:
    """Pretrain a :class:`PointDiffusionDecoder` on attributed clouds with their true conditioning (CPU, one thread)."""
    from mmllm_course.nn.optim import adamw_with_schedule
    from mmllm_course.utils import one_thread

    seed = _check_recipe(recipe, seed)
    train = make_attributed_clouds(recipe.train_size, seed=2 * seed, num_points=recipe.num_points)
    torch.manual_seed(seed)
    decoder = PointDiffusionDecoder(recipe.decoder_config())
    optimizer, scheduler = adamw_with_schedule(decoder, recipe.lr, recipe.steps, recipe.warmup_steps, recipe.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    decoder.train()
    start = time.perf_counter()
    with one_thread():
        bar = tqdm(range(recipe.steps), desc="training the point decoder", disable=not progress)
        for step in bar:
            idx = torch.randint(0, len(train), (recipe.batch_size,), generator=generator)
            cond = decoder.condition(train.solid[idx], train.size[idx])
            loss = decoder.loss(train.points[idx], cond, recipe.cond_dropout, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
    decoder.eval()
    return PointDecoderRun(decoder, losses, time.perf_counter() - start, train, seed)


def _pairs(per_pair: int, num_solids: int, num_sizes: int) -> tuple[torch.Tensor, torch.Tensor]:
    cls = torch.arange(num_solids * num_sizes).repeat_interleave(per_pair)
    return cls // num_sizes, cls % num_sizes


def random_conditioning(decoder: PointDiffusionDecoder, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``count`` random sequences (count, L, C) with the per-feature mean and spread of the true conditioning:
    the chance baseline (a conditioning that says nothing about a described shape)."""
    if not isinstance(decoder, PointDiffusionDecoder):
        raise InputTypeError(f"decoder must be a PointDiffusionDecoder, got {describe(decoder)}")
    count = check_int(count, "count")
    _check_generator(generator)
    c = decoder.config
    solid, size = _pairs(1, c.num_solids, c.num_sizes)
    with torch.no_grad():
        table = decoder.condition(solid, size)  # (pairs, L, C)
    mean, std = table.mean(dim=0), table.std(dim=0)
    return mean + std * torch.randn((count, c.cond_len, c.cond_dim), generator=generator)


@torch.no_grad()
def evaluate_point_decoder(decoder: PointDiffusionDecoder, judge: PointJudge, seed: int = 0,
                           recipe: PointDecoderRecipe = CHAPTER11_DECODER, per_pair: int | None = None,
                           steps: int | None = None, guidance_scale: float | None = None) -> dict[str, float]:
    """The decoder's numbers on ``per_pair`` generated clouds per (solid, size), driven by the true conditioning.

    ``class_accuracy``: the judge reads the described solid; ``size_accuracy``: the size judge reads the
    described size; ``chamfer_same``: mean Chamfer distance of a generated cloud to real held-out clouds
    of its (solid, size); ``chamfer_other``: to real clouds of the other solids at the same size;
    ``chamfer_ratio`` = same / other; ``random_*``: the same numbers for random conditioning, scored
    against the descriptions it was not told (chance: 20% and 50%); ``judge_real``,
    ``size_judge_real``: the judges on real held-out clouds; ``seconds_per_object``: sampling time.
    """
    seed = _check_recipe(recipe, seed)
    if not isinstance(decoder, PointDiffusionDecoder):
        raise InputTypeError(f"decoder must be a PointDiffusionDecoder, got {describe(decoder)}")
    if not isinstance(judge, PointJudge):
        raise InputTypeError(f"judge must be a PointJudge (from load_point_judge), got {describe(judge)}")
    per_pair = recipe.eval_per_pair if per_pair is None else check_int(per_pair, "per_pair")
    c = decoder.config
    held = make_attributed_clouds(recipe.held_out_size, seed=2 * seed + 1, num_points=c.num_points)
    solid, size = _pairs(per_pair, c.num_solids, c.num_sizes)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    clouds = decoder.generate(solid, size, steps=steps, guidance_scale=guidance_scale, generator=generator)
    seconds = (time.perf_counter() - start) / len(solid)
    randoms = decoder.sample(random_conditioning(decoder, len(solid), generator), steps=steps,
                             guidance_scale=guidance_scale, generator=generator)
    # real references: the first reference_per_pair held-out clouds of every (solid, size)
    ref_rows = torch.cat([((held.solid == s) & (held.size == z)).nonzero().flatten()[: recipe.reference_per_pair]
                          for s in range(c.num_solids) for z in range(c.num_sizes)])
    ref = AttributedClouds(held.points[ref_rows], held.solid[ref_rows], held.size[ref_rows])
    metrics: dict[str, float] = {}
    for prefix, generated in (("", clouds), ("random_", randoms)):
        dist = pairwise_chamfer(generated, ref.points)  # (G, R)
        same = (solid[:, None] == ref.solid[None]) & (size[:, None] == ref.size[None])
        other = (solid[:, None] != ref.solid[None]) & (size[:, None] == ref.size[None])
        chamfer_same = (dist * same).sum(dim=1) / same.sum(dim=1)
        chamfer_other = (dist * other).sum(dim=1) / other.sum(dim=1)
        metrics[prefix + "class_accuracy"] = (judge.solids(generated) == solid).double().mean().item()
        metrics[prefix + "size_accuracy"] = (judge.sizes(generated, solid) == size).double().mean().item()
        metrics[prefix + "chamfer_same"] = chamfer_same.mean().item()
        metrics[prefix + "chamfer_other"] = chamfer_other.mean().item()
        metrics[prefix + "chamfer_ratio"] = metrics[prefix + "chamfer_same"] / metrics[prefix + "chamfer_other"]
    metrics["judge_real"] = (judge.solids(held.points) == held.solid).double().mean().item()
    metrics["size_judge_real"] = (judge.sizes(held.points, held.solid) == held.size).double().mean().item()
    metrics["seconds_per_object"] = seconds
    return metrics


def point_decoder_failures(metrics: dict[str, float]) -> list[str]:
    """The capstone's decoder assertions that ``metrics`` (from :func:`evaluate_point_decoder`) would fail; empty if none."""
    if not isinstance(metrics, dict):
        raise InputTypeError(f"metrics must be a dict from evaluate_point_decoder, got {describe(metrics)}")
    missing = [k for k in (*POINT_DECODER_BARS, "chamfer_ratio") if k not in metrics]
    if missing:
        raise ValueError(f"metrics lacks {missing}: expected the dict evaluate_point_decoder returns")
    failed = [f"{name} {metrics[name]:.1%} < {bar:.0%}" for name, bar in POINT_DECODER_BARS.items() if metrics[name] < bar]
    if metrics["chamfer_ratio"] > POINT_DECODER_CHAMFER_RATIO:
        failed.append(f"chamfer_ratio {metrics['chamfer_ratio']:.3f} > {POINT_DECODER_CHAMFER_RATIO:.3f} (same-class over other-class)")
    return failed


def run_point_decoder(seed: int = 0, recipe: PointDecoderRecipe = CHAPTER11_DECODER, judge: PointJudge | None = None,
                      progress: bool = False) -> dict[str, float]:
    """Pretrain run ``seed`` of the decoder and evaluate it with the shipped judge (for ``bench --seeds``)."""
    seed = _check_recipe(recipe, seed)
    judge = load_point_judge() if judge is None else judge
    if not isinstance(judge, PointJudge):
        raise InputTypeError(f"judge must be a PointJudge (from load_point_judge) or None, got {describe(judge)}")
    run = train_point_decoder(seed, recipe, progress)
    metrics = evaluate_point_decoder(run.decoder, judge, seed, recipe)
    metrics["train_seconds"] = run.seconds
    metrics["final_loss"] = sum(run.loss[-100:]) / len(run.loss[-100:])
    return metrics


def point_sampling_seconds(decoder: PointDiffusionDecoder | None = None, count: int = 20, steps: int | None = None,
                                guidance_scale: float | None = None) -> float:
    """Seconds to generate one cloud (a batch of ``count``, ``steps`` DDIM steps), for the benchmark."""
    decoder = load_point_decoder() if decoder is None else decoder
    if not isinstance(decoder, PointDiffusionDecoder):
        raise InputTypeError(f"decoder must be a PointDiffusionDecoder, got {describe(decoder)}")
    count = check_int(count, "count")
    c = decoder.config
    solid, size = torch.arange(count) % c.num_solids, torch.arange(count) % c.num_sizes
    start = time.perf_counter()
    decoder.generate(solid, size, steps=steps, guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(0))
    return (time.perf_counter() - start) / count


# ----------------------------------------------------------------------------------------------
# Shipped weights
# ----------------------------------------------------------------------------------------------

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")
DECODER_FILE = "chapter11_point_decoder.safetensors"
JUDGE_FILE = "chapter11_point_judge.safetensors"


def _read(path: str | os.PathLike | None, default: str, remake: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise InputTypeError(f"path must be a str or None, got {describe(path)}")
    path = os.fspath(path) if path is not None else os.path.join(WEIGHTS_DIR, default)
    if not os.path.isfile(path):
        raise ValueError(f"no weights file at {path!r}: rebuild it with `python -m mmllm_course.generators.pretrain_points {remake}`")
    with safe_open(path, framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"weights file does not fit {what}: missing {sorted(missing)}, unused {sorted(unexpected)}")
    model.eval().requires_grad_(False)


def load_point_decoder(path: str | os.PathLike | None = None) -> PointDiffusionDecoder:
    """The shipped (or ``path``'s) pretrained decoder, frozen, in eval mode, on the CPU.

    ``decoder.pretrained_metrics``: its numbers when it was made (:func:`evaluate_point_decoder`).
    """
    state, metadata = _read(path, DECODER_FILE, "decoder")
    fields = {f.name for f in dataclasses.fields(PointDecoderConfig)}
    config = PointDecoderConfig(**{k: v for k, v in json.loads(metadata.get("config", "{}")).items() if k in fields})
    decoder = PointDiffusionDecoder(config)
    _load_into(decoder, state, "PointDiffusionDecoder")
    decoder.pretrained_metrics = json.loads(metadata.get("metrics", "{}"))
    return decoder


def load_point_judge(path: str | os.PathLike | None = None) -> PointJudge:
    """The shipped (or ``path``'s) judge: chapter 8's point classifier (recipe seed 0) and its size calibration, frozen.

    ``judge.pretrained_metrics``: its accuracies on real held-out clouds when it was made.
    """
    from mmllm_course.encoders.binding import CHAPTER8, PointClassifier
    from mmllm_course.encoders.points import PointEncoder

    state, metadata = _read(path, JUDGE_FILE, "judge")
    shape = tuple(state["log_radius"].shape) if "log_radius" in state else (5, 2)
    judge = PointJudge(PointClassifier(PointEncoder(CHAPTER8.point_config()), CHAPTER8.point_dim, shape[0]), *shape)
    _load_into(judge, state, "PointJudge (chapter 8's PointClassifier)")
    judge.pretrained_metrics = json.loads(metadata.get("metrics", "{}"))
    return judge
