"""Checks for chapter 8, beyond vision: audio, 3-D point clouds and binding them into one space.

Four tiers, as in every chapter:

- **core** functions (farthest point sampling, kNN grouping, the mel filter bank, Whisper's log-mel
  steps, the binding loss): the learner's function runs next to the library's on several inputs,
  and the first difference is explained, naming the usual mistake when the output equals what that
  mistake gives. Farthest point sampling may start from any point (point 0 as the library does, or a
  random one as Point-BERT's training does): the check replays the library's FPS from the learner's
  own first point;
- **build**: the learner's Whisper convolutional stem and Point-BERT point tokenizer are built with
  the documented arguments, get the library's weights loaded into them and must give the library's
  outputs and parameter gradients (the stem's sinusoids are checked before the weights are loaded);
- **train**: the learner's own binding is measured (never trained here) on clips and clouds the check
  draws with its own seed: emergent audio -> 3-D retrieval, never trained on directly;
- a **stretch**: HuBERT's masked-prediction loss.

Every case is sized so that each named mistake gives a different result from the right answer (guards
raise ``RuntimeError`` when a case stops telling them apart). Questions store only answer hashes.
"""

from __future__ import annotations

import inspect
import math
from functools import lru_cache
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from mmllm_course.encoders.audio import AudioEncoder, AudioEncoderConfig, hertz_to_mel, mel_to_hertz, whisper_sinusoids
from mmllm_course.encoders.audio import mel_filter_bank as _ref_mel_filter_bank
from mmllm_course.encoders.points import MiniPointNet, gather_points
from mmllm_course.encoders.points import farthest_point_sampling as _ref_fps
from mmllm_course.encoders.points import knn_group as _ref_knn_group
from mmllm_course.grading.checks.ch02 import _expect_distinct, _expect_loss, _expect_same_grads, _loss_leaf, _type_name
from mmllm_course.grading.compare import expect_tensor, same_values
from mmllm_course.grading.core import CheckFailed, answer_hash, call, exercise, question
from mmllm_course.grading.modules import build_learner_module, expect_same_forward, load_reference_weights


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _first_named(got: Any, expected: torch.Tensor, mistakes: dict[str, torch.Tensor], atol: float = 1e-5,
                 rtol: float = 1e-4) -> str | None:
    """The explanation of the first mistake whose output ``got`` equals (and the right answer does not)."""
    for explanation, wrong in mistakes.items():
        if same_values(wrong, expected, atol, rtol):
            continue  # this case cannot show that mistake
        if same_values(got, wrong, atol, rtol):
            return explanation
    return None


def _expect_or_name(got: Any, expected: torch.Tensor, what: str, mistakes: dict[str, torch.Tensor], atol: float = 1e-5,
                    rtol: float = 1e-4, check_dtype: bool = True) -> None:
    """:func:`expect_tensor`; when the values are wrong, name the known mistake they equal."""
    try:
        expect_tensor(got, expected, what, atol=atol, rtol=rtol, check_dtype=check_dtype)
    except CheckFailed as exc:
        explanation = _first_named(got, expected, mistakes, atol, rtol)
        if explanation:
            raise CheckFailed(f"{exc}. Your output equals {explanation}.") from None
        raise


# --------------------------------------------------------------------------------------------------
# ch08.fps: farthest point sampling
# --------------------------------------------------------------------------------------------------
# (B, P, S, dtype); B > 1 in most cases so a batch mix-up shows, S = P once (every point, in FPS order).
_FPS_CASES = [
    (1, 12, 4, torch.float32),
    (2, 40, 8, torch.float64),
    (3, 64, 16, torch.float32),
    (2, 10, 10, torch.float64),
    (4, 128, 12, torch.float32),
]


def _fps_points(b: int, p: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Clouds with a dense blob and a sparse spread, stretched per axis: random sampling and FPS differ a lot."""
    g = _gen(seed)
    dense = 0.15 * torch.randn(b, p // 2, 3, generator=g)
    sparse = torch.randn(b, p - p // 2, 3, generator=g) * torch.tensor([1.5, 1.0, 0.6])
    pts = torch.cat([dense, sparse], dim=1)
    pts = pts[:, torch.randperm(p, generator=g)]
    return pts.to(dtype)


def _fps_variant(points: torch.Tensor, s: int, start: torch.Tensor, kind: str) -> torch.Tensor:
    """FPS with one thing done differently, from the same first points ``start`` (B,)."""
    b, p, _ = points.shape
    pts = points.double()
    rows = torch.arange(b)
    chosen = torch.empty(b, s, dtype=torch.long)
    current = start.clone()
    nearest = torch.full((b, p), float("inf"), dtype=torch.float64)
    total = torch.zeros(b, p, dtype=torch.float64)
    first = ((pts - pts[rows, start][:, None]) ** 2).sum(-1)  # (B, P) squared distance to the first point
    for i in range(s):
        chosen[:, i] = current
        d = ((pts - pts[rows, current][:, None]) ** 2).sum(-1)  # (B, P)
        nearest = torch.minimum(nearest, d)
        total = total + d.sqrt()
        taken = torch.zeros(b, p, dtype=torch.bool)
        taken[rows[:, None], chosen[:, : i + 1]] = True
        if kind == "nearest":  # the nearest point not yet chosen
            current = nearest.masked_fill(taken, float("inf")).argmin(dim=1)
        elif kind == "argmin":  # argmin of the running minimum: a chosen point again (distance 0)
            current = nearest.argmin(dim=1)
        elif kind == "last":  # farthest from the newest centre only
            current = d.argmax(dim=1)
        elif kind == "sum":  # farthest in total distance to all centres
            current = total.masked_fill(taken, float("-inf")).argmax(dim=1)
        elif kind == "first":  # farthest from the first point only: the S-1 farthest points from it
            current = first.masked_fill(taken, float("-inf")).argmax(dim=1)
        elif kind == "batch":  # distances summed over the batch axis: the same choice for every cloud
            current = nearest.sum(dim=0, keepdim=True).expand(b, -1).argmax(dim=1)
        else:
            raise ValueError(kind)
    return chosen


_FPS_MISTAKES = {
    "nearest": "the NEAREST point to the chosen ones at each step (argmin); FPS takes the point FARTHEST from every "
    "chosen centre: the argmax of each point's distance to its nearest centre",
    "argmin": "the argmin of the distances to the chosen points, which picks a chosen point again (distance 0): FPS "
    "takes the argmax",
    "last": "the point farthest from the NEWEST centre only: keep, for every point, its distance to the nearest of ALL "
    "chosen centres (a running minimum, torch.minimum) and take the argmax of that",
    "sum": "the point with the largest SUM of distances to the chosen centres: FPS takes the largest distance to the "
    "NEAREST chosen centre (max of a min), which spreads the centres instead of pushing them to the ends",
    "first": "the points farthest from the FIRST point only: update the distances with every new centre (a running "
    "minimum over all chosen centres)",
    "batch": "the same choice for every cloud of the batch (distances summed or reduced over the batch axis): each "
    "cloud runs its own FPS, reduce over the points axis per cloud (argmax(dim=1))",
}


@exercise(
    "ch08.fps",
    "Farthest point sampling",
    hint="keep a (B, P) tensor of each point's squared distance to its NEAREST chosen centre; after choosing a centre, "
    "update it with torch.minimum, then the next centre is its argmax over the points (dim=1), per cloud.",
)
def _check_fps(fn) -> str:
    for i, (b, p, s, dtype) in enumerate(_FPS_CASES):
        points = _fps_points(b, p, dtype, seed=1000 + i)
        what = f"farthest_point_sampling(points {tuple(points.shape)}, num_samples={s}, {dtype})"
        got = call(fn, points.clone(), s)
        if got is None:
            raise CheckFailed(f"{what} returned None: did you forget `return`?")
        if not isinstance(got, torch.Tensor):
            raise CheckFailed(f"{what} returned {_type_name(got)}; expected a tensor of indices ({b}, {s})")
        if tuple(got.shape) == (b, s, 3):
            raise CheckFailed(f"{what} returned shape {tuple(got.shape)}, the points themselves; return their INDICES "
                              f"({b}, {s}) (integers, e.g. from argmax)")
        if tuple(got.shape) != (b, s):
            raise CheckFailed(f"{what} returned shape {tuple(got.shape)}; expected ({b}, {s}): {s} indices per cloud")
        if got.is_floating_point() or got.dtype == torch.bool or got.is_complex():
            raise CheckFailed(f"{what} returned dtype {got.dtype}; expected integer indices (torch.long, as argmax gives)")
        got = got.detach().cpu().long()
        if bool(((got < 0) | (got >= p)).any()):
            raise CheckFailed(f"{what} returned indices from {got.min().item()} to {got.max().item()}; they must lie in "
                              f"[0, {p})")
        start = got[:, 0].clone()
        expected = _ref_fps(points, s, start)  # the library's FPS from the learner's own first points
        if torch.equal(got, expected):
            continue
        for kind, explanation in _FPS_MISTAKES.items():
            wrong = _fps_variant(points, s, start, kind)
            if not torch.equal(wrong, expected) and torch.equal(got, wrong):
                raise CheckFailed(f"{what} returned {got[0].tolist()} for cloud 0 (from your first point "
                                  f"{start[0].item()}); FPS gives {expected[0].tolist()}. Your picks are {explanation}.")
        repeats = [r for r in range(b) if got[r].unique().numel() < s]
        if repeats:
            raise CheckFailed(f"{what}: cloud {repeats[0]} gets the same point twice ({got[repeats[0]].tolist()}): a "
                              f"chosen point is at distance 0 from the chosen set, so the argmax never picks it again")
        row = next(r for r in range(b) if not torch.equal(got[r], expected[r]))
        col = next(j for j in range(s) if got[row, j] != expected[row, j])
        raise CheckFailed(f"{what}: cloud {row} differs first at pick {col}: got point {got[row, col].item()}, expected "
                          f"{expected[row, col].item()} (from your first point {start[row].item()}: "
                          f"{expected[row].tolist()})")
    return ("your centres are exactly the library's farthest point sampling (replayed from your first point): each new "
            "centre is the point farthest from all centres chosen so far.")


# --------------------------------------------------------------------------------------------------
# ch08.knn_group: k nearest neighbours of each centre, relative to it
# --------------------------------------------------------------------------------------------------
# (B, P, G, K, dtype, centres from the cloud?)
_KNN_CASES = [
    (1, 16, 3, 4, torch.float32, True),
    (2, 40, 5, 6, torch.float64, True),
    (3, 64, 8, 8, torch.float32, False),
    (2, 30, 4, 1, torch.float64, False),
    (2, 50, 6, 10, torch.float32, True),
]


def _knn_inputs(case, seed: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    b, p, g_, k, dtype, from_cloud = case
    g = _gen(seed)
    points = torch.randn(b, p, 3, generator=g) * torch.tensor([1.0, 0.7, 1.3])  # clouds that overlap in space
    if from_cloud:
        centers = gather_points(points, torch.stack([torch.randperm(p, generator=g)[:g_] for _ in range(b)]))
    else:
        centers = torch.randn(b, g_, 3, generator=g)
    return points.to(dtype), centers.to(dtype), k


def _knn_mistakes(points: torch.Tensor, centers: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    b, p, _ = points.shape
    dist = torch.cdist(centers, points)  # (B, G, P)

    def groups(idx: torch.Tensor, sign: float = 1.0, centred: bool = True) -> torch.Tensor:
        gathered = gather_points(points, idx)  # (B, G, K, 3)
        return sign * (gathered - centers[:, :, None]) if centred else gathered

    near = dist.topk(k, dim=-1, largest=False).indices
    out = {
        "the neighbours' absolute coordinates: subtract each group's centre (groups - centers[:, :, None, :]) so the "
        "group describes a local shape wherever it sits": groups(near, centred=False),
        "offsets the wrong way round (centre - point); the group holds point - centre": groups(near, sign=-1.0),
        "the k FARTHEST points (topk with largest=True): take the smallest distances (largest=False)":
            groups(dist.topk(k, dim=-1, largest=True).indices),
        "neighbours chosen by Manhattan (L1) distance; the grouping uses the Euclidean distance over the 3 coordinates":
            groups((centers[:, :, None] - points[:, None]).abs().sum(-1).topk(k, dim=-1, largest=False).indices),
    }
    if p > k:
        skipped = dist.topk(k + 1, dim=-1, largest=False).indices[..., 1:]
        out["the k nearest points after skipping the nearest one: a centre taken from the cloud is its OWN first "
            "neighbour (offset 0), and it stays in the group"] = groups(skipped)
    if b > 1:  # neighbours looked up in every cloud of the batch (the batch axis flattened into the points)
        flat = points.reshape(1, b * p, 3)
        d_all = torch.cdist(centers.reshape(1, -1, 3), flat)  # (1, B*G, B*P)
        idx = d_all.topk(k, dim=-1, largest=False).indices.reshape(b, -1, k)
        mixed = flat[0][idx] - centers[:, :, None]
        out["neighbours taken from EVERY cloud of the batch (the batch axis flattened into the points): each centre's "
            "neighbours come from its own cloud only, so compute the distances per cloud, (B, G, P)"] = mixed
    return out


@exercise(
    "ch08.knn_group",
    "k-nearest-neighbour grouping",
    hint="distances (B, G, P) between every centre and every point OF THE SAME CLOUD (torch.cdist), the k smallest "
    "over the points axis, nearest first (topk(largest=False)), gather those points, and subtract the centre.",
)
def _check_knn_group(fn) -> str:
    for i, case in enumerate(_KNN_CASES):
        points, centers, k = _knn_inputs(case, seed=1100 + i)
        b, g_ = centers.shape[:2]
        what = (f"knn_group(points {tuple(points.shape)}, centers {tuple(centers.shape)}, k={k}, {points.dtype})")
        _, expected = _ref_knn_group(points, centers, k)  # (B, G, K, 3)
        got = call(fn, points.clone(), centers.clone(), k)
        if isinstance(got, tuple):
            raise CheckFailed(f"{what} returned a tuple of {len(got)}; return only the groups (B, G, K, 3) = "
                              f"{tuple(expected.shape)} (the library also returns the indices; yours does not need to)")
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (b, g_, k) and not got.is_floating_point():
            raise CheckFailed(f"{what} returned the neighbours' indices {tuple(got.shape)}; return the groups "
                              f"{tuple(expected.shape)}: the points themselves, minus their centre")
        mistakes = _knn_mistakes(points, centers, k)
        try:
            _expect_or_name(got, expected, what, mistakes)
        except CheckFailed as exc:
            note = None if "Your output equals" in str(exc) else _knn_order_message(got, expected)
            if note:
                raise CheckFailed(f"{exc}. Your groups hold {note}.") from None
            raise
    return ("your groups hold each centre's k nearest points of its own cloud, nearest first, relative to the centre: "
            "the library's (and Point-BERT's) grouping.")


def _knn_order_message(got: Any, expected: torch.Tensor) -> str | None:
    """When the groups hold the right points in another order: say so (the spec asks for nearest first)."""
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape or not got.is_floating_point():
        return None
    g, e = got.detach().cpu().double(), expected.double()
    order_g, order_e = g.norm(dim=-1).argsort(dim=-1), e.norm(dim=-1).argsort(dim=-1)  # (B, G, K)
    sort = lambda t, o: torch.gather(t, 2, o[..., None].expand(-1, -1, -1, 3))  # noqa: E731
    if same_values(sort(g, order_g), sort(e, order_e)):
        return "the right neighbours, but not nearest first: sort each group by distance (topk(largest=False) does)"
    return None


# --------------------------------------------------------------------------------------------------
# ch08.mel_filter_bank
# --------------------------------------------------------------------------------------------------
# (num_frequency_bins, num_mel_filters, sample_rate, min_frequency, max_frequency)
_MEL_CASES = [
    (201, 80, 16000, 0.0, 8000.0),  # Whisper: n_fft 400
    (257, 40, 16000, 0.0, 8000.0),
    (129, 24, 8000, 100.0, 4000.0),
    (513, 64, 22050, 20.0, 11025.0),
]


def _htk_hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def _htk_mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_bank_variant(k: int, m: int, sr: int, fmin: float, fmax: float, *, scale: str = "slaney", norm: str = "slaney",
                     in_mel: bool = False, fft_top: float | None = None) -> torch.Tensor:
    """A mel filter bank (K, M) float64 with one choice made differently (the library's with the defaults)."""
    lo, hi = torch.tensor(float(fmin), dtype=torch.float64), torch.tensor(float(fmax), dtype=torch.float64)
    if scale == "slaney":
        to_mel, to_hz = hertz_to_mel, mel_to_hertz
    elif scale == "htk":
        to_mel, to_hz = _htk_hz_to_mel, _htk_mel_to_hz
    else:  # "linear": edges evenly spaced in Hz
        to_mel = to_hz = lambda t: t  # noqa: E731
    mel_points = torch.linspace(float(to_mel(lo)), float(to_mel(hi)), m + 2, dtype=torch.float64)
    edges = to_hz(mel_points)  # (M + 2,) Hz
    fft_freqs = torch.linspace(0, sr // 2 if fft_top is None else fft_top, k, dtype=torch.float64)  # (K,)
    axis_edges, axis_freqs = (mel_points, to_mel(fft_freqs)) if in_mel else (edges, fft_freqs)
    widths = axis_edges.diff()
    slopes = axis_edges[None, :] - axis_freqs[:, None]
    rising = -slopes[:, :-2] / widths[:-1]
    falling = slopes[:, 2:] / widths[1:]
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)
    if norm == "slaney":
        return filters * (2.0 / (edges[2:] - edges[:-2]))[None, :]
    if norm == "half":
        return filters * (1.0 / (edges[2:] - edges[:-2]))[None, :]
    if norm == "mel":
        return filters * (2.0 / (mel_points[2:] - mel_points[:-2]))[None, :]
    return filters  # "none": every filter peaks at 1


_MEL_MISTAKES = {
    "a filter bank on a LINEAR frequency scale (edges evenly spaced in Hz): space the num_mel_filters + 2 edges evenly "
    "in MELS, hertz_to_mel(min) .. hertz_to_mel(max), then convert them back to Hz":
        dict(scale="linear"),
    "the HTK mel scale, 2595 * log10(1 + f / 700); Whisper (and this library) use Slaney's: linear below 1 kHz "
    "(3 mels per 200 Hz), logarithmic above (27 mels per factor 6.4)":
        dict(scale="htk"),
    "filters that all peak at 1 (no normalisation): Slaney's normalisation scales filter m by "
    "2 / (right edge - left edge) in Hz, so wide high-frequency filters do not outweigh narrow low ones":
        dict(norm="none"),
    "filters scaled by 1 / (right - left); Slaney's area normalisation is 2 / (right - left)":
        dict(norm="half"),
    "filters normalised by their width in MELS; the normalisation 2 / (right - left) uses the edges in Hz":
        dict(norm="mel"),
    "triangles drawn on the mel axis (the FFT frequencies converted to mels); the triangles are linear in Hz between "
    "edges converted back to Hz":
        dict(in_mel=True),
    "FFT bin frequencies spread from 0 to the sample rate; the num_frequency_bins of an rfft run from 0 to the "
    "Nyquist frequency, sample_rate / 2":
        dict(fft_top="sr"),
}


@exercise(
    "ch08.mel_filter_bank",
    "The mel filter bank (Slaney's mel scale and normalisation)",
    hint="num_mel_filters + 2 edges evenly spaced on the mel scale, back to Hz; the FFT bins at linspace(0, sr/2, K); "
    "filter m rises from edge m to edge m+1 and falls to edge m+2 (linear in Hz), times 2 / (edge m+2 - edge m).",
)
def _check_mel_filter_bank(fn) -> str:
    for case in _MEL_CASES:
        k, m, sr, fmin, fmax = case
        what = f"mel_filter_bank({k}, {m}, sample_rate={sr}, min_frequency={fmin:g}, max_frequency={fmax:g})"
        expected = _ref_mel_filter_bank(k, m, sr, fmin, fmax)  # (K, M) float64
        mistakes = {}
        for explanation, kwargs in _MEL_MISTAKES.items():
            if kwargs.get("fft_top") == "sr":
                kwargs = dict(fft_top=float(sr))
            mistakes[explanation] = mel_bank_variant(k, m, sr, fmin, fmax, **kwargs)
        got = call(fn, k, m, sr, fmin, fmax)
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (m, k) and k != m:
            raise CheckFailed(f"{what} returned shape {tuple(got.shape)}, that is (M, K); expected (K, M) = {(k, m)}: "
                              "one column per mel filter, so that filters.T @ power (B, K, F) gives (B, M, F)")
        if isinstance(got, torch.Tensor) and got.is_floating_point() and got.dtype != torch.float64:
            got = got.double()  # float32 is fine: compare the values
        atol = 1e-6 * float(expected.abs().max())
        for explanation, wrong in mistakes.items():
            if same_values(wrong, expected, atol=atol, rtol=1e-4):
                raise RuntimeError(f"{what}: the case cannot show {explanation!r}")
        _expect_or_name(got, expected, what, mistakes, atol=atol, rtol=1e-4)
    return ("your filters equal the library's (and transformers' WhisperFeatureExtractor's): triangles on Slaney's mel "
            "scale with Slaney's area normalisation.")


# --------------------------------------------------------------------------------------------------
# ch08.log_mel: Whisper's log, clamp and scale
# --------------------------------------------------------------------------------------------------
_LOG_MEL_CASES = [(2, 8, 6, torch.float32), (3, 16, 10, torch.float64), (1, 4, 5, torch.float64), (4, 80, 12, torch.float32)]


def whisper_log_mel_reference(mel: torch.Tensor) -> torch.Tensor:
    """Whisper's step 4 on a mel power spectrogram (B, M, F): log10, floor at each clip's max - 8, (x + 4) / 4."""
    log_spec = torch.clamp(mel, min=1e-10).log10()
    peak = log_spec.amax(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    return (torch.maximum(log_spec, peak - 8.0) + 4.0) / 4.0


def _log_mel_inputs(b: int, m: int, f: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Powers over 14 orders of magnitude, clips of very different loudness, and one clip nearly silent with zeros."""
    g = _gen(seed)
    mel = 10.0 ** (torch.rand(b, m, f, generator=g) * 14.0 - 12.0)  # 1e-12 .. 1e2
    mel = mel * 10.0 ** torch.linspace(0.0, -3.0, b)[:, None, None]  # each clip a different loudness
    if b > 1:
        mel[-1] = 10.0 ** (torch.rand(m, f, generator=g) * 6.0 - 11.0)  # a quiet clip: peak ~1e-5
        mel[-1, 0, :2] = 0.0  # exact zeros: log10(0) = -inf without the 1e-10 floor
    return mel.to(dtype)


def _log_mel_mistakes(mel: torch.Tensor) -> dict[str, torch.Tensor]:
    def steps(log=torch.log10, floor=True, reduce="clip", scale=True, upper=False, tiny=True, plus_one=False):
        x = torch.clamp(mel, min=1e-10) if tiny else mel
        x = log(x)
        if floor:
            dims = {"clip": (1, 2), "batch": (0, 1, 2), "frame": (1,), "bin": (2,)}[reduce]
            peak = x.amax(dim=dims, keepdim=True)
            x = torch.minimum(x, peak - 8.0) if upper else torch.maximum(x, peak - 8.0)
        if plus_one:
            return x + 4.0 / 4.0
        return (x + 4.0) / 4.0 if scale else x

    return {
        "the natural log (torch.log); Whisper takes log10": steps(log=torch.log),
        "10 * log10, decibels; Whisper's features are plain log10 (its 8 below the max is 80 dB)":
            steps(log=lambda t: 10.0 * torch.log10(t)),
        "the floor at the max - 8 of the whole BATCH: each clip is floored at its OWN max - 8, amax over dims (1, 2) "
        "with keepdim=True": steps(reduce="batch"),
        "the floor at each FRAME's max - 8 (amax over the mel bins only): each clip is floored at its own max over "
        "all bins and frames, dims (1, 2)": steps(reduce="frame"),
        "the floor at each mel bin's max - 8 (amax over the frames only): use the whole clip's max, dims (1, 2)":
            steps(reduce="bin"),
        "no floor at the max - 8: Whisper keeps 8 orders of magnitude (80 dB) below each clip's loudest bin, "
        "torch.maximum(x, peak - 8)": steps(floor=False),
        "a CEILING at the max - 8 (torch.minimum or clamp(max=...)); it is a floor: torch.maximum(x, peak - 8)":
            steps(upper=True),
        "no (x + 4) / 4 at the end": steps(scale=False),
        "x + 4 / 4, which Python reads as x + 1: write (x + 4) / 4": steps(plus_one=True),
        "no floor at 1e-10 before the log: a bin of power 0 gives log10(0) = -inf (clamp(min=1e-10) first)":
            steps(tiny=False),
    }


@exercise(
    "ch08.log_mel",
    "Whisper's log-mel steps: log10, a floor 8 below each clip's max, (x + 4) / 4",
    hint="clamp the power at 1e-10, log10, take each clip's max over bins and frames (amax(dim=(1, 2), "
    "keepdim=True)), floor at max - 8 with torch.maximum, then (x + 4) / 4.",
)
def _check_log_mel(fn) -> str:
    for i, (b, m, f, dtype) in enumerate(_LOG_MEL_CASES):
        mel = _log_mel_inputs(b, m, f, dtype, seed=1200 + i)
        what = f"whisper_log_mel(mel {tuple(mel.shape)}, {dtype})"
        expected = whisper_log_mel_reference(mel)
        mistakes = _log_mel_mistakes(mel)
        got = call(fn, mel.clone())
        if isinstance(got, torch.Tensor) and got.shape == expected.shape and not torch.isfinite(got).all():
            explanation = _first_named(got.nan_to_num(neginf=-1e30), expected, {
                k: v.nan_to_num(neginf=-1e30) for k, v in mistakes.items()})
            raise CheckFailed(f"{what} returned -inf or NaN values" + (f". Your output equals {explanation}." if explanation
                              else ": clamp the power at 1e-10 before the log10"))
        _expect_or_name(got, expected, what, mistakes)
    return "your features equal Whisper's: log10 of the clamped power, floored 8 below each clip's peak, scaled to about [-1, 1]."


# --------------------------------------------------------------------------------------------------
# ch08.binding_loss: symmetric InfoNCE between a modality and its frozen anchor
# --------------------------------------------------------------------------------------------------
_BINDING_CASES = [(3, 8, torch.float32, 0.07), (5, 16, torch.float64, 0.1), (8, 4, torch.float32, 0.5), (6, 32, torch.float64, 0.05)]


def binding_loss_reference(modality_embeds: torch.Tensor, anchor_embeds: torch.Tensor, temperature: float) -> torch.Tensor:
    """ImageBind's loss for B pairs: cosine similarities / temperature (B, B), the mean of the two cross-entropies."""
    logits = F.normalize(modality_embeds, dim=-1) @ F.normalize(anchor_embeds, dim=-1).T / temperature  # (B, B)
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def _binding_mistakes(mod: torch.Tensor, anc: torch.Tensor, t: float) -> dict[str, float]:
    b = mod.shape[0]
    tg = torch.arange(b)
    cos = F.normalize(mod, dim=-1) @ F.normalize(anc, dim=-1).T

    def sym(logits, targets=tg):
        return ((F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2).item()

    right = cos / t
    return {
        "the modality->anchor cross-entropy alone (rows); the binding loss is symmetric: average it with the "
        "anchor->modality one (the columns, logits.T)": F.cross_entropy(right, tg).item(),
        "the anchor->modality cross-entropy alone (columns); average it with the modality->anchor one (rows)":
            F.cross_entropy(right.T, tg).item(),
        "the cosine similarities without the temperature: divide them by the temperature (logits = cos / T)": sym(cos),
        "the cosine similarities MULTIPLIED by the temperature; a temperature divides (cos / T: a small T sharpens)":
            sym(cos * t),
        "logits from raw dot products: normalise both embeddings to unit length first (cosine similarity)":
            sym(mod @ anc.T / t),
        "the SUM of the two directions; this loss takes their mean (divide by 2)": 2 * sym(right),
        "the targets all 0; pair i is (modality i, anchor i), so targets = arange(B)": sym(right, torch.zeros(b, dtype=torch.long)),
    }


@exercise(
    "ch08.binding_loss",
    "The binding loss: symmetric InfoNCE with a temperature",
    hint="normalise both embeddings, logits = cos / temperature (B, B), targets arange(B), and average the "
    "cross-entropies of the rows (modality -> anchor) and of the columns (anchor -> modality).",
)
def _check_binding_loss(fn) -> str:
    for i, (b, e, dtype, t) in enumerate(_BINDING_CASES):
        g = _gen(1300 + i)
        mod = (torch.randn(b, e, generator=g) * torch.empty(b, 1).uniform_(0.5, 3.0, generator=g)).to(dtype)
        anc = (torch.randn(b, e, generator=g) * torch.empty(b, 1).uniform_(0.5, 3.0, generator=g)).to(dtype)
        anc = anc + 0.8 * mod / mod.norm(dim=-1, keepdim=True) * anc.norm(dim=-1, keepdim=True)  # pairs alike
        what = f"binding_loss(modality_embeds {tuple(mod.shape)}, anchor_embeds {tuple(anc.shape)}, temperature={t:g}, {dtype})"
        ref_inputs = [_loss_leaf(mod), _loss_leaf(anc)]
        expected = binding_loss_reference(*ref_inputs, t)
        mistakes = _binding_mistakes(mod, anc, t)
        _expect_distinct(mistakes, expected.item(), what)
        inputs = [_loss_leaf(mod), _loss_leaf(anc)]
        got = call(fn, *inputs, t)
        _expect_loss(got, expected, mistakes, dtype, what)
        _expect_same_grads(got, expected, inputs, ref_inputs, ["modality_embeds", "anchor_embeds"], what)
    return ("your loss and its gradients equal the library's symmetric InfoNCE over cosine similarities / temperature: "
            "ImageBind's and LanguageBind's loss.")


# --------------------------------------------------------------------------------------------------
# Build tier: the Whisper stem and the point tokenizer
# --------------------------------------------------------------------------------------------------


def _randomize(module: nn.Module, seed: int, std: float = 0.3) -> nn.Module:
    """Every parameter drawn afresh (LayerNorm weights around 1), so no mistake hides behind an init of 0 or 1."""
    g = _gen(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            owner = module
            for part in name.split(".")[:-1]:
                owner = getattr(owner, part)
            noise = torch.randn(p.shape, generator=g) * std
            if isinstance(owner, nn.LayerNorm) and name.endswith("weight"):
                noise = noise + 1.0
            p.copy_(noise)
    return module


class WhisperStemReference(nn.Module):
    """The library's Whisper stem: ``conv1``, ``conv2`` (stride 2), GELU after each, + ``position_embedding``.

    Holds the very modules of a library :class:`AudioEncoder`: mel (B, M, F) -> (B, ceil(F / 2), D).
    """

    def __init__(self, n_mels: int, dim: int, max_positions: int):
        super().__init__()
        encoder = AudioEncoder(AudioEncoderConfig(n_mels=n_mels, dim=dim, depth=1, num_heads=1, mlp_dim=dim,
                                                  max_positions=max_positions))
        self.conv1, self.conv2 = encoder.conv1, encoder.conv2
        self.register_buffer("position_embedding", encoder.position_embedding.clone())  # (P, D)

    def forward(self, mel: torch.Tensor, *, act1: Callable = F.gelu, act2: Callable = F.gelu, stride_first: bool = False,
                positions: bool = True) -> torch.Tensor:
        if stride_first:
            x = act1(F.conv1d(mel, self.conv1.weight, self.conv1.bias, stride=2, padding=1))
            x = act2(F.conv1d(x, self.conv2.weight, self.conv2.bias, stride=1, padding=1))
        else:
            x = act2(self.conv2(act1(self.conv1(mel))))  # (B, D, N)
        x = x.transpose(1, 2)  # (B, N, D)
        return x + self.position_embedding[: x.shape[1]] if positions else x


def _stem_mistakes(ref: WhisperStemReference, mel: torch.Tensor) -> dict[str, torch.Tensor]:
    tanh = lambda t: F.gelu(t, approximate="tanh")  # noqa: E731
    return {
        "a stem whose STRIDE sits on conv1: conv1 keeps every frame (stride 1) and conv2 halves time (stride 2)":
            ref(mel, stride_first=True),
        "a stem without the GELU after conv2: GELU follows each convolution": ref(mel, act2=lambda t: t),
        "a stem without the GELU after conv1: GELU follows each convolution": ref(mel, act1=lambda t: t),
        "a stem with ReLU; Whisper uses the exact GELU (F.gelu)": ref(mel, act1=F.relu, act2=F.relu),
        "a stem with GELU's tanh approximation; Whisper uses the exact GELU (approximate='none')":
            ref(mel, act1=tanh, act2=tanh),
        "a stem without the sinusoidal positions: add position_embedding[:N] to the (B, N, D) tokens":
            ref(mel, positions=False),
    }


def _sinusoid_mistakes(n: int, d: int) -> dict[str, torch.Tensor]:
    half = d // 2
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    paper = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
    whisper = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / (half - 1))
    sin, cos = torch.sin(pos * whisper), torch.cos(pos * whisper)
    return {
        "the transformer paper's frequencies 10000^(-i / (D/2)); Whisper's are 10000^(-i / (D/2 - 1)), so the last "
        "one is exactly 1/10000": torch.cat([torch.sin(pos * paper), torch.cos(pos * paper)], dim=1),
        "sines and cosines interleaved (sin, cos, sin, cos, ...); Whisper puts all the sines first, then all the "
        "cosines": torch.stack([sin, cos], dim=-1).reshape(n, d),
        "the cosines first; Whisper puts the sines first, then the cosines": torch.cat([cos, sin], dim=1),
    }


_STEM_CASES = [(8, 16, 6, 1400), (12, 24, 10, 1401)]  # (n_mels, dim, max_positions, seed)


@exercise(
    "ch08.whisper_stem",
    "Build Whisper's convolutional stem with sinusoidal positions",
    hint="conv1 = Conv1d(n_mels, D, 3, padding=1), conv2 = Conv1d(D, D, 3, stride=2, padding=1), GELU after each, "
    "transpose to (B, N, D), add position_embedding[:N], a buffer (register_buffer) of Whisper's sinusoids.",
)
def _check_whisper_stem(cls) -> str:
    for n_mels, dim, max_pos, seed in _STEM_CASES:
        what = f"WhisperStem({n_mels}, {dim}, {max_pos})"
        mine = build_learner_module(cls, what, n_mels, dim, max_pos)
        # 1. the positions the learner's module computed itself, before the library's weights overwrite them
        buffers = dict(mine.named_buffers())
        table = buffers.get("position_embedding")
        if table is None:
            params = dict(mine.named_parameters())
            if "position_embedding" in params:
                raise CheckFailed(f"{what}: position_embedding is an nn.Parameter; Whisper's positions are fixed "
                                  "sinusoids, a buffer: self.register_buffer('position_embedding', table)")
            plain = isinstance(getattr(mine, "position_embedding", None), torch.Tensor)
            raise CheckFailed(f"{what}: no buffer named position_embedding" + (
                " (it is a plain tensor attribute: register it with self.register_buffer('position_embedding', table))"
                if plain else ": register Whisper's sinusoids (max_positions, D) with self.register_buffer"))
        expected_table = whisper_sinusoids(max_pos, dim)
        _expect_or_name(table, expected_table, f"{what}: your position_embedding buffer",
                        _sinusoid_mistakes(max_pos, dim), check_dtype=False)
        # 2. the library's weights in, then outputs and parameter gradients
        ref = _randomize(WhisperStemReference(n_mels, dim, max_pos), seed, std=0.25)
        load_reference_weights(mine, ref, what)
        g = _gen(seed + 50)
        inputs = [torch.randn(1, n_mels, 2 * max_pos, generator=g), torch.randn(3, n_mels, 2 * max_pos - 1, generator=g),
                  torch.randn(2, n_mels, 5, generator=g)]  # full length, an odd length (N = ceil(F / 2)), a short clip
        first = inputs[0]
        with torch.no_grad():
            out = call(mine, first.clone())
        n = (first.shape[-1] + 1) // 2
        if isinstance(out, torch.Tensor) and tuple(out.shape) == (1, dim, n) and dim != n:
            raise CheckFailed(f"{what}(mel {tuple(first.shape)}) returned shape {tuple(out.shape)}, that is (B, D, N); "
                              f"expected tokens (B, N, D) = {(1, n, dim)}: transpose(1, 2) after the convolutions")
        expect_same_forward(mine, ref, inputs, what,
                            diagnose=lambda mel: _stem_mistakes(ref, mel))
    return ("with the library's weights loaded, your stem gives the library's tokens and gradients, and its "
            "position_embedding buffer holds Whisper's sinusoids.")


class PointTokenizerReference(MiniPointNet):
    """The library's point tokenizer: FPS from point 0, kNN groups, mini-PointNet: points (B, P, 3) -> (B, G, D).

    What :meth:`mmllm_course.encoders.points.PointEncoder.tokenize` computes, with the mini-PointNet's
    names (``first.0`` ... ``second.3``) at the top level.
    """

    def __init__(self, num_groups: int, group_size: int, dim: int, hidden: int):
        super().__init__(dim, hidden)
        self.num_groups, self.group_size = num_groups, group_size

    def groups(self, points: torch.Tensor, start: int | torch.Tensor = 0, centred: bool = True) -> torch.Tensor:
        with torch.no_grad():
            idx = _ref_fps(points.detach(), self.num_groups, start)  # (B, G)
        centers = gather_points(points, idx)  # (B, G, 3)
        _, groups = _ref_knn_group(points, centers, self.group_size)  # (B, G, K, 3)
        return groups if centred else groups + centers[:, :, None]

    def forward(self, points: torch.Tensor, *, start: int | torch.Tensor = 0, centred: bool = True,
                order: str = "fg", pool: str = "max") -> torch.Tensor:
        groups = self.groups(points, start, centred)
        if order == "fg" and pool == "max":
            return super().forward(groups)
        f = self.first(groups)  # (B, G, K, H)
        summary = f.amax(dim=2, keepdim=True) if pool == "max" else f.mean(dim=2, keepdim=True)
        summary = summary.expand_as(f)
        h = self.second(torch.cat([f, summary] if order == "fg" else [summary, f], dim=-1))  # (B, G, K, D)
        return h.amax(dim=2) if pool == "max" else h.mean(dim=2)


def _tokenizer_mistakes(ref: PointTokenizerReference, points: torch.Tensor) -> dict[str, torch.Tensor]:
    b, p, _ = points.shape
    return {
        "tokens of groups NOT centred on their centre: each group is its points minus the centre": ref(points, centred=False),
        "the concatenation in the other order, [group summary, point feature]; the second MLP reads "
        "cat([f, max_K f], dim=-1), the point's own feature first": ref(points, order="gf"),
        "average pooling over the group; PointNet pools with a MAX over the K points (amax(dim=2)), both times":
            ref(points, pool="mean"),
        "FPS from another first point: the tokenizer's FPS starts from point 0 of every cloud (the library's "
        "default), so that it is deterministic": ref(points, start=torch.full((b,), p - 1, dtype=torch.long)),
    }


_TOKENIZER_CASES = [(6, 5, 16, 12, 1500), (8, 4, 24, 16, 1501)]  # (num_groups, group_size, dim, hidden, seed)


@exercise(
    "ch08.point_tokenizer",
    "Build Point-BERT's point tokenizer: FPS, kNN groups, mini-PointNet",
    hint="centres = points at your FPS indices (from point 0); groups = your knn_group (B, G, K, 3); f = first(groups), "
    "g = f.amax(dim=2) broadcast back over K, h = second(cat([f, g], -1)), tokens = h.amax(dim=2) (B, G, D).",
)
def _check_point_tokenizer(cls) -> str:
    for g_, k, dim, hidden, seed in _TOKENIZER_CASES:
        what = f"PointTokenizer({g_}, {k}, {dim}, {hidden})"
        mine = build_learner_module(cls, what, g_, k, dim, hidden)
        ref = _randomize(PointTokenizerReference(g_, k, dim, hidden), seed, std=0.3)
        load_reference_weights(mine, ref, what)
        g = _gen(seed + 50)
        inputs = [torch.randn(1, 20, 3, generator=g), torch.randn(3, 32, 3, generator=g) * torch.tensor([1.5, 1.0, 0.5]),
                  torch.randn(2, 48, 3, generator=g)]
        first = inputs[0]
        with torch.no_grad():
            out = call(mine, first.clone())
        if isinstance(out, tuple):
            raise CheckFailed(f"{what}(points {tuple(first.shape)}) returned a tuple of {len(out)}; return only the "
                              f"tokens (B, G, D) = {(1, g_, dim)}")
        if isinstance(out, torch.Tensor) and tuple(out.shape) == (1, k, dim):
            raise CheckFailed(f"{what}(points {tuple(first.shape)}) returned shape {tuple(out.shape)}, that is (B, K, D): "
                              f"the last max ran over the GROUPS axis; pool over the K points of each group (dim=2) "
                              f"to get one token per group, (B, G, D) = {(1, g_, dim)}")
        # Points are data: compare the outputs and the gradients of every parameter (not of the points themselves).
        expect_same_forward(mine, ref, inputs, what, forward=lambda module, pts: module(pts.detach()),
                            diagnose=lambda pts: _tokenizer_mistakes(ref, pts))
    return ("with the library's weights loaded, your tokenizer gives the library's tokens and gradients: FPS centres, "
            "kNN groups relative to them, and a mini-PointNet with a max over each group.")


# --------------------------------------------------------------------------------------------------
# ch08.train_binding: the learner's own binding, measured by emergent audio -> 3-D retrieval
# --------------------------------------------------------------------------------------------------
TRAIN_BINDING_TIMES_CHANCE = 4.0  # audio -> 3-D top-1 retrieval of the right (shape, size), in multiples of chance
TRAIN_BINDING_EVAL_SEED = 80_251  # the check's own clips (this seed) and clouds (this seed + 1)
TRAIN_BINDING_EVAL_SIZE = 240  # clips, and as many clouds


@lru_cache(maxsize=1)
def train_binding_eval_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The check's held-out data: waveforms (n, T) 16 kHz and their class (n,), clouds (n, P, 3) and their class (n,).

    A class is a (shape, size) pair, ``shape * 2 + size`` (:func:`~mmllm_course.encoders.binding.shape_size_class`),
    over the three shapes with a solid (circle -> sphere, square -> cube, triangle -> cone) and the two sizes. Clips
    say "<size> <colour> <shape>" (speakers and noise as in the chapter, down to 0 dB SNR); clouds are
    :func:`~mmllm_course.encoders.binding.make_paired_clouds`' (random rotation and stretch, small or large).
    """
    from mmllm_course.data import SpokenConfig, make_spoken_descriptions
    from mmllm_course.encoders.binding import BOUND_SHAPES, make_paired_clouds, shape_size_class

    speech = make_spoken_descriptions(TRAIN_BINDING_EVAL_SIZE, SpokenConfig(shapes=BOUND_SHAPES),
                                      seed=TRAIN_BINDING_EVAL_SEED)
    clip_classes = shape_size_class(speech.labels[:, 0], speech.labels[:, 2])  # labels: (shape, colour, size)
    clouds = make_paired_clouds(TRAIN_BINDING_EVAL_SIZE, seed=TRAIN_BINDING_EVAL_SEED + 1)
    return speech.waveforms, clip_classes, clouds.points, shape_size_class(clouds.shape, clouds.size)


def _binding_model(answer: Any) -> Any:
    """The learner's binding (anything with embed_audio and embed_points), or what their zero-argument function returns."""
    if isinstance(answer, type):
        raise CheckFailed(f"got the class {answer.__name__}; pass your TRAINED binding (the object), not its class")
    if not callable(getattr(answer, "embed_audio", None)):
        try:
            params = inspect.signature(answer).parameters.values()
        except (TypeError, ValueError):
            params = []
        required = [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if required:
            raise CheckFailed(f"got a function that needs arguments ({', '.join(required)}); pass your TRAINED binding "
                              "(the object with embed_audio and embed_points), e.g. check('ch08.train_binding', my_binding)")
        answer = call(answer)  # a function with no arguments that returns the binding
    if answer is None:
        raise CheckFailed("got None instead of a trained binding: did a function forget `return`?")
    if not callable(getattr(answer, "embed_audio", None)) or not callable(getattr(answer, "embed_points", None)):
        raise CheckFailed(f"expected your trained binding, an object with embed_audio(waveforms) and embed_points(points) "
                          f"methods, got {_type_name(answer)}")
    return answer


def _binding_embeddings(fn: Callable, inputs: torch.Tensor, what: str, batch: int = 120) -> torch.Tensor:
    rows = []
    for i in range(0, len(inputs), batch):
        x = inputs[i : i + batch]
        out = call(fn, x.clone())
        name = f"{what}({tuple(x.shape)})"
        if out is None:
            raise CheckFailed(f"{name} returned None: did you forget `return`?")
        if not isinstance(out, torch.Tensor):
            raise CheckFailed(f"{name} returned {_type_name(out)}; expected one tensor of embeddings ({len(x)}, E)")
        if out.dim() != 2 or out.shape[0] != len(x):
            raise CheckFailed(f"{name} returned shape {tuple(out.shape)}; expected ({len(x)}, E), one embedding per row")
        if not out.is_floating_point() or not torch.isfinite(out).all():
            raise CheckFailed(f"{name} returned non-finite or non-float values (dtype {out.dtype})")
        rows.append(F.normalize(out.detach().cpu().double(), dim=-1))
    return torch.cat(rows)


def _within_accuracy(emb: torch.Tensor, labels: torch.Tensor) -> float:
    """Leave-one-out nearest-neighbour accuracy inside one modality: do same-shape items cluster?"""
    sims = emb @ emb.T
    sims.fill_diagonal_(float("-inf"))
    return (labels[sims.argmax(dim=1)] == labels).double().mean().item()


@exercise(
    "ch08.train_binding",
    "Bind audio and 3-D into CLIP's space: emergent audio -> 3-D retrieval",
    hint="train each tower against its FROZEN CLIP anchors with your binding_loss (audio -> its caption's text "
    "embedding, clouds -> their paired pictures' image embeddings), longer or with warmup and a cosine schedule; both "
    "towers must output embeddings of CLIP's width.",
    timeout=90.0,
)
def _check_train_binding(answer) -> str:
    model = _binding_model(answer)
    waves, clip_labels, clouds, cloud_labels = train_binding_eval_data()
    was_training = model.training if isinstance(model, nn.Module) else None
    try:
        if isinstance(model, nn.Module):
            model.eval()
        with torch.no_grad():
            audio = _binding_embeddings(model.embed_audio, waves, "your embed_audio(waveforms")
            points = _binding_embeddings(model.embed_points, clouds, "your embed_points(points")
    finally:
        if was_training is not None:
            model.train(was_training)
    if audio.shape[1] != points.shape[1]:
        raise CheckFailed(f"your audio embeddings have width {audio.shape[1]} but your point embeddings {points.shape[1]}: "
                          "both towers must map into the same space, CLIP's")
    sims = audio @ points.T  # (n clips, n clouds)
    a2p = (cloud_labels[sims.argmax(dim=1)] == clip_labels).double().mean().item()
    p2a = (clip_labels[sims.argmax(dim=0)] == cloud_labels).double().mean().item()
    chance = (clip_labels[:, None] == cloud_labels[None, :]).double().mean().item()  # a random cloud of the right class
    bar = TRAIN_BINDING_TIMES_CHANCE * chance
    detail = (f"emergent audio -> 3-D retrieval: for {a2p:.1%} of {len(clip_labels)} new clips (\"small red circle\", "
              f"...) the nearest of {len(cloud_labels)} new clouds is the right solid at the right size (circle -> "
              f"sphere, square -> cube, triangle -> cone; small or large): {a2p / chance:.1f}x chance ({chance:.1%}); "
              f"3-D -> audio {p2a:.1%}")
    if a2p < bar:
        within_a, within_p = _within_accuracy(audio, clip_labels), _within_accuracy(points, cloud_labels)
        if min(within_a, within_p) >= 0.8:
            why = (f"Each tower separates the classes on its own (nearest clip of the same class {within_a:.0%}, nearest "
                   f"cloud of the same class {within_p:.0%}), so the two are not in the SAME space: train both against "
                   "CLIP's frozen embeddings (the anchors), not against each other or a space of their own")
        else:
            weak = "audio" if within_a < within_p else "point-cloud"
            why = (f"Your {weak} tower separates its classes least (nearest clip of the same class {within_a:.0%}, "
                   f"nearest cloud of the same class {within_p:.0%}): train it longer or check its loss")
        raise CheckFailed(f"{detail}: below the bar of {TRAIN_BINDING_TIMES_CHANCE:g}x chance ({bar:.0%}). {why}.")
    return (f"{detail}: above the bar of {TRAIN_BINDING_TIMES_CHANCE:g}x chance ({bar:.0%}), with no audio-3-D pair in "
            "training. Binding each modality to CLIP bound them to each other.")


# --------------------------------------------------------------------------------------------------
# ch08.hubert_loss (stretch): HuBERT's masked prediction
# --------------------------------------------------------------------------------------------------


def hubert_loss_reference(features: torch.Tensor, codewords: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                          temperature: float = 0.1) -> torch.Tensor:
    """HuBERT's masked-prediction loss: features (B, N, D), codewords (C, D), targets (B, N) cluster ids, mask (B, N).

    logits = cos(feature, codeword) / temperature (B, N, C); the cross-entropy of the masked frames only, averaged over
    them (Hsu et al. 2021, eq. 1 and 3 with alpha = 1).
    """
    logits = F.normalize(features, dim=-1) @ F.normalize(codewords, dim=-1).T / temperature  # (B, N, C)
    return F.cross_entropy(logits[mask], targets[mask])


def _hubert_mistakes(feat, code, targets, mask, t) -> dict[str, float]:
    cos = F.normalize(feat, dim=-1) @ F.normalize(code, dim=-1).T
    logits = cos / t
    per_frame = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none").view(mask.shape)
    return {
        "the cross-entropy over EVERY frame; HuBERT predicts the clusters of the MASKED frames only (logits[mask])":
            per_frame.mean().item(),
        "the cross-entropy over the frames that are NOT masked: the mask marks the frames to predict (True = masked)":
            per_frame[~mask].mean().item(),
        "the masked frames' cross-entropies summed, then divided by ALL B * N frames: average over the masked frames only":
            (per_frame * mask).sum().item() / mask.numel(),
        "logits without the temperature: cos / temperature": F.cross_entropy(cos[mask], targets[mask]).item(),
        "logits from raw dot products: normalise the features and the codewords first (cosine similarity)":
            F.cross_entropy((feat @ code.T / t)[mask], targets[mask]).item(),
        "the cosines multiplied by the temperature; it divides them": F.cross_entropy((cos * t)[mask], targets[mask]).item(),
    }


_HUBERT_CASES = [(2, 6, 8, 5, torch.float32, 0.1), (3, 10, 16, 12, torch.float64, 0.1), (1, 8, 4, 3, torch.float32, 0.5)]


@exercise(
    "ch08.hubert_loss",
    "Stretch: HuBERT's masked-prediction loss",
    hint="logits = cos(features, codewords) / temperature (B, N, C); keep the masked frames, logits[mask] (n, C) and "
    "targets[mask] (n,), and take their mean cross-entropy.",
)
def _check_hubert_loss(fn) -> str:
    for i, (b, n, d, c, dtype, t) in enumerate(_HUBERT_CASES):
        g = _gen(1600 + i)
        feat = (torch.randn(b, n, d, generator=g) * torch.empty(b, n, 1).uniform_(0.5, 3.0, generator=g)).to(dtype)
        code = (torch.randn(c, d, generator=g) * torch.empty(c, 1).uniform_(0.5, 3.0, generator=g)).to(dtype)
        targets = torch.randint(0, c, (b, n), generator=g)
        mask = torch.rand(b, n, generator=g) < 0.5
        mask[:, 0], mask[:, -1] = True, False  # some masked and some kept frames in every clip
        what = (f"hubert_loss(features {tuple(feat.shape)}, codewords {tuple(code.shape)}, targets {tuple(targets.shape)}, "
                f"mask {tuple(mask.shape)} ({int(mask.sum())} masked), temperature={t:g}, {dtype})")
        ref_inputs = [_loss_leaf(feat), _loss_leaf(code)]
        expected = hubert_loss_reference(*ref_inputs, targets, mask, t)
        mistakes = _hubert_mistakes(feat, code, targets, mask, t)
        _expect_distinct(mistakes, expected.item(), what)
        inputs = [_loss_leaf(feat), _loss_leaf(code)]
        got = call(fn, *inputs, targets.clone(), mask.clone(), t)
        _expect_loss(got, expected, mistakes, dtype, what)
        _expect_same_grads(got, expected, inputs, ref_inputs, ["features", "codewords"], what)
    return "your loss and its gradients equal HuBERT's masked prediction: cosine logits / temperature, masked frames only."


# --------------------------------------------------------------------------------------------------
# Questions (only hashes of the answers live here)
# --------------------------------------------------------------------------------------------------
question(
    "ch08.q1",
    "Why audio models read a log-mel spectrogram",
    {
        "a": "It is lossless: the waveform can be rebuilt exactly from it, phase included, so no information is lost.",
        "b": "It spaces frequencies and loudness as hearing does, bins on a mel scale and a log of the power, and "
        "compresses a huge dynamic range to a few units.",
        "c": "It makes the model invariant to speed and pitch, so every speaker's voice gives the same picture.",
        "d": "A transformer cannot read raw numbers, and the spectrogram turns the audio into discrete tokens.",
    },
    [answer_hash("b")],
    explanation="We hear pitch ratios and loudness ratios: the mel scale widens the bands with frequency and the log "
    "turns power ratios into differences, so a whisper and a shout differ by an offset, not by a factor of 10^6. "
    "HuBERT and wav2vec 2.0 show a network can also learn its own filters from raw waveforms, at a price in data.",
    hint="Look at the mel filter bank's widths and at the range of the power before and after the log10.",
)

question(
    "ch08.q2",
    "Why farthest point sampling rather than random sampling for the group centres",
    {
        "a": "FPS is faster: it needs one pass over the points, where random sampling sorts them all.",
        "b": "FPS makes the tokens invariant to rotations of the cloud, which random centres are not.",
        "c": "FPS spreads the centres over the whole shape, so thin or sparse parts (a cone's tip) get a token, where "
        "random centres crowd in the dense regions.",
        "d": "FPS picks the points with the most neighbours, so every group is full.",
    },
    [answer_hash("c")],
    explanation="Random centres follow the point density: dense regions get many overlapping groups and sparse parts "
    "none. FPS maximises the distance to the chosen centres, a near-uniform coverage whatever the density "
    "(at a cost of O(S * P), more than random sampling's).",
    hint="Plot both sets of centres on a cloud with a dense blob and a sparse part, as the chapter did.",
)

question(
    "ch08.q3",
    "What ImageBind or LanguageBind buys by binding every modality to one space",
    {
        "a": "One encoder per modality aligned into a single shared embedding space, anchored on images or on language, "
        "so a downstream LLM needs one alignment for all of them, and modalities never paired in training can be "
        "compared directly.",
        "b": "A single transformer that reads every modality's raw signal with shared weights, so no modality needs its "
        "own encoder.",
        "c": "Paired data for every couple of modalities (audio with 3-D, audio with depth, ...), collected once and "
        "used to train all pairs jointly.",
        "d": "A way to generate any modality from any other, since the shared space is a decoder's latent space.",
    },
    [answer_hash("a")],
    explanation="Each modality is paired only with the anchor (images for ImageBind, text for LanguageBind) with "
    "InfoNCE; because every modality lands in the anchor's space, audio <-> 3-D retrieval emerges without one "
    "audio-3-D pair, and an LLM aligned to that space once can read all of them.",
    hint="What did the chapter pair with what, and which retrieval did it measure without ever training on it?",
)
