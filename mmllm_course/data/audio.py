"""Synthetic spoken descriptions: the shapes world's words as formant "speech", offline and deterministic.

A clip says "<size> <colour> <shape>", e.g. "small red circle", at 16 kHz. Each word is a short
sequence of segments built like speech sounds:

* voiced segments (vowels, liquids, nasals): a harmonic source at the speaker's pitch ``f0``
  whose harmonics are shaped by two formants (resonances ``F1``, ``F2``) that glide from one vowel
  to the next, as in "r-e" or "y-e-o";
* noise segments (fricatives "s", "sh", "f"): band-pass noise at the consonant's frequency;
* bursts (stops "k", "t", "b", "g", "d"): a few ms of broadband noise.

Words share sounds on purpose so that recognition is a task: "square", "star", "small" and
"circle" all open with "s"; "red" and "green" share the "r" glide; "cross" and "circle" share the
"k"; "blue" and "yellow" end on back vowels. Every clip varies like a new speaker in a new room:
pitch (``f0``), vocal tract length (all formants scaled), speaking speed, gaps (even slight
overlaps) between words, gain, a random start, and white noise at a random SNR down to 0 dB.

Dims: ``n`` clips, ``T = clip_seconds * sample_rate`` samples. Labels follow ``data.shapes``:
``(shape, color, size)`` indices into ``SHAPES``, ``COLORS``, ``SIZES``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mmllm_course._checks import InputTypeError, check_index, check_int, check_number, describe
from mmllm_course.data.shapes import COLORS, SHAPES, SIZES

SAMPLE_RATE = 16000
SPOKEN_WORDS: tuple[str, ...] = SIZES + COLORS + SHAPES
MIN_SAMPLE_RATE = 12000  # the "s" noise sits at 5.5 kHz: it needs a Nyquist frequency above that

# Vowel formants (F1, F2) in Hz, adult averages (Peterson & Barney 1952, rounded).
V = {"i": (280, 2250), "e": (530, 1840), "ae": (660, 1720), "a": (730, 1090), "o": (570, 840),
     "u": (300, 870), "er": (490, 1350), "l": (360, 1000), "n": (280, 1500), "m": (280, 1100), "w": (300, 700)}
# A segment: ("v", start vowel, end vowel, weight) voiced glide; ("f", centre Hz, bandwidth Hz, weight) noise;
# ("b", centre Hz, 0, weight) burst. Weights are relative durations within the word.
WORD_SEGMENTS: dict[str, tuple[tuple, ...]] = {
    "small": (("f", 5500, 2000, 1.2), ("v", "m", "o", 0.8), ("v", "o", "l", 1.6)),
    "large": (("v", "l", "a", 1.2), ("v", "a", "er", 1.4), ("f", 3000, 1200, 1.0)),
    "red": (("v", "er", "e", 1.6), ("v", "e", "e", 1.0), ("b", 3500, 0, 0.3)),
    "green": (("b", 1800, 0, 0.3), ("v", "er", "i", 1.4), ("v", "i", "n", 1.4)),
    "blue": (("b", 700, 0, 0.3), ("v", "l", "u", 1.2), ("v", "u", "u", 1.4)),
    "yellow": (("v", "i", "e", 1.0), ("v", "e", "l", 0.9), ("v", "l", "o", 1.2)),
    "circle": (("f", 5500, 2000, 1.0), ("v", "er", "er", 1.2), ("b", 2000, 0, 0.3), ("v", "o", "l", 1.0)),
    "square": (("f", 5500, 2000, 1.0), ("b", 2000, 0, 0.3), ("v", "w", "e", 1.0), ("v", "e", "er", 1.2)),
    "triangle": (("b", 4000, 0, 0.3), ("v", "er", "a", 0.9), ("v", "a", "i", 0.8), ("v", "ae", "l", 1.0)),
    "star": (("f", 5500, 2000, 1.0), ("b", 4000, 0, 0.3), ("v", "a", "a", 1.2), ("v", "a", "er", 1.0)),
    "cross": (("b", 2000, 0, 0.3), ("v", "er", "o", 1.2), ("v", "o", "o", 0.8), ("f", 5500, 2000, 1.2)),
    # the 3-D solids (chapter 11's spoken objects, ``make_spoken_objects``); they share sounds with the words above
    # and with each other: "sphere" and "cylinder" open with "s", "cube" and "cone" with "k", "torus" ends on "s"
    "sphere": (("f", 5500, 2000, 0.9), ("f", 3500, 3000, 0.6), ("v", "i", "i", 0.9), ("v", "i", "er", 1.0)),
    "cube": (("b", 2000, 0, 0.3), ("v", "i", "u", 1.2), ("v", "u", "u", 1.0), ("b", 700, 0, 0.3)),
    "cylinder": (("f", 5500, 2000, 0.8), ("v", "i", "l", 0.9), ("v", "l", "i", 0.7), ("v", "n", "n", 0.6), ("b", 4000, 0, 0.2),
                 ("v", "er", "er", 0.8)),
    "cone": (("b", 2000, 0, 0.3), ("v", "o", "o", 1.3), ("v", "o", "n", 1.0)),
    "torus": (("b", 4000, 0, 0.3), ("v", "o", "er", 1.0), ("v", "er", "a", 0.8), ("f", 5500, 2000, 1.0)),
}
SOLID_WORDS: tuple[str, ...] = ("sphere", "cube", "cylinder", "cone", "torus")  # = data.points.SOLIDS, in its order


def _bandpass_noise(length: int, centre: float, width: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """White noise filtered in the frequency domain to a band centre +- width / 2 (soft edges)."""
    spec = np.fft.rfft(rng.standard_normal(length))
    freqs = np.fft.rfftfreq(length, 1.0 / sr)
    spec *= np.exp(-0.5 * ((freqs - centre) / max(width / 2, 1.0)) ** 2)
    out = np.fft.irfft(spec, n=length)
    return out / (np.abs(out).max() + 1e-9)


def _voiced(length: int, start: tuple, end: tuple, f0: float, formant_scale: float, sr: int,
            rng: np.random.Generator) -> np.ndarray:
    """Harmonics of a gliding f0 whose amplitudes follow two formant peaks gliding from ``start`` to ``end``."""
    t = np.arange(length) / sr
    glide = np.linspace(0.0, 1.0, length)
    f0_track = f0 * (1.0 + 0.06 * (0.5 - glide) + 0.01 * np.sin(2 * math.pi * 5.0 * t))  # falling pitch, vibrato
    phase = 2 * math.pi * np.cumsum(f0_track) / sr + rng.uniform(0, 2 * math.pi)
    f1 = formant_scale * (start[0] + (end[0] - start[0]) * glide)  # (L,)
    f2 = formant_scale * (start[1] + (end[1] - start[1]) * glide)
    num_h = int(min(4000.0 / f0, 40))
    h = np.arange(1, num_h + 1)[:, None]  # (Hn, 1)
    freqs = h * f0_track[None, :]  # (Hn, L)
    gain = (np.exp(-0.5 * ((freqs - f1) / 90.0) ** 2) + 0.6 * np.exp(-0.5 * ((freqs - f2) / 120.0) ** 2)
            + 0.02 / h)  # two formants over a weak spectral tilt
    out = (gain * np.sin(h * phase[None, :])).sum(axis=0)
    return out / (np.abs(out).max() + 1e-9)


def synthesize_word(word: str, f0: float = 140.0, formant_scale: float = 1.0, duration: float = 0.26,
                    sample_rate: int = SAMPLE_RATE, seed: int | np.random.Generator = 0) -> np.ndarray:
    """One word as a float64 waveform (L,) of about ``duration`` seconds, peak 1 (see the module docstring)."""
    if not isinstance(word, str) or word not in WORD_SEGMENTS:
        raise ValueError(f"word must be one of {SPOKEN_WORDS + SOLID_WORDS}, got {word!r}")
    f0 = check_number(f0, "f0", low=40.0, high=600.0)
    formant_scale = check_number(formant_scale, "formant_scale", low=0.5, high=2.0)
    duration = check_number(duration, "duration", low=0.02, high=5.0)
    sr = check_int(sample_rate, "sample_rate", minimum=MIN_SAMPLE_RATE)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(check_int(seed, "seed", minimum=0))
    segs = WORD_SEGMENTS[word]
    total = sum(s[3] for s in segs)
    parts = []
    for kind, a, b, w in segs:
        length = max(int(sr * duration * w / total), 16)
        if kind == "v":
            x = _voiced(length, V[a], V[b], f0, formant_scale, sr, rng)
            env = np.minimum(1.0, np.minimum(np.arange(length), np.arange(length)[::-1]) / (0.012 * sr))
            x = x * env
        elif kind == "f":
            x = 0.5 * _bandpass_noise(length, a * formant_scale, b, sr, rng) * np.hanning(length)
        else:
            burst = min(length, int(0.02 * sr))
            x = np.zeros(length)
            x[:burst] = 0.8 * _bandpass_noise(burst, a * formant_scale, 3000.0, sr, rng) * np.exp(-np.arange(burst) / (0.004 * sr))
        parts.append(x)
    out = np.concatenate(parts)
    return out / (np.abs(out).max() + 1e-9)


@dataclass
class SpokenConfig:
    """Speaker and room variation of the spoken descriptions (see the module docstring)."""

    sample_rate: int = SAMPLE_RATE
    clip_seconds: float = 1.0
    word_seconds: float = 0.22  # a word's duration at speed 1
    speed_range: tuple[float, float] = (0.85, 1.25)
    pitch_range: tuple[float, float] = (85.0, 260.0)  # f0 in Hz: low male to child
    formant_range: tuple[float, float] = (0.88, 1.15)  # vocal tract length: every formant scaled
    gain_range: tuple[float, float] = (0.2, 1.0)  # peak amplitude of the speech
    snr_db_range: tuple[float, float] = (0.0, 20.0)  # white noise; 0 dB: as much noise power as speech
    gap_range: tuple[float, float] = (-0.02, 0.06)  # seconds between words (negative: the words overlap)
    shapes: Sequence[str] = SHAPES
    colors: Sequence[str] = COLORS
    sizes: Sequence[str] = SIZES

    def __post_init__(self) -> None:
        self.sample_rate = check_int(self.sample_rate, "sample_rate", minimum=MIN_SAMPLE_RATE)
        self.clip_seconds = check_number(self.clip_seconds, "clip_seconds", low=0.1, high=30.0)
        self.word_seconds = check_number(self.word_seconds, "word_seconds", low=0.05, high=2.0)
        for name, low, high in (("speed_range", 0.2, 5.0), ("pitch_range", 40.0, 600.0), ("formant_range", 0.5, 2.0),
                                ("gain_range", 1e-4, 10.0), ("snr_db_range", -30.0, 100.0), ("gap_range", -0.2, 1.0)):
            value = getattr(self, name)
            if not isinstance(value, (tuple, list)):
                raise InputTypeError(f"{name} must be a (low, high) tuple, got {describe(value)}")
            if len(value) != 2:
                raise ValueError(f"{name} must be (low, high), got {value!r}")
            lo, hi = (check_number(v, name, low=low, high=high) for v in value)
            if lo > hi:
                raise ValueError(f"{name} must have low <= high, got {value!r}")
            setattr(self, name, (lo, hi))
        for name, allowed in (("shapes", SHAPES), ("colors", COLORS), ("sizes", SIZES)):
            value = getattr(self, name)
            if not isinstance(value, (str, list, tuple)):
                raise InputTypeError(f"{name} must be a tuple of names from {allowed}, got {describe(value)}")
            value = (value,) if isinstance(value, str) else tuple(value)
            unknown = [v for v in value if v not in allowed]
            if not value or unknown:
                raise ValueError(f"{name} must be a non-empty subset of {allowed}, got {value!r} (unknown: {unknown})")
            setattr(self, name, value)
        longest = 3 * 1.1 * self.word_seconds / self.speed_range[0] + 2 * self.gap_range[1]
        if longest > self.clip_seconds:
            raise ValueError(
                f"clip_seconds={self.clip_seconds} is too short for 3 words of {self.word_seconds} s at the slowest "
                f"speed {self.speed_range[0]} with gaps up to {self.gap_range[1]} s: need >= {longest:.2f} s"
            )

    @property
    def num_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))


@dataclass
class SpokenBatch:
    """``waveforms`` (n, T) float32 at ``sample_rate``; ``labels`` (n, 3) long: (shape, color, size) indices
    into ``SHAPES``, ``COLORS``, ``SIZES``; ``captions`` the spoken words, e.g. "small red circle"; ``snr_db`` (n,)."""

    waveforms: torch.Tensor
    labels: torch.Tensor
    captions: list[str]
    snr_db: torch.Tensor
    sample_rate: int = SAMPLE_RATE

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def make_spoken_descriptions(n: int, config: SpokenConfig | None = None, seed: int = 0) -> SpokenBatch:
    """``n`` clips "<size> <colour> <shape>" with random speakers and noise; deterministic in ``seed``."""
    n = check_int(n, "n")
    config = SpokenConfig() if config is None else config
    if not isinstance(config, SpokenConfig):
        raise InputTypeError(f"config must be a SpokenConfig, got {describe(config)}")
    rng = np.random.default_rng(check_int(seed, "seed", minimum=0))
    c = config
    waves = np.zeros((n, c.num_samples), dtype=np.float32)
    labels = np.zeros((n, 3), dtype=np.int64)
    captions, snrs = [], np.zeros(n)
    for i in range(n):
        shape, color, size = (rng.choice(c.shapes), rng.choice(c.colors), rng.choice(c.sizes))
        labels[i] = (SHAPES.index(shape), COLORS.index(color), SIZES.index(size))
        captions.append(f"{size} {color} {shape}")
        waves[i], snrs[i] = _speak((size, color, shape), c, rng)
    return SpokenBatch(torch.from_numpy(waves), torch.from_numpy(labels), captions,
                       torch.from_numpy(snrs.astype(np.float32)), c.sample_rate)


def _speak(words: Sequence[str], c: SpokenConfig, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """One clip (T,) float32 saying ``words`` with a random speaker, speed, gaps, gain and noise; and its SNR in dB."""
    sr, total = c.sample_rate, c.num_samples
    f0, formant = rng.uniform(*c.pitch_range), rng.uniform(*c.formant_range)
    speed = rng.uniform(*c.speed_range)
    sounds = [synthesize_word(w, f0 * rng.uniform(0.95, 1.05), formant, c.word_seconds / speed * rng.uniform(0.9, 1.1), sr, rng)
              for w in words]
    gaps = [int(rng.uniform(*c.gap_range) * sr) for _ in range(len(words) - 1)]
    length = sum(len(w) for w in sounds) + sum(gaps)
    pos = int(rng.integers(0, max(total - length, 0) + 1))
    speech = np.zeros(total)
    for j, w in enumerate(sounds):
        end = min(pos + len(w), total)
        speech[max(pos, 0):end] += w[max(-pos, 0): end - pos] * rng.uniform(0.7, 1.0)  # word-level loudness
        pos += len(w) + (gaps[j] if j < len(gaps) else 0)
    speech *= rng.uniform(*c.gain_range) / (np.abs(speech).max() + 1e-9)
    snr = rng.uniform(*c.snr_db_range)
    power = np.mean(speech[np.abs(speech) > 1e-6] ** 2) if np.any(np.abs(speech) > 1e-6) else 1e-6
    noise = rng.standard_normal(total) * math.sqrt(power / 10 ** (snr / 10))
    return (speech + noise).astype(np.float32), float(snr)


@dataclass
class SpokenObjects:
    """Chapter 11's spoken requests for 3-D objects: ``waveforms`` (n, T) float32; ``solid`` (n,) indices into
    ``SOLID_WORDS`` (= ``data.points.SOLIDS``); ``color`` (n,) into ``COLORS``; ``size`` (n,) into ``SIZES``;
    ``captions`` e.g. "large red cone"; ``snr_db`` (n,)."""

    waveforms: torch.Tensor
    solid: torch.Tensor
    color: torch.Tensor
    size: torch.Tensor
    captions: list[str]
    snr_db: torch.Tensor
    sample_rate: int = SAMPLE_RATE

    def __len__(self) -> int:
        return int(self.solid.shape[0])


def make_spoken_objects(n: int, config: SpokenConfig | None = None, seed: int = 0,
                        solids: Sequence[str] = SOLID_WORDS) -> SpokenObjects:
    """``n`` clips "<size> <colour> <solid>" (e.g. "small blue torus"), balanced over (solid, size) in random order.

    The speakers, rooms and noise vary as in :func:`make_spoken_descriptions` (``config``'s ranges;
    its ``shapes`` field is not used: ``solids`` names the objects). Deterministic in ``seed``.
    """
    n = check_int(n, "n")
    config = SpokenConfig() if config is None else config
    if not isinstance(config, SpokenConfig):
        raise InputTypeError(f"config must be a SpokenConfig, got {describe(config)}")
    if isinstance(solids, str) or not isinstance(solids, (list, tuple)):
        raise InputTypeError(f"solids must be a tuple of names from {SOLID_WORDS}, got {describe(solids)}")
    unknown = [s for s in solids if s not in SOLID_WORDS]
    if not solids or unknown:
        raise ValueError(f"solids must be a non-empty subset of {SOLID_WORDS}, got {tuple(solids)!r} (unknown: {unknown})")
    rng = np.random.default_rng(check_int(seed, "seed", minimum=0))
    c = config
    pairs = [(s, z) for s in solids for z in c.sizes]
    order = rng.permutation(np.arange(n) % len(pairs))
    waves = np.zeros((n, c.num_samples), dtype=np.float32)
    solid, color, size = (np.zeros(n, dtype=np.int64) for _ in range(3))
    captions, snrs = [], np.zeros(n)
    for i in range(n):
        name, size_name = pairs[order[i]]
        color_name = str(rng.choice(c.colors))
        solid[i], color[i], size[i] = SOLID_WORDS.index(name), COLORS.index(color_name), SIZES.index(size_name)
        captions.append(f"{size_name} {color_name} {name}")
        waves[i], snrs[i] = _speak((size_name, color_name, name), c, rng)
    return SpokenObjects(torch.from_numpy(waves), torch.from_numpy(solid), torch.from_numpy(color), torch.from_numpy(size),
                         captions, torch.from_numpy(snrs.astype(np.float32)), c.sample_rate)


class SpokenDescriptions(Dataset):
    """A fixed set of clips generated once: item ``i`` is ``(waveform (T,), labels (3,))``."""

    def __init__(self, n: int, config: SpokenConfig | None = None, seed: int = 0):
        self.batch = make_spoken_descriptions(n, config, seed)

    def __len__(self) -> int:
        return len(self.batch)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = check_index(i, len(self), "clips")
        return self.batch.waveforms[i], self.batch.labels[i]
