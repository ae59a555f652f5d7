"""The VQ-VAE image tokenizer: a convolutional encoder, a codebook, a decoder; 32x32 images <-> a grid of integers.

Dims: ``B`` images of ``3 x S x S`` (``S = image_size``), ``G = S / (P * 2**len(channels))`` the grid side
(``P = patch_size``),
``D`` the code width, ``K`` the codebook size. ``N = G * G`` tokens per image.

    images (B, 3, S, S) in [0, 1] -> encoder: conv 3x3 (or P x P stride P), then per stage [conv 4x4 stride 2 -> SiLU -> residual block]
                                  -> conv 1x1 -> z (B, D, G, G)
                                  -> CodebookQuantizer -> indices (B, G, G)  (the image's N tokens)
                                  -> z_q (B, D, G, G) -> decoder (the mirror: conv transpose 4x4 stride 2) -> (B, 3, S, S)

This is VQ-VAE (van den Oord et al. 2017) without the PixelCNN prior; VQGAN (Esser et al. 2021)
adds a perceptual and an adversarial loss and attention blocks to the same skeleton, and
Chameleon and Emu3 tokenize images with such a VQGAN-style tokenizer (8,192 and 32,768 codes).
``quantize=False`` gives the same network with the codebook skipped: the continuous
autoencoder of the compact / lossless / discrete trade-off.

Training (:func:`train_tokenizer`): mean squared reconstruction error + the codebook and
commitment losses, Adam; optionally every ``restart_every`` steps the codes no vector picked since
the last restart are moved onto random encoder outputs (:func:`~.quantizer.restart_dead_codes`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mmllm_course._checks import InputTypeError, check_int, check_number, check_tensor, describe, to_module_dtype
from mmllm_course.visual_tokens.quantizer import CodebookQuantizer, codes_to_vectors, perplexity_of, restart_dead_codes


@dataclass
class VQTokenizerConfig:
    """Sizes of the tokenizer. Each entry of ``channels`` is one stride-2 stage: grid side = image_size / 2**len(channels)."""

    image_size: int = 32
    channels: tuple[int, ...] = (32, 64)
    patch_size: int = 1  # P > 1: the stem is a P x P, stride-P convolution (a patchify, cheap); 1: a 3x3 convolution
    code_dim: int = 16  # D
    num_codes: int = 128  # K
    beta: float = 0.25  # commitment weight (VQ-VAE's 0.25)
    quantize: bool = True  # False: a continuous autoencoder (no codebook), the trade-off's reference

    def __post_init__(self) -> None:
        check_int(self.image_size, "image_size")
        check_int(self.patch_size, "patch_size")
        check_int(self.code_dim, "code_dim")
        check_int(self.num_codes, "num_codes")
        check_number(self.beta, "beta", low=0.0)
        if not isinstance(self.quantize, bool):
            raise InputTypeError(f"quantize must be a bool, got {describe(self.quantize)}")
        if isinstance(self.channels, (str, bytes)) or not isinstance(self.channels, (tuple, list)):
            raise InputTypeError(f"channels must be a tuple of widths, one per stride-2 stage, got {describe(self.channels)}")
        if not self.channels:
            raise ValueError(f"channels must be a non-empty tuple of widths, one per stride-2 stage, got {self.channels!r}")
        self.channels = tuple(check_int(c, "channel width") for c in self.channels)
        if self.image_size % (self.patch_size * 2 ** len(self.channels)):
            raise ValueError(f"image_size={self.image_size} must be divisible by patch_size * 2**len(channels) = "
                             f"{self.patch_size * 2 ** len(self.channels)}")

    @property
    def grid_size(self) -> int:
        """G: the side of the token grid."""
        return self.image_size // (self.patch_size * 2 ** len(self.channels))

    @property
    def tokens_per_image(self) -> int:
        """N = G * G."""
        return self.grid_size ** 2

    def bits_per_image(self, float_bits: int = 32) -> float:
        """What one image costs: N * log2(K) bits with the codebook; N * D floats of ``float_bits`` bits without."""
        float_bits = check_int(float_bits, "float_bits")
        if self.quantize:
            return self.tokens_per_image * math.log2(self.num_codes)
        return float(self.tokens_per_image * self.code_dim * float_bits)


class _ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(nn.SiLU(), nn.Conv2d(width, width, 3, padding=1), nn.SiLU(), nn.Conv2d(width, width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@dataclass
class TokenizerOutput:
    """What :class:`VQTokenizer` returns: ``reconstruction`` (B, 3, S, S); ``indices`` (B, G, G) (None without a
    codebook); ``vq_loss`` = codebook + commitment loss (0 without a codebook); ``perplexity``; ``codes_used``."""

    reconstruction: torch.Tensor
    indices: torch.Tensor | None
    vq_loss: torch.Tensor
    perplexity: torch.Tensor
    codes_used: int
    z: torch.Tensor = field(repr=False, default=None)  # the encoder's output (B, D, G, G), for dead-code restarts


class VQTokenizer(nn.Module):
    """images (B, 3, S, S) in [0, 1] <-> token grids (B, G, G) of ints in [0, K). See the module docstring."""

    def __init__(self, config: VQTokenizerConfig | None = None):
        super().__init__()
        if config is not None and not isinstance(config, VQTokenizerConfig):
            raise InputTypeError(f"config must be a VQTokenizerConfig or None, got {describe(config)}")
        self.config = c = config or VQTokenizerConfig()
        p = c.patch_size
        stem = nn.Conv2d(3, c.channels[0], p, stride=p) if p > 1 else nn.Conv2d(3, c.channels[0], 3, padding=1)
        enc: list[nn.Module] = [stem]
        width = c.channels[0]
        for w in c.channels:
            enc += [nn.Conv2d(width, w, 4, stride=2, padding=1), nn.SiLU(), _ResBlock(w)]
            width = w
        enc += [nn.SiLU(), nn.Conv2d(width, c.code_dim, 1)]
        self.encoder = nn.Sequential(*enc)
        self.quantizer = CodebookQuantizer(c.num_codes, c.code_dim, c.beta) if c.quantize else None
        dec: list[nn.Module] = [nn.Conv2d(c.code_dim, width, 1), _ResBlock(width)]
        for w in tuple(reversed(c.channels))[1:] + (c.channels[0],):
            dec += [nn.SiLU(), nn.ConvTranspose2d(width, w, 4, stride=2, padding=1), _ResBlock(w)]
            width = w
        dec += [nn.SiLU(), nn.ConvTranspose2d(width, 3, p, stride=p) if p > 1 else nn.Conv2d(width, 3, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def _check_images(self, images: torch.Tensor) -> torch.Tensor:
        s = self.config.image_size
        check_tensor(images, "images", f"(B, 3, {s}, {s})", ndim=4, kind="float")
        if tuple(images.shape[1:]) != (3, s, s) or images.shape[0] == 0:
            raise ValueError(f"images must be (B, 3, {s}, {s}) with B >= 1 (RGB, {s}x{s}, what this tokenizer was built for), "
                             f"got {tuple(images.shape)}")
        return to_module_dtype(images, self)

    def _check_indices(self, indices: torch.Tensor) -> torch.Tensor:
        g, k = self.config.grid_size, self.config.num_codes
        if self.quantizer is None:
            raise ValueError("this tokenizer has no codebook (config.quantize=False): it makes no tokens")
        check_tensor(indices, "indices", f"(B, {g}, {g})", ndim=3, kind="int")
        if tuple(indices.shape[1:]) != (g, g) or indices.shape[0] == 0:
            raise ValueError(f"indices must be (B, {g}, {g}) with B >= 1 (a {g}x{g} grid of tokens), got {tuple(indices.shape)}")
        if int(indices.min()) < 0 or int(indices.max()) >= k:
            raise ValueError(f"token ids must lie in [0, {k}) (a codebook of {k} codes), "
                             f"got values in [{int(indices.min())}, {int(indices.max())}]")
        return indices.long()

    def forward(self, images: torch.Tensor) -> TokenizerOutput:
        z = self.encoder(self._check_images(images) * 2 - 1)  # (B, D, G, G)
        if self.quantizer is None:
            zero = z.new_zeros(())
            return TokenizerOutput(torch.sigmoid(self.decoder(z)), None, zero, zero, 0, z)
        q = self.quantizer(z)
        return TokenizerOutput(torch.sigmoid(self.decoder(q.z_q)), q.indices, q.loss, q.perplexity, q.codes_used, z)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) -> tokens (B, G, G), long in [0, K)."""
        if self.quantizer is None:
            raise ValueError("this tokenizer has no codebook (config.quantize=False): it makes no tokens")
        return self(images).indices

    @torch.no_grad()
    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """tokens (B, G, G) in [0, K) -> images (B, 3, S, S) in [0, 1]."""
        z_q = codes_to_vectors(self.quantizer, self._check_indices(indices))
        return torch.sigmoid(self.decoder(z_q))

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """images (B, 3, S, S) -> reconstructions (B, 3, S, S), in eval mode, ``batch_size`` at a time."""
        check_int(batch_size, "batch_size")
        self._check_images(images)
        was = self.training
        self.eval()
        try:
            return torch.cat([self(images[i:i + batch_size]).reconstruction for i in range(0, len(images), batch_size)])
        finally:
            self.train(was)


def tokenizer_metrics(tokenizer: VQTokenizer, images: torch.Tensor) -> dict[str, float]:
    """On ``images`` (B, 3, S, S): ``mse``, ``psnr`` (dB, images in [0, 1]), and with a codebook ``codes_used``,
    ``dead_codes`` (K - used), ``perplexity`` of the code histogram, ``bits_per_image``, ``tokens_per_image``."""
    if not isinstance(tokenizer, VQTokenizer):
        raise InputTypeError(f"tokenizer must be a VQTokenizer, got {describe(tokenizer)}")
    images = tokenizer._check_images(images)
    was = tokenizer.training
    tokenizer.eval()
    try:
        with torch.no_grad():
            outs = [tokenizer(images[i:i + 512]) for i in range(0, len(images), 512)]
    finally:
        tokenizer.train(was)
    recon = torch.cat([o.reconstruction for o in outs])
    mse = float(F.mse_loss(recon, images))
    c = tokenizer.config
    out = {"mse": mse, "psnr": 10 * math.log10(1.0 / max(mse, 1e-12)), "bits_per_image": c.bits_per_image(),
           "tokens_per_image": float(c.tokens_per_image)}
    if tokenizer.quantizer is not None:
        idx = torch.cat([o.indices for o in outs])
        used = int(torch.unique(idx).numel())
        out.update(codes_used=float(used), dead_codes=float(c.num_codes - used), perplexity=float(perplexity_of(idx, c.num_codes)))
    return out


def object_weights(images: torch.Tensor, object_weight: float) -> torch.Tensor:
    """Per-pixel weights (B, 1, S, S): ``object_weight`` where a pixel differs from its image's background, 1 elsewhere.

    The background is the image's most common grey (its median, as the object covers under a quarter).
    """
    check_tensor(images, "images", "(B, 3, S, S)", ndim=4, kind="float")
    if images.shape[1] != 3 or images.shape[0] == 0:
        raise ValueError(f"images must be (B, 3, S, S) with B >= 1, got {tuple(images.shape)}")
    object_weight = check_number(object_weight, "object_weight", low=1.0)
    background = images.flatten(2).median(dim=2).values[..., None, None]  # (B, 3, 1, 1)
    is_object = ((images - background).abs().amax(1, keepdim=True) > 0.1).float()
    return 1.0 + (object_weight - 1.0) * is_object


@dataclass
class TokenizerTrainConfig:
    """How :func:`train_tokenizer` trains: Adam, constant ``lr`` after a short warmup, ``restart_every`` 0 = no restarts."""

    steps: int = 400
    batch_size: int = 64
    lr: float = 2e-3
    restart_every: int = 50  # 0: never restart dead codes
    restart_until: float = 0.8  # no restarts in the last 20% of training: the decoder settles on the final codes
    object_weight: float = 1.0  # weight of the object's pixels in the squared error (the grey background is most of an image)
    cosine: bool = False  # decay lr to 0 along a cosine after the warmup

    def __post_init__(self) -> None:
        check_number(self.object_weight, "object_weight", low=1.0)
        if not isinstance(self.cosine, bool):
            raise InputTypeError(f"cosine must be a bool, got {describe(self.cosine)}")
        check_int(self.steps, "steps", minimum=0)
        check_int(self.batch_size, "batch_size")
        check_number(self.lr, "lr", low=0.0, low_open=True)
        check_int(self.restart_every, "restart_every", minimum=0)
        check_number(self.restart_until, "restart_until", 0.0, 1.0)


def train_tokenizer(tokenizer: VQTokenizer, images: torch.Tensor, train: TokenizerTrainConfig | None = None, seed: int = 0,
                    progress: bool = False) -> dict[str, list[float]]:
    """Train ``tokenizer`` in place on ``images`` (n, 3, S, S); returns the history (loss, codes used per step, restarts).

    ``seed`` draws the batch order and the restart targets (the weights' init is the caller's).
    """
    from tqdm.auto import tqdm

    if not isinstance(tokenizer, VQTokenizer):
        raise InputTypeError(f"tokenizer must be a VQTokenizer, got {describe(tokenizer)}")
    train = train or TokenizerTrainConfig()
    if not isinstance(train, TokenizerTrainConfig):
        raise InputTypeError(f"train must be a TokenizerTrainConfig or None, got {describe(train)}")
    images = tokenizer._check_images(images)
    check_int(seed, "seed", minimum=0)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(tokenizer.parameters(), lr=train.lr)
    warmup = max(1, train.steps // 20)
    def factor(s: int) -> float:
        decay = 0.5 * (1 + math.cos(math.pi * min(s, train.steps) / max(train.steps, 1))) if train.cosine else 1.0
        return min(1.0, (s + 1) / warmup) * decay

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    k = tokenizer.config.num_codes
    counts = torch.zeros(k)
    history: dict[str, list[float]] = {"loss": [], "mse": [], "codes_used": [], "restarted": [], "seconds": []}
    start = time.perf_counter()
    tokenizer.train()
    for step in tqdm(range(train.steps), desc="tokenizer", disable=not progress):
        batch = images[torch.randint(0, len(images), (train.batch_size,), generator=gen)]
        out = tokenizer(batch)
        err = (out.reconstruction - batch).pow(2)
        mse = err.mean()
        loss = (err * object_weights(batch, train.object_weight)).mean() + out.vq_loss if train.object_weight != 1.0 else mse + out.vq_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history["loss"].append(float(loss.detach()))
        history["mse"].append(float(mse.detach()))
        history["codes_used"].append(float(out.codes_used))
        if out.indices is not None:
            counts += torch.bincount(out.indices.flatten(), minlength=k).float()
            if train.restart_every and (step + 1) % train.restart_every == 0 and step + 1 < train.restart_until * train.steps:
                z = out.z.detach().permute(0, 2, 3, 1).reshape(-1, tokenizer.config.code_dim)
                history["restarted"].append(float(restart_dead_codes(tokenizer.quantizer, z, counts, generator=gen)))
                counts.zero_()
    tokenizer.eval()
    history["seconds"].append(time.perf_counter() - start)
    return history


def finetune_decoder(tokenizer: VQTokenizer, images: torch.Tensor, steps: int = 1000, batch_size: int = 64, lr: float = 1e-3,
                     object_weight: float = 10.0, seed: int = 0, progress: bool = False) -> dict[str, list[float]]:
    """Train the decoder alone on the frozen encoder's codes (L1, object pixels weighted); the tokens do not change.

    Stable Diffusion's improved decoder (sd-vae-ft-mse) was made this way, and chapter 9's generator
    too: sharper shapes at no cost to whatever was trained on the tokens (the LM).
    """
    from tqdm.auto import tqdm

    if not isinstance(tokenizer, VQTokenizer):
        raise InputTypeError(f"tokenizer must be a VQTokenizer, got {describe(tokenizer)}")
    images = tokenizer._check_images(images)
    steps = check_int(steps, "steps", minimum=0)
    check_int(batch_size, "batch_size")
    check_number(lr, "lr", low=0.0, low_open=True)
    object_weight = check_number(object_weight, "object_weight", low=1.0)
    check_int(seed, "seed", minimum=0)
    gen = torch.Generator().manual_seed(seed)
    tokenizer.eval()
    with torch.no_grad():  # the codes are fixed: compute them once
        z_q = torch.cat([codes_to_vectors(tokenizer.quantizer, tokenizer.encode(images[i:i + 512])) if tokenizer.quantizer is not None
                         else tokenizer.encoder(images[i:i + 512] * 2 - 1) for i in range(0, len(images), 512)])
    params = list(tokenizer.decoder.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(steps, 1))))
    history: dict[str, list[float]] = {"loss": []}
    tokenizer.decoder.train()
    for _ in tqdm(range(steps), desc="decoder", disable=not progress):
        idx = torch.randint(0, len(images), (batch_size,), generator=gen)
        batch = images[idx]
        err = (torch.sigmoid(tokenizer.decoder(z_q[idx])) - batch).abs()
        loss = (err * object_weights(batch, object_weight)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history["loss"].append(float(loss.detach()))
    tokenizer.eval()
    return history
