# %% [markdown]
# # 08 · Exercises: audio, 3-D point clouds and binding them into one space
#
# Read chapter 8 (`notebooks/08_audio_3d_binding.ipynb`) first. The exercises come in four parts:
#
# 1. **Core** (exercises 1-5): farthest point sampling, k-nearest-neighbour grouping, the mel filter
#    bank, Whisper's log-mel steps and the binding loss, each a function.
# 2. **Build** (exercises 6-7): Whisper's convolutional stem and Point-BERT's point tokenizer as whole
#    modules. The check loads the library's weights into yours, so your parameters must carry the
#    library's names, and compares outputs and gradients.
# 3. **Train** (exercise 8): bind an audio tower and a point-cloud tower of your own into the frozen
#    chapter-2 CLIP space with your loss and your loop; the check measures audio -> 3-D retrieval,
#    a pairing you never train on.
# 4. **Stretch** (exercise 9, optional): HuBERT's masked-prediction loss.
#
# Then three checked questions. Each exercise ends with `check(...)`: it runs your code next to the
# library's on several inputs and prints **pass**, **todo**, **fail** (with what was expected and what
# came back, and the usual mistake when it recognises it) or **error**.
#
# Dims: `B` batch, `P` points per cloud, `S` sampled points, `G` groups (tokens), `K` points per group,
# `M` mel filters, `F` frames, `N` tokens, `D` width, `E` embedding width.

# %%
import math  # noqa: F401  (you may use it)

import torch
import torch.nn.functional as F  # noqa: F401  (you may use it)
from torch import nn

from mmllm_course.grading import check

_ = torch.manual_seed(0)

# %% [markdown]
# ## Part 1: core functions
#
# ## Exercise 1: `farthest_point_sampling`
#
# Given clouds `points (B, P, 3)`, return the indices `(B, S)` (integers, `torch.long`) of `S` points
# of each cloud spread over its whole shape, by the greedy rule of PointNet++ and Point-BERT:
#
# 1. the first centre is **point 0** of each cloud;
# 2. then, `S - 1` times: the next centre is the point whose distance to its **nearest** chosen
#    centre is the **largest** (the point farthest from every centre so far).
#
# Keep a `(B, P)` tensor of each point's distance to its nearest chosen centre and update it with
# each new centre (`torch.minimum`): that costs `O(S * P)`, not `O(S^2 * P)`. Squared distances pick
# the same points. Every cloud of the batch runs its own sampling. The check accepts any first point
# (Point-BERT's training starts from a random one, and the check replays FPS from yours), but
# exercise 7 needs point 0, the library's default.

# %%
def farthest_point_sampling(points: torch.Tensor, num_samples: int) -> torch.Tensor:
    """points (B, P, 3) -> indices (B, S) of S farthest-point samples per cloud, starting from point 0."""
    # BEGIN SOLUTION
    b, p, _ = points.shape
    chosen = torch.zeros(b, num_samples, dtype=torch.long, device=points.device)
    nearest = torch.full((b, p), float("inf"), dtype=points.dtype, device=points.device)  # (B, P)
    rows = torch.arange(b, device=points.device)
    current = torch.zeros(b, dtype=torch.long, device=points.device)  # point 0 of every cloud
    for i in range(num_samples):
        chosen[:, i] = current
        newest = points[rows, current]  # (B, 3)
        nearest = torch.minimum(nearest, ((points - newest[:, None, :]) ** 2).sum(dim=-1))
        current = nearest.argmax(dim=1)  # farthest from every chosen centre
    return chosen
    # END SOLUTION


# %%
check("ch08.fps", farthest_point_sampling)

# %% [markdown]
# ## Exercise 2: `knn_group`
#
# Given `points (B, P, 3)` and centres `centers (B, G, 3)`, return the groups `(B, G, K, 3)`: for
# each centre, its `k` nearest points **of the same cloud** by Euclidean distance over the three
# coordinates, **nearest first**, each **minus its centre** (so a group describes a local shape
# wherever it sits; the position comes back later through the centre). A centre taken from the
# cloud is its own first neighbour, with offset 0. `torch.cdist` computes the distances `(B, G, P)`;
# `topk(k, largest=False)` returns the smallest, sorted.

# %%
def knn_group(points: torch.Tensor, centers: torch.Tensor, k: int) -> torch.Tensor:
    """points (B, P, 3), centers (B, G, 3) -> groups (B, G, K, 3): each centre's k nearest points minus it."""
    # BEGIN SOLUTION
    dist = torch.cdist(centers, points)  # (B, G, P)
    idx = dist.topk(k, dim=-1, largest=False).indices  # (B, G, K), nearest first
    b, g, _ = idx.shape
    neighbours = torch.gather(points, 1, idx.reshape(b, g * k, 1).expand(-1, -1, 3)).reshape(b, g, k, 3)
    return neighbours - centers[:, :, None, :]
    # END SOLUTION


# %%
check("ch08.knn_group", knn_group)

# %% [markdown]
# ## Exercise 3: `mel_filter_bank`
#
# Whisper's filters, as `transformers`' `WhisperFeatureExtractor` builds them (Slaney's mel scale and
# normalisation, librosa's default). Return a float tensor `(K, M)`, `K = num_frequency_bins`,
# `M = num_mel_filters`:
#
# 1. the **Slaney mel scale**: linear below 1 kHz, logarithmic above,
#    $$\text{mel}(f) = \begin{cases} 3f/200 & f < 1000 \\ 15 + 27 \ln(f/1000) / \ln 6.4 & f \ge 1000 \end{cases}$$
#    (and its inverse);
# 2. `M + 2` edges evenly spaced **in mels** from `mel(min_frequency)` to `mel(max_frequency)`,
#    converted back to Hz: filter `m` has left edge `m`, centre `m + 1`, right edge `m + 2`;
# 3. the FFT bins sit at `torch.linspace(0, sample_rate // 2, K)` Hz;
# 4. filter `m` at frequency `f`: rises linearly (in Hz) from 0 at its left edge to 1 at its centre,
#    falls back to 0 at its right edge, 0 outside: `max(0, min(rising, falling))`;
# 5. Slaney's normalisation: filter `m` times `2 / (right edge - left edge)` (in Hz), so that wide
#    high-frequency filters do not outweigh the narrow low ones.
#
# Work in float64. A power spectrogram `(B, K, F)` becomes mel power by `filters.T @ power` `(B, M, F)`.

# %%
def mel_filter_bank(num_frequency_bins: int, num_mel_filters: int, sample_rate: int, min_frequency: float,
                    max_frequency: float) -> torch.Tensor:
    """Slaney-scale, Slaney-normalised triangular filters (num_frequency_bins, num_mel_filters)."""
    # BEGIN SOLUTION
    def to_mel(f: torch.Tensor) -> torch.Tensor:
        return torch.where(f < 1000.0, 3.0 * f / 200.0, 15.0 + torch.log(f.clamp(min=1e-12) / 1000.0) * 27.0 / math.log(6.4))

    def to_hz(m: torch.Tensor) -> torch.Tensor:
        return torch.where(m < 15.0, 200.0 * m / 3.0, 1000.0 * torch.exp((m - 15.0) * math.log(6.4) / 27.0))

    lo, hi = to_mel(torch.tensor([min_frequency, max_frequency], dtype=torch.float64))
    edges = to_hz(torch.linspace(float(lo), float(hi), num_mel_filters + 2, dtype=torch.float64))  # (M + 2,) Hz
    freqs = torch.linspace(0, sample_rate // 2, num_frequency_bins, dtype=torch.float64)  # (K,)
    left, centre, right = edges[:-2], edges[1:-1], edges[2:]  # (M,) each
    rising = (freqs[:, None] - left) / (centre - left)  # (K, M)
    falling = (right - freqs[:, None]) / (right - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0) * (2.0 / (right - left))
    # END SOLUTION


# %%
check("ch08.mel_filter_bank", mel_filter_bank)

# %% [markdown]
# ## Exercise 4: `whisper_log_mel`
#
# The last step of Whisper's front end, from mel power `(B, M, F)` to the features its encoder reads:
#
# 1. floor the power at `1e-10` (so silence gives no `log(0)`), then take **`log10`**;
# 2. floor every value at **its clip's** maximum minus 8 (the max over that clip's bins and frames):
#    the features keep 8 orders of magnitude, 80 dB, below each clip's loudest bin;
# 3. scale: `(x + 4) / 4`, so that the features lie roughly in `[-1, 1]`.
#
# Keep the input's dtype.

# %%
def whisper_log_mel(mel: torch.Tensor) -> torch.Tensor:
    """Mel power (B, M, F) -> Whisper's log-mel features (B, M, F)."""
    # BEGIN SOLUTION
    log_spec = mel.clamp(min=1e-10).log10()
    peak = log_spec.amax(dim=(1, 2), keepdim=True)  # (B, 1, 1): each clip's loudest bin
    return (torch.maximum(log_spec, peak - 8.0) + 4.0) / 4.0
    # END SOLUTION


# %%
check("ch08.log_mel", whisper_log_mel)

# %% [markdown]
# ## Exercise 5: `binding_loss`
#
# ImageBind binds a new modality to a frozen anchor (images for ImageBind, text for LanguageBind)
# with InfoNCE over a batch of `B` pairs: modality embedding `i` goes with anchor embedding `i`.
# With unit-length embeddings and a temperature `T`:
#
# $$\text{logits} = \frac{\hat m\, \hat a^\top}{T} \quad (B, B), \qquad \mathcal{L} = \tfrac12\Big[\operatorname{CE}(\text{logits}, [0..B-1]) + \operatorname{CE}(\text{logits}^\top, [0..B-1])\Big].$$
#
# The embeddings come **not** normalised. Return a 0-d tensor; the check compares the value and the
# gradients with respect to both inputs (freezing the anchor is the caller's job, not the loss's),
# so keep every step in torch. You train with this function in exercise 8.

# %%
def binding_loss(modality_embeds: torch.Tensor, anchor_embeds: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, E), (B, E), T -> symmetric InfoNCE over cosine similarities / T (a 0-d tensor)."""
    # BEGIN SOLUTION
    logits = F.normalize(modality_embeds, dim=-1) @ F.normalize(anchor_embeds, dim=-1).T / temperature  # (B, B)
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    # END SOLUTION


# %%
check("ch08.binding_loss", binding_loss)

# %% [markdown]
# ## Part 2: build the modules
#
# Each check **builds your class** with the arguments given, **loads the library's weights into it**
# with `load_state_dict(..., strict=True)` and compares your module with the library's on several
# inputs: the outputs must match, and so must the gradients of every parameter. The parameter names
# and shapes must be exactly the library's; if they are not, the message lists the names it expected.
#
# ## Exercise 6: Whisper's convolutional stem
#
# `WhisperStem(n_mels, dim, max_positions)` turns log-mel features `(B, n_mels, F)` into tokens
# `(B, N, D)`, `N = ceil(F / 2)`: one token per 20 ms of audio.
#
# | name | module | does |
# |---|---|---|
# | `conv1` | `nn.Conv1d(n_mels, D, kernel_size=3, padding=1)` | mel frames -> D channels, same length |
# | `conv2` | `nn.Conv1d(D, D, kernel_size=3, stride=2, padding=1)` | halves the time axis |
# | `position_embedding` | a **buffer** `(max_positions, D)` | Whisper's fixed sinusoids |
#
# `forward(mel)`: `GELU(conv1(mel))`, `GELU(conv2(...))` (the exact GELU, `F.gelu`), transpose to
# `(B, N, D)`, then add `position_embedding[:N]`.
#
# Whisper's sinusoids: with `h = D / 2` frequencies $\omega_i = 10000^{-i / (h - 1)}$ for
# `i = 0 .. h-1` (note `h - 1`: the last one is exactly `1/10000`), row `t` of the table is
# `[sin(t * ω_0), ..., sin(t * ω_{h-1}), cos(t * ω_0), ..., cos(t * ω_{h-1})]`: all the sines, then
# all the cosines. Register it, in float32, with `self.register_buffer("position_embedding", table)`:
# a buffer is saved with the weights but not trained. The check reads your buffer **before** loading the
# library's weights (which would overwrite it), then builds `WhisperStem(8, 16, 6)` and
# `WhisperStem(12, 24, 10)` and compares them on clips of `2 * max_positions`, an odd number, and 5 frames.

# %%
class WhisperStem(nn.Module):
    """log-mel (B, n_mels, F) -> tokens (B, ceil(F / 2), D): two convolutions, GELU, sinusoidal positions."""

    def __init__(self, n_mels: int, dim: int, max_positions: int):
        super().__init__()
        # BEGIN SOLUTION
        self.conv1 = nn.Conv1d(n_mels, dim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, kernel_size=3, stride=2, padding=1)
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half) / (half - 1))  # (D/2,)
        angles = torch.arange(max_positions)[:, None] * freqs[None, :]  # (P, D/2)
        self.register_buffer("position_embedding", torch.cat([angles.sin(), angles.cos()], dim=1))  # (P, D)
        # END SOLUTION

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (B, n_mels, F) -> (B, ceil(F / 2), D)."""
        # BEGIN SOLUTION
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel))))  # (B, D, N)
        x = x.transpose(1, 2)  # (B, N, D)
        return x + self.position_embedding[: x.shape[1]]
        # END SOLUTION


# %%
check("ch08.whisper_stem", WhisperStem)

# %% [markdown]
# ## Exercise 7: Point-BERT's point tokenizer
#
# `PointTokenizer(num_groups, group_size, dim, hidden)` turns clouds `(B, P, 3)` into `G` tokens
# `(B, G, D)`, with your functions from exercises 1 and 2:
#
# 1. centres: the points at `farthest_point_sampling(points, G)` (from point 0), `(B, G, 3)`;
# 2. groups: `knn_group(points, centres, K)`, `(B, G, K, 3)`;
# 3. a **mini-PointNet** on each group (the same weights for every point, so the order of the points
#    does not matter):
#    $$f = \text{first}(\text{groups}) \; (B, G, K, H), \quad g = \max_K f, \quad h = \text{second}([f, g]) \; (B, G, K, D), \quad \text{token} = \max_K h \; (B, G, D),$$
#    where `[f, g]` puts every point's own feature first and its group's max next to it
#    (`g` broadcast back over the `K` points, `torch.cat(..., dim=-1)`).
#
# The parameters, as the library's `MiniPointNet` names them:
#
# | name | module |
# |---|---|
# | `first` | `nn.Sequential(nn.Linear(3, H), nn.LayerNorm(H), nn.GELU(), nn.Linear(H, H))` |
# | `second` | `nn.Sequential(nn.Linear(2 * H, D), nn.LayerNorm(D), nn.GELU(), nn.Linear(D, D))` |
#
# The check builds `PointTokenizer(6, 5, 16, 12)` and `PointTokenizer(8, 4, 24, 16)` and compares the
# tokens and the gradients of every parameter with the library's tokenizer on three batches of clouds.

# %%
class PointTokenizer(nn.Module):
    """points (B, P, 3) -> G tokens (B, G, D): FPS centres, kNN groups, a mini-PointNet with max pooling."""

    def __init__(self, num_groups: int, group_size: int, dim: int, hidden: int):
        super().__init__()
        # BEGIN SOLUTION
        self.num_groups, self.group_size = num_groups, group_size
        self.first = nn.Sequential(nn.Linear(3, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.second = nn.Sequential(nn.Linear(2 * hidden, dim), nn.LayerNorm(dim), nn.GELU(), nn.Linear(dim, dim))
        # END SOLUTION

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """points (B, P, 3) -> tokens (B, G, D)."""
        # BEGIN SOLUTION
        idx = farthest_point_sampling(points, self.num_groups)  # (B, G)
        centers = torch.gather(points, 1, idx[..., None].expand(-1, -1, 3))  # (B, G, 3)
        groups = knn_group(points, centers, self.group_size)  # (B, G, K, 3)
        f = self.first(groups)  # (B, G, K, H)
        g = f.amax(dim=2, keepdim=True).expand_as(f)  # the group's summary next to every point
        return self.second(torch.cat([f, g], dim=-1)).amax(dim=2)  # (B, G, D)
        # END SOLUTION


# %%
check("ch08.point_tokenizer", PointTokenizer)

# %% [markdown]
# ## Part 3: bind two towers of your own into CLIP's space
#
# ## Exercise 8: emergent audio -> 3-D retrieval with your loss and your loop
#
# Bind, as the chapter did, an audio tower and a point-cloud tower into the frozen embedding space of
# the chapter-2 mini-CLIP, with **your** `binding_loss` and **your** training loop:
#
# - **audio <-> text** (LanguageBind's anchor): a spoken clip "small red circle" is paired with CLIP's
#   text embedding of "a small red circle";
# - **points <-> images** (ImageBind's anchor): a cloud of a sphere, cube or cone, small or large, is
#   paired with CLIP's image embedding of a picture of a circle, square or triangle of that size;
# - audio and point clouds are **never** paired.
#
# The data, the frozen targets and two small towers are set up below. The towers read precomputed
# inputs so that training stays short: 40-band log-mel spectrograms of 1 s clips `(n, 40, 100)`
# (the audio tower: three strided convolutions over time, then the mean and max over time), and
# Point-BERT groups `(n, 8, 16, 3)` from FPS and kNN (the point tower: a mini-PointNet per group, then
# the max over groups). Each ends in an MLP to CLIP's width, 64. Change them if you like.
#
# Write `train_tower(model, inputs, targets, steps, ...)`: an optimiser, then `steps` times: a random
# batch of rows, `binding_loss(model(inputs[idx]), targets[idx], temperature)`, `backward()`, a step.
# Return the model in eval mode. What the course found to work: **Adam** with a constant learning
# rate of `3e-3`, batches of 128, temperature `0.07`, 200 steps per tower (over so few steps, a warmup
# and a cosine decay to 0 did worse). The targets are fixed tensors (CLIP stays frozen), so only the
# tower learns. Batches drawn at random repeat captions and shapes: the loss then treats a pair with
# the same target as a wrong match, which costs a little but trains well enough here.
#
# **What the check does:** it never trains. It draws 240 new clips (new speakers, speeds and noise,
# circles, squares and triangles only) and 240 new clouds with its own seeds, embeds them with your
# `Binding` below, and for every clip finds the nearest cloud by cosine similarity. It is right when
# that cloud is the clip's solid at the clip's size (6 classes: chance is about 1 in 6). The bar is
# **4x chance**. Your towers never saw an audio-cloud pair: whatever they get right, they get through CLIP.

# %%
from mmllm_course.data import make_spoken_descriptions
from mmllm_course.encoders.audio import LogMelConfig, LogMelSpectrogram
from mmllm_course.encoders.binding import caption_embeddings, make_paired_clouds
from mmllm_course.encoders.clip_training import encode_images
from mmllm_course.encoders.points import MiniPointNet, gather_points
from mmllm_course.encoders.points import farthest_point_sampling as library_fps
from mmllm_course.encoders.points import knn_group as library_knn_group
from mmllm_course.pretrained import load_chapter2_clip

clip, clip_tokenizer = load_chapter2_clip()  # frozen, eval: the shared space (E = 64)
to_mel = LogMelSpectrogram(LogMelConfig(n_mels=40, chunk_length=None))  # 1 s at 16 kHz -> (n, 40, 100)


def point_groups(points: torch.Tensor, num_groups: int = 8, group_size: int = 16) -> torch.Tensor:
    """Clouds (n, P, 3) -> Point-BERT groups (n, G, K, 3), with the library's (vectorised) FPS and kNN."""
    centers = gather_points(points, library_fps(points, num_groups))  # (n, G, 3)
    return library_knn_group(points, centers, group_size)[1]


speech = make_spoken_descriptions(1000, seed=0)  # "small red circle", ... all 40 captions
mels = to_mel(speech.waveforms)  # (1000, 40, 100)
audio_targets = caption_embeddings(clip, clip_tokenizer, speech.captions)  # (1000, 64) CLIP text embeddings
paired = make_paired_clouds(1000, seed=0)  # clouds and the pictures they are paired with
groups = point_groups(paired.points)  # (1000, 8, 16, 3)
with torch.no_grad():
    point_targets = encode_images(clip, paired.images)  # (1000, 64) CLIP image embeddings


class AudioTower(nn.Module):
    """log-mel (B, 40, F) -> (B, 64): three strided convolutions over time, mean and max over time, an MLP."""

    def __init__(self, n_mels: int = 40, width: int = 64, embed_dim: int = 64):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv1d(n_mels, width, 5, stride=2, padding=2), nn.GELU(),
            nn.Conv1d(width, width, 5, stride=2, padding=2), nn.GELU(),
            nn.Conv1d(width, width, 5, stride=2, padding=2), nn.GELU(),
        )
        self.head = nn.Sequential(nn.Linear(2 * width, width), nn.GELU(), nn.Linear(width, embed_dim))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        h = self.convs(mel)  # (B, W, F/8)
        return self.head(torch.cat([h.mean(dim=-1), h.amax(dim=-1)], dim=-1))


class PointTower(nn.Module):
    """Groups (B, G, K, 3) -> (B, 64): a mini-PointNet token per group, the max over groups, an MLP."""

    def __init__(self, width: int = 64, hidden: int = 32, embed_dim: int = 64):
        super().__init__()
        self.tokenizer = MiniPointNet(width, hidden)
        self.head = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, embed_dim))

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        return self.head(self.tokenizer(groups).amax(dim=1))


print("audio", tuple(mels.shape), "->", tuple(audio_targets.shape), "| points", tuple(groups.shape), "->",
      tuple(point_targets.shape), "| e.g.", repr(speech.captions[0]))

# %%
def train_tower(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, steps: int = 200,
                batch_size: int = 128, lr: float = 3e-3, temperature: float = 0.07, seed: int = 0) -> nn.Module:
    """Train ``model`` so that model(inputs[i]) binds to targets[i] with your binding_loss; return it in eval mode."""
    # BEGIN SOLUTION
    generator = torch.Generator().manual_seed(seed)  # the batch order
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(inputs), (batch_size,), generator=generator)  # (batch_size,) random rows
        loss = binding_loss(model(inputs[idx]), targets[idx], temperature)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()
    # END SOLUTION


# %% [markdown]
# `Binding` runs the whole path from raw signals, as the check calls it: waveforms `(n, 16000)` ->
# log-mel -> audio tower, and clouds `(n, P, 3)` -> groups -> point tower. The next cell trains both
# towers and hands the binding to the check. Until `train_tower` is written, it says `todo`.

# %%
import time


class Binding(nn.Module):
    """Your two towers behind the check's interface: embed_audio (n, T) -> (n, E), embed_points (n, P, 3) -> (n, E)."""

    def __init__(self, audio_tower: nn.Module, point_tower: nn.Module):
        super().__init__()
        self.audio_tower, self.point_tower = audio_tower, point_tower

    def embed_audio(self, waveforms: torch.Tensor) -> torch.Tensor:
        return self.audio_tower(to_mel(waveforms))

    def embed_points(self, points: torch.Tensor) -> torch.Tensor:
        return self.point_tower(point_groups(points))


torch.manual_seed(0)
start = time.perf_counter()
try:
    audio_tower = train_tower(AudioTower(), mels, audio_targets, seed=0)
    point_tower = train_tower(PointTower(), groups, point_targets, seed=1)
    my_binding = Binding(audio_tower, point_tower)
    print(f"trained both towers in {time.perf_counter() - start:.0f} s")
except NotImplementedError:
    print("train_tower is not written yet")
    my_binding = ...  # the check says todo
check("ch08.train_binding", my_binding)

# %% [markdown]
# ## Part 4 (stretch, optional): HuBERT's masked prediction
#
# ## Exercise 9: `hubert_loss`
#
# HuBERT (Hsu et al. 2021, [arXiv:2106.07447](https://arxiv.org/abs/2106.07447)) learns speech from raw
# waveforms with no transcript: it masks spans of frames and predicts, at each masked frame, the id of
# a cluster (k-means of MFCCs in the first round, of its own features later). It scores frame `n`
# against every cluster's learned codeword `e_c` by a cosine similarity over a temperature `τ = 0.1`:
#
# $$p(c \mid n) = \operatorname{softmax}_c\!\left(\frac{\cos(o_n, e_c)}{\tau}\right), \qquad
# \mathcal{L} = -\frac{1}{|\mathcal{M}|} \sum_{n \in \mathcal{M}} \log p(z_n \mid n),$$
#
# over the set `M` of masked frames only (the paper's `α = 1`: the unmasked frames are not scored).
#
# `hubert_loss(features (B, N, D), codewords (C, D), targets (B, N) cluster ids, mask (B, N) bool
# (True = masked), temperature)` returns a 0-d tensor. The check compares the value and the gradients
# with respect to the features and the codewords.

# %%
def hubert_loss(features: torch.Tensor, codewords: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                temperature: float = 0.1) -> torch.Tensor:
    """(B, N, D), (C, D), (B, N) ids, (B, N) bool -> the mean cross-entropy over the masked frames (0-d)."""
    # BEGIN SOLUTION
    logits = F.normalize(features, dim=-1) @ F.normalize(codewords, dim=-1).T / temperature  # (B, N, C)
    return F.cross_entropy(logits[mask], targets[mask])
    # END SOLUTION


# %%
check("ch08.hubert_loss", hubert_loss)

# %% [markdown]
# ## Checked questions
#
# Answer with the letter, as a string (`"a"`).
#
# **Q1.** Why do Whisper and most audio models read a log-mel spectrogram rather than the raw
# spectrogram's power?
#
# a) It is lossless: the waveform can be rebuilt exactly from it, phase included, so no information
# is lost.
#
# b) It spaces frequencies and loudness as hearing does, bins on a mel scale and a log of the power,
# and compresses a huge dynamic range to a few units.
#
# c) It makes the model invariant to speed and pitch, so every speaker's voice gives the same picture.
#
# d) A transformer cannot read raw numbers, and the spectrogram turns the audio into discrete tokens.

# %%
q1 = "b"  # SOLUTION
check("ch08.q1", q1)

# %% [markdown]
# **Q2.** Why does Point-BERT choose its group centres by farthest point sampling rather than at
# random?
#
# a) FPS is faster: it needs one pass over the points, where random sampling sorts them all.
#
# b) FPS makes the tokens invariant to rotations of the cloud, which random centres are not.
#
# c) FPS spreads the centres over the whole shape, so thin or sparse parts (a cone's tip) get a
# token, where random centres crowd in the dense regions.
#
# d) FPS picks the points with the most neighbours, so every group is full.

# %%
q2 = "c"  # SOLUTION
check("ch08.q2", q2)

# %% [markdown]
# **Q3.** What is the role of ImageBind or LanguageBind in a multimodal LLM's architecture?
#
# a) One encoder per modality aligned into a single shared embedding space, anchored on images or
# on language, so a downstream LLM needs one alignment for all of them, and modalities never paired
# in training can be compared directly.
#
# b) A single transformer that reads every modality's raw signal with shared weights, so no modality
# needs its own encoder.
#
# c) Paired data for every couple of modalities (audio with 3-D, audio with depth, ...), collected
# once and used to train all pairs jointly.
#
# d) A way to generate any modality from any other, since the shared space is a decoder's latent
# space.

# %%
q3 = "a"  # SOLUTION
check("ch08.q3", q3)

# %% [markdown]
# ## Done?
#
# From a shell, `python -m mmllm_course.grade exercises/08_audio_3d_binding.ipynb` grades this whole
# notebook at once (with your training done, that includes its training). Chapter 9 turns to the
# output side: an LLM that emits signals a generator decodes.
