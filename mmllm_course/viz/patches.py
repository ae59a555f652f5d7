"""Figures and a widget for chapter 1: an image cut into patches, patches as a sequence, position similarity.

Images are torch tensors ``(C, H, W)`` with values in ``[0, 1]`` (what ``load_sample_image`` gives).
Every function draws with the library's :func:`patchify`, so the pictures show what the model sees.
"""

from __future__ import annotations

import math
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from mmllm_course.encoders.patches import patchify


def _as_chw(image: torch.Tensor) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        raise ValueError(f"expected an image tensor (C, H, W), got {getattr(image, 'shape', type(image).__name__)}")
    if not image.is_floating_point():
        image = image.float() / 255.0
    return image.detach().cpu()


def _to_numpy_hwc(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) -> (H, W, C) numpy in [0, 1]; one channel becomes (H, W) for a grey colormap."""
    arr = image.clamp(0, 1).permute(1, 2, 0).numpy()
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def show_patch_grid(
    image: torch.Tensor,
    patch_size: int,
    ax: plt.Axes | None = None,
    numbers: bool = True,
    title: str | None = None,
) -> plt.Axes:
    """Show ``image`` (C, H, W) with its ``patch_size`` grid drawn and, optionally, each patch's index.

    Patch ``k`` sits at row ``k // (W/p)`` and column ``k % (W/p)``: the order :func:`patchify` uses.
    """
    image = _as_chw(image)
    _, h, w = image.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"image size {h}x{w} is not divisible by patch_size={patch_size}")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5 * h / w))
    ax.imshow(_to_numpy_hwc(image), cmap="gray", vmin=0, vmax=1, extent=(0, w, h, 0), interpolation="nearest")
    gh, gw = h // patch_size, w // patch_size
    for i in range(1, gh):
        ax.axhline(i * patch_size, color="white", lw=1.2)
    for j in range(1, gw):
        ax.axvline(j * patch_size, color="white", lw=1.2)
    if numbers and gh * gw <= 256:
        fontsize = max(5, min(11, int(120 / max(gh, gw))))
        for k in range(gh * gw):
            r, c = divmod(k, gw)
            ax.text(
                (c + 0.5) * patch_size, (r + 0.5) * patch_size, str(k), ha="center", va="center", fontsize=fontsize,
                color="white", weight="bold", bbox=dict(boxstyle="round,pad=0.15", fc="black", alpha=0.45, lw=0),
            )
    ax.set_xticks(np.arange(0, w + 1, patch_size) if gw <= 16 else [0, w])
    ax.set_yticks(np.arange(0, h + 1, patch_size) if gh <= 16 else [0, h])
    ax.tick_params(labelsize=7)
    ax.set_xlabel("width (pixels)")
    ax.set_ylabel("height (pixels)")
    ax.set_title(title or f"{h}x{w} image, patch size {patch_size}: {gh}x{gw} = {gh * gw} patches")
    return ax


def show_patch_sequence(
    image: torch.Tensor,
    patch_size: int,
    ax: plt.Axes | None = None,
    per_row: int | None = None,
    max_patches: int = 64,
    title: str | None = None,
) -> plt.Axes:
    """Lay the patches of ``image`` out as the sequence the transformer reads, each with its index.

    Uses :func:`patchify` (B, N, p*p*C) and reshapes every flattened patch back to (p, p, C) to draw it,
    so the order on screen is the order of the tokens. Shows the first ``max_patches`` patches.
    """
    image = _as_chw(image)
    c, h, w = image.shape
    p = patch_size
    patches = patchify(image[None], p)[0]  # (N, p*p*C), rows in (p1 p2 c) order
    n = patches.shape[0]
    shown = min(n, max_patches)
    per_row = per_row or min(shown, 16)
    rows = math.ceil(shown / per_row)
    gap = max(1, p // 4)
    label = max(6, p // 2)  # room under each patch for its index
    canvas = np.ones((rows * (p + gap + label), per_row * (p + gap), c if c == 3 else 1))
    for k in range(shown):
        r, col = divmod(k, per_row)
        tile = patches[k].reshape(p, p, c).clamp(0, 1).numpy()
        y, x = r * (p + gap + label), col * (p + gap)
        canvas[y : y + p, x : x + p] = tile if c == 3 else tile[..., :1]
    if ax is None:
        _, ax = plt.subplots(figsize=(min(14, 0.75 * per_row + 1), 0.85 * rows + 0.6), constrained_layout=True)
    ax.imshow(canvas[..., 0] if canvas.shape[-1] == 1 else canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    fontsize = 7 if per_row > 12 else 8
    for k in range(shown):
        r, col = divmod(k, per_row)
        ax.text(col * (p + gap) + p / 2 - 0.5, r * (p + gap + label) + p + label * 0.45, str(k), ha="center", va="center",
                fontsize=fontsize)
    ax.set_axis_off()
    more = f" (first {shown} of {n})" if shown < n else ""
    ax.set_title(title or f"the same image as a sequence of {n} patch tokens{more}, read left to right, top to bottom")
    return ax


def position_similarity(position_embedding: torch.Tensor, index: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """Cosine similarity of patch ``index``'s position vector to every patch's, on the grid.

    position_embedding: (N, D) with N = grid_h * grid_w (no [CLS] row) -> (grid_h, grid_w).
    """
    pe = position_embedding.detach().float().cpu()
    if pe.dim() == 3 and pe.shape[0] == 1:
        pe = pe[0]
    if pe.dim() != 2 or pe.shape[0] != grid_h * grid_w:
        raise ValueError(f"expected position embeddings (N, D) with N = {grid_h}*{grid_w} = {grid_h * grid_w}, got {tuple(pe.shape)}")
    if not 0 <= index < pe.shape[0]:
        raise ValueError(f"index must be in [0, {pe.shape[0]}), got {index}")
    return F.cosine_similarity(pe[index : index + 1], pe, dim=-1).reshape(grid_h, grid_w)


def plot_position_similarity(
    position_embedding: torch.Tensor,
    grid_h: int,
    grid_w: int,
    indices: Sequence[int] | None = None,
    axes: Sequence[plt.Axes] | None = None,
    name: str = "position embedding",
) -> list[plt.Axes]:
    """Heatmaps of :func:`position_similarity` for a few patches (default: a corner, the centre, the last).

    Each panel is the grid of patches coloured by how similar their position vectors are to the one
    marked with a star. Returns the axes.
    """
    n = grid_h * grid_w
    if indices is None:
        indices = sorted({0, (grid_h // 2) * grid_w + grid_w // 2, n - 1})
    if axes is None:
        fig, axes = plt.subplots(1, len(indices), figsize=(3.1 * len(indices) + 0.8, 3.2), constrained_layout=True)
        axes = np.atleast_1d(axes)
    sims = [position_similarity(position_embedding, k, grid_h, grid_w) for k in indices]
    # One colour scale for all panels, from the least similar pair shown up to 1 (a patch with itself).
    low = min(float(s.min()) for s in sims)
    low = min(low, 1.0 - 1e-3)
    im = None
    for ax, k, sim in zip(axes, indices, sims):
        im = ax.imshow(sim.numpy(), cmap="viridis", vmin=low, vmax=1)
        r, c = divmod(k, grid_w)
        ax.plot(c, r, marker="*", color="red", markersize=12, markeredgecolor="white")
        ax.set_title(f"patch {k} (row {r}, col {c})", fontsize=10)
        ax.set_xlabel("patch column")
        ax.set_ylabel("patch row")
    if im is not None:
        axes[0].figure.colorbar(im, ax=list(axes), shrink=0.85, label="cosine similarity")
        axes[0].figure.suptitle(f"{name}: similarity of one patch's position vector to all others")
    return list(axes)


def plot_token_count(image_size: int = 224, patch_sizes: Sequence[int] = (8, 14, 16, 32), ax: plt.Axes | None = None) -> plt.Axes:
    """Tokens N = (S/p)^2 and attention pairs N^2 against the patch size p, on a log scale."""
    ps = [p for p in patch_sizes if image_size % p == 0]
    if not ps:
        raise ValueError(f"none of the patch sizes {list(patch_sizes)} divides image_size={image_size}")
    ns = np.array([(image_size // p) ** 2 for p in ps], dtype=float)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6), constrained_layout=True)
    ax.plot(ps, ns, "o-", label="tokens N = (S/p)²")
    ax.plot(ps, ns**2, "s--", label="attention scores N²")
    for p, n in zip(ps, ns):
        ax.annotate(f"{int(n)}", (p, n), textcoords="offset points", xytext=(4, 6), fontsize=8)
    ax.set_yscale("log")
    ax.set_xticks(ps)
    ax.set_xlabel("patch size p (pixels)")
    ax.set_ylabel("count (log scale)")
    ax.set_title(f"A {image_size}x{image_size} image: smaller patches, many more tokens")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return ax


def _divisors(n: int, low: int = 2) -> list[int]:
    return [d for d in range(low, n + 1) if n % d == 0]


def patch_size_explorer(image: torch.Tensor, patch_sizes: Sequence[int] | None = None, value: int | None = None):
    """An ipywidgets explorer: pick a patch size, see the grid, the token count and the attention cost.

    Built from core widgets (``SelectionSlider``, ``Checkbox``, ``interactive``) that ipywidgets >= 7.7 has,
    so it renders in JupyterLab and Colab. Returns the widget; building it draws the first view and
    never blocks, so it also works headless (tests, CI). ``patch_sizes`` defaults to every size that
    divides both sides of the image.
    """
    import ipywidgets as widgets
    from IPython.display import display

    image = _as_chw(image)
    _, h, w = image.shape
    if patch_sizes is None:  # every size that tiles the image into at most 1024 patches
        patch_sizes = [p for p in _divisors(math.gcd(h, w)) if (h // p) * (w // p) <= 1024]
    sizes = list(patch_sizes)
    bad = [p for p in sizes if h % p or w % p]
    if bad or not sizes:
        raise ValueError(f"patch sizes must divide the image size {h}x{w}; these do not: {bad or sizes}")
    if value is None:
        value = min(sizes, key=lambda p: abs((h // p) * (w // p) - 64))  # about an 8x8 grid to start
    slider = widgets.SelectionSlider(options=sizes, value=value, description="patch size", continuous_update=False)
    numbers = widgets.Checkbox(value=True, description="show indices")

    def view(patch_size: int, show_indices: bool) -> None:
        gh, gw = h // patch_size, w // patch_size
        n = gh * gw
        fig, ax = plt.subplots(figsize=(5.2, 5.2 * h / w))
        show_patch_grid(image, patch_size, ax=ax, numbers=show_indices)
        ax.set_title(f"p = {patch_size}: {gh}x{gw} = {n} tokens, {n * n:,} attention scores per head")
        display(fig)
        plt.close(fig)

    explorer = widgets.interactive(view, patch_size=slider, show_indices=numbers)
    return explorer
