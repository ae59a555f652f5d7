"""Audio encoders: Whisper's log-mel spectrogram and encoder, and HuBERT's waveform feature encoder.

Dims: ``B`` batch, ``T`` samples, ``M`` mel bins, ``F`` mel frames (one per ``hop_length`` samples),
``N = ceil(F / 2)`` audio tokens, ``D`` width, ``C`` conv channels.

Two ways to turn sound into tokens:

* Whisper (Radford et al. 2022, arXiv:2212.04356): a log-mel spectrogram (a picture of sound:
  frequency on a perceptual scale against time), then two 1-D convolutions (the second with
  stride 2, halving time), fixed sinusoidal positions and pre-norm transformer blocks:

      waveform (B, T) -> LogMelSpectrogram -> (B, M, F) -> conv1 + GELU -> (B, D, F)
                      -> conv2 (stride 2) + GELU -> (B, D, N) -> + positions -> L blocks -> LayerNorm -> (B, N, D)

* HuBERT (Hsu et al. 2021, arXiv:2106.07447): no hand-made spectrogram; a stack of strided 1-D
  convolutions learns its own filters from the raw waveform (25 ms receptive field, 20 ms stride in
  the real model), and the transformer on top is trained by masked prediction of cluster ids
  (k-means of MFCCs, later of its own features). Here we build the convolutional feature encoder:

      waveform (B, T) -> conv stack (+ GroupNorm or LayerNorm, GELU) -> (B, C, N) -> [LayerNorm + Linear] -> (B, N, D)

``transformers`` is imported only inside the converters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmllm_course._checks import (
    InputTypeError,
    check_choice,
    check_dropout,
    check_int,
    check_number,
    check_tensor,
    describe,
    to_module_dtype,
)
from mmllm_course._convert import Plan, activation_from_hf, apply_plan, dropout_from_hf, load_exact, resolve_hf_model
from mmllm_course.nn.position import sincos_1d_position_embedding
from mmllm_course.nn.transformer import ACTIVATIONS, TransformerBlock

SAMPLE_RATE = 16000  # Whisper and HuBERT both take 16 kHz mono audio


def check_bool(value: object, name: str) -> bool:
    """``value`` when it is a bool (numpy bools too); a TypeError naming what came otherwise."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputTypeError(f"{name} must be True or False, got {describe(value)}")
    return bool(value)


def _frequencies(freq: object, name: str) -> torch.Tensor:
    """A tensor or real number of frequencies (Hz or mels) as float64; finite and >= 0, else an error."""
    if isinstance(freq, (int, float, np.integer, np.floating)) and not isinstance(freq, bool):
        freq = torch.tensor(float(freq), dtype=torch.float64)
    check_tensor(freq, name)
    if freq.dtype == torch.bool or freq.is_complex():
        raise InputTypeError(f"{name} must hold real numbers, got dtype {freq.dtype}")
    freq = freq.to(torch.float64)
    if not bool(torch.isfinite(freq).all()) or bool((freq < 0).any()):
        raise ValueError(f"{name} must be finite and >= 0, got values from {freq.min().item()} to {freq.max().item()}")
    return freq


# ----------------------------------------------------------------------------------------------
# Waveform checks shared by every audio entry point
# ----------------------------------------------------------------------------------------------

def check_waveform(waveform: object, name: str = "waveform", min_samples: int = 1) -> torch.Tensor:
    """A mono waveform batch (B, T) from (T,), (B, T) or (B, 1, T); a ValueError for stereo, empty, short or NaN audio.

    Stereo is refused rather than averaged: (B, 2, T) (channels first) and (T, 2) (channels last, the
    layout of ``soundfile``) both raise, naming the shape; mix down with ``waveform.mean(dim=1)`` first.
    """
    check_tensor(waveform, name, "(B, T) mono", kind="float")
    x = waveform
    if x.dim() == 3:
        if x.shape[1] != 1:
            raise ValueError(
                f"{name} must be mono (B, T) or (B, 1, T), got shape {tuple(x.shape)} with {x.shape[1]} channels: "
                "mix stereo down first, e.g. waveform.mean(dim=1)"
            )
        x = x[:, 0]
    elif x.dim() == 1:
        x = x[None]
    elif x.dim() == 2:
        if x.shape[-1] == 2 and x.shape[0] > 2:
            raise ValueError(
                f"{name} of shape {tuple(x.shape)} looks like stereo (T, 2) (channels last); expected mono (B, T): "
                "mix down first, e.g. waveform.mean(dim=-1)"
            )
    else:
        raise ValueError(f"{name} must be mono audio (T,), (B, T) or (B, 1, T), got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[-1] == 0:
        raise ValueError(f"{name} is empty: got shape {tuple(waveform.shape)}")
    if x.shape[-1] < min_samples:
        raise ValueError(f"{name} is too short: got T={x.shape[-1]} samples, need at least {min_samples}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} holds NaN or infinite samples (shape {tuple(waveform.shape)})")
    return x


def check_sample_rate(sample_rate: object, expected: int) -> int:
    """``sample_rate`` when it equals ``expected``; a ValueError naming both otherwise (we never resample silently)."""
    if sample_rate is None:
        return expected
    rate = check_int(sample_rate, "sample_rate")
    if rate != expected:
        raise ValueError(
            f"sample_rate must be {expected} Hz (the rate this model was built for), got {rate} Hz: resample the audio first"
        )
    return rate


# ----------------------------------------------------------------------------------------------
# The log-mel spectrogram
# ----------------------------------------------------------------------------------------------

def hertz_to_mel(freq: torch.Tensor) -> torch.Tensor:
    """Slaney's mel scale (Whisper's, librosa's default): linear below 1 kHz, logarithmic above.

    freq (...,) in Hz -> mels (...,). 3 mels per 200 Hz up to 1 kHz (15 mels), then 27 mels per
    factor 6.4 in frequency. The log part is the point: we hear pitch ratios, not differences.
    """
    freq = _frequencies(freq, "freq")
    linear = 3.0 * freq / 200.0
    log_part = 15.0 + torch.log(freq.clamp(min=1e-12) / 1000.0) * (27.0 / math.log(6.4))
    return torch.where(freq >= 1000.0, log_part, linear)


def mel_to_hertz(mels: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`hertz_to_mel`: mels (...,) -> Hz (...,)."""
    mels = _frequencies(mels, "mels")
    linear = 200.0 * mels / 3.0
    log_part = 1000.0 * torch.exp((math.log(6.4) / 27.0) * (mels - 15.0))
    return torch.where(mels >= 15.0, log_part, linear)


def mel_filter_bank(
    num_frequency_bins: int, num_mel_filters: int, sample_rate: int = SAMPLE_RATE,
    min_frequency: float = 0.0, max_frequency: float = 8000.0,
) -> torch.Tensor:
    """Triangular mel filters with Slaney's area normalisation: (num_frequency_bins, num_mel_filters), float64.

    ``num_mel_filters + 2`` points evenly spaced on the mel scale between the two frequencies give each
    filter its left edge, centre and right edge; filter ``m`` rises linearly from its left edge to its
    centre and falls to its right edge (in Hz), and is scaled by ``2 / (right - left)`` so every filter
    holds about the same energy. A power spectrogram (B, K, F) becomes a mel spectrogram by
    ``filters.T @ spec`` -> (B, M, F). The same maths as ``transformers.audio_utils.mel_filter_bank``
    with ``norm="slaney", mel_scale="slaney"`` (what ``WhisperFeatureExtractor`` uses).
    """
    num_frequency_bins = check_int(num_frequency_bins, "num_frequency_bins", minimum=2)
    num_mel_filters = check_int(num_mel_filters, "num_mel_filters")
    sample_rate = check_int(sample_rate, "sample_rate")
    min_frequency = check_number(min_frequency, "min_frequency", low=0.0)
    max_frequency = check_number(max_frequency, "max_frequency", low=0.0)
    if not min_frequency < max_frequency <= sample_rate / 2:
        raise ValueError(
            f"need 0 <= min_frequency < max_frequency <= sample_rate / 2 = {sample_rate / 2:g} Hz, "
            f"got min_frequency={min_frequency:g}, max_frequency={max_frequency:g}"
        )
    mel_points = torch.linspace(float(hertz_to_mel(torch.tensor(min_frequency))),
                                float(hertz_to_mel(torch.tensor(max_frequency))), num_mel_filters + 2, dtype=torch.float64)
    edges = mel_to_hertz(mel_points)  # (M + 2,) Hz
    fft_freqs = torch.linspace(0, sample_rate // 2, num_frequency_bins, dtype=torch.float64)  # (K,)
    widths = edges.diff()  # (M + 1,)
    slopes = edges[None, :] - fft_freqs[:, None]  # (K, M + 2)
    rising = -slopes[:, :-2] / widths[:-1]  # (K, M): 0 at the left edge, 1 at the centre
    falling = slopes[:, 2:] / widths[1:]  # (K, M): 1 at the centre, 0 at the right edge
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)
    empty = (filters.amax(dim=0) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"num_mel_filters={num_mel_filters} is too many for num_frequency_bins={num_frequency_bins} between "
            f"{min_frequency:g} and {max_frequency:g} Hz: filters {empty[:8]} cover no frequency bin"
        )
    return filters * (2.0 / (edges[2:] - edges[:-2]))[None, :]  # Slaney: equal area per filter


@dataclass
class LogMelConfig:
    """Whisper's front end; the defaults are Whisper's (80 mels, 25 ms windows every 10 ms, 30 s chunks)."""

    sample_rate: int = SAMPLE_RATE
    n_fft: int = 400  # 25 ms windows at 16 kHz
    hop_length: int = 160  # one frame every 10 ms
    n_mels: int = 80
    chunk_length: float | None = 30.0  # seconds to pad / cut every clip to (Whisper's 30 s); None keeps the length
    min_frequency: float = 0.0
    max_frequency: float = 8000.0

    def __post_init__(self) -> None:
        self.sample_rate = check_int(self.sample_rate, "sample_rate")
        self.n_fft = check_int(self.n_fft, "n_fft", minimum=2)
        self.hop_length = check_int(self.hop_length, "hop_length")
        self.n_mels = check_int(self.n_mels, "n_mels")
        self.min_frequency = check_number(self.min_frequency, "min_frequency", low=0.0)
        self.max_frequency = check_number(self.max_frequency, "max_frequency", low=0.0)
        if not self.min_frequency < self.max_frequency <= self.sample_rate / 2:
            raise ValueError(
                f"need 0 <= min_frequency < max_frequency <= sample_rate / 2 = {self.sample_rate / 2:g} Hz, "
                f"got min_frequency={self.min_frequency:g}, max_frequency={self.max_frequency:g}"
            )
        if self.chunk_length is not None:
            self.chunk_length = check_number(self.chunk_length, "chunk_length", low=0.0, low_open=True)
            if self.num_samples < self.n_fft:
                raise ValueError(f"chunk_length={self.chunk_length} s gives {self.num_samples} samples, fewer than n_fft={self.n_fft}")

    @property
    def num_samples(self) -> int | None:
        """Samples per padded clip (``chunk_length * sample_rate``), or None when clips keep their length."""
        return None if self.chunk_length is None else int(round(self.chunk_length * self.sample_rate))

    def num_frames(self, num_samples: int | None = None) -> int:
        """Mel frames F for a clip of ``num_samples`` (after padding): ``T // hop_length``."""
        t = self.num_samples if self.num_samples is not None else check_int(num_samples, "num_samples")
        return t // self.hop_length


class LogMelSpectrogram(nn.Module):
    """Waveform (B, T) or (T,) at ``sample_rate`` -> Whisper's log-mel features (B, n_mels, F).

    Steps (Whisper, arXiv:2212.04356, section 2.2), each one line of ``forward``:
      1. pad with zeros (or cut) to ``chunk_length`` seconds;
      2. short-time Fourier transform: Hann windows of ``n_fft`` samples every ``hop_length``
         (centred, reflect-padded), power ``|X|^2``; the last frame is dropped (F = T // hop);
      3. mel filter bank: (K, M)^T @ (B, K, F) -> (B, M, F);
      4. ``log10`` of the power clamped at 1e-10; then each clip is clamped to its max - 8 (80 dB
         of dynamic range) and scaled as ``(x + 4) / 4`` to lie roughly in [-1, 1].
    Equal to ``transformers``' ``WhisperFeatureExtractor`` on the same waveform (see the parity test).
    """

    def __init__(self, config: LogMelConfig | None = None):
        super().__init__()
        self.config = config = LogMelConfig() if config is None else config
        if not isinstance(config, LogMelConfig):
            raise InputTypeError(f"config must be a LogMelConfig, got {describe(config)}")
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)  # (n_fft,)
        filters = mel_filter_bank(config.n_fft // 2 + 1, config.n_mels, config.sample_rate,
                                  config.min_frequency, config.max_frequency)
        self.register_buffer("mel_filters", filters.to(torch.float32), persistent=False)  # (K, M)

    def forward(self, waveform: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        c = self.config
        check_sample_rate(sample_rate, c.sample_rate)
        x = check_waveform(waveform, "waveform", min_samples=c.n_fft).to(torch.float32)  # (B, T)
        if c.num_samples is not None:  # 1. pad or cut to the chunk
            t = x.shape[-1]
            x = F.pad(x, (0, c.num_samples - t)) if t < c.num_samples else x[:, : c.num_samples]
        stft = torch.stft(x, c.n_fft, c.hop_length, window=self.window, return_complex=True)  # 2. (B, K, F + 1)
        power = (stft[..., :-1].abs() ** 2).contiguous()  # (B, K, F)
        mel = self.mel_filters.T @ power  # 3. (B, M, F)
        log_spec = torch.clamp(mel, min=1e-10).log10()  # 4.
        peak = log_spec.amax(dim=(1, 2), keepdim=True)  # (B, 1, 1): each clip's loudest bin
        log_spec = torch.maximum(log_spec, peak - 8.0)
        return (log_spec + 4.0) / 4.0  # (B, M, F)


def log_mel_spectrogram(waveform: torch.Tensor, sample_rate: int = SAMPLE_RATE, n_mels: int = 80,
                        chunk_length: float | None = 30.0) -> torch.Tensor:
    """Functional :class:`LogMelSpectrogram`: (B, T) or (T,) -> (B, n_mels, F)."""
    config = LogMelConfig(sample_rate=SAMPLE_RATE, n_mels=n_mels, chunk_length=chunk_length)
    return LogMelSpectrogram(config)(waveform, sample_rate=sample_rate)


# ----------------------------------------------------------------------------------------------
# The Whisper-style encoder
# ----------------------------------------------------------------------------------------------

def whisper_sinusoids(length: int, dim: int) -> torch.Tensor:
    """Whisper's fixed positions: (length, dim), sines then cosines, timescales 1 .. 10000.

    Whisper spaces the ``dim / 2`` frequencies as ``10000^(-i / (dim/2 - 1))`` (the last one is exactly
    1/10000), the transformer paper as ``10000^(-i / (dim/2))``: the same formula with
    ``temperature = 10000^((dim/2) / (dim/2 - 1))``, so :func:`sincos_1d_position_embedding` computes it.
    """
    length, dim = check_int(length, "length"), check_int(dim, "dim")
    if dim % 2 or dim < 4:
        raise ValueError(f"Whisper's sinusoids need an even dim >= 4, got dim={dim}")
    half = dim // 2
    return sincos_1d_position_embedding(torch.arange(length), dim, temperature=10000.0 ** (half / (half - 1)))


@dataclass
class AudioEncoderConfig:
    """A Whisper-style encoder's sizes; the defaults are tiny (a 1 s clip -> 50 tokens of width 64)."""

    n_mels: int = 80
    dim: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_dim: int = 256
    max_positions: int = 50  # tokens; the encoder reads up to 2 * max_positions mel frames (Whisper: 1500 -> 30 s)
    activation: str = "gelu"
    layer_norm_eps: float = 1e-5
    dropout: float = 0.0  # on the embeddings and each sub-layer's output (Whisper's dropout)
    attention_dropout: float = 0.0
    exact_frames: bool = False  # True: demand exactly 2 * max_positions frames, as transformers' WhisperEncoder does

    def __post_init__(self) -> None:
        for name in ("n_mels", "dim", "depth", "num_heads", "mlp_dim", "max_positions"):
            setattr(self, name, check_int(getattr(self, name), name))
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} is not divisible by num_heads={self.num_heads}")
        if self.dim % 2 or self.dim < 4:
            raise ValueError(f"dim must be even and >= 4 (sinusoidal positions), got {self.dim}")
        check_choice(self.activation, "activation", ACTIVATIONS)
        self.layer_norm_eps = check_number(self.layer_norm_eps, "layer_norm_eps", low=0.0, low_open=True)
        self.dropout = check_dropout(self.dropout)
        self.attention_dropout = check_dropout(self.attention_dropout, "attention_dropout")
        self.exact_frames = check_bool(self.exact_frames, "exact_frames")

    @property
    def max_frames(self) -> int:
        return 2 * self.max_positions


class AudioEncoder(nn.Module):
    """Whisper's encoder (arXiv:2212.04356, figure 1): log-mel (B, M, F) -> tokens (B, N, D), N = ceil(F / 2).

    The stem is two 1-D convolutions over time (kernel 3, padding 1; the second with stride 2) with
    GELU: each token sees 7 frames (70 ms) and there is one token per 20 ms. Positions are fixed
    sinusoids (a buffer, saved with the weights, as in ``transformers``). Then pre-norm
    :class:`~mmllm_course.nn.TransformerBlock` s and a final LayerNorm. Whisper's ``k_proj`` has no
    bias; ours has one that the converter sets to zero (a constant added to every key shifts all
    scores of a query equally, which softmax ignores, so it computes the same).
    Shorter clips than ``2 * max_positions`` frames are accepted (the first positions are used) unless
    ``config.exact_frames``. ``pooled(x)`` is the mean over tokens (B, D).
    """

    def __init__(self, config: AudioEncoderConfig | None = None):
        super().__init__()
        self.config = c = AudioEncoderConfig() if config is None else config
        if not isinstance(c, AudioEncoderConfig):
            raise InputTypeError(f"config must be an AudioEncoderConfig, got {describe(c)}")
        self.conv1 = nn.Conv1d(c.n_mels, c.dim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(c.dim, c.dim, kernel_size=3, stride=2, padding=1)
        self.register_buffer("position_embedding", whisper_sinusoids(c.max_positions, c.dim))  # (P, D)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(c.dim, c.num_heads, hidden_dim=c.mlp_dim, activation=c.activation,
                             layer_norm_eps=c.layer_norm_eps, dropout=c.dropout, attention_dropout=c.attention_dropout)
            for _ in range(c.depth)
        )
        self.norm = nn.LayerNorm(c.dim, eps=c.layer_norm_eps)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel: (B, n_mels, F) log-mel features (:class:`LogMelSpectrogram`) -> (B, ceil(F / 2), D)."""
        c = self.config
        check_tensor(mel, "mel", f"(B, {c.n_mels}, F)", kind="float")
        if mel.dim() != 3 or mel.shape[1] != c.n_mels:
            raise ValueError(f"mel must be (B, n_mels={c.n_mels}, F), got shape {tuple(mel.shape)}")
        if mel.shape[0] == 0:
            raise ValueError(f"mel is an empty batch: got shape {tuple(mel.shape)}")
        frames = mel.shape[-1]
        if frames == 0 or frames > c.max_frames or (c.exact_frames and frames != c.max_frames):
            want = f"exactly {c.max_frames}" if c.exact_frames else f"1 to {c.max_frames}"
            raise ValueError(f"mel must have {want} frames (2 * max_positions={c.max_positions}), got F={frames}")
        if not bool(torch.isfinite(mel).all()):
            raise ValueError(f"mel holds NaN or infinite values (shape {tuple(mel.shape)})")
        x = to_module_dtype(mel, self)
        x = F.gelu(self.conv1(x))  # (B, D, F)
        x = F.gelu(self.conv2(x))  # (B, D, N), N = ceil(F / 2)
        x = x.transpose(1, 2)  # (B, N, D)
        x = self.drop(x + self.position_embedding[: x.shape[1]].to(x.dtype))
        for block in self.blocks:
            x, _ = block(x)
        return self.norm(x)  # (B, N, D)

    def pooled(self, mel: torch.Tensor) -> torch.Tensor:
        """One vector per clip: the mean of the output tokens, (B, D)."""
        return self(mel).mean(dim=1)


def whisper_encoder_from_transformers(model_or_path: object) -> AudioEncoder:
    """Our :class:`AudioEncoder` holding the weights of a ``transformers`` Whisper encoder.

    Accepts a ``WhisperModel``, ``WhisperForConditionalGeneration`` or bare ``WhisperEncoder`` object
    (model_type ``"whisper"``) or a folder saved with ``save_pretrained``. Names (5.x):
    ``conv1``, ``conv2``, ``embed_positions.weight``, ``layers.i.self_attn.{q,k,v,out}_proj`` (no
    ``k_proj.bias``: we load zeros), ``layers.i.{self_attn_layer_norm, final_layer_norm, fc1, fc2}``,
    ``layer_norm``. The converted encoder demands exactly ``2 * max_source_positions`` frames, as
    Whisper does (set ``config.exact_frames = False`` to feed shorter clips). A non-zero
    ``activation_dropout`` (dropout inside the MLP, which our blocks lack) raises.
    """
    hf = resolve_hf_model(model_or_path, "whisper_encoder_from_transformers", {"whisper": "WhisperModel"})
    encoder = hf.get_encoder() if hasattr(hf, "get_encoder") else hf
    if not hasattr(encoder, "conv1") or not hasattr(encoder, "embed_positions"):
        raise ValueError(f"whisper_encoder_from_transformers: could not find a WhisperEncoder in a {type(hf).__name__}")
    c = hf.config
    if float(c.activation_dropout or 0.0) != 0.0:
        raise ValueError(f"activation_dropout={c.activation_dropout} is not supported (our MLP has no inner dropout); set it to 0.0")
    config = AudioEncoderConfig(
        n_mels=c.num_mel_bins, dim=c.d_model, depth=c.encoder_layers, num_heads=c.encoder_attention_heads,
        mlp_dim=c.encoder_ffn_dim, max_positions=c.max_source_positions,
        activation=activation_from_hf(c.activation_function, "activation_function", "whisper_encoder_from_transformers"),
        layer_norm_eps=1e-5, dropout=dropout_from_hf(c.dropout, "dropout"),
        attention_dropout=dropout_from_hf(c.attention_dropout, "attention_dropout"), exact_frames=True,
    )
    plan: Plan = {"position_embedding": ("embed_positions.weight", None)}
    for name in ("conv1", "conv2"):
        plan.update({f"{name}.{k}": (f"{name}.{k}", None) for k in ("weight", "bias")})
    plan.update({f"norm.{k}": (f"layer_norm.{k}", None) for k in ("weight", "bias")})
    names = {"attn.q_proj": "self_attn.q_proj", "attn.k_proj": "self_attn.k_proj", "attn.v_proj": "self_attn.v_proj",
             "attn.out_proj": "self_attn.out_proj", "ln1": "self_attn_layer_norm", "ln2": "final_layer_norm",
             "mlp.fc1": "fc1", "mlp.fc2": "fc2"}
    sd = encoder.state_dict()
    for i in range(config.depth):
        for ours, theirs in names.items():
            for k in ("weight", "bias"):
                key = f"layers.{i}.{theirs}.{k}"
                if ours == "attn.k_proj" and k == "bias":
                    width = config.dim
                    plan[f"blocks.{i}.{ours}.{k}"] = (key, None, lambda width=width: torch.zeros(width))
                else:
                    plan[f"blocks.{i}.{ours}.{k}"] = (key, None)
    source = f"a {type(hf).__name__} (model_type 'whisper')"
    new = apply_plan(sd, plan, source)
    return load_exact(AudioEncoder(config), new, source).train(encoder.training)


# ----------------------------------------------------------------------------------------------
# The HuBERT-style waveform feature encoder
# ----------------------------------------------------------------------------------------------

@dataclass
class WaveformEncoderConfig:
    """HuBERT's convolutional feature encoder. The real model: 7 layers of 512 channels, kernels
    (10, 3, 3, 3, 3, 2, 2), strides (5, 2, 2, 2, 2, 2, 2): 400 samples (25 ms) of receptive field, one
    frame every 320 samples (20 ms). The defaults here are a tiny 3-layer version (stride 20)."""

    conv_dim: tuple[int, ...] = (16, 16, 16)
    conv_kernel: tuple[int, ...] = (10, 3, 3)
    conv_stride: tuple[int, ...] = (5, 2, 2)
    conv_bias: bool = False
    norm: str = "group"  # "group": GroupNorm (one group per channel) after the first conv only; "layer": LayerNorm after each
    activation: str = "gelu"
    hidden_size: int | None = 32  # feature projection width; None: no projection, output (B, N, conv_dim[-1])
    projection_layer_norm: bool = True  # LayerNorm before the projection (HuBERT's feat_proj_layer_norm)
    layer_norm_eps: float = 1e-5
    dropout: float = 0.0  # after the projection (HuBERT's feat_proj_dropout)
    sample_rate: int = SAMPLE_RATE

    def __post_init__(self) -> None:
        lists = {n: tuple(getattr(self, n)) if isinstance(getattr(self, n), (list, tuple)) else None
                 for n in ("conv_dim", "conv_kernel", "conv_stride")}
        for n, v in lists.items():
            if v is None:
                raise InputTypeError(f"{n} must be a tuple of positive integers, got {describe(getattr(self, n))}")
            if not v:
                raise ValueError(f"{n} must be a non-empty tuple of positive integers, got {getattr(self, n)!r}")
            setattr(self, n, tuple(check_int(x, f"{n}[{i}]") for i, x in enumerate(v)))
        if not len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride):
            raise ValueError(f"conv_dim, conv_kernel and conv_stride must have one entry per layer, got lengths "
                             f"{len(self.conv_dim)}, {len(self.conv_kernel)}, {len(self.conv_stride)}")
        check_choice(self.norm, "norm", ("group", "layer"))
        check_choice(self.activation, "activation", ("gelu",))
        self.conv_bias = check_bool(self.conv_bias, "conv_bias")
        self.projection_layer_norm = check_bool(self.projection_layer_norm, "projection_layer_norm")
        self.layer_norm_eps = check_number(self.layer_norm_eps, "layer_norm_eps", low=0.0, low_open=True)
        if self.hidden_size is not None:
            self.hidden_size = check_int(self.hidden_size, "hidden_size")
        self.dropout = check_dropout(self.dropout)
        self.sample_rate = check_int(self.sample_rate, "sample_rate")

    def num_frames(self, num_samples: int) -> int:
        """Output frames N for T samples: each conv maps L -> (L - kernel) // stride + 1 (0 if L < kernel)."""
        length = check_int(num_samples, "num_samples", minimum=0)
        for k, s in zip(self.conv_kernel, self.conv_stride):
            length = (length - k) // s + 1 if length >= k else 0
        return length

    @property
    def min_samples(self) -> int:
        """The receptive field: the fewest samples that give one output frame."""
        length = 1
        for k, s in zip(reversed(self.conv_kernel), reversed(self.conv_stride)):
            length = (length - 1) * s + k
        return length


class WaveformFeatureEncoder(nn.Module):
    """HuBERT's feature encoder (arXiv:2106.07447, figure 1; wav2vec 2.0's): raw waveform (B, T) -> (B, N, D).

    Strided 1-D convolutions learn a filter bank from the waveform itself; with ``norm="group"`` the
    first conv is followed by a GroupNorm with one group per channel (each channel normalised over
    time), with ``"layer"`` every conv by a LayerNorm over channels. Then (when ``hidden_size`` is set)
    a LayerNorm and a Linear project to the transformer's width: HuBERT's feature projection. HuBERT
    expects each clip normalised to zero mean and unit variance first (its feature extractor's
    ``do_normalize``); ``forward`` takes the waveform as it comes.
    """

    def __init__(self, config: WaveformEncoderConfig | None = None):
        super().__init__()
        self.config = c = WaveformEncoderConfig() if config is None else config
        if not isinstance(c, WaveformEncoderConfig):
            raise InputTypeError(f"config must be a WaveformEncoderConfig, got {describe(c)}")
        in_dims = (1,) + c.conv_dim[:-1]
        self.convs = nn.ModuleList(nn.Conv1d(i, o, k, stride=s, bias=c.conv_bias)
                                   for i, o, k, s in zip(in_dims, c.conv_dim, c.conv_kernel, c.conv_stride))
        if c.norm == "group":
            self.norms = nn.ModuleList([nn.GroupNorm(c.conv_dim[0], c.conv_dim[0], affine=True)])
        else:
            self.norms = nn.ModuleList(nn.LayerNorm(o) for o in c.conv_dim)
        if c.hidden_size is not None:
            self.proj_norm = nn.LayerNorm(c.conv_dim[-1], eps=c.layer_norm_eps) if c.projection_layer_norm else None
            self.projection = nn.Linear(c.conv_dim[-1], c.hidden_size)
        self.drop = nn.Dropout(c.dropout)

    def features(self, waveform: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """The conv stack alone: (B, T) -> (B, C, N), ``HubertModel.feature_extractor``'s output."""
        c = self.config
        check_sample_rate(sample_rate, c.sample_rate)
        x = check_waveform(waveform, "waveform", min_samples=c.min_samples)  # (B, T)
        x = to_module_dtype(x, self)[:, None, :]  # (B, 1, T)
        for i, conv in enumerate(self.convs):
            x = conv(x)  # (B, C_i, T_i)
            if c.norm == "group" and i == 0:
                x = self.norms[0](x)
            elif c.norm == "layer":
                x = self.norms[i](x.transpose(1, 2)).transpose(1, 2)  # LayerNorm over channels
            x = F.gelu(x)
        return x  # (B, C, N)

    def forward(self, waveform: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """(B, T) or (T,) waveform -> (B, N, hidden_size), or (B, N, C) without a projection."""
        x = self.features(waveform, sample_rate).transpose(1, 2)  # (B, N, C)
        if self.config.hidden_size is None:
            return x
        if self.proj_norm is not None:
            x = self.proj_norm(x)
        return self.drop(self.projection(x))  # (B, N, D)


def hubert_feature_encoder_from_transformers(model_or_path: object) -> WaveformFeatureEncoder:
    """Our :class:`WaveformFeatureEncoder` holding a ``HubertModel``'s feature encoder and feature projection.

    Accepts a ``HubertModel`` object (model_type ``"hubert"``) or a folder saved with
    ``save_pretrained``. Names (5.x): ``feature_extractor.conv_layers.i.conv.{weight,bias}``,
    ``feature_extractor.conv_layers.i.layer_norm.{weight,bias}``, ``feature_projection.layer_norm``,
    ``feature_projection.projection``. The rest of the model (positional conv, transformer, masked
    embedding) is not ported.
    """
    hf = resolve_hf_model(model_or_path, "hubert_feature_encoder_from_transformers", {"hubert": "HubertModel"})
    hf = getattr(hf, "hubert", hf)  # HubertForCTC / HubertForSequenceClassification wrap a HubertModel
    c = hf.config
    if c.feat_extract_activation != "gelu":
        raise ValueError(f"feat_extract_activation must be 'gelu', got {c.feat_extract_activation!r}")
    config = WaveformEncoderConfig(
        conv_dim=tuple(c.conv_dim), conv_kernel=tuple(c.conv_kernel), conv_stride=tuple(c.conv_stride),
        conv_bias=bool(c.conv_bias), norm=c.feat_extract_norm, hidden_size=c.hidden_size,
        projection_layer_norm=bool(c.feat_proj_layer_norm), layer_norm_eps=c.layer_norm_eps,
        dropout=dropout_from_hf(c.feat_proj_dropout, "feat_proj_dropout"),
    )
    plan: Plan = {}
    for i in range(len(config.conv_dim)):
        kinds = ("weight", "bias") if config.conv_bias else ("weight",)
        plan.update({f"convs.{i}.{k}": (f"feature_extractor.conv_layers.{i}.conv.{k}", None) for k in kinds})
        if config.norm == "layer" or i == 0:
            plan.update({f"norms.{i}.{k}": (f"feature_extractor.conv_layers.{i}.layer_norm.{k}", None) for k in ("weight", "bias")})
    if config.projection_layer_norm:
        plan.update({f"proj_norm.{k}": (f"feature_projection.layer_norm.{k}", None) for k in ("weight", "bias")})
    plan.update({f"projection.{k}": (f"feature_projection.projection.{k}", None) for k in ("weight", "bias")})
    sd = {k: v for k, v in hf.state_dict().items() if k.startswith(("feature_extractor.", "feature_projection."))}
    source = f"a {type(hf).__name__} (model_type 'hubert')"
    new = apply_plan(sd, plan, source)
    return load_exact(WaveformFeatureEncoder(config), new, source).train(hf.training)
