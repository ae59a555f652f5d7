"""Held-out metrics of generated shapes-world text: exact captions and each attribute on its own."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mmllm_course._checks import check_str_sequence, check_tensor
from mmllm_course.data import ATTRIBUTES, COLORS, POSITIONS, SHAPES, SIZES, caption_for

_NAMES = dict(zip(ATTRIBUTES, (SHAPES, COLORS, SIZES, POSITIONS)))


def _said(text: str, names: tuple[str, ...]) -> list[str]:
    """The names of one attribute that ``text`` mentions (as whole words)."""
    padded = f" {text.lower().replace('.', ' ')} "
    return [n for n in names if f" {n} " in padded]


def caption_metrics(predictions: Sequence[str], objects: torch.Tensor) -> dict[str, float]:
    """Fractions of ``predictions`` that are the exact caption of ``objects`` (n, 4), and that name each attribute right.

    ``objects`` holds (shape, color, size, position) labels per image (``ShapesBatch.objects[:, 0]``
    for one-shape images). An attribute counts as right when the text names the true value and no
    other value of that attribute. Returns ``{"exact", "shape", "color", "size", "position"}``.
    """
    predictions = check_str_sequence(predictions, "predictions", allow_empty=False)
    check_tensor(objects, "objects", "(n, 4)", ndim=2, kind="int")
    if objects.shape != (len(predictions), len(ATTRIBUTES)):
        raise ValueError(f"objects must be (n, 4) = ({len(predictions)}, 4) for {len(predictions)} predictions, got {tuple(objects.shape)}")
    limits = torch.tensor([len(_NAMES[a]) for a in ATTRIBUTES])
    if objects.numel() and (bool((objects < 0).any()) or bool((objects >= limits).any())):
        raise ValueError(f"objects labels must lie in [0, {limits.tolist()}) per column, got {objects.min().item()}..{objects.max().item()}")
    rows = objects.tolist()
    out = {"exact": sum(p.strip() == caption_for(*o) for p, o in zip(predictions, rows)) / len(rows)}
    for j, attr in enumerate(ATTRIBUTES):
        names = _NAMES[attr]
        out[attr] = sum(_said(p, names) == [names[o[j]]] for p, o in zip(predictions, rows)) / len(rows)
    return out


