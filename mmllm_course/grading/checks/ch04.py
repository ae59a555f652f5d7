"""Checks for chapter 4, the query bridges (Q-Former, Perceiver Resampler) and token merging.

Tiers, as in every chapter:

- **core** functions: single-head cross-attention of queries over features with a padding mask, one
  Perceiver Resampler layer written from the library layer's parts, pixel shuffle (space-to-depth in
  Idefics3's channel order) and the number of image tokens K each bridge gives the LLM. Each runs next
  to the library's reference on several inputs (float32 and float64 where it computes) and the first
  difference is explained, naming the usual mistake when the output equals what that mistake gives;
- **build**: the learner's ``QFormerBridge`` class gets the library's weights loaded into it and must
  give the library's outputs and gradients, with and without a padding mask, for several N;
- **train**: the learner's trained query bridge is evaluated (never trained here) on held-out images
  the check draws with its own seed, through the frozen chapter-2 encoder;
- a **stretch**: the resampler layer again, with grouped-query attention (fewer key/value heads).

Every named mistake gives, on at least one case, a result different from the right answer (guards
raise ``RuntimeError`` when a case stops telling a named mistake apart). Questions store only hashes.
"""

from __future__ import annotations

import copy
import inspect
import math
from functools import lru_cache, partial
from typing import Any, Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mmllm_course.bridges import QFormerBridge as _RefQFormerBridge
from mmllm_course.bridges import QFormerBridgeConfig
from mmllm_course.bridges import pixel_shuffle as _ref_pixel_shuffle
from mmllm_course.bridges.resampler import PerceiverLayer as _RefPerceiverLayer
from mmllm_course.bridges.resampler import PerceiverResamplerBridgeConfig
from mmllm_course.grading.compare import expect_tensor_or_diagnose, record_distinct_mistakes
from mmllm_course.grading.core import CheckFailed, LearnerError, a_or_an, answer_hash, call, exercise, question
from mmllm_course.grading.modules import build_learner_module, expect_same_forward, load_reference_weights


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _one_thread() -> None:
    """Checks here run tiny tensors: one thread (the grader restores the learner's thread count afterwards).

    Two threads gain nothing on tensors this small and, on a busy 2-core machine, made the resampler
    check take over 10 s instead of 1 s, every parallel region waiting for a thread the OS had put aside.
    """
    torch.set_num_threads(1)


def _randomize(module: nn.Module, seed: int, std: float = 0.3) -> nn.Module:
    """Every parameter drawn afresh (norm weights around 1), so that no mistake hides behind an init of 0 or 1."""
    g = _gen(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g) * std
            if name.endswith("weight") and p.dim() == 1:  # LayerNorm / RMSNorm scales
                noise = noise + 1.0
            p.copy_(noise)
    return module


# --------------------------------------------------------------------------------------------------
# ch04.cross_attention: K queries read N features (one head, a padding mask)
# --------------------------------------------------------------------------------------------------
# (B, K queries, N features, D query width, E feature width, d head width, dtype, padded)
_CROSS_CASES = [
    (1, 3, 5, 8, 8, 8, torch.float32, False),  # E == D: a self-attention slip still has the right shape
    (2, 4, 7, 8, 8, 6, torch.float64, True),
    (3, 2, 9, 12, 16, 8, torch.float32, False),
    (2, 5, 6, 16, 10, 4, torch.float64, True),
]


def cross_attention_reference(queries: torch.Tensor, features: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor,
                              w_v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax((Q W_q)(X W_k)^T / sqrt(d), padded features masked) (X W_v): (B, K, D), (B, N, E) -> (B, K, d)."""
    q, k, v = queries @ w_q, features @ w_k, features @ w_v  # (B, K, d), (B, N, d), (B, N, d)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, K, N)
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
    return scores.softmax(dim=-1) @ v


def _cross_inputs(case: tuple, seed: int):
    b, k, n, d_q, e, d, dtype, padded = case
    g = _gen(seed)
    queries = torch.randn(b, k, d_q, generator=g).to(dtype)
    features = (1.5 * torch.randn(b, n, e, generator=g) + 0.3).to(dtype)
    w_q, w_k, w_v = (torch.randn(rows, d, generator=g).to(dtype) / math.sqrt(rows) * 2.0 for rows in (d_q, e, e))
    mask = None
    if padded:
        lengths = torch.randint(2, n, (b,), generator=g)
        lengths[0] = n  # one image not padded at all
        mask = torch.arange(n)[None] < lengths[:, None]  # (B, N), True = a real feature
    return queries, features, w_q, w_k, w_v, mask


def _cross_mistakes(queries, features, w_q, w_k, w_v, mask) -> dict[str, torch.Tensor]:
    q, k, v = queries @ w_q, features @ w_k, features @ w_v
    d = q.shape[-1]

    def attend(scores: torch.Tensor, use_mask=mask, dim: int = -1, values: torch.Tensor = v) -> torch.Tensor:
        if use_mask is not None:
            scores = scores.masked_fill(~use_mask[:, None, :], float("-inf"))
        return scores.softmax(dim=dim) @ values

    plain = q @ k.transpose(-2, -1)
    out = {
        "attention without the 1/sqrt(d) scale": attend(plain),
        "scores scaled by 1/d instead of 1/sqrt(d)": attend(plain / d),
        "a softmax over the queries (dim=-2): each query's weights must sum to 1 over the N features (dim=-1)":
            attend(plain / math.sqrt(d), dim=-2),
    }
    if queries.shape[-1] == features.shape[-1]:
        kq, vq = queries @ w_k, queries @ w_v  # keys and values from the queries
        out["the queries attending to THEMSELVES only (keys and values computed from the queries): that is "
            "self-attention; in cross-attention the keys and values come from the image features"] = (
            (q @ kq.transpose(-2, -1) / math.sqrt(d)).softmax(dim=-1) @ vq)
    if q.shape[-1] != queries.shape[-1]:
        out["scores scaled by 1/sqrt(D), the queries' width; the scale is 1/sqrt(d), the width of the projected "
            "queries and keys"] = attend(plain / math.sqrt(queries.shape[-1]))
    if mask is not None:
        out["attention with the padding mask ignored: a query must never read a padded feature"] = attend(
            plain / math.sqrt(d), use_mask=None)
        out["the mask used the wrong way round: here True = a real feature to KEEP, so masked_fill(~mask, -inf)"] = attend(
            plain / math.sqrt(d), use_mask=~mask)
        out["the mask applied after the softmax (weights zeroed, the rest no longer sums to 1): mask the scores "
            "before the softmax"] = ((plain / math.sqrt(d)).softmax(dim=-1) * mask[:, None, :]) @ v
    return out


@exercise(
    "ch04.cross_attention",
    "Queries cross-attend to image features",
    hint="project the queries with w_q and the FEATURES with w_k and w_v; scores (B, K, N) = q k^T / sqrt(d); "
    "padded features get -inf before a softmax over the features (dim=-1); then mix the values.",
)
def _check_cross_attention(fn) -> str:
    _one_thread()
    seen: set[str] = set()
    names: set[str] = set()
    for i, case in enumerate(_CROSS_CASES):
        queries, features, w_q, w_k, w_v, mask = _cross_inputs(case, seed=4000 + i)
        what = (f"cross_attention(queries {tuple(queries.shape)}, features {tuple(features.shape)}, w_q {tuple(w_q.shape)}, "
                f"w_k {tuple(w_k.shape)}, w_v {tuple(w_v.shape)}, mask={'None' if mask is None else tuple(mask.shape)}, "
                f"{queries.dtype})")
        expected = cross_attention_reference(queries, features, w_q, w_k, w_v, mask)
        mistakes = _cross_mistakes(queries, features, w_q, w_k, w_v, mask)
        names |= set(mistakes)
        record_distinct_mistakes(expected, mistakes, seen)
        got = call(fn, queries.clone(), features.clone(), w_q.clone(), w_k.clone(), w_v.clone(),
                   None if mask is None else mask.clone())
        if isinstance(got, tuple):
            raise CheckFailed(f"{what} returned a tuple; return only the output tensor (B, K, d)")
        if isinstance(got, torch.Tensor) and got.shape[:2] == (queries.shape[0], features.shape[1]) and got.shape[1] != queries.shape[1]:
            raise CheckFailed(
                f"{what} returned shape {tuple(got.shape)}, one row per FEATURE; expected {tuple(expected.shape)}, one row per "
                "query: the queries ask (q from the queries), the features answer (k and v from the features)")
        expect_tensor_or_diagnose(got, expected, what, mistakes)
    if seen != names:
        raise RuntimeError(f"the cross-attention cases never tell these apart from the right answer: {names - seen}")
    return ("your cross-attention matches the reference: K queries read N features, padding ignored, and the output "
            "has one row per query whatever N is.")


# --------------------------------------------------------------------------------------------------
# ch04.resampler_layer (and ch04.resampler_layer_gqa, the stretch): one Perceiver Resampler layer
# --------------------------------------------------------------------------------------------------
# (D, K latents, heads, kv heads, head width, norm, mlp, [(B, N, padded)], seed)
_RESAMPLER_CASES = [
    (16, 4, 2, 2, 8, "layernorm", "gelu", [(2, 6, False), (3, 9, True)], 4100),
    (24, 3, 4, 4, 6, "rmsnorm", "swiglu", [(1, 5, False), (2, 7, True)], 4101),
]
_GQA_CASES = [
    (16, 4, 4, 2, 4, "rmsnorm", "swiglu", [(2, 6, False), (3, 8, True)], 4200),
    (24, 5, 6, 2, 4, "layernorm", "gelu", [(2, 9, True)], 4201),
]


def _resampler_layer(case: tuple) -> _RefPerceiverLayer:
    d, k, h, kv, dh, norm, mlp, _, seed = case
    config = PerceiverResamplerBridgeConfig(in_dim=d, out_dim=d, num_latents=k, depth=1, num_heads=h, head_dim=dh,
                                            num_kv_heads=kv, mlp_dim=2 * d, mlp=mlp, norm=norm)
    return _randomize(_RefPerceiverLayer(config), seed, std=0.25).eval()


def resampler_layer_reference(layer: _RefPerceiverLayer, latents: torch.Tensor, media: torch.Tensor,
                              mask: torch.Tensor | None = None) -> torch.Tensor:
    """The library's layer: z + attn(norm_latents(z), [norm_media(x); norm_latents(z)]), then z + mlp(norm_mlp(z))."""
    key_mask = None
    if mask is not None:
        key_mask = torch.cat([mask, torch.ones(mask.shape[0], latents.shape[1], dtype=torch.bool)], dim=1)  # (B, N + K)
    return layer(latents, media, key_mask)[0]


def _attend(layer: _RefPerceiverLayer, q_in: torch.Tensor, kv: torch.Tensor, key_mask: torch.Tensor | None,
            heads: int | None = None) -> torch.Tensor:
    """The layer's attention with queries from ``q_in`` (B, K, D) and keys/values from ``kv`` (B, M, D)."""
    a = layer.attn
    b, k, _ = q_in.shape
    m = kv.shape[1]
    if heads == 1:  # everything as one wide head
        q, keys, values = a.q_proj(q_in)[:, None], a.k_proj(kv)[:, None], a.v_proj(kv)[:, None]
        group = a.num_heads // a.num_kv_heads
        keys = keys.view(b, 1, m, a.num_kv_heads, a.head_dim).repeat_interleave(group, dim=3).reshape(b, 1, m, -1)
        values = values.view(b, 1, m, a.num_kv_heads, a.head_dim).repeat_interleave(group, dim=3).reshape(b, 1, m, -1)
    else:
        q = a.q_proj(q_in).view(b, k, a.num_heads, a.head_dim).transpose(1, 2)
        keys = a.k_proj(kv).view(b, m, a.num_kv_heads, a.head_dim).transpose(1, 2)
        values = a.v_proj(kv).view(b, m, a.num_kv_heads, a.head_dim).transpose(1, 2)
        group = a.num_heads // a.num_kv_heads
        keys, values = keys.repeat_interleave(group, dim=1), values.repeat_interleave(group, dim=1)
    scores = q @ keys.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    out = scores.softmax(dim=-1) @ values  # (B, H, K, Dh)
    return a.out_proj(out.transpose(1, 2).reshape(b, k, -1))


def _resampler_variant(layer: _RefPerceiverLayer, z: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None, *,
                       kv: str = "both", norm: str = "pre", attn_res: bool = True, mlp_res: bool = True,
                       use_mask: bool = True, kv_norm: str = "own", heads: int | None = None,
                       gqa: str = "interleave") -> torch.Tensor:
    b, k, _ = z.shape
    ones = torch.ones(b, k, dtype=torch.bool)
    zn = layer.norm_latents(z) if norm == "pre" else z  # post-norm: the raw latents ask
    media = {"latents_norm": layer.norm_latents(x), "none": x}.get(kv_norm, layer.norm_media(x))
    lat_kv = z if kv_norm == "raw_latents" else zn
    m = None if (mask is None or not use_mask) else mask
    if kv == "both":
        keys = torch.cat([media, lat_kv], dim=1)
        key_mask = None if m is None else torch.cat([m, ones], dim=1)
    elif kv == "media":
        keys, key_mask = media, m
    else:  # the latents only
        keys, key_mask = lat_kv, None
    if gqa == "tile" and layer.attn.num_kv_heads != layer.attn.num_heads:
        h = _attend_tiled(layer, zn, keys, key_mask)
    else:
        h = _attend(layer, zn, keys, key_mask, heads=heads)
    if norm == "post":
        z = layer.norm_latents(z + h)
        return layer.norm_mlp(z + layer.mlp(z))
    z = z + h if attn_res else h
    mlp_in = layer.norm_mlp(z) if norm == "pre" else z
    return z + layer.mlp(mlp_in) if mlp_res else layer.mlp(mlp_in)


def _attend_tiled(layer: _RefPerceiverLayer, q_in: torch.Tensor, kv: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    """Grouped-query attention with the key/value heads repeated as a block (.repeat) instead of each in place."""
    a = layer.attn
    b, k, _ = q_in.shape
    m = kv.shape[1]
    q = a.q_proj(q_in).view(b, k, a.num_heads, a.head_dim).transpose(1, 2)
    keys = a.k_proj(kv).view(b, m, a.num_kv_heads, a.head_dim).transpose(1, 2).repeat(1, a.num_heads // a.num_kv_heads, 1, 1)
    values = a.v_proj(kv).view(b, m, a.num_kv_heads, a.head_dim).transpose(1, 2).repeat(1, a.num_heads // a.num_kv_heads, 1, 1)
    scores = q @ keys.transpose(-2, -1) / math.sqrt(a.head_dim)
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    return a.out_proj((scores.softmax(dim=-1) @ values).transpose(1, 2).reshape(b, k, -1))


_RESAMPLER_MISTAKES: dict[str, dict] = {
    "the latents attending to THEMSELVES only (keys and values from the latents): they never read the image; "
    "the keys and values are the concatenation [norm_media(media); norm_latents(latents)]": dict(kv="latents"),
    "the latents attending to the media only: Flamingo's keys and values are [media; latents], the latents "
    "included, so one attention both reads the image and lets the latents exchange information": dict(kv="media"),
    "a layer without the attention's residual connection: latents = latents + attention(...), not latents = attention(...)":
        dict(attn_res=False),
    "a layer without the feed-forward's residual connection: latents = latents + mlp(norm_mlp(latents))": dict(mlp_res=False),
    "a POST-norm layer (the norm after the residual sum, latents = norm(latents + attention(latents, ...))); the "
    "resampler is pre-norm: each norm sits inside its branch and the residual stream is never normalised": dict(norm="post"),
    "keys and values built from the UN-normalised latents: the latents enter the keys and values as "
    "norm_latents(latents), the same normalised tensor that makes the queries": dict(kv_norm="raw_latents"),
    "the media normalised with norm_latents; the media have their own norm, layer.norm_media": dict(kv_norm="latents_norm"),
    "the media not normalised: they go through layer.norm_media before the keys and values": dict(kv_norm="none"),
    "attention with the media's padding mask ignored: no latent may read a padded media token (the latents stay "
    "visible, so the key mask is [mask; ones])": dict(use_mask=False),
    "ONE wide head (the projections used whole, scale 1/sqrt(H * Dh)); split q, k and v into layer.attn.num_heads "
    "heads of layer.attn.head_dim channels each": dict(heads=1),
}
_GQA_MISTAKES: dict[str, dict] = dict(_RESAMPLER_MISTAKES, **{
    "key/value heads repeated as a block (.repeat: kv heads 0, 1, 0, 1, ...); each key/value head serves H / H_kv "
    "CONSECUTIVE query heads, so repeat each in place (repeat_interleave: 0, 0, 1, 1, ...)": dict(gqa="tile"),
})


def _resampler_inputs(d: int, k: int, b: int, n: int, padded: bool, seed: int):
    g = _gen(seed)
    latents = 1.5 * torch.randn(b, k, d, generator=g) + 0.4
    media = 2.0 * torch.randn(b, n, d, generator=g) - 0.3
    mask = None
    if padded:
        lengths = torch.randint(2, n, (b,), generator=g)
        lengths[-1] = n
        mask = torch.arange(n)[None] < lengths[:, None]
    return latents, media, mask


_WHOLE_LAYER = (
    "resampler_layer must compute the layer from its parts (layer.norm_latents, layer.norm_media, "
    "layer.attn.q_proj, k_proj, v_proj, out_proj, layer.norm_mlp, layer.mlp), not call layer(...) or layer.attn(...)"
)


class _Refused:
    """Stands in for ``layer.forward`` and ``layer.attn.forward`` in the learner's copy: the exercise is to write them."""

    def __init__(self) -> None:
        self.called = False

    def __call__(self, *args, **kwargs):
        self.called = True
        raise RuntimeError(_WHOLE_LAYER)


def _check_resampler_cases(fn, cases: list, table: dict[str, dict], exercise_name: str) -> None:
    _one_thread()
    seen: set[str] = set()
    for case in cases:
        layer = _resampler_layer(case)
        d, k, h, kv, dh = case[:5]
        for j, (b, n, padded) in enumerate(case[7]):
            latents, media, mask = _resampler_inputs(d, k, b, n, padded, seed=case[8] * 10 + j)
            what = (f"{exercise_name}(layer (D={d}, {h} heads, {kv} key/value heads of {dh}, {case[5]}, {case[6]} MLP), "
                    f"latents {tuple(latents.shape)}, media {tuple(media.shape)}, mask={'None' if mask is None else tuple(mask.shape)})")
            with torch.no_grad():
                expected = resampler_layer_reference(layer, latents, media, mask)
                mistakes = {text: _resampler_variant(layer, latents, media, mask, **kw) for text, kw in table.items()}
            record_distinct_mistakes(expected, mistakes, seen)
            leaf = latents.clone().requires_grad_(True)
            mine = copy.deepcopy(layer)  # the learner's copy: its whole forward and its attention's are refused
            mine.forward, mine.attn.forward = refused, refused_attn = _Refused(), _Refused()
            try:
                got = call(fn, mine, leaf, media.clone(), None if mask is None else mask.clone())
            except LearnerError:
                if refused.called or refused_attn.called:
                    raise CheckFailed(f"{what}: {_WHOLE_LAYER}") from None
                raise
            if isinstance(got, tuple):
                raise CheckFailed(f"{what} returned a tuple; return only the new latents (B, K, D)")
            expect_tensor_or_diagnose(got, expected, what, mistakes)
            if not got.requires_grad:
                raise CheckFailed(f"{what}: your output is cut off from the graph (torch.no_grad(), .detach()?): "
                                  "the layer could not be trained")
    if seen != set(table):
        raise RuntimeError(f"the resampler cases never tell these apart from the right answer: {set(table) - seen}")


@exercise(
    "ch04.resampler_layer",
    "One Perceiver Resampler layer",
    hint="queries from norm_latents(latents); keys and values from torch.cat([norm_media(media), norm_latents(latents)], "
    "dim=1) with the key mask [mask; ones]; split into heads, attend, merge, out_proj; add to the latents (residual); "
    "then latents + mlp(norm_mlp(latents)).",
)
def _check_resampler_layer(fn) -> str:
    _check_resampler_cases(fn, _RESAMPLER_CASES, _RESAMPLER_MISTAKES, "resampler_layer")
    return ("your layer gives the library's new latents: pre-norm, latents reading [media; latents], residuals, "
            "feed-forward, padding ignored.")


@exercise(
    "ch04.resampler_layer_gqa",
    "Stretch: the resampler layer with grouped-query attention",
    hint="with H query heads and H_kv < H key/value heads, key/value head j serves query heads j*H/H_kv .. "
    "(j+1)*H/H_kv - 1: keys.repeat_interleave(H // H_kv, dim=1) on (B, H_kv, M, Dh).",
)
def _check_resampler_layer_gqa(fn) -> str:
    _check_resampler_cases(fn, _GQA_CASES, _GQA_MISTAKES, "resampler_layer")
    return ("your layer also handles grouped-query attention (Idefics2's resampler: fewer key/value heads, each "
            "shared by consecutive query heads).")


# --------------------------------------------------------------------------------------------------
# ch04.pixel_shuffle: space-to-depth on a grid of tokens, Idefics3's channel order
# --------------------------------------------------------------------------------------------------
_SHUFFLE_CASES = [  # (B, S grid side, D, r, dtype)
    (1, 4, 3, 2, torch.float32),
    (2, 6, 5, 3, torch.float64),
    (2, 8, 4, 2, torch.float32),
    (1, 8, 2, 4, torch.float64),
]


def _shuffle_mistakes(x: torch.Tensor, r: int) -> dict[str, torch.Tensor]:
    b, n, d = x.shape
    h = math.isqrt(n) // r
    pattern = partial(rearrange, x, r1=r, r2=r, h=h)
    return {
        "the merged channels in the order (column offset, row offset, channel); Idefics3's order is (row offset, "
        "column offset, channel): rearrange 'b (h r1 w r2) d -> b (h w) (r1 r2 d)'": pattern("b (h r1 w r2) d -> b (h w) (r2 r1 d)"),
        "the merged channels channel-first, (channel, row offset, column offset), what torch's F.pixel_unshuffle "
        "gives on (B, D, S, S); Idefics3 keeps each token's D channels together: (r1 r2 d)": pattern("b (h r1 w r2) d -> b (h w) (d r1 r2)"),
        "a plain reshape (B, N / r^2, r^2 * D): it merges r^2 CONSECUTIVE tokens of one row, not an r x r block "
        "of the 2-D grid": x.reshape(b, n // (r * r), r * r * d),
        "the merged tokens numbered column by column (the output grid transposed); number them row by row": pattern(
            "b (h r1 w r2) d -> b (w h) (r1 r2 d)"),
    }


@exercise(
    "ch04.pixel_shuffle",
    "Pixel shuffle (space-to-depth) on patch tokens",
    hint="view the N = S*S tokens as a grid (B, S/r, r, S/r, r, D) = (b, h, r1, w, r2, d); move to (b, h, w, r1, r2, d); "
    "flatten to (B, (S/r)^2, r*r*D): rearrange 'b (h r1 w r2) d -> b (h w) (r1 r2 d)'.",
)
def _check_pixel_shuffle(fn) -> str:
    _one_thread()
    seen: set[str] = set()
    names: set[str] = set()
    for i, (b, s, d, r, dtype) in enumerate(_SHUFFLE_CASES):
        x = torch.randn(b, s * s, d, generator=_gen(4300 + i)).to(dtype)
        what = f"pixel_shuffle(x {tuple(x.shape)}, ratio={r}, {dtype})"
        expected = _ref_pixel_shuffle(x, r)
        mistakes = _shuffle_mistakes(x, r)
        names |= set(mistakes)
        record_distinct_mistakes(expected, mistakes, seen)
        got = call(fn, x.clone(), r)
        if isinstance(got, torch.Tensor) and got.dim() == 4:
            raise CheckFailed(f"{what} returned a 4-d tensor {tuple(got.shape)}; expected tokens again, "
                              f"(B, (S/r)^2, r*r*D) = {tuple(expected.shape)}")
        expect_tensor_or_diagnose(got, expected, what, mistakes)
    if seen != names:
        raise RuntimeError(f"the pixel-shuffle cases never tell these apart: {names - seen}")
    return "your pixel shuffle equals the library's and Idefics3's: every r x r block of tokens becomes one token, (r1 r2 d) order."


# --------------------------------------------------------------------------------------------------
# ch04.count_tokens: K for each bridge
# --------------------------------------------------------------------------------------------------
_COUNT_CASES = [  # (bridge, image_size, patch_size, num_queries, ratio)
    ("linear", 32, 8, 32, 2), ("mlp", 224, 14, 32, 2), ("qformer", 224, 14, 32, 2), ("resampler", 224, 16, 64, 2),
    ("token_merge", 224, 16, 32, 2), ("qformer", 32, 8, 8, 2), ("token_merge", 384, 16, 32, 3),
    ("resampler", 32, 8, 8, 2), ("token_merge", 512, 16, 32, 4), ("mlp", 336, 14, 32, 2),
]


def count_tokens_reference(bridge: str, image_size: int, patch_size: int, num_queries: int = 32, ratio: int = 2) -> int:
    """K: image tokens the LLM reads from one square image through ``bridge``."""
    n = (image_size // patch_size) ** 2
    if bridge in ("linear", "mlp"):
        return n
    if bridge in ("qformer", "resampler"):
        return num_queries
    return n // ratio**2


def _count_mistakes(bridge: str, image_size: int, patch_size: int, num_queries: int, ratio: int) -> dict[str, int]:
    side = image_size // patch_size
    n = side * side
    out = {f"N = image_size / patch_size = {side}; the patches form a {side} x {side} grid, so N = {n}": (
        side if bridge in ("linear", "mlp") else side // ratio**2 if bridge == "token_merge" else -1)}
    if bridge == "token_merge":
        out[f"N / r = {n // ratio}; pixel shuffle merges an r x r BLOCK of tokens into one, so K = N / r^2 = {n // ratio**2}"] = n // ratio
        out[f"N = {n}: token merging does shrink the sequence, by r^2"] = n
    if bridge in ("qformer", "resampler"):
        out[f"N = {n}: a query bridge gives one token per learned query ({num_queries}), whatever N is"] = n
        out[f"N + num_queries = {n + num_queries}: the LLM reads only the queries' outputs, not the image features"] = n + num_queries
    if bridge in ("linear", "mlp"):
        out[f"N + 1 = {n + 1}: a [CLS] token counted; the bridges here map the patch tokens only"] = n + 1
        out[f"{num_queries}: a {bridge} bridge maps every token on its own, so K = N = {n}"] = num_queries
    return out


@exercise(
    "ch04.count_tokens",
    "How many image tokens K each bridge gives the LLM",
    hint="N = (image_size / patch_size)^2 patch tokens; linear and MLP keep all N; the Q-Former and the resampler "
    "give one token per query or latent; token merging gives N / r^2.",
)
def _check_count_tokens(fn) -> str:
    for bridge, size, patch, queries, ratio in _COUNT_CASES:
        what = f"count_tokens({bridge!r}, image_size={size}, patch_size={patch}, num_queries={queries}, ratio={ratio})"
        expected = count_tokens_reference(bridge, size, patch, queries, ratio)
        got = call(fn, bridge, size, patch, num_queries=queries, ratio=ratio)
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if isinstance(got, float) and got.is_integer():
            got = int(got)
        if got is None:
            raise CheckFailed(f"{what} returned None: did you forget `return`?")
        if not isinstance(got, int) or isinstance(got, bool):
            raise CheckFailed(f"{what} returned {a_or_an(type(got).__name__)} ({got!r:.40}); expected an int")
        if got != expected:
            for explanation, wrong in _count_mistakes(bridge, size, patch, queries, ratio).items():
                if got == wrong and wrong != expected:
                    raise CheckFailed(f"{what} returned {got}; expected {expected}. That is {explanation}.")
            raise CheckFailed(f"{what} returned {got}; expected {expected}")
    return "K for every bridge: N for linear and MLP, the number of queries for the Q-Former and resampler, N / r^2 for token merging."


# --------------------------------------------------------------------------------------------------
# ch04.qformer_bridge (build): the learner's QFormerBridge with the library's weights
# --------------------------------------------------------------------------------------------------
_QFORMER_CASES = [  # (in_dim, out_dim, dim, num_queries, depth, num_heads, mlp_dim, seed)
    (24, 40, 32, 6, 2, 4, 64, 4400),
    (16, 24, 16, 4, 1, 2, 48, 4401),
]


def _qformer_ref(case: tuple) -> _RefQFormerBridge:
    in_dim, out_dim, dim, k, depth, heads, mlp_dim, seed = case
    config = QFormerBridgeConfig(in_dim=in_dim, out_dim=out_dim, dim=dim, num_queries=k, depth=depth, num_heads=heads,
                                 mlp_dim=mlp_dim, cross_attention_frequency=1)
    return _randomize(_RefQFormerBridge(config), seed, std=0.3).eval()


def _qformer_inputs(in_dim: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    g = _gen(seed)
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[1, 5:] = False
    mask[2, 2:] = False
    return [
        (1.5 * torch.randn(2, 5, in_dim, generator=g) + 0.2, None),
        (1.5 * torch.randn(3, 9, in_dim, generator=g) - 0.3, mask),
        (torch.randn(1, 16, in_dim, generator=g), None),
    ]


def _qformer_variant(ref: _RefQFormerBridge, features: torch.Tensor, mask: torch.Tensor | None, *, cross: bool = True,
                     norm: str = "post", self_res: bool = True, cross_res: bool = True, mlp_res: bool = True,
                     ln_queries: bool = True, use_mask: bool = True, order: str = "self_first") -> torch.Tensor:
    """The library's Q-Former with one thing done differently (for naming a learner's mistake)."""
    b = features.shape[0]
    q = ref.queries
    q = (ref.ln_queries(q) if ln_queries else q).expand(b, -1, -1)
    m = mask if use_mask else None

    def sub(x, f, ln, res):
        if norm == "pre":
            return x + f(ln(x)) if res else f(ln(x))
        return ln(x + f(x)) if res else ln(f(x))

    for layer in ref.layers:
        steps = [("self", lambda x, L=layer: L.self_attn(x)[0], layer.ln_self, self_res)]
        if cross and layer.cross_attn is not None:
            steps.append(("cross", lambda x, L=layer: L.cross_attn(x, features, key_padding_mask=m)[0], layer.ln_cross, cross_res))
        if order == "cross_first":
            steps.reverse()
        for _, f, ln, res in steps:
            q = sub(q, f, ln, res)
        q = sub(q, layer.mlp, layer.ln_mlp, mlp_res)
    return ref.proj(q)


_QFORMER_MISTAKES: dict[str, dict] = {
    "the queries attending to THEMSELVES only (no cross-attention to the image features): every layer has "
    "q = ln_cross(q + cross_attn(q, features, mask)) after its self-attention": dict(cross=False),
    "a PRE-norm Q-Former (x + f(ln(x))); BLIP-2's Q-Former is BERT-shaped, POST-norm: q = ln(q + f(q)) after every "
    "sub-layer": dict(norm="pre"),
    "a layer without the self-attention's residual: q = ln_self(q + self_attn(q))": dict(self_res=False),
    "a layer without the cross-attention's residual: q = ln_cross(q + cross_attn(q, features))": dict(cross_res=False),
    "a layer without the feed-forward's residual: q = ln_mlp(q + mlp(q))": dict(mlp_res=False),
    "the queries used without ln_queries: BLIP-2 normalises the learned queries once, before the first layer": dict(
        ln_queries=False),
    "cross-attention with the padding mask ignored: pass it as key_padding_mask (True = a real feature)": dict(use_mask=False),
    "cross-attention BEFORE self-attention in each layer; the order is self-attention, cross-attention, feed-forward":
        dict(order="cross_first"),
}


def _qformer_diagnose(ref: _RefQFormerBridge) -> Callable[..., dict[str, torch.Tensor]]:
    def diagnose(features, mask=None):
        return {text: _qformer_variant(ref, features, mask, **kw) for text, kw in _QFORMER_MISTAKES.items()}

    return diagnose


@exercise(
    "ch04.qformer_bridge",
    "Build a Q-Former bridge that takes the library's weights",
    hint="queries (1, K, D) -> ln_queries -> expand to the batch; per layer: q = ln_self(q + self_attn(q)); "
    "q = ln_cross(q + cross_attn(q, features, key_padding_mask=mask)); q = ln_mlp(q + mlp(q)) (post-norm); "
    "finally proj to out_dim.",
)
def _check_qformer_bridge(cls) -> str:
    _one_thread()
    seen: set[str] = set()
    for case in _QFORMER_CASES:
        ref = _qformer_ref(case)
        ctor = case[:7]
        what = "QFormerBridge(" + ", ".join(f"{k}={v}" for k, v in zip(
            ("in_dim", "out_dim", "dim", "num_queries", "depth", "num_heads", "mlp_dim"), ctor)) + ")"
        mine = build_learner_module(cls, what, *ctor)
        load_reference_weights(mine, ref, what)
        inputs = _qformer_inputs(case[0], case[7])
        diagnose = _qformer_diagnose(ref)
        with torch.no_grad():
            for features, mask in inputs:
                record_distinct_mistakes(ref(features, mask), diagnose(features, mask), seen)
        features, mask = inputs[0]
        with torch.no_grad():
            got = call(mine, features.clone(), mask)
        if isinstance(got, tuple):
            raise CheckFailed(f"{what}(features {tuple(features.shape)}) returned a tuple; return only the tokens (B, K, out_dim)")
        expect_same_forward(mine, ref, inputs, what, forward=lambda module, x, m: module(x, m), diagnose=diagnose)
    if seen != set(_QFORMER_MISTAKES):
        raise RuntimeError(f"the Q-Former cases never tell these apart: {set(_QFORMER_MISTAKES) - seen}")
    return ("with the library's weights loaded, your Q-Former gives the library's K tokens and gradients for every N, "
            "with and without padding: BLIP-2's bridge, written by you.")


# --------------------------------------------------------------------------------------------------
# ch04.train_bridge (train tier): the learner's trained query bridge on held-out images
# --------------------------------------------------------------------------------------------------
TRAIN_BRIDGE_THRESHOLD = 0.90  # held-out accuracy on the chapter's alignment task (see train_bridge_eval_data)
TRAIN_BRIDGE_EVAL_SEED = 40_404
TRAIN_BRIDGE_EVAL_SIZE = 2_000


@lru_cache(maxsize=1)
def train_bridge_eval_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The check's held-out data: frozen chapter-2 patch features (n, 16, 64), labels (n,) and targets (C, D_out).

    The targets are those of the exercise's task (``make_alignment_task(pooled=False, seed=0)``); the
    images are new ones, drawn with the check's own seed.
    """
    from mmllm_course.bench_bridges import chapter4_eval_features

    return chapter4_eval_features(TRAIN_BRIDGE_EVAL_SIZE, seed=TRAIN_BRIDGE_EVAL_SEED)


@exercise(
    "ch04.train_bridge",
    "Train a query bridge on frozen patch features",
    hint="train longer or with a higher learning rate, check your loss (cross-entropy over the cosines with the "
    "targets, times a scale such as 10-20) and that the output is mean-pooled over the K tokens before the cosine.",
    timeout=30.0,
)
def _check_train_bridge(answer) -> str:
    _one_thread()
    if isinstance(answer, type):
        raise CheckFailed(f"got the class {answer.__name__}; pass your TRAINED bridge (the object), not its class")
    if callable(answer) and not isinstance(answer, nn.Module):
        try:
            params = inspect.signature(answer).parameters.values()
        except (TypeError, ValueError):
            params = []
        required = [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if required:
            raise CheckFailed(f"got a function that needs arguments ({', '.join(required)}); pass your TRAINED bridge "
                              "(what your training function returned), e.g. check('ch04.train_bridge', my_bridge)")
        answer = call(answer)  # a function of no arguments that returns the trained bridge
    if answer is None:
        raise CheckFailed("got None instead of a trained bridge: did your training function forget `return bridge`?")
    if not isinstance(answer, nn.Module):
        raise CheckFailed(f"expected your trained bridge (an nn.Module), got {a_or_an(type(answer).__name__)}")
    features, labels, targets = train_bridge_eval_data()
    device = next((p.device for p in answer.parameters()), torch.device("cpu"))
    was_training = answer.training
    outs, k = [], 0
    try:
        answer.eval()
        with torch.no_grad():
            for start in range(0, len(features), 500):
                x = features[start : start + 500]
                out = call(answer, x.to(device))
                what = f"your bridge on features {tuple(x.shape)}"
                if isinstance(out, tuple) or not isinstance(out, torch.Tensor):
                    raise CheckFailed(f"{what} returned {a_or_an(type(out).__name__)}; expected tokens (B, K, {targets.shape[1]})")
                if out.dim() != 3 or out.shape[0] != len(x) or out.shape[2] != targets.shape[1]:
                    raise CheckFailed(f"{what} returned shape {tuple(out.shape)}; expected (B, K, {targets.shape[1]}): "
                                      f"out_dim must be the targets' width, {targets.shape[1]}")
                if not out.is_floating_point() or not torch.isfinite(out).all():
                    raise CheckFailed(f"{what} returned non-finite or non-float values")
                k = out.shape[1]
                outs.append(out.detach().cpu().double().mean(dim=1))  # (B, D): mean over the K tokens
    finally:
        answer.train(was_training)
    pooled = F.normalize(torch.cat(outs), dim=-1)
    predictions = (pooled @ F.normalize(targets.double(), dim=-1).T).argmax(dim=-1)
    accuracy = (predictions == labels).double().mean().item()
    detail = (f"held-out accuracy {accuracy:.1%} on {len(labels)} new images ({targets.shape[0]} classes, chance "
              f"{1 / targets.shape[0]:.1%}; your bridge gives K = {k} tokens from N = {features.shape[1]} patches)")
    if accuracy < TRAIN_BRIDGE_THRESHOLD:
        raise CheckFailed(f"{detail}: below the {TRAIN_BRIDGE_THRESHOLD:.0%} bar.")
    return f"{detail}: above the {TRAIN_BRIDGE_THRESHOLD:.0%} bar. Your queries learned to read the image."


# --------------------------------------------------------------------------------------------------
# Questions (only hashes of the answers live here)
# --------------------------------------------------------------------------------------------------
question(
    "ch04.q1",
    "Why a Q-Former gives K tokens whatever N is",
    {
        "a": "It pools the N patch features into K groups of N / K neighbouring patches and averages each group into a token.",
        "b": "Each output token is one learned query; the N features only set how many keys and values the queries read.",
        "c": "It crops or pads every image to the same size before the encoder, so N is always the same number anyway.",
        "d": "Its self-attention among the features drops all but the K features with the highest attention weight.",
    },
    [answer_hash("b")],
    explanation="Cross-attention returns one row per query: softmax(Q K^T) V is (K, N) x (N, d) = (K, d). N is the "
    "length of the keys and values, summed over; the number of rows comes from the learned queries.",
    hint="Write the shapes of Q, K^T and V in one cross-attention and see which one sets the number of output rows.",
)

question(
    "ch04.q2",
    "What the Q-Former's queries attend to",
    {
        "a": "In cross-attention the queries come from the image features and the keys and values from the learned query tokens.",
        "b": "Only to each other: the image features enter by being added to the learned query tokens before the first layer.",
        "c": "To each other in self-attention, and to the image features in cross-attention, whose keys and values come from the features.",
        "d": "To the text tokens of the LLM's prompt, which is how the bridge knows which part of the image to describe.",
    },
    [answer_hash("c")],
    explanation="Every layer: self-attention among the K queries, then (every cross_attention_frequency layers) "
    "cross-attention with queries from the query tokens and keys/values from the N image features, then a feed-forward.",
    hint="Look at QFormerLayer.forward: which tensor goes in as x and which as context?",
)

question(
    "ch04.q3",
    "Token merging (pixel shuffle) versus learned queries",
    {
        "a": "Pixel shuffle keeps every feature (r*r neighbours side by side) but K still grows with N; queries fix K and must learn what to keep.",
        "b": "Pixel shuffle averages each r x r block of features, so it loses detail, while learned queries keep every feature exactly.",
        "c": "Both give a fixed K whatever the image size; pixel shuffle is only cheaper because it has no parameters at all.",
        "d": "Learned queries keep the 2-D layout of the patches, while pixel shuffle turns the grid into an unordered set of tokens.",
    },
    [answer_hash("a")],
    explanation="Space-to-depth concatenates the r^2 neighbours (nothing averaged, nothing dropped): K = N / r^2, "
    "still proportional to N. K learned queries give K tokens for any N, and what they keep is what training taught them.",
    hint="Compute K for 784 patches with r = 2, and for a Q-Former with 32 queries; then ask what each does to the features.",
)

question(
    "ch04.q4",
    "Why the Perceiver Resampler's keys and values include the latents",
    {
        "a": "So that the latents are masked out: a latent must never read another latent, only the media.",
        "b": "Because the media features are too few to attend to: without the latents there would be fewer keys than queries.",
        "c": "So that the output has N + K tokens, the media and the latents, which the LLM reads together.",
        "d": "So that one attention both reads the media and lets the latents exchange information, with no separate self-attention.",
    },
    [answer_hash("d")],
    explanation="Flamingo's resampler attends from the latents to [media; latents]: the same softmax spreads each latent's "
    "weight over the image and over the other latents. The Q-Former uses two attentions for these two jobs.",
    hint="Compare one resampler layer with one Q-Former layer: how many attentions does each have?",
)
