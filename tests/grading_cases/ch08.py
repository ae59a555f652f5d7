"""Grader cases for chapter 8: correct versions written several ways, and the mistakes learners make.

Besides ``correct`` and ``wrong``, an exercise may list ``diagnoses``: ``{label: (answer, words)}``, a
wrong answer whose ``fail`` message must contain ``words`` (the check names that mistake, not another).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from mmllm_course.encoders.audio import mel_filter_bank as library_mel_filter_bank
from mmllm_course.encoders.audio import whisper_sinusoids
from mmllm_course.encoders.points import farthest_point_sampling as library_fps
from mmllm_course.encoders.points import knn_group as library_knn_group
from mmllm_course.grading.checks.ch08 import (
    binding_loss_reference,
    hubert_loss_reference,
    mel_bank_variant,
    train_binding_eval_data,
    whisper_log_mel_reference,
)

# ------------------------------------------------------------------------------------------- fps


def fps_reference(points, num_samples):
    """Correct: the library's, from point 0."""
    return library_fps(points, num_samples)


def fps_per_cloud_random_start(points, num_samples):
    """Correct, written differently: one cloud at a time, from a RANDOM first point (the check accepts any start)."""
    out = []
    for cloud in points:
        first = int(torch.randint(cloud.shape[0], (1,)))
        picks = [first]
        dist = (cloud - cloud[first]).norm(dim=-1)  # plain distances, not squared
        for _ in range(num_samples - 1):
            j = int(dist.argmax())
            picks.append(j)
            dist = torch.minimum(dist, (cloud - cloud[j]).norm(dim=-1))
        out.append(picks)
    return torch.tensor(out)


def fps_distance_matrix(points, num_samples):
    """Correct, written differently: all pairwise distances first, then a masked max-min per step (int32 indices)."""
    d = torch.cdist(points, points)  # (B, P, P)
    b = points.shape[0]
    chosen = [torch.zeros(b, dtype=torch.long)]
    for _ in range(num_samples - 1):
        idx = torch.stack(chosen, dim=1)  # (B, s)
        to_chosen = torch.gather(d, 1, idx[..., None].expand(-1, -1, d.shape[2]))  # (B, s, P)
        chosen.append(to_chosen.amin(dim=1).argmax(dim=1))
    return torch.stack(chosen, dim=1).to(torch.int32)


def _fps_wrong(kind):
    def fps(points, num_samples):
        b, p, _ = points.shape
        rows = torch.arange(b)
        chosen = torch.zeros(b, num_samples, dtype=torch.long)
        nearest = torch.full((b, p), float("inf"), dtype=points.dtype)
        total = torch.zeros(b, p, dtype=points.dtype)
        current = torch.zeros(b, dtype=torch.long)
        for i in range(num_samples):
            chosen[:, i] = current
            d = ((points - points[rows, current][:, None]) ** 2).sum(-1)
            nearest = torch.minimum(nearest, d)
            total = total + d.sqrt()
            taken = torch.zeros(b, p, dtype=torch.bool)
            taken[rows[:, None], chosen[:, : i + 1]] = True
            if kind == "nearest":
                current = nearest.masked_fill(taken, float("inf")).argmin(dim=1)
            elif kind == "argmin":
                current = nearest.argmin(dim=1)
            elif kind == "last":
                current = d.argmax(dim=1)
            elif kind == "sum":
                current = total.masked_fill(taken, float("-inf")).argmax(dim=1)
            elif kind == "batch":
                current = nearest.sum(dim=0).argmax().expand(b)
        return chosen

    return fps


fps_nearest = _fps_wrong("nearest")
fps_argmin = _fps_wrong("argmin")
fps_newest_only = _fps_wrong("last")
fps_sum = _fps_wrong("sum")
fps_batch_shared = _fps_wrong("batch")


def fps_random_sampling(points, num_samples):
    """Wrong: random points, not farthest ones."""
    g = torch.Generator().manual_seed(3)
    return torch.stack([torch.randperm(points.shape[1], generator=g)[:num_samples] for _ in range(points.shape[0])])


def fps_returns_points(points, num_samples):
    """Wrong: the sampled points themselves (B, S, 3) instead of their indices."""
    idx = library_fps(points, num_samples)
    return torch.gather(points, 1, idx[..., None].expand(-1, -1, 3))


def fps_float_indices(points, num_samples):
    """Wrong: indices as floats."""
    return library_fps(points, num_samples).float()


# ------------------------------------------------------------------------------------------- knn_group


def knn_reference(points, centers, k):
    """Correct: the library's groups."""
    return library_knn_group(points, centers, k)[1]


def knn_loops(points, centers, k):
    """Correct, written differently: one centre at a time, squared distances, argsort."""
    b, g, _ = centers.shape
    out = torch.empty(b, g, k, 3, dtype=points.dtype)
    for i in range(b):
        for j in range(g):
            d2 = ((points[i] - centers[i, j]) ** 2).sum(-1)  # (P,)
            out[i, j] = points[i, d2.argsort()[:k]] - centers[i, j]
    return out


def knn_expanded(points, centers, k):
    """Correct, written differently: |c|^2 - 2 c.p + |p|^2, then advanced indexing."""
    d2 = (centers ** 2).sum(-1)[:, :, None] - 2 * centers @ points.transpose(1, 2) + (points ** 2).sum(-1)[:, None, :]
    idx = d2.topk(k, dim=-1, largest=False).indices  # (B, G, K)
    batch = torch.arange(points.shape[0])[:, None, None]
    return points[batch, idx] - centers[:, :, None, :]


def _knn_gather(points, idx):
    return points[torch.arange(points.shape[0])[:, None, None], idx]


def knn_not_centred(points, centers, k):
    """Wrong: absolute coordinates."""
    return _knn_gather(points, torch.cdist(centers, points).topk(k, largest=False).indices)


def knn_reversed(points, centers, k):
    """Wrong: centre minus point."""
    return -knn_reference(points, centers, k)


def knn_farthest(points, centers, k):
    """Wrong: the k farthest points."""
    return _knn_gather(points, torch.cdist(centers, points).topk(k, largest=True).indices) - centers[:, :, None]


def knn_manhattan(points, centers, k):
    """Wrong: L1 distance."""
    d = (centers[:, :, None] - points[:, None]).abs().sum(-1)
    return _knn_gather(points, d.topk(k, largest=False).indices) - centers[:, :, None]


def knn_skips_self(points, centers, k):
    """Wrong: drops the nearest point (the centre itself), as kNN graphs often do."""
    idx = torch.cdist(centers, points).topk(k + 1, largest=False).indices[..., 1:]
    return _knn_gather(points, idx) - centers[:, :, None]


def knn_whole_batch(points, centers, k):
    """Wrong: the batch axis flattened into the points, so neighbours come from every cloud."""
    b, p, _ = points.shape
    flat = points.reshape(-1, 3)
    idx = torch.cdist(centers.reshape(-1, 3), flat).topk(k, largest=False).indices
    return flat[idx].reshape(b, -1, k, 3) - centers[:, :, None]


def knn_farthest_first(points, centers, k):
    """Wrong: the right neighbours, farthest first."""
    return knn_reference(points, centers, k).flip(2)


def knn_returns_pair(points, centers, k):
    """Wrong: (indices, groups), as the library returns."""
    return library_knn_group(points, centers, k)


def knn_returns_indices(points, centers, k):
    """Wrong: the indices only."""
    return library_knn_group(points, centers, k)[0]


# ------------------------------------------------------------------------------------------- mel_filter_bank


def mel_reference(num_frequency_bins, num_mel_filters, sample_rate, min_frequency, max_frequency):
    """Correct: the library's."""
    return library_mel_filter_bank(num_frequency_bins, num_mel_filters, sample_rate, min_frequency, max_frequency)


def mel_loops_float32(num_frequency_bins, num_mel_filters, sample_rate, min_frequency, max_frequency):
    """Correct, written differently: Python floats and loops, returned as float32."""
    def to_mel(f):
        return 3.0 * f / 200.0 if f < 1000.0 else 15.0 + math.log(f / 1000.0) * 27.0 / math.log(6.4)

    def to_hz(m):
        return 200.0 * m / 3.0 if m < 15.0 else 1000.0 * math.exp((m - 15.0) * math.log(6.4) / 27.0)

    lo, hi = to_mel(min_frequency), to_mel(max_frequency)
    n = num_mel_filters + 2
    edges = [to_hz(lo + (hi - lo) * i / (n - 1)) for i in range(n)]
    out = torch.zeros(num_frequency_bins, num_mel_filters)
    for k in range(num_frequency_bins):
        f = (sample_rate // 2) * k / (num_frequency_bins - 1)
        for m in range(num_mel_filters):
            left, centre, right = edges[m], edges[m + 1], edges[m + 2]
            value = max(0.0, min((f - left) / (centre - left), (right - f) / (right - centre)))
            out[k, m] = value * 2.0 / (right - left)
    return out


def _mel_wrong(**kwargs):
    def mel(k, m, sr, fmin, fmax):
        extra = dict(kwargs)
        if extra.get("fft_top") == "sr":
            extra["fft_top"] = float(sr)
        return mel_bank_variant(k, m, sr, fmin, fmax, **extra)

    return mel


mel_linear = _mel_wrong(scale="linear")
mel_htk = _mel_wrong(scale="htk")
mel_no_norm = _mel_wrong(norm="none")
mel_half_norm = _mel_wrong(norm="half")
mel_norm_in_mels = _mel_wrong(norm="mel")
mel_triangles_in_mel = _mel_wrong(in_mel=True)
mel_fft_to_sr = _mel_wrong(fft_top="sr")


def mel_transposed(num_frequency_bins, num_mel_filters, sample_rate, min_frequency, max_frequency):
    """Wrong: (M, K)."""
    return mel_reference(num_frequency_bins, num_mel_filters, sample_rate, min_frequency, max_frequency).T


# ------------------------------------------------------------------------------------------- log_mel


def log_mel_reference(mel):
    """Correct."""
    return whisper_log_mel_reference(mel)


def log_mel_per_clip(mel):
    """Correct, written differently: a loop over clips, ln / ln 10, torch.where for the floor."""
    out = []
    for clip in mel:
        x = torch.log(torch.where(clip < 1e-10, torch.full_like(clip, 1e-10), clip)) / math.log(10.0)
        floor = x.max() - 8.0
        out.append(torch.where(x < floor, floor, x) / 4.0 + 1.0)
    return torch.stack(out)


def _log_mel_wrong(log=torch.log10, reduce=(1, 2), floor=True, upper=False, scale=True, tiny=True, plus_one=False):
    def fn(mel):
        x = log(mel.clamp(min=1e-10) if tiny else mel)
        if floor:
            peak = x.amax(dim=reduce, keepdim=True)
            x = torch.minimum(x, peak - 8.0) if upper else torch.maximum(x, peak - 8.0)
        if plus_one:
            return x + 4.0 / 4.0
        return (x + 4.0) / 4.0 if scale else x

    return fn


log_mel_natural_log = _log_mel_wrong(log=torch.log)
log_mel_decibels = _log_mel_wrong(log=lambda t: 10.0 * torch.log10(t))
log_mel_batch_max = _log_mel_wrong(reduce=(0, 1, 2))
log_mel_frame_max = _log_mel_wrong(reduce=(1,))
log_mel_bin_max = _log_mel_wrong(reduce=(2,))
log_mel_no_floor = _log_mel_wrong(floor=False)
log_mel_ceiling = _log_mel_wrong(upper=True)
log_mel_no_scale = _log_mel_wrong(scale=False)
log_mel_precedence = _log_mel_wrong(plus_one=True)
log_mel_no_tiny_clamp = _log_mel_wrong(tiny=False)


def log_mel_float32(mel):
    """Wrong: float32 whatever the input."""
    return whisper_log_mel_reference(mel.float())


# ------------------------------------------------------------------------------------------- binding_loss


def binding_reference(modality_embeds, anchor_embeds, temperature):
    """Correct."""
    return binding_loss_reference(modality_embeds, anchor_embeds, temperature)


def binding_log_softmax(modality_embeds, anchor_embeds, temperature):
    """Correct, written differently: explicit norms, log_softmax over rows and columns, the diagonal."""
    m = modality_embeds / modality_embeds.norm(dim=1, keepdim=True)
    a = anchor_embeds / anchor_embeds.norm(dim=1, keepdim=True)
    logits = torch.einsum("ie,je->ij", m, a) / temperature
    return -(logits.log_softmax(dim=1).diagonal().mean() + logits.log_softmax(dim=0).diagonal().mean()) / 2


def _binding_logits(m, a, t):
    return F.normalize(m, dim=-1) @ F.normalize(a, dim=-1).T / t


def binding_rows_only(modality_embeds, anchor_embeds, temperature):
    """Wrong: modality -> anchor only."""
    return F.cross_entropy(_binding_logits(modality_embeds, anchor_embeds, temperature), torch.arange(len(modality_embeds)))


def binding_columns_only(modality_embeds, anchor_embeds, temperature):
    """Wrong: anchor -> modality only."""
    return F.cross_entropy(_binding_logits(modality_embeds, anchor_embeds, temperature).T, torch.arange(len(modality_embeds)))


def binding_no_temperature(modality_embeds, anchor_embeds, temperature):
    """Wrong: forgets the temperature."""
    return binding_reference(modality_embeds, anchor_embeds, 1.0)


def binding_times_temperature(modality_embeds, anchor_embeds, temperature):
    """Wrong: multiplies by the temperature."""
    return binding_reference(modality_embeds, anchor_embeds, 1.0 / temperature)


def binding_not_normalised(modality_embeds, anchor_embeds, temperature):
    """Wrong: raw dot products."""
    logits = modality_embeds @ anchor_embeds.T / temperature
    t = torch.arange(len(logits))
    return (F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t)) / 2


def binding_sum(modality_embeds, anchor_embeds, temperature):
    """Wrong: the two directions summed."""
    return 2 * binding_reference(modality_embeds, anchor_embeds, temperature)


def binding_anchor_detached(modality_embeds, anchor_embeds, temperature):
    """Wrong for this check: the loss detaches the anchor (right value, no gradient to anchor_embeds)."""
    return binding_reference(modality_embeds, anchor_embeds.detach(), temperature)


def binding_python_float(modality_embeds, anchor_embeds, temperature):
    """Wrong: returns a Python float."""
    return binding_reference(modality_embeds, anchor_embeds, temperature).item()


# ------------------------------------------------------------------------------------------- build: whisper_stem


class StemReference(nn.Module):
    """Correct: the exercise's solution."""

    def __init__(self, n_mels, dim, max_positions):
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, dim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, kernel_size=3, stride=2, padding=1)
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half) / (half - 1))
        angles = torch.arange(max_positions)[:, None] * freqs[None, :]
        self.register_buffer("position_embedding", torch.cat([angles.sin(), angles.cos()], dim=1))

    def forward(self, mel):
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)
        return x + self.position_embedding[: x.shape[1]]


class StemFunctional(nn.Module):
    """Correct, written differently: the library's sinusoids, nn.GELU modules, permute, F.conv1d with the weights."""

    def __init__(self, n_mels, dim, max_positions):
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, dim, 3, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, 3, padding=1, stride=2)
        self.act = nn.GELU()
        self.register_buffer("position_embedding", whisper_sinusoids(max_positions, dim))

    def forward(self, mel):
        x = self.act(self.conv1(mel))
        x = self.act(F.conv1d(x, self.conv2.weight, self.conv2.bias, stride=2, padding=1))
        x = x.permute(0, 2, 1)
        return x + self.position_embedding[None, : x.shape[1], :]


class StemStrideOnConv1(StemReference):
    """Wrong: the stride sits on conv1 (same parameter shapes)."""

    def forward(self, mel):
        x = F.gelu(F.conv1d(mel, self.conv1.weight, self.conv1.bias, stride=2, padding=1))
        x = F.gelu(F.conv1d(x, self.conv2.weight, self.conv2.bias, stride=1, padding=1)).transpose(1, 2)
        return x + self.position_embedding[: x.shape[1]]


class StemNoSecondGelu(StemReference):
    """Wrong: no GELU after conv2."""

    def forward(self, mel):
        x = self.conv2(F.gelu(self.conv1(mel))).transpose(1, 2)
        return x + self.position_embedding[: x.shape[1]]


class StemReLU(StemReference):
    """Wrong: ReLU."""

    def forward(self, mel):
        x = F.relu(self.conv2(F.relu(self.conv1(mel)))).transpose(1, 2)
        return x + self.position_embedding[: x.shape[1]]


class StemNoPositions(StemReference):
    """Wrong: forgets the positions."""

    def forward(self, mel):
        return F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)


class StemNotTransposed(StemReference):
    """Wrong: returns (B, D, N)."""

    def forward(self, mel):
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel))))
        return x + self.position_embedding[: x.shape[2]].T


class StemPaperSinusoids(StemReference):
    """Wrong: the transformer paper's frequencies 10000^(-i / (D/2))."""

    def __init__(self, n_mels, dim, max_positions):
        super().__init__(n_mels, dim, max_positions)
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half) / half)
        angles = torch.arange(max_positions)[:, None] * freqs[None, :]
        self.position_embedding = torch.cat([angles.sin(), angles.cos()], dim=1)


class StemInterleavedSinusoids(StemReference):
    """Wrong: sin and cos interleaved."""

    def __init__(self, n_mels, dim, max_positions):
        super().__init__(n_mels, dim, max_positions)
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half) / (half - 1))
        angles = torch.arange(max_positions)[:, None] * freqs[None, :]
        self.position_embedding = torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(max_positions, dim)


class StemLearnedPositions(nn.Module):
    """Wrong: the positions as a learned nn.Parameter."""

    def __init__(self, n_mels, dim, max_positions):
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, dim, 3, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, 3, stride=2, padding=1)
        self.position_embedding = nn.Parameter(whisper_sinusoids(max_positions, dim))

    def forward(self, mel):
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)
        return x + self.position_embedding[: x.shape[1]]


class StemPlainTensorPositions(StemReference):
    """Wrong: the table stored as a plain attribute, not a buffer."""

    def __init__(self, n_mels, dim, max_positions):
        super().__init__(n_mels, dim, max_positions)
        table = self.position_embedding
        del self._buffers["position_embedding"]
        self.position_embedding = table


class StemOtherNames(nn.Module):
    """Wrong: other parameter names."""

    def __init__(self, n_mels, dim, max_positions):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(n_mels, dim, 3, padding=1), nn.GELU(), nn.Conv1d(dim, dim, 3, stride=2, padding=1), nn.GELU())
        self.register_buffer("position_embedding", whisper_sinusoids(max_positions, dim))

    def forward(self, mel):
        x = self.stem(mel).transpose(1, 2)
        return x + self.position_embedding[: x.shape[1]]


# ------------------------------------------------------------------------------------------- build: point_tokenizer


def _solution_fps(points, num_samples):
    b, p, _ = points.shape
    chosen = torch.zeros(b, num_samples, dtype=torch.long)
    nearest = torch.full((b, p), float("inf"), dtype=points.dtype)
    rows = torch.arange(b)
    current = torch.zeros(b, dtype=torch.long)
    for i in range(num_samples):
        chosen[:, i] = current
        nearest = torch.minimum(nearest, ((points - points[rows, current][:, None, :]) ** 2).sum(dim=-1))
        current = nearest.argmax(dim=1)
    return chosen


class TokenizerReference(nn.Module):
    """Correct: the exercise's solution (its own FPS and grouping)."""

    def __init__(self, num_groups, group_size, dim, hidden, fps=_solution_fps, group=knn_expanded):
        super().__init__()
        self.num_groups, self.group_size, self.fps, self.group = num_groups, group_size, fps, group
        self.first = nn.Sequential(nn.Linear(3, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.second = nn.Sequential(nn.Linear(2 * hidden, dim), nn.LayerNorm(dim), nn.GELU(), nn.Linear(dim, dim))

    def centers(self, points):
        idx = self.fps(points, self.num_groups)
        return torch.gather(points, 1, idx[..., None].expand(-1, -1, 3))

    def forward(self, points):
        groups = self.group(points, self.centers(points), self.group_size)
        f = self.first(groups)
        g = f.amax(dim=2, keepdim=True).expand_as(f)
        return self.second(torch.cat([f, g], dim=-1)).amax(dim=2)


class TokenizerLibraryParts(nn.Module):
    """Correct, written differently: the library's FPS and knn_group, centres detached, max via torch.max."""

    def __init__(self, num_groups, group_size, dim, hidden):
        super().__init__()
        self.g, self.k = num_groups, group_size
        self.first = nn.Sequential(nn.Linear(3, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.second = nn.Sequential(nn.Linear(2 * hidden, dim), nn.LayerNorm(dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, points):
        with torch.no_grad():
            idx = library_fps(points, self.g)
            centers = points[torch.arange(points.shape[0])[:, None], idx]
        _, groups = library_knn_group(points, centers, self.k)
        f = self.first(groups)
        g = torch.max(f, dim=2).values
        h = self.second(torch.cat([f, g[:, :, None, :].repeat(1, 1, f.shape[2], 1)], dim=-1))
        return torch.max(h, dim=2).values


class TokenizerNotCentred(TokenizerReference):
    """Wrong: groups in absolute coordinates."""

    def __init__(self, *args):
        super().__init__(*args, group=knn_not_centred)


class TokenizerConcatOrder(TokenizerReference):
    """Wrong: cat([g, f])."""

    def forward(self, points):
        groups = self.group(points, self.centers(points), self.group_size)
        f = self.first(groups)
        g = f.amax(dim=2, keepdim=True).expand_as(f)
        return self.second(torch.cat([g, f], dim=-1)).amax(dim=2)


class TokenizerMeanPool(TokenizerReference):
    """Wrong: average pooling, both times."""

    def forward(self, points):
        groups = self.group(points, self.centers(points), self.group_size)
        f = self.first(groups)
        g = f.mean(dim=2, keepdim=True).expand_as(f)
        return self.second(torch.cat([f, g], dim=-1)).mean(dim=2)


class TokenizerLastPointStart(TokenizerReference):
    """Wrong: FPS from the last point of each cloud."""

    def __init__(self, *args):
        super().__init__(*args, fps=lambda pts, s: library_fps(pts, s, pts.shape[1] - 1))


class TokenizerNearestFps(TokenizerReference):
    """Wrong: uses a nearest-point 'FPS'."""

    def __init__(self, *args):
        super().__init__(*args, fps=fps_nearest)


class TokenizerPoolOverGroups(TokenizerReference):
    """Wrong: the last max over the groups axis."""

    def forward(self, points):
        groups = self.group(points, self.centers(points), self.group_size)
        f = self.first(groups)
        g = f.amax(dim=2, keepdim=True).expand_as(f)
        return self.second(torch.cat([f, g], dim=-1)).amax(dim=1)


class TokenizerOtherNames(nn.Module):
    """Wrong: other parameter names."""

    def __init__(self, num_groups, group_size, dim, hidden):
        super().__init__()
        self.g, self.k = num_groups, group_size
        self.mlp1 = nn.Sequential(nn.Linear(3, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.mlp2 = nn.Sequential(nn.Linear(2 * hidden, dim), nn.LayerNorm(dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, points):
        idx = library_fps(points, self.g)
        centers = torch.gather(points, 1, idx[..., None].expand(-1, -1, 3))
        f = self.mlp1(library_knn_group(points, centers, self.k)[1])
        return self.mlp2(torch.cat([f, f.amax(2, keepdim=True).expand_as(f)], -1)).amax(2)


# ------------------------------------------------------------------------------------------- train: a trained binding


class OracleBinding(nn.Module):
    """A stand-in for a trained binding whose retrieval is known: it recognises the check's held-out data.

    Training a real one takes a minute (the solution notebook does it and must pass); here the test
    needs bindings of a chosen quality in milliseconds. Clips and clouds are looked up by their
    values and embedded as their (shape, size) class. ``wrong_every``: every n-th clip gets the next
    class. ``split_spaces``: audio and points in different coordinates (each tower clusters its
    classes, but not in a shared space). ``audio_constant``: every clip the same embedding.
    """

    def __init__(self, wrong_every=0, split_spaces=False, audio_constant=False, audio_width=16):
        super().__init__()
        self.proj = nn.Parameter(torch.eye(12, 16) + 0.01 * torch.randn(12, 16, generator=torch.Generator().manual_seed(0)))
        self.wrong_every, self.split_spaces, self.audio_constant = wrong_every, split_spaces, audio_constant
        self.audio_width = audio_width
        self.known = None

    def _lookup(self):
        if self.known is None:
            waves, clip_labels, clouds, cloud_labels = train_binding_eval_data()
            self.known = {
                **{w.numpy().tobytes(): (i, int(c)) for i, (w, c) in enumerate(zip(waves, clip_labels))},
                **{p.numpy().tobytes(): (i, int(c)) for i, (p, c) in enumerate(zip(clouds, cloud_labels))},
            }
        return self.known

    def _embed(self, rows, offset, wrong):
        out = []
        for x in rows:
            index, label = self._lookup().get(x.cpu().numpy().tobytes(), (0, 0))
            if wrong and self.wrong_every and index % self.wrong_every == 0:
                label = (label + 1) % 6
            one_hot = torch.zeros(12)
            one_hot[offset + label] = 1.0
            out.append(one_hot + 0.05 * torch.rand(12))
        return 2.0 * torch.stack(out) @ self.proj  # not unit length: the check normalises

    def embed_audio(self, waveforms):
        if self.audio_constant:
            return torch.ones(len(waveforms), self.audio_width)
        out = self._embed(waveforms, 6 if self.split_spaces else 0, wrong=True)
        return out if self.audio_width == 16 else out[:, : self.audio_width]

    def embed_points(self, points):
        return self._embed(points, 0, wrong=False)


def trained_binding_function():
    """Correct: a zero-argument function that returns the trained binding."""
    return OracleBinding()


def binding_training_with_arguments(steps, lr):
    """Wrong: the training function itself, which needs arguments."""
    return OracleBinding()


class AudioReturnsTuple(OracleBinding):
    """Wrong: embed_audio returns (embeddings, tokens)."""

    def embed_audio(self, waveforms):
        out = super().embed_audio(waveforms)
        return out, out


# ------------------------------------------------------------------------------------------- stretch: hubert_loss


def hubert_reference(features, codewords, targets, mask, temperature=0.1):
    """Correct."""
    return hubert_loss_reference(features, codewords, targets, mask, temperature)


def hubert_weighted(features, codewords, targets, mask, temperature=0.1):
    """Correct, written differently: every frame's cross-entropy, weighted by the mask."""
    cos = torch.einsum("bnd,cd->bnc", F.normalize(features, dim=-1), F.normalize(codewords, dim=-1))
    nll = -(cos / temperature).log_softmax(dim=-1).gather(-1, targets[..., None]).squeeze(-1)  # (B, N)
    m = mask.to(nll.dtype)
    return (nll * m).sum() / m.sum()


def _hubert_logits(features, codewords, temperature):
    return F.normalize(features, dim=-1) @ F.normalize(codewords, dim=-1).T / temperature


def hubert_all_frames(features, codewords, targets, mask, temperature=0.1):
    """Wrong: every frame."""
    logits = _hubert_logits(features, codewords, temperature)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def hubert_unmasked(features, codewords, targets, mask, temperature=0.1):
    """Wrong: the unmasked frames."""
    logits = _hubert_logits(features, codewords, temperature)
    return F.cross_entropy(logits[~mask], targets[~mask])


def hubert_divided_by_all(features, codewords, targets, mask, temperature=0.1):
    """Wrong: the masked sum over all frames."""
    logits = _hubert_logits(features, codewords, temperature)
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return (nll * mask.reshape(-1)).sum() / mask.numel()


def hubert_no_temperature(features, codewords, targets, mask, temperature=0.1):
    """Wrong: no temperature."""
    return hubert_reference(features, codewords, targets, mask, 1.0)


def hubert_not_normalised(features, codewords, targets, mask, temperature=0.1):
    """Wrong: raw dot products."""
    logits = features @ codewords.T / temperature
    return F.cross_entropy(logits[mask], targets[mask])


CASES = {
    "ch08.fps": {
        "correct": [fps_reference, fps_per_cloud_random_start, fps_distance_matrix],
        "wrong": {
            "nearest point": fps_nearest,
            "argmin repeats a point": fps_argmin,
            "newest centre only": fps_newest_only,
            "sum of distances": fps_sum,
            "one choice for the whole batch": fps_batch_shared,
            "random sampling": fps_random_sampling,
            "returns the points": fps_returns_points,
            "float indices": fps_float_indices,
        },
        "diagnoses": {
            "nearest point": (fps_nearest, "NEAREST point"),
            "argmin repeats a point": (fps_argmin, "picks a chosen point again"),
            "newest centre only": (fps_newest_only, "NEWEST centre only"),
            "sum of distances": (fps_sum, "SUM of distances"),
            "one choice for the whole batch": (fps_batch_shared, "same choice for every cloud"),
            "returns the points": (fps_returns_points, "return their INDICES"),
            "float indices": (fps_float_indices, "integer indices"),
        },
    },
    "ch08.knn_group": {
        "correct": [knn_reference, knn_loops, knn_expanded],
        "wrong": {
            "not centred": knn_not_centred,
            "reversed offsets": knn_reversed,
            "farthest points": knn_farthest,
            "Manhattan distance": knn_manhattan,
            "skips the centre itself": knn_skips_self,
            "neighbours from the whole batch": knn_whole_batch,
            "farthest first": knn_farthest_first,
            "returns (indices, groups)": knn_returns_pair,
            "returns indices": knn_returns_indices,
        },
        "diagnoses": {
            "not centred": (knn_not_centred, "absolute coordinates"),
            "reversed offsets": (knn_reversed, "wrong way round"),
            "farthest points": (knn_farthest, "FARTHEST points"),
            "Manhattan distance": (knn_manhattan, "Manhattan"),
            "skips the centre itself": (knn_skips_self, "skipping the nearest one"),
            "neighbours from the whole batch": (knn_whole_batch, "EVERY cloud of the batch"),
            "farthest first": (knn_farthest_first, "not nearest first"),
            "returns (indices, groups)": (knn_returns_pair, "return only the groups"),
            "returns indices": (knn_returns_indices, "indices"),
        },
    },
    "ch08.mel_filter_bank": {
        "correct": [mel_reference, mel_loops_float32],
        "wrong": {
            "linear frequency scale": mel_linear,
            "HTK mel scale": mel_htk,
            "no normalisation": mel_no_norm,
            "1 / width normalisation": mel_half_norm,
            "normalised in mels": mel_norm_in_mels,
            "triangles in mel space": mel_triangles_in_mel,
            "FFT bins up to the sample rate": mel_fft_to_sr,
            "transposed": mel_transposed,
        },
        "diagnoses": {
            "linear frequency scale": (mel_linear, "LINEAR frequency scale"),
            "HTK mel scale": (mel_htk, "HTK mel scale"),
            "no normalisation": (mel_no_norm, "no normalisation"),
            "1 / width normalisation": (mel_half_norm, "1 / (right - left)"),
            "normalised in mels": (mel_norm_in_mels, "width in MELS"),
            "triangles in mel space": (mel_triangles_in_mel, "triangles drawn on the mel axis"),
            "FFT bins up to the sample rate": (mel_fft_to_sr, "Nyquist"),
            "transposed": (mel_transposed, "that is (M, K)"),
        },
    },
    "ch08.log_mel": {
        "correct": [log_mel_reference, log_mel_per_clip],
        "wrong": {
            "natural log": log_mel_natural_log,
            "decibels": log_mel_decibels,
            "batch max": log_mel_batch_max,
            "frame max": log_mel_frame_max,
            "bin max": log_mel_bin_max,
            "no floor": log_mel_no_floor,
            "ceiling": log_mel_ceiling,
            "no scaling": log_mel_no_scale,
            "x + 4 / 4": log_mel_precedence,
            "no 1e-10 clamp": log_mel_no_tiny_clamp,
            "float32 output": log_mel_float32,
        },
        "diagnoses": {
            "natural log": (log_mel_natural_log, "natural log"),
            "decibels": (log_mel_decibels, "decibels"),
            "batch max": (log_mel_batch_max, "whole BATCH"),
            "frame max": (log_mel_frame_max, "each FRAME's max"),
            "bin max": (log_mel_bin_max, "each mel bin's max"),
            "no floor": (log_mel_no_floor, "no floor at the max - 8"),
            "ceiling": (log_mel_ceiling, "CEILING"),
            "no scaling": (log_mel_no_scale, "no (x + 4) / 4"),
            "x + 4 / 4": (log_mel_precedence, "x + 1"),
            "no 1e-10 clamp": (log_mel_no_tiny_clamp, "1e-10"),
            "float32 output": (log_mel_float32, "dtype torch.float32"),
        },
    },
    "ch08.binding_loss": {
        "correct": [binding_reference, binding_log_softmax],
        "wrong": {
            "rows only": binding_rows_only,
            "columns only": binding_columns_only,
            "no temperature": binding_no_temperature,
            "times the temperature": binding_times_temperature,
            "not normalised": binding_not_normalised,
            "sum of the directions": binding_sum,
            "anchor detached": binding_anchor_detached,
            "python float": binding_python_float,
        },
        "diagnoses": {
            "rows only": (binding_rows_only, "modality->anchor cross-entropy alone"),
            "columns only": (binding_columns_only, "anchor->modality cross-entropy alone"),
            "no temperature": (binding_no_temperature, "without the temperature"),
            "times the temperature": (binding_times_temperature, "MULTIPLIED by the temperature"),
            "not normalised": (binding_not_normalised, "raw dot products"),
            "sum of the directions": (binding_sum, "SUM of the two directions"),
            "anchor detached": (binding_anchor_detached, "anchor_embeds"),
        },
    },
    "ch08.whisper_stem": {
        "correct": [StemReference, StemFunctional],
        "wrong": {
            "stride on conv1": StemStrideOnConv1,
            "no GELU after conv2": StemNoSecondGelu,
            "ReLU": StemReLU,
            "no positions": StemNoPositions,
            "not transposed": StemNotTransposed,
            "paper sinusoids": StemPaperSinusoids,
            "interleaved sinusoids": StemInterleavedSinusoids,
            "learned positions": StemLearnedPositions,
            "positions a plain tensor": StemPlainTensorPositions,
            "other names": StemOtherNames,
        },
        "diagnoses": {
            "stride on conv1": (StemStrideOnConv1, "STRIDE sits on conv1"),
            "no GELU after conv2": (StemNoSecondGelu, "GELU after conv2"),
            "ReLU": (StemReLU, "ReLU"),
            "no positions": (StemNoPositions, "without the sinusoidal positions"),
            "not transposed": (StemNotTransposed, "that is (B, D, N)"),
            "paper sinusoids": (StemPaperSinusoids, "10000^(-i / (D/2 - 1))"),
            "interleaved sinusoids": (StemInterleavedSinusoids, "interleaved"),
            "learned positions": (StemLearnedPositions, "is an nn.Parameter"),
            "positions a plain tensor": (StemPlainTensorPositions, "plain tensor attribute"),
            "other names": (StemOtherNames, "conv1.weight"),
        },
    },
    "ch08.point_tokenizer": {
        "correct": [TokenizerReference, TokenizerLibraryParts],
        "wrong": {
            "not centred": TokenizerNotCentred,
            "concatenation order": TokenizerConcatOrder,
            "mean pooling": TokenizerMeanPool,
            "FPS from the last point": TokenizerLastPointStart,
            "nearest-point FPS": TokenizerNearestFps,
            "pool over the groups": TokenizerPoolOverGroups,
            "other names": TokenizerOtherNames,
        },
        "diagnoses": {
            "not centred": (TokenizerNotCentred, "NOT centred"),
            "concatenation order": (TokenizerConcatOrder, "other order"),
            "mean pooling": (TokenizerMeanPool, "average pooling"),
            "FPS from the last point": (TokenizerLastPointStart, "another first point"),
            "pool over the groups": (TokenizerPoolOverGroups, "GROUPS axis"),
            "other names": (TokenizerOtherNames, "first.0.weight"),
        },
    },
    "ch08.train_binding": {
        "correct": [OracleBinding(), OracleBinding(wrong_every=8), trained_binding_function],
        "wrong": {
            "50% right": OracleBinding(wrong_every=2),
            "separate spaces": OracleBinding(split_spaces=True),
            "audio ignored": OracleBinding(audio_constant=True),
            "widths differ": OracleBinding(audio_width=12),
            "the class": OracleBinding,
            "the training function": binding_training_with_arguments,
            "embed_audio returns a tuple": AudioReturnsTuple(),
        },
        "diagnoses": {
            "50% right": (OracleBinding(wrong_every=2), "below the bar of 4x chance"),
            "separate spaces": (OracleBinding(split_spaces=True), "not in the SAME space"),
            "audio ignored": (OracleBinding(audio_constant=True), "audio tower separates its classes least"),
            "widths differ": (OracleBinding(audio_width=12), "width 12"),
            "the class": (OracleBinding, "not its class"),
            "the training function": (binding_training_with_arguments, "needs arguments"),
            "embed_audio returns a tuple": (AudioReturnsTuple(), "returned a tuple"),
        },
    },
    "ch08.hubert_loss": {
        "correct": [hubert_reference, hubert_weighted],
        "wrong": {
            "every frame": hubert_all_frames,
            "unmasked frames": hubert_unmasked,
            "divided by all frames": hubert_divided_by_all,
            "no temperature": hubert_no_temperature,
            "not normalised": hubert_not_normalised,
        },
        "diagnoses": {
            "every frame": (hubert_all_frames, "EVERY frame"),
            "unmasked frames": (hubert_unmasked, "NOT masked"),
            "divided by all frames": (hubert_divided_by_all, "divided by ALL"),
            "no temperature": (hubert_no_temperature, "without the temperature"),
            "not normalised": (hubert_not_normalised, "raw dot products"),
        },
    },
    "ch08.q1": {"answer": "b", "wrong": ["a", "c", "d"]},
    "ch08.q2": {"answer": "c", "wrong": ["a", "b", "d"]},
    "ch08.q3": {"answer": "a", "wrong": ["b", "c", "d"]},
}
