"""The five-part map of a multimodal LLM, drawn with matplotlib: the figure every chapter hangs on."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

# (title, examples, chapters that build it); the order is the order data flows.
MAP_PARTS: list[tuple[str, str, str]] = [
    ("1. Modality encoder", "ViT, CLIP ViT\nWhisper, HuBERT\nPoint-BERT", "ch 1, 2, 8"),
    ("2. Input projector", "linear (MiniGPT-4)\nMLP (LLaVA-1.5)\nQ-Former, Resampler", "ch 3, 4"),
    ("3. LLM backbone", "A: unified embedding\nB: cross-attention\n(usually frozen)", "ch 5, 6, 7"),
    ("4. Output projector", "signal tokens [IMG0]..\nsmall transformer\nor VQ tokens", "ch 9, 10"),
    ("5. Modality generator", "Stable Diffusion\nAudioLDM, Zeroscope\n3-D diffusion", "ch 9, 11"),
]
_COLORS = ["#8ecae6", "#ffb703", "#a7c957", "#f4a261", "#cdb4db"]


def draw_course_map(ax: plt.Axes | None = None, highlight: int | None = None) -> plt.Axes:
    """Draw input -> five parts -> output as boxes and arrows; ``highlight`` (1-5) emphasises one part."""
    if ax is None:
        _, ax = plt.subplots(figsize=(13, 3.6))
    ax.set_xlim(0, 15.2)
    ax.set_ylim(-0.4, 4)
    ax.axis("off")
    ax.text(0.55, 2.0, "image\naudio\n3-D", ha="center", va="center", fontsize=10)
    # Text needs no encoder or projector: the tokenizer and the LLM's embedding table feed the backbone.
    ax.text(0.55, 0.0, "text", ha="center", va="center", fontsize=10)
    backbone_x = 1.3 + 2 * 2.6 + 1.15
    ax.add_patch(FancyArrowPatch((0.85, 0.0), (backbone_x, 0.0), arrowstyle="-", mutation_scale=14, color="dimgray"))
    ax.add_patch(FancyArrowPatch((backbone_x, 0.0), (backbone_x, 0.6), arrowstyle="-|>", mutation_scale=14, color="dimgray"))
    ax.text(3.9, 0.12, "tokenizer + embedding table", ha="center", va="bottom", fontsize=8, color="dimgray")
    ax.text(14.65, 2.0, "text\nimage\naudio\n3-D", ha="center", va="center", fontsize=10)
    x = 1.3
    for i, ((title, examples, chapters), color) in enumerate(zip(MAP_PARTS, _COLORS), start=1):
        bold = highlight is None or highlight == i
        box = FancyBboxPatch((x, 0.7), 2.3, 2.6, boxstyle="round,pad=0.08", fc=color, ec="black",
                             lw=2.0 if highlight == i else 1.0, alpha=1.0 if bold else 0.35)
        ax.add_patch(box)
        ax.text(x + 1.15, 2.95, title, ha="center", va="center", fontsize=10, weight="bold")
        ax.text(x + 1.15, 1.85, examples, ha="center", va="center", fontsize=8.5)
        ax.text(x + 1.15, 0.95, chapters, ha="center", va="center", fontsize=8, style="italic")
        start = x - 0.45 if i > 1 else 0.95
        ax.add_patch(FancyArrowPatch((start, 2.0), (x - 0.05, 2.0), arrowstyle="-|>", mutation_scale=14))
        x += 2.6
    ax.add_patch(FancyArrowPatch((x - 0.25, 2.0), (14.2, 2.0), arrowstyle="-|>", mutation_scale=14))
    ax.text(1.3 + 2 * 2.6 + 1.15, 3.7, "trained in ch 7: align the projectors, then instruction-tune",
            ha="center", fontsize=9, color="dimgray")
    ax.set_title("The five parts of a multimodal LLM (MM-LLM survey)", fontsize=12)
    return ax
