"""A pipeline's flow as data: stages with tensor shapes, checked for chaining and drawn as a figure.

The capstone (chapter 11) describes its "audio in, 3D object out" pipeline as a list of
:class:`FlowStage` s, one per step a tensor goes through, each placed on the five-part map of a
multimodal LLM (:data:`PARTS`, the MM-LLM survey's modality encoder, input projector, LLM backbone,
output projector and modality generator). :func:`check_flow` holds the list to two rules a real
pipeline obeys, and :func:`draw_flow` draws it:

- parts never go backwards along the map (an encoder stage after the LLM is a wiring mistake);
- each stage consumes what the previous one produced: ``stages[i].input_shape ==
  stages[i - 1].output_shape`` (the chaining rule), with symbolic dims such as ``"B"`` compared by name.

Shapes are tuples of positive ints and symbolic names (``("B", 16000)``, ``("B", "K", 64)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from mmllm_course._checks import InputTypeError, describe

PARTS: tuple[str, ...] = ("encoder", "input bridge", "LLM backbone", "output projector", "generator")
# The waveform before the encoder and the object after the generator sit at the map's two ends.
ENDS: tuple[str, str] = ("input", "output")
_RANK = {"input": 0, **{p: i + 1 for i, p in enumerate(PARTS)}, "output": len(PARTS) + 1}
# The course map's colours (viz.course_map), grey for the two ends.
PART_COLORS: dict[str, str] = {
    "input": "#e9ecef", "encoder": "#8ecae6", "input bridge": "#ffb703", "LLM backbone": "#a7c957",
    "output projector": "#f4a261", "generator": "#cdb4db", "output": "#e9ecef",
}

def _as_shape(value: object, what: str) -> tuple[int | str, ...]:
    """``value`` as a shape tuple: a tuple or list of positive ints and non-empty str names."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
        raise InputTypeError(f"{what} must be a tuple of ints and dim names such as ('B', 16000), got {describe(value)}")
    dims: list[int | str] = []
    for d in value:
        if isinstance(d, str):
            if not d.strip():
                raise ValueError(f"{what} holds an empty dim name in {tuple(value)!r}")
            dims.append(d.strip())
        elif isinstance(d, (int, np.integer)) and not isinstance(d, bool):
            if d < 1:
                raise ValueError(f"{what} must hold positive sizes, got {int(d)} in {tuple(value)!r}")
            dims.append(int(d))
        else:
            raise InputTypeError(f"{what} must hold ints and dim names (str), got {describe(d)} in {tuple(value)!r}")
    if not dims:
        raise ValueError(f"{what} must have at least one dim, got ()")
    return tuple(dims)


@dataclass(frozen=True)
class FlowStage:
    """One step of a pipeline: its name, its place on the five-part map and its tensor shapes.

    ``part``: one of :data:`PARTS`, or ``"input"`` / ``"output"`` for the raw signal and the result.
    ``input_shape`` / ``output_shape``: e.g. ``("B", 16000)``; lists are stored as tuples.
    """

    name: str
    part: str
    input_shape: tuple[int | str, ...]
    output_shape: tuple[int | str, ...]
    note: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InputTypeError(f"FlowStage.name must be a non-empty str, got {describe(self.name)}")
        label = f"stage {self.name!r}"
        if not isinstance(self.part, str):
            raise InputTypeError(f"{label}: part must be a str, one of {PARTS + ENDS}, got {describe(self.part)}")
        if not isinstance(self.note, str):
            raise InputTypeError(f"{label}: note must be a str, got {describe(self.note)}")
        object.__setattr__(self, "input_shape", _as_shape(self.input_shape, f"{label}: input_shape"))
        object.__setattr__(self, "output_shape", _as_shape(self.output_shape, f"{label}: output_shape"))


def format_shape(shape: Sequence[int | str]) -> str:
    """``("B", 16000)`` -> ``"(B, 16000)"``."""
    return "(" + ", ".join(str(d) for d in shape) + ")"


def check_flow(stages: Sequence[FlowStage]) -> list[FlowStage]:
    """``stages`` as a list when they form a valid flow; a ``ValueError`` naming the first bad stage otherwise.

    Valid: at least one stage, each a :class:`FlowStage` whose ``part`` is in :data:`PARTS` (or
    ``"input"`` / ``"output"``), parts in map order (several stages may share a part), and each
    stage's ``input_shape`` equal to the previous stage's ``output_shape``.
    """
    if isinstance(stages, (str, bytes, FlowStage)) or not isinstance(stages, Sequence):
        raise InputTypeError(f"stages must be a list of FlowStage, got {describe(stages)}")
    stages = list(stages)
    if not stages:
        raise ValueError("stages must hold at least one FlowStage, got an empty list")
    for i, s in enumerate(stages):
        if not isinstance(s, FlowStage):
            raise InputTypeError(f"stages[{i}] must be a FlowStage, got {describe(s)}")
        if s.part not in _RANK:
            raise ValueError(f"stage {i} ({s.name!r}): unknown part {s.part!r}; expected one of {PARTS + ENDS}")
        if i == 0:
            continue
        prev = stages[i - 1]
        if _RANK[s.part] < _RANK[prev.part]:
            raise ValueError(f"stage {i} ({s.name!r}): part {s.part!r} comes after {prev.part!r} (stage {i - 1}, "
                             f"{prev.name!r}), but data flows {' -> '.join(('input',) + PARTS + ('output',))}")
        if s.input_shape != prev.output_shape:
            raise ValueError(f"stage {i} ({s.name!r}): input_shape {format_shape(s.input_shape)} does not match "
                             f"the output_shape {format_shape(prev.output_shape)} of stage {i - 1} ({prev.name!r})")
    return stages


def draw_flow(stages: Sequence[FlowStage], ax: plt.Axes | None = None, title: str = "") -> plt.Figure:
    """Boxes left to right, coloured by part, each arrow labelled with the tensor shape it carries.

    ``stages`` are checked with :func:`check_flow` first; ``ax``: draw into it (else a new figure).
    Returns the figure.
    """
    stages = check_flow(stages)
    n = len(stages)
    box_w, gap = 2.0, 1.25
    width = n * box_w + (n + 1) * gap
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6.0, 0.8 * width), 2.4))
    ax.set_xlim(0, width)
    ax.set_ylim(0.0, 2.5)
    ax.axis("off")
    y0, h = 0.45, 1.5
    mid = y0 + h / 2
    x = gap
    for i, s in enumerate(stages):
        ax.add_patch(FancyBboxPatch((x, y0), box_w, h, boxstyle="round,pad=0.06", fc=PART_COLORS[s.part], ec="black", lw=1.0))
        ax.text(x + box_w / 2, mid + 0.22, _wrap(s.name, 16), ha="center", va="center", fontsize=8.5, weight="bold")
        ax.text(x + box_w / 2, y0 + 0.2, s.part, ha="center", va="center", fontsize=7.5, style="italic", color="dimgray")
        if s.note:
            ax.text(x + box_w / 2, y0 + h + 0.25, _wrap(s.note, 22), ha="center", va="bottom", fontsize=7, color="dimgray")
        # The arrow into this box carries its input: the previous stage's output (the chaining rule).
        ax.add_patch(FancyArrowPatch((x - gap + 0.08, mid), (x - 0.1, mid), arrowstyle="-|>", mutation_scale=12))
        ax.text(x - gap / 2, mid - 0.18, format_shape(s.input_shape), ha="center", va="top", fontsize=7)
        x += box_w + gap
    last = stages[-1]
    ax.add_patch(FancyArrowPatch((x - gap + 0.08, mid), (x - 0.1, mid), arrowstyle="-|>", mutation_scale=12))
    ax.text(x - gap / 2, mid - 0.18, format_shape(last.output_shape), ha="center", va="top", fontsize=7)
    ax.set_title(title or "The flow, stage by stage (colour = part of the five-part map; shapes on the arrows)", fontsize=10)
    return ax.figure


def _wrap(text: str, width: int) -> str:
    """Break ``text`` at spaces into lines of about ``width`` characters (box labels)."""
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    return "\n".join(lines)
