"""Our "Stable Diffusion": a latent diffusion generator built from ``diffusers`` parts, in miniature.

Stable Diffusion (Rombach et al. 2022, https://arxiv.org/abs/2112.10752) has three parts, and so
does :class:`LatentDiffusionGenerator`:

1. an autoencoder (``diffusers.AutoencoderKL``): images (B, 3, 32, 32) in [-1, 1] <-> latents
   (B, 4, 8, 8). Diffusion runs on the latents, 12x fewer numbers than pixels;
2. a text encoder: the frozen chapter-2 text tower (a copy ships with the generator), whose token
   states are the **conditioning** ``(B, L, D_cond) = (B, 16, 64)``: every caption is padded to
   ``L = cond_length = 16`` tokens (the tower's context length), as Stable Diffusion pads to 77;
3. a denoiser (``diffusers.UNet2DConditionModel``) on the latents, with cross-attention from the
   latent pixels (queries) to the conditioning tokens (keys and values).

Training (:func:`diffusion_loss`) uses ``DDPMScheduler`` (Ho et al. 2020,
https://arxiv.org/abs/2006.11239): noise a latent to a random timestep with ``add_noise`` and
regress the scheduler's ``prediction_type`` target (``"v_prediction"``, Salimans & Ho 2022,
https://arxiv.org/abs/2202.00512, by default). Sampling (:meth:`LatentDiffusionGenerator.sample`)
uses ``DDIMScheduler`` (Song et al. 2020, https://arxiv.org/abs/2010.02502) with few steps and
classifier-free guidance (Ho & Salimans 2022, https://arxiv.org/abs/2207.12598): the denoiser is
run with the conditioning and with the empty caption's, and the step follows
``uncond + guidance_scale * (cond - uncond)``.

**What chapter 9's output projector targets**: :meth:`LatentDiffusionGenerator.encode_prompt`
returns the conditioning ``(B, 16, 64)`` for captions; any tensor of that shape (an output
projector's output) can drive :meth:`~LatentDiffusionGenerator.sample`. A tensor of another width
or length raises a ``ValueError`` naming both shapes.

The shipped generator (:func:`~mmllm_course.generators.pretrain.load_chapter9_generator`) draws the
one-object world without pixel noise (``ShapesWorldConfig(noise=0.0)``): noise carries no content.

Dims: ``B`` images, ``C = 4`` latent channels, ``h = w = 8`` latent side, ``L`` conditioning
tokens, ``D`` conditioning width.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmllm_course._checks import InputTypeError, check_choice, check_int, check_number, check_tensor, describe

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


@dataclass
class GeneratorConfig:
    """Sizes of the three parts and the noise schedule; defaults give the shipped CPU-sized generator."""

    image_size: int = 32
    latent_channels: int = 4
    ae_channels: tuple[int, ...] = (16, 32, 64)  # one 2x downsampling between blocks: 32 -> 8
    ae_layers_per_block: int = 1
    ae_norm_groups: int = 8
    unet_channels: tuple[int, ...] = (32, 64)
    unet_layers_per_block: int = 1
    unet_heads: int = 4  # diffusers' legacy ``attention_head_dim`` argument is the number of heads
    unet_norm_groups: int = 8
    cond_dim: int = 64  # D_cond: the chapter-2 text tower's width
    cond_length: int = 16  # L: captions are padded to the text tower's context length
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "v_prediction"
    latent_scale: float = 1.0  # latents are multiplied by this before diffusion (1 / std of the training latents)

    def __post_init__(self) -> None:
        for name in ("ae_channels", "unet_channels"):
            value = getattr(self, name)
            if not isinstance(value, (tuple, list)):
                raise InputTypeError(f"{name} must be a tuple of positive ints (one width per block), got {describe(value)}")
            setattr(self, name, tuple(value))
        for name in ("image_size", "latent_channels", "ae_layers_per_block", "ae_norm_groups", "unet_layers_per_block",
                     "unet_heads", "unet_norm_groups", "cond_dim", "cond_length", "num_train_timesteps"):
            check_int(getattr(self, name), name)
        for name in ("ae_channels", "unet_channels"):
            values = getattr(self, name)
            if len(values) < 1 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
                raise ValueError(f"{name} must be a tuple of positive ints, got {values!r}")
        for v in self.ae_channels:
            if v % self.ae_norm_groups:
                raise ValueError(f"ae_channels {self.ae_channels} must be multiples of ae_norm_groups={self.ae_norm_groups}")
        for v in self.unet_channels:
            if v % self.unet_norm_groups or v % self.unet_heads:
                raise ValueError(f"unet_channels {self.unet_channels} must be multiples of unet_norm_groups="
                                 f"{self.unet_norm_groups} and unet_heads={self.unet_heads}")
        if self.image_size % self.downsampling:
            raise ValueError(f"image_size={self.image_size} must be divisible by the autoencoder's downsampling {self.downsampling}")
        check_choice(self.beta_schedule, "beta_schedule", BETA_SCHEDULES)
        check_choice(self.prediction_type, "prediction_type", PREDICTION_TYPES)
        check_number(self.latent_scale, "latent_scale", low=0.0, low_open=True)

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.ae_channels) - 1)

    @property
    def latent_size(self) -> int:
        """Side of the latent grid (8 for 32x32 images and three autoencoder blocks)."""
        return self.image_size // self.downsampling


def _check_config(config: GeneratorConfig) -> GeneratorConfig:
    if not isinstance(config, GeneratorConfig):
        raise InputTypeError(f"config must be a GeneratorConfig, got {describe(config)}")
    return config


def _check_unet(unet) -> None:
    from diffusers import UNet2DConditionModel

    if not isinstance(unet, UNet2DConditionModel):
        raise InputTypeError(f"unet must be a diffusers UNet2DConditionModel (e.g. generator.unet), got {describe(unet)}")


def _check_scheduler(scheduler) -> None:
    from diffusers import DDIMScheduler, DDPMScheduler

    if not isinstance(scheduler, (DDPMScheduler, DDIMScheduler)):
        raise InputTypeError(f"scheduler must be a diffusers DDPMScheduler or DDIMScheduler (make_train_scheduler), got {describe(scheduler)}")
    kind = scheduler.config.prediction_type
    if kind not in PREDICTION_TYPES:
        raise ValueError(f"scheduler.config.prediction_type must be one of {PREDICTION_TYPES}, got {kind!r}")


def _check_generator(generator) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InputTypeError(f"generator must be a torch.Generator or None, got {describe(generator)}")


def make_autoencoder(config: GeneratorConfig):
    """``diffusers.AutoencoderKL``: (B, 3, H, W) in [-1, 1] -> latent distribution (B, C, H/f, W/f) -> (B, 3, H, W)."""
    from diffusers import AutoencoderKL

    _check_config(config)
    n = len(config.ae_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=config.ae_channels,
                         layers_per_block=config.ae_layers_per_block, latent_channels=config.latent_channels,
                         norm_num_groups=config.ae_norm_groups, sample_size=config.image_size,
                         scaling_factor=config.latent_scale)


def make_unet(config: GeneratorConfig):
    """``diffusers.UNet2DConditionModel`` on (B, C, h, w) latents with cross-attention to (B, L, D_cond)."""
    from diffusers import UNet2DConditionModel

    _check_config(config)
    n = len(config.unet_channels)
    return UNet2DConditionModel(
        sample_size=config.latent_size, in_channels=config.latent_channels, out_channels=config.latent_channels,
        layers_per_block=config.unet_layers_per_block, block_out_channels=config.unet_channels,
        down_block_types=("CrossAttnDownBlock2D",) * n, up_block_types=("CrossAttnUpBlock2D",) * n,
        cross_attention_dim=config.cond_dim, attention_head_dim=config.unet_heads, norm_num_groups=config.unet_norm_groups)


def make_train_scheduler(config: GeneratorConfig):
    """The ``DDPMScheduler`` that defines the forward (noising) process and the training target."""
    from diffusers import DDPMScheduler

    _check_config(config)
    return DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule,
                         prediction_type=config.prediction_type, clip_sample=False)


def make_sampler(config: GeneratorConfig, kind: str = "ddim"):
    """A sampling scheduler on the training schedule: ``"ddim"`` (``DDIMScheduler``, trailing spacing) or ``"ddpm"``."""
    from diffusers import DDIMScheduler, DDPMScheduler

    _check_config(config)
    check_choice(kind, "kind", ("ddim", "ddpm"))
    base = make_train_scheduler(config)
    if kind == "ddpm":
        return base
    return DDIMScheduler.from_config(base.config, timestep_spacing="trailing", set_alpha_to_one=True)


def diffusion_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the denoiser regresses, by the scheduler's ``prediction_type``: epsilon, v = sqrt(a)eps - sqrt(1-a)x0, or x0.

    latents, noise: (B, C, h, w); timesteps: (B,) integers in [0, T).
    """
    _check_scheduler(scheduler)
    check_tensor(latents, "latents", "(B, C, h, w)", ndim=4, kind="float")
    check_tensor(noise, "noise", "(B, C, h, w)", ndim=4, kind="float")
    _check_timesteps(timesteps, latents.shape[0], scheduler.config.num_train_timesteps)
    if noise.shape != latents.shape or noise.dtype != latents.dtype:
        raise ValueError(f"noise must match latents in shape and dtype, got {tuple(noise.shape)} {noise.dtype} "
                         f"and {tuple(latents.shape)} {latents.dtype}")
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    if kind == "sample":
        return latents
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {kind!r}")


def _check_timesteps(timesteps: torch.Tensor, batch: int, total: int) -> None:
    check_tensor(timesteps, "timesteps", f"({batch},) of integers in [0, {total})", ndim=1, kind="int")
    if timesteps.shape[0] != batch:
        raise ValueError(f"timesteps must be ({batch},), one per latent, got {tuple(timesteps.shape)}")
    if batch and (int(timesteps.min()) < 0 or int(timesteps.max()) >= total):
        raise ValueError(f"timesteps must lie in [0, {total}) (the scheduler's num_train_timesteps), "
                         f"got values in [{int(timesteps.min())}, {int(timesteps.max())}]")


def diffusion_loss(unet, scheduler, latents: torch.Tensor, conditioning: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """One DDPM training loss: latents (B, C, h, w) (already scaled), conditioning (B, L, D) -> MSE to the target, 0-d.

    noise ~ N(0, I); t ~ U{0..T-1}; x_t = add_noise(x0, noise, t); loss = |unet(x_t, t, cond) - target|^2.
    """
    _check_unet(unet)
    _check_scheduler(scheduler)
    _check_generator(generator)
    uc = unet.config
    check_tensor(latents, "latents", f"(B, {uc.in_channels}, {uc.sample_size}, {uc.sample_size})", ndim=4, kind="float")
    check_tensor(conditioning, "conditioning", f"(B, L, {uc.cross_attention_dim})", ndim=3, kind="float")
    if tuple(latents.shape[1:]) != (uc.in_channels, uc.sample_size, uc.sample_size) or latents.shape[0] == 0:
        raise ValueError(f"latents must be (B >= 1, {uc.in_channels}, {uc.sample_size}, {uc.sample_size}) for this UNet, "
                         f"got {tuple(latents.shape)}")
    if conditioning.shape[2] != uc.cross_attention_dim or conditioning.shape[1] == 0:
        raise ValueError(f"conditioning must be (B, L >= 1, D = {uc.cross_attention_dim}) (the UNet's cross_attention_dim), "
                         f"got {tuple(conditioning.shape)}")
    if latents.shape[0] != conditioning.shape[0]:
        raise ValueError(f"latents and conditioning need the same batch size, got {latents.shape[0]} and {conditioning.shape[0]}")
    latents, conditioning = latents.to(unet.dtype), conditioning.to(unet.dtype)
    noise = torch.randn(latents.shape, generator=generator, dtype=latents.dtype)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator)
    noisy = scheduler.add_noise(latents, noise, t)
    pred = unet(noisy, t, encoder_hidden_states=conditioning).sample
    return F.mse_loss(pred, diffusion_target(scheduler, latents, noise, t))


class LatentDiffusionGenerator(nn.Module):
    """Autoencoder + text encoder + conditional UNet: captions or conditioning (B, L, D) -> images (B, 3, H, W)."""

    def __init__(self, config: GeneratorConfig | None = None, text_encoder: nn.Module | None = None, tokenizer=None):
        super().__init__()
        from mmllm_course.data import shapes_tokenizer
        from mmllm_course.encoders.text import TextTransformer, TextTransformerConfig

        if config is not None and not isinstance(config, GeneratorConfig):
            raise InputTypeError(f"config must be a GeneratorConfig or None, got {describe(config)}")
        self.config = c = config or GeneratorConfig()
        self.tokenizer = tokenizer if tokenizer is not None else shapes_tokenizer()
        if text_encoder is None:
            text_encoder = TextTransformer(TextTransformerConfig(
                vocab_size=len(self.tokenizer), context_length=c.cond_length, dim=c.cond_dim,
                eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id))
        if not isinstance(text_encoder, TextTransformer):
            raise InputTypeError(f"text_encoder must be a TextTransformer (e.g. load_chapter2_clip()[0].text), got {describe(text_encoder)}")
        tc = text_encoder.config
        if tc.dim != c.cond_dim or tc.context_length < c.cond_length:
            raise ValueError(f"text_encoder must have width cond_dim={c.cond_dim} and context_length >= {c.cond_length}, "
                             f"got width {tc.dim} and context_length {tc.context_length}")
        self.text_encoder = text_encoder.requires_grad_(False).eval()
        self.vae = make_autoencoder(c)
        self.unet = make_unet(c)

    # ------------------------------------------------------------------ text -> conditioning
    @torch.no_grad()
    def encode_prompt(self, captions: Sequence[str]) -> torch.Tensor:
        """Captions (B strings) -> conditioning (B, L, D) = the text tower's token states, padded to L tokens."""
        from mmllm_course._checks import check_str_sequence

        captions = check_str_sequence(captions, "captions", allow_empty=False)
        c, tok = self.config, self.tokenizer
        rows = [ids + [tok.eos_token_id] for ids in tok(captions, add_special_tokens=False)["input_ids"]]
        too_long = [i for i, r in enumerate(rows) if len(r) > c.cond_length]
        if too_long:
            i = too_long[0]
            raise ValueError(f"caption {captions[i]!r} is {len(rows[i])} tokens with eos, more than cond_length={c.cond_length}")
        ids = torch.full((len(rows), c.cond_length), tok.pad_token_id, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        return self.text_encoder(ids).last_hidden_state  # (B, L, D)

    def null_conditioning(self, batch_size: int = 1) -> torch.Tensor:
        """The empty caption's conditioning (batch_size, L, D): classifier-free guidance's unconditional branch."""
        check_int(batch_size, "batch_size")
        return self.encode_prompt([""]).expand(batch_size, -1, -1)

    def check_conditioning(self, conditioning: torch.Tensor) -> torch.Tensor:
        """``conditioning`` cast to the UNet's dtype when it is (B, L, D_cond); a ValueError naming both shapes otherwise."""
        c = self.config
        check_tensor(conditioning, "conditioning", f"(B, {c.cond_length}, {c.cond_dim})", ndim=3, kind="float")
        if tuple(conditioning.shape[1:]) != (c.cond_length, c.cond_dim) or conditioning.shape[0] == 0:
            raise ValueError(f"conditioning must be (B, L, D_cond) = (B >= 1, {c.cond_length}, {c.cond_dim}) for this generator, "
                             f"got {tuple(conditioning.shape)}")
        if not torch.isfinite(conditioning).all():
            raise ValueError("conditioning holds NaN or infinite values")
        return conditioning.to(self.unet.dtype)

    # ------------------------------------------------------------------ pixels <-> latents
    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> scaled latents (B, C, h, w) (the posterior mean unless ``sample``)."""
        s = self.config.image_size
        check_tensor(images, "images", f"(B, 3, {s}, {s})", ndim=4, kind="float")
        if tuple(images.shape[1:]) != (3, s, s) or images.shape[0] == 0:
            raise ValueError(f"images must be (B >= 1, 3, {s}, {s}), got {tuple(images.shape)}")
        dist = self.vae.encode(images.to(self.vae.dtype) * 2 - 1).latent_dist
        z = dist.sample(generator) if sample else dist.mean
        return z * self.config.latent_scale

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, C, h, w) -> images (B, 3, H, W) in [0, 1]."""
        c = self.config
        check_tensor(latents, "latents", f"(B, {c.latent_channels}, {c.latent_size}, {c.latent_size})", ndim=4, kind="float")
        if tuple(latents.shape[1:]) != (c.latent_channels, c.latent_size, c.latent_size) or latents.shape[0] == 0:
            raise ValueError(f"latents must be (B >= 1, {c.latent_channels}, {c.latent_size}, {c.latent_size}), got {tuple(latents.shape)}")
        x = self.vae.decode(latents.to(self.vae.dtype) / c.latent_scale).sample
        return ((x.float() + 1) / 2).clamp(0, 1)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, conditioning: torch.Tensor, num_inference_steps: int = 20, guidance_scale: float = 3.0,
               seed: int | None = 0, scheduler: str = "ddim", eta: float = 0.0, return_latents: bool = False) -> torch.Tensor:
        """Conditioning (B, L, D) -> images (B, 3, H, W) in [0, 1], by DDIM (or DDPM) with classifier-free guidance.

        ``guidance_scale`` w: ``eps = uncond + w (cond - uncond)``; 1 means no guidance (one UNet
        pass per step), 0 samples unconditionally. ``seed`` fixes the starting noise (None: torch's
        global generator). ``eta``: DDIM's stochasticity (0 = deterministic).
        """
        c = self.config
        cond = self.check_conditioning(conditioning)
        steps = check_int(num_inference_steps, "num_inference_steps")
        if steps > c.num_train_timesteps:
            raise ValueError(f"num_inference_steps must be in [1, {c.num_train_timesteps}] (the training timesteps), got {steps}")
        w = check_number(guidance_scale, "guidance_scale", low=0.0, high=50.0)
        eta = check_number(eta, "eta", 0.0, 1.0)
        check_choice(scheduler, "scheduler", ("ddim", "ddpm"))
        if seed is not None:
            check_int(seed, "seed", minimum=0)
        sampler = make_sampler(c, scheduler)
        sampler.set_timesteps(steps)
        gen = None if seed is None else torch.Generator().manual_seed(seed)
        b = cond.shape[0]
        x = torch.randn((b, c.latent_channels, c.latent_size, c.latent_size), generator=gen, dtype=self.unet.dtype)
        x = x * sampler.init_noise_sigma
        guided = w != 1.0
        both = torch.cat([self.null_conditioning(b).to(cond.dtype), cond]) if guided else cond
        step_kwargs = {"eta": eta} if scheduler == "ddim" else {}
        for t in sampler.timesteps:
            inp = sampler.scale_model_input(torch.cat([x, x]) if guided else x, t)
            out = self.unet(inp, t, encoder_hidden_states=both).sample
            if guided:
                uncond, condn = out.chunk(2)
                out = uncond + w * (condn - uncond)
            x = sampler.step(out, t, x, generator=gen, **step_kwargs).prev_sample
        return x if return_latents else self.decode_latents(x)

    @torch.no_grad()
    def generate(self, captions: Sequence[str], **sample_kwargs) -> torch.Tensor:
        """Captions (B strings) -> images (B, 3, H, W) in [0, 1]: ``sample(encode_prompt(captions))``."""
        return self.sample(self.encode_prompt(captions), **sample_kwargs)


def config_to_dict(config: GeneratorConfig) -> dict:
    """A JSON-ready dict of the config (tuples become lists)."""
    return dataclasses.asdict(config)
