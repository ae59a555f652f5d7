"""Figures for chapter 2: attention weights, attention maps over patches, CLIP similarities and retrieval.

Dims: ``B`` images, ``L`` layers, ``H`` heads, ``N`` patches (a ``gh x gw`` grid), ``T`` texts.
All figures are matplotlib; :func:`attention_map_explorer` is a core-ipywidgets widget
(``interactive`` + ``Dropdown``/``IntSlider``, ipywidgets >= 7.7) that draws its first view when it
is built and never blocks, so it also runs headless.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from mmllm_course.viz.patches import _as_chw, _to_numpy_hwc


def wrap_caption(caption: str, width: int = 20) -> str:
    """A caption for a small panel title: the leading "a " dropped, wrapped onto lines of at most ``width`` characters.

    The shapes world's captions ("a large red cross in the bottom left") are wider than a 2-inch
    panel at any readable font size; two short lines keep neighbouring titles apart.
    """
    return textwrap.fill(caption.removeprefix("a "), width=width)


def plot_captioned_images(
    images: torch.Tensor, captions: Sequence[str], title: str = "", max_images: int = 6, panel: float = 2.0
) -> plt.Figure:
    """A row of images (B, C, H, W), each titled with its (wrapped) caption: what a training pair looks like."""
    b = min(len(images), len(captions), max_images)
    if b == 0:
        raise ValueError(f"need at least one image and one caption, got {len(images)} images and {len(captions)} captions")
    fig, axes = plt.subplots(1, b, figsize=(panel * b, panel + 0.9), squeeze=False, constrained_layout=True)
    for j, ax in enumerate(axes[0]):
        ax.imshow(_to_numpy_hwc(_as_chw(images[j])))
        ax.set_title(wrap_caption(captions[j]), fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return fig


def plot_attention_weights(
    weights: torch.Tensor,
    query_labels: Sequence[str] | None = None,
    key_labels: Sequence[str] | None = None,
    ax: plt.Axes | None = None,
    title: str = "attention weights",
    annotate: bool = True,
) -> plt.Axes:
    """Heatmap of one attention matrix (N queries, M keys); each row sums to 1."""
    w = weights.detach().float().cpu()
    if w.dim() != 2:
        raise ValueError(f"weights must be (N, M) for one head, got shape {tuple(w.shape)}")
    n, m = w.shape
    if ax is None:
        _, ax = plt.subplots(figsize=(1.0 + 0.55 * m, 0.8 + 0.5 * n))
    im = ax.imshow(w.numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(m), key_labels if key_labels is not None else range(m), rotation=45 if key_labels else 0, ha="right" if key_labels else "center")
    ax.set_yticks(range(n), query_labels if query_labels is not None else range(n))
    ax.set_xlabel("key (looked at)")
    ax.set_ylabel("query (looking)")
    ax.set_title(title)
    if annotate and n * m <= 100:
        for i in range(n):
            for j in range(m):
                v = w[i, j].item()
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="black" if v > 0.6 else "white")
    plt.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="weight")
    return ax


@torch.no_grad()
def pooled_attention_maps(vit: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """How much the pooled image vector reads each patch: (L, B, H, gh, gw), from a ViT (or a CLIP's ``.vision``).

    With ``pooling="cls"`` it is the [CLS] row of every layer's weights (B, H, 1+N, 1+N), without the
    [CLS]->[CLS] entry. With ``pooling="mean"`` the pooled vector averages the patch tokens, so it is
    the attention the patch queries pay to each patch, averaged over the queries. Reshaped to the patch
    grid (row-major, as patches are numbered).
    """
    vit = getattr(vit, "vision", vit)
    was_training = vit.training
    vit.eval()
    with torch.no_grad():
        out = vit(images.to(next(vit.parameters()).device), output_attentions=True)
    vit.train(was_training)
    cfg = vit.config
    gh = cfg.image_size // cfg.patch_size
    if cfg.pooling == "cls":
        rows = torch.stack([a[:, :, 0, 1:] for a in out.attentions])  # (L, B, H, N)
    else:
        rows = torch.stack([a[:, :, 1:, 1:].mean(dim=2) for a in out.attentions])  # (L, B, H, N)
    return rows.reshape(*rows.shape[:3], gh, -1)


def show_attention_overlay(
    image: torch.Tensor, attention_map: torch.Tensor, ax: plt.Axes | None = None, title: str = "", alpha: float = 0.55
) -> plt.Axes:
    """The image with a (gh, gw) attention map stretched over it (nearest, so each patch is one block)."""
    img = _to_numpy_hwc(_as_chw(image))
    h, w = img.shape[:2]
    if ax is None:
        _, ax = plt.subplots(figsize=(3.2, 3.2))
    ax.imshow(img, extent=(0, w, h, 0))
    ax.imshow(attention_map.detach().float().cpu().numpy(), cmap="magma", alpha=alpha, extent=(0, w, h, 0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def plot_cls_attention_grid(
    images: torch.Tensor, maps: torch.Tensor, layer: int = -1, captions: Sequence[str] | None = None, max_images: int = 6
) -> plt.Figure:
    """One row per head (plus their mean), one column per image: attention of the pooled vector (``pooled_attention_maps``) in ``layer`` over the patches.

    maps: (L, B, H, gh, gw) from :func:`pooled_attention_maps`.
    """
    b, heads = min(maps.shape[1], max_images), maps.shape[2]
    layer_idx = layer % maps.shape[0]
    fig, axes = plt.subplots(heads + 2, b, figsize=(1.9 * b, 1.9 * (heads + 2)), squeeze=False)
    for j in range(b):
        img = _to_numpy_hwc(_as_chw(images[j]))
        axes[0, j].imshow(img)
        axes[0, j].set_xticks([])
        axes[0, j].set_yticks([])
        axes[0, j].set_title(wrap_caption(captions[j]) if captions else f"image {j}", fontsize=8)
        for h in range(heads):
            show_attention_overlay(images[j], maps[layer_idx, j, h], axes[h + 1, j])
        show_attention_overlay(images[j], maps[layer_idx, j].mean(0), axes[heads + 1, j])
    for h in range(heads):
        axes[h + 1, 0].set_ylabel(f"head {h}")
    axes[0, 0].set_ylabel("image")
    axes[heads + 1, 0].set_ylabel("mean of heads")
    # Attention weights are a heuristic view of what the pooled vector reads, not a measurement of what it uses.
    fig.suptitle(f"Attention paid to each patch, layer {layer_idx} (brighter = more weight)")
    fig.tight_layout()
    return fig


def attention_map_explorer(vit: torch.nn.Module, images: torch.Tensor, captions: Sequence[str] | None = None):
    """A widget: pick the layer, the head (or their mean) and the image; see which patches the pooled vector reads.

    Core ipywidgets only (``Dropdown``, ``IntSlider``, ``interactive``); returns the widget, whose
    first view is drawn on construction (display it in a notebook to explore).
    """
    import ipywidgets as widgets
    from IPython.display import display

    maps = pooled_attention_maps(vit, images)  # (L, B, H, gh, gw)
    n_layers, n_images, n_heads = maps.shape[:3]
    layer = widgets.Dropdown(options=list(range(n_layers)), value=n_layers - 1, description="layer")
    head = widgets.Dropdown(options=[("mean", -1)] + [(str(h), h) for h in range(n_heads)], value=-1, description="head")
    image = widgets.IntSlider(value=0, min=0, max=n_images - 1, description="image")

    def view(layer: int, head: int, image: int) -> None:
        m = maps[layer, image].mean(0) if head < 0 else maps[layer, image, head]
        fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.3))
        axes[0].imshow(_to_numpy_hwc(_as_chw(images[image])))
        axes[0].set_title(captions[image] if captions else f"image {image}", fontsize=9)
        axes[0].set_xticks([])
        axes[0].set_yticks([])
        show_attention_overlay(images[image], m, axes[1], title=f"pooled attention, layer {layer}, head {'mean' if head < 0 else head}")
        fig.tight_layout()
        display(fig)
        plt.close(fig)

    return widgets.interactive(view, layer=layer, head=head, image=image)


def plot_similarity_matrix(
    similarity: torch.Tensor,
    captions: Sequence[str],
    images: torch.Tensor | None = None,
    ax: plt.Axes | None = None,
    title: str = "cosine similarity: images x captions",
) -> plt.Figure:
    """Heatmap of a (I, T) image-caption similarity matrix; the true pairs sit on the diagonal.

    With ``images``, the images are drawn as thumbnails along the left edge.
    """
    s = similarity.detach().float().cpu()
    n_img, n_txt = s.shape
    if len(captions) != n_txt:
        raise ValueError(f"similarity has {n_txt} captions (columns) but {len(captions)} caption strings were given")
    thumbs = images is not None
    fig, axes = plt.subplots(
        1, 2 if thumbs else 1, figsize=(2.0 + 0.55 * n_txt, 1.8 + 0.5 * n_img),
        gridspec_kw={"width_ratios": [1, n_txt]} if thumbs else None, squeeze=False,
    )
    ax = axes[0, -1]
    # aspect="auto" on both panels: they share one gridspec row, so the thumbnails stay level with their rows.
    im = ax.imshow(s.numpy(), cmap="viridis", aspect="auto")
    ax.set_xticks(range(n_txt), [c.removeprefix("a ") for c in captions], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n_img), [f"image {i}" for i in range(n_img)], fontsize=8)
    ax.set_xlabel("caption")
    ax.set_title(title)
    best = s.argmax(dim=1)
    for i in range(n_img):
        for j in range(n_txt):
            ax.text(j, i, f"{s[i, j]:.2f}", ha="center", va="center", fontsize=6.5,
                    color="black" if s[i, j] > s.max() * 0.7 else "white", fontweight="bold" if j == best[i] else "normal")
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02, label="cosine similarity")
    if thumbs:
        strip = np.concatenate([_to_numpy_hwc(_as_chw(images[i])) for i in range(n_img)], axis=0)
        axes[0, 0].imshow(strip, extent=(0, 1, n_img - 0.5, -0.5), aspect="auto")
        axes[0, 0].set_xticks([])
        axes[0, 0].set_yticks([])
        axes[0, 0].set_title("image")
    fig.tight_layout()
    return fig


def plot_retrieval_examples(
    queries: Sequence[str], images: torch.Tensor, similarity: torch.Tensor, targets: Sequence[int] | None = None, k: int = 5
) -> plt.Figure:
    """Text->image retrieval: one row per caption, its ``k`` best images, the right one framed green.

    similarity: (Q, I) captions x gallery images; ``targets`` (default: query i <-> image i).
    """
    s = similarity.detach().float().cpu()
    q = len(queries)
    targets = list(range(q)) if targets is None else list(targets)
    top = s.topk(k, dim=1)
    fig, axes = plt.subplots(q, k, figsize=(1.6 * k + 2.6, 1.7 * q), squeeze=False)
    for r in range(q):
        for c in range(k):
            idx = int(top.indices[r, c])
            ax = axes[r, c]
            ax.imshow(_to_numpy_hwc(_as_chw(images[idx])))
            ax.set_xticks([])
            ax.set_yticks([])
            right = idx == targets[r]
            for spine in ax.spines.values():
                spine.set_edgecolor("limegreen" if right else "lightgrey")
                spine.set_linewidth(4 if right else 1)
            ax.set_title(f"#{c + 1}  {top.values[r, c]:.2f}", fontsize=8)
        axes[r, 0].set_ylabel(queries[r].removeprefix("a "), rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(f"Text -> image retrieval: top {k} of {s.shape[1]} held-out images (green = the caption's own image)")
    fig.tight_layout()
    return fig


def plot_learning_curve(losses: Sequence[float], lrs: Sequence[float] | None = None, smooth: int = 20, title: str = "CLIP training") -> plt.Figure:
    """Loss per step (raw and a running mean), with the learning rate on a second axis."""
    loss = np.asarray(losses, dtype=float)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.plot(loss, alpha=0.3, color="C0", label="loss (per step)")
    if len(loss) >= smooth > 1:
        running = np.convolve(loss, np.ones(smooth) / smooth, mode="valid")
        ax.plot(np.arange(smooth - 1, len(loss)), running, color="C0", label=f"running mean of {smooth}")
    ax.set_xlabel("step")
    ax.set_ylabel("contrastive loss")
    ax.set_title(title)
    if lrs is not None:
        ax2 = ax.twinx()
        ax2.plot(np.asarray(lrs), color="C1", lw=1, label="learning rate")
        ax2.set_ylabel("learning rate", color="C1")
        ax2.tick_params(axis="y", labelcolor="C1")
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig
