"""Figures for chapter 4: where a query bridge's learned queries look, and what each bridge costs the LLM.

Dims: ``B`` images, ``K`` queries (latents), ``H`` heads, ``N`` patches on a ``gh x gw`` grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch

from mmllm_course.viz.attention import show_attention_overlay, wrap_caption
from mmllm_course.viz.patches import _as_chw, _to_numpy_hwc


def query_attention_grids(bridge: torch.nn.Module, features: torch.Tensor, mask: torch.Tensor | None = None,
                          layer: int = -1) -> torch.Tensor:
    """Each query's cross-attention over the patch grid, averaged over heads: (B, K, gh, gw).

    ``bridge``: a query bridge (``QFormerBridge``, ``PerceiverResamplerBridge``) whose
    ``cross_attention_maps(features, mask)`` gives one (B, H, K, N) map per cross-attention layer;
    ``layer`` picks one. ``features`` (B, N, D_in) with N a square number (a patch grid, row-major).
    """
    n = features.shape[1]
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"features must hold a square grid of patches (N = gh * gw), got N={n}")
    was_training = bridge.training
    bridge.eval()
    try:
        with torch.no_grad():
            maps = bridge.cross_attention_maps(features, mask)  # L x (B, H, K, N)
    finally:
        bridge.train(was_training)
    if not maps:
        raise ValueError(f"{type(bridge).__name__} returned no cross-attention maps")
    return maps[layer].mean(dim=1).reshape(features.shape[0], -1, side, side)  # (B, K, gh, gw)


def plot_query_attention(images: torch.Tensor, grids: torch.Tensor, captions: Sequence[str] | None = None,
                         max_images: int = 4, max_queries: int = 8, title: str = "") -> plt.Figure:
    """One row per image: the image, then each query's attention over its patches (brighter = more weight).

    images: (B, C, H, W); grids: (B, K, gh, gw) from :func:`query_attention_grids`.
    """
    b, k = min(len(images), grids.shape[0], max_images), min(grids.shape[1], max_queries)
    if b == 0 or k == 0:
        raise ValueError(f"need at least one image and one query, got grids of shape {tuple(grids.shape)}")
    fig, axes = plt.subplots(b, k + 1, figsize=(1.55 * (k + 1), 1.7 * b + 0.6), squeeze=False)
    for i in range(b):
        axes[i, 0].imshow(_to_numpy_hwc(_as_chw(images[i])))
        axes[i, 0].set_xticks([])
        axes[i, 0].set_yticks([])
        axes[i, 0].set_ylabel(wrap_caption(captions[i], 16) if captions else f"image {i}", fontsize=7)
        for j in range(k):
            show_attention_overlay(images[i], grids[i, j], axes[i, j + 1], title=f"query {j}" if i == 0 else "")
    fig.suptitle(title or "Where each learned query looks (cross-attention over the 4x4 patches, mean of heads)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_token_budget(rows: Sequence[dict], curve: Sequence[dict] | None = None, title: str = "") -> plt.Figure:
    """The LLM's forward time and FLOPs against the number of image tokens K, each bridge written at its K.

    rows: :func:`mmllm_course.bench_bridges.bridge_comparison_table`'s rows (bridges that give the same K
    for the same N share one point); curve: optional :func:`mmllm_course.bench_bridges.lm_time_by_tokens`
    rows drawn as a line underneath.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    by_k: dict[int, dict[str, list[int]]] = {}  # K -> bridge -> the N values that give it
    for r in rows:
        by_k.setdefault(r["K"], {}).setdefault(r["bridge"], []).append(r["N"])
    value = {(r["K"], key): r[key] for r in rows for key in ("lm_ms", "lm_mflops")}
    for ax, key, label in ((axes[0], "lm_ms", "LLM forward time (ms, batch of 8)"),
                           (axes[1], "lm_mflops", "LLM MFLOPs per sequence")):
        if curve:
            ax.plot([c["K"] for c in curve], [c[key] for c in curve], "-", color="lightgrey", zorder=1,
                    label="the LLM at any K")
        ks = sorted(by_k)
        ax.scatter(ks, [value[(k, key)] for k in ks], s=40, zorder=2, color="C0", label="a bridge's K")
        for i, k in enumerate(ks if ax is axes[0] else []):  # labels on the left panel only: the right has the same K
            groups: dict[str, list[str]] = {}  # "N=16/784" -> the bridges that give this K for those N
            for name, n in by_k[k].items():
                groups.setdefault("N=" + "/".join(map(str, sorted(set(n)))), []).append(name)
            text = "; ".join(f"{' + '.join(names)} ({ns})" for ns, names in groups.items())
            ax.annotate(text, (k, value[(k, key)]), fontsize=7, xytext=(6, 5 if i % 2 else -11), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(min(ks) / 1.5, max(ks) * 6)  # room for the labels on the right
        ax.set_xlabel("image tokens K the LLM reads")
        ax.set_ylabel(label)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(title or "The token budget: the LLM pays for K, and K is what the bridge decides")
    fig.tight_layout()
    return fig
