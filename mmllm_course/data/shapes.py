"""The shapes world: a synthetic, offline dataset of coloured shapes with captions and questions.

Every chapter trains on it, because it exists without downloads and a tiny model learns it on a
CPU in about a minute. Each image shows one shape (or two, in different quadrants) on a grey,
noisy background. The vocabulary is fixed and small, so tokenizers and classifiers build on it:

    SHAPES    = ("circle", "square", "triangle", "star", "cross")
    COLORS    = ("red", "green", "blue", "yellow")
    SIZES     = ("small", "large")
    POSITIONS = ("top left", "top right", "bottom left", "bottom right")   # the 4 quadrants

A label is an index into one of these tuples. An object is (shape, color, size, position), the
column order of ``ATTRIBUTES``. Its caption reads "a small red circle in the top left"; a
two-shape scene joins the objects, in reading order of their quadrants, with " and ". Questions
are asked only when the answer is unambiguous in that image, e.g. "What colour is the circle?" ->
"red", "What shape is in the top left?" -> "circle", "How big is the red shape?" -> "small",
"Where is the circle?" -> "top left", "What colour is the shape in the top left?" -> "red".
Every answer is one of ``ANSWERS``.

Dims: ``n`` images, ``K`` shapes per image (``num_shapes``, 1 or 2), ``H = W = image_size``.
Generation is vectorised numpy and deterministic in ``seed``: build a dataset once, not per batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mmllm_course._checks import InputTypeError, check_int, check_number, describe

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow")
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right")
ATTRIBUTES: tuple[str, ...] = ("shape", "color", "size", "position")  # column order of ShapesBatch.objects
ANSWERS: tuple[str, ...] = COLORS + SHAPES + SIZES + POSITIONS  # every possible QA answer

# Base RGB in [0, 1]; each object gets a little uniform jitter per channel (config.color_jitter).
COLOR_RGB: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.12),
    "green": (0.15, 0.70, 0.20),
    "blue": (0.15, 0.25, 0.85),
    "yellow": (0.90, 0.85, 0.15),
}
# Half-extent of a shape as a fraction of half a quadrant (a large shape spans ~84% of its quadrant).
SIZE_SCALE: dict[str, float] = {"small": 0.62, "large": 0.92}
MIN_IMAGE_SIZE = 16


def _check_names(name: str, values: Sequence[str], allowed: Sequence[str]) -> tuple[str, ...]:
    values = (values,) if isinstance(values, str) else tuple(values)
    unknown = [v for v in values if v not in allowed]
    if not values or unknown:
        raise ValueError(f"{name} must be a non-empty subset of {allowed}, got {values!r} (unknown: {unknown})")
    return values


@dataclass
class ShapesWorldConfig:
    """How the shapes world is drawn; the defaults give the 32x32, one-shape world of chapter 1.

    ``shapes``/``colors``/``sizes``/``positions`` restrict what is sampled (e.g. to hold out
    combinations); labels always index the full module tuples.
    """

    image_size: int = 32
    num_shapes: int = 1  # 1 or 2; two shapes sit in two different quadrants
    noise: float = 0.04  # std of the Gaussian pixel noise over the whole image
    background: float = 0.5  # grey level of the background
    background_jitter: float = 0.05  # per-image uniform jitter of the grey level
    color_jitter: float = 0.06  # per-object uniform jitter of each RGB channel
    size_jitter: float = 0.08  # per-object relative jitter of the shape's extent
    position_jitter: float = 1.0  # fraction of the free room in the quadrant the centre may move (0 = centred)
    shapes: tuple[str, ...] = SHAPES
    colors: tuple[str, ...] = COLORS
    sizes: tuple[str, ...] = SIZES
    positions: tuple[str, ...] = POSITIONS

    def __post_init__(self) -> None:
        check_int(self.image_size, "image_size")
        check_int(self.num_shapes, "num_shapes")
        for name in ("noise", "background", "background_jitter", "color_jitter", "size_jitter", "position_jitter"):
            check_number(getattr(self, name), name)
        if self.image_size < MIN_IMAGE_SIZE or self.image_size % 2:
            raise ValueError(f"image_size must be an even integer >= {MIN_IMAGE_SIZE}, got {self.image_size!r}")
        self.shapes = _check_names("shapes", self.shapes, SHAPES)
        self.colors = _check_names("colors", self.colors, COLORS)
        self.sizes = _check_names("sizes", self.sizes, SIZES)
        self.positions = _check_names("positions", self.positions, POSITIONS)
        if self.num_shapes not in (1, 2):
            raise ValueError(f"num_shapes must be 1 or 2, got {self.num_shapes!r}")
        if self.num_shapes > len(self.positions):
            raise ValueError(f"num_shapes={self.num_shapes} needs as many positions, got {len(self.positions)}: {self.positions}")
        for name in ("noise", "background", "background_jitter", "color_jitter", "size_jitter", "position_jitter"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


# ---------------------------------------------------------------------------------------------
# Text: captions, class names, questions
# ---------------------------------------------------------------------------------------------


def _name(value: int | str, names: tuple[str, ...], what: str) -> str:
    if isinstance(value, str):
        if value not in names:
            raise ValueError(f"{what} must be one of {names}, got {value!r}")
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = value.item()  # a 0-d label tensor, e.g. batch.shape[i]
    index = check_int(value, f"{what} index", minimum=None)
    if not 0 <= index < len(names):
        raise ValueError(f"{what} index must be in [0, {len(names)}), got {index}")
    return names[index]


def _labels(value: torch.Tensor | int, names: tuple[str, ...], what: str) -> torch.Tensor | int:
    """An int label or an integer label tensor, checked to lie in [0, len(names))."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise InputTypeError(f"{what} labels must be integers, got a tensor of dtype {value.dtype}")
        if value.numel() and (int(value.min()) < 0 or int(value.max()) >= len(names)):
            raise ValueError(
                f"{what} labels must lie in [0, {len(names)}) ({names}), got values in [{int(value.min())}, {int(value.max())}]"
            )
        return value
    index = check_int(value, what, minimum=None)
    if not 0 <= index < len(names):
        raise ValueError(f"{what} must be an index in [0, {len(names)}) ({names}), got {index}")
    return index


_SIZES_OF_LABELS = (len(SHAPES), len(COLORS), len(SIZES), len(POSITIONS))


def _check_broadcast(**labels: torch.Tensor | int) -> None:
    """Label tensors given together must broadcast to one shape (a ValueError naming the shapes otherwise)."""
    shapes = {k: tuple(v.shape) for k, v in labels.items() if isinstance(v, torch.Tensor)}
    try:
        torch.broadcast_shapes(*shapes.values())
    except RuntimeError as err:
        raise ValueError(f"label tensors must have the same shape (or broadcast), got {shapes}") from err


def _check_objects(objects: Sequence[Sequence[int]]) -> list[tuple[int, int, int, int]]:
    """Objects (K, 4) in ATTRIBUTES order as a list of int tuples, every label checked to be in range."""
    if isinstance(objects, torch.Tensor):
        objects = objects.tolist()
    elif isinstance(objects, np.ndarray):
        objects = objects.tolist()
    if isinstance(objects, (str, bytes)) or not isinstance(objects, Sequence):
        raise InputTypeError(f"objects must be a sequence of (shape, color, size, position) labels, got {describe(objects)}")
    out = []
    for obj in objects:
        if isinstance(obj, (torch.Tensor, np.ndarray)):
            obj = obj.tolist()
        if type(obj) in (list, tuple) and len(obj) == 4 and all(type(v) is int and 0 <= v < n for v, n in zip(obj, _SIZES_OF_LABELS)):
            out.append(tuple(obj))  # the common case (generate_shapes): plain ints, all in range
            continue
        if isinstance(obj, (str, bytes)) or not isinstance(obj, Sequence) or len(obj) != len(ATTRIBUTES):
            raise ValueError(f"each object must be {len(ATTRIBUTES)} labels {ATTRIBUTES}, got {obj!r}")
        labels = zip(obj, (SHAPES, COLORS, SIZES, POSITIONS), ATTRIBUTES)
        out.append(tuple(names.index(_name(v, names, what)) for v, names, what in labels))  # names -> indices too
    return out


def caption_for(shape: int | str, color: int | str, size: int | str, position: int | str) -> str:
    """Caption of one object from labels or names: ``caption_for(0, 0, 0, 0) == "a small red circle in the top left"``."""
    s, c = _name(shape, SHAPES, "shape"), _name(color, COLORS, "color")
    z, p = _name(size, SIZES, "size"), _name(position, POSITIONS, "position")
    return f"a {z} {c} {s} in the {p}"


def scene_caption(objects: Sequence[Sequence[int]]) -> str:
    """Caption of a scene: objects (K, 4) in ATTRIBUTES order, joined with " and "."""
    return " and ".join(caption_for(*obj) for obj in _check_objects(objects))


def questions_for(objects: Sequence[Sequence[int]]) -> list[tuple[str, str]]:
    """Question/answer pairs for a scene, objects (K, 4); only questions with one right answer.

    Labels outside their range (a shape index of -1 or 9...) raise a ``ValueError``.
    """
    objects = _check_objects(objects)
    shape_counts = {s: sum(o[0] == s for o in objects) for s, *_ in objects}
    color_counts = {c: sum(o[1] == c for o in objects) for _, c, *_ in objects}
    qa: list[tuple[str, str]] = []
    for s, c, z, p in objects:
        shape, color, size, position = SHAPES[s], COLORS[c], SIZES[z], POSITIONS[p]
        if shape_counts[s] == 1:
            qa.append((f"What colour is the {shape}?", color))
        qa.append((f"What shape is in the {position}?", shape))
        if color_counts[c] == 1:
            qa.append((f"How big is the {color} shape?", size))
        if shape_counts[s] == 1:
            qa.append((f"Where is the {shape}?", position))
        qa.append((f"What colour is the shape in the {position}?", color))
    return qa


def _check_template(template: str) -> None:
    """A template must be a str with one ``{}`` to fill (else every class would get the same text)."""
    if not isinstance(template, str):
        raise InputTypeError(f"template must be a str with one {{}} placeholder, got {describe(template)}")
    try:
        filled = template.format("\x00a"), template.format("\x00b")
    except (IndexError, KeyError, ValueError) as err:
        raise ValueError(f"template must hold exactly one {{}} placeholder, got {template!r} ({type(err).__name__}: {err})") from err
    if filled[0] == filled[1]:
        raise ValueError(f"template must hold a {{}} placeholder for the class name, got {template!r}")


def color_shape_classes(template: str = "{}") -> list[str]:
    """The 20 colour x shape class names ("red circle", ...), index ``color * len(SHAPES) + shape``.

    ``template`` wraps each name, e.g. ``"a photo of a {}"`` for zero-shot prompts.
    """
    _check_template(template)
    return [template.format(f"{c} {s}") for c in COLORS for s in SHAPES]


def color_shape_index(*, color: torch.Tensor | int, shape: torch.Tensor | int) -> torch.Tensor | int:
    """Class index into :func:`color_shape_classes` (works on ints and on label tensors (n,)).

    A colour or shape outside its range raises a ``ValueError`` (it would index another class).
    """
    color, shape = _labels(color, COLORS, "color"), _labels(shape, SHAPES, "shape")
    _check_broadcast(color=color, shape=shape)
    return color * len(SHAPES) + shape


def all_caption_classes(template: str = "{}") -> list[str]:
    """All 160 one-object captions (size x colour x shape x position), in that nested order.

    Index ``((size * len(COLORS) + color) * len(SHAPES) + shape) * len(POSITIONS) + position``,
    see :func:`caption_class_index`. ``template`` wraps each caption, e.g. ``"a photo of {}"``.
    """
    _check_template(template)
    return [
        template.format(caption_for(s, c, z, p))
        for z in range(len(SIZES))
        for c in range(len(COLORS))
        for s in range(len(SHAPES))
        for p in range(len(POSITIONS))
    ]


def caption_class_index(
    *, shape: torch.Tensor | int, color: torch.Tensor | int, size: torch.Tensor | int, position: torch.Tensor | int
) -> torch.Tensor | int:
    """Class index into :func:`all_caption_classes` (ints or label tensors (n,)); keyword-only on purpose."""
    shape, color = _labels(shape, SHAPES, "shape"), _labels(color, COLORS, "color")
    size, position = _labels(size, SIZES, "size"), _labels(position, POSITIONS, "position")
    _check_broadcast(shape=shape, color=color, size=size, position=position)
    return ((size * len(COLORS) + color) * len(SHAPES) + shape) * len(POSITIONS) + position


# ---------------------------------------------------------------------------------------------
# Pixels: vectorised masks in shape-local coordinates u, v (the shape spans [-1, 1], v points down)
# ---------------------------------------------------------------------------------------------

_STAR_INNER = 0.5  # inner radius of the 5-point star relative to the outer one
_a = math.pi / 5
_edge = np.array([math.cos(_a) - _STAR_INNER, math.sin(_a)])  # from inner vertex (ri, 0) to outer vertex
_STAR_NORMAL = np.array([_edge[1], -_edge[0]]) / np.linalg.norm(_edge)  # outward unit normal of one star edge
_STAR_DIST = _STAR_NORMAL[0] * _STAR_INNER  # distance of that edge's line from the centre


def _circle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * u + v * v <= 1.0


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) <= 0.82


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    top, bottom = -0.95, 0.75  # apex up
    half_width = (v - top) / (bottom - top) * 0.98
    return (v >= top) & (v <= bottom) & (np.abs(u) <= half_width)


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    rho = np.sqrt(u * u + v * v)
    # Angle from the nearest inner vertex, in [0, pi/5]; an outer vertex points straight up.
    psi = np.mod(np.arctan2(v, u) + math.pi / 2, 2 * _a)
    a = np.abs(psi - _a)
    boundary = _STAR_DIST / (_STAR_NORMAL[0] * np.cos(a) + _STAR_NORMAL[1] * np.sin(a))
    return rho <= boundary


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))


_MASKS = {"circle": _circle, "square": _square, "triangle": _triangle, "star": _star, "cross": _cross}
_CHUNK = 2048  # images rendered at once: bounds memory, does not change the result


@dataclass
class ShapesBatch:
    """A generated dataset. ``shape``/``color``/``size``/``position`` label the FIRST object.

    images: (n, 3, H, W) float32 in [0, 1]
    shape, color, size, position: (n,) int64 labels of the first object (reading order of quadrants)
    objects: (n, K, 4) int64, every object's labels in ATTRIBUTES order; objects[:, 0] is the first
    boxes: (n, K, 4) float32 bounding boxes (x0, y0, x1, y1) in pixels
    captions: n strings; qa: n lists of (question, answer)

    ``len(batch)``; ``batch[i]`` is one item as a dict (like :class:`ShapesDataset`);
    ``batch[a:b]`` (or an index tensor/list) is a smaller ShapesBatch.
    """

    images: torch.Tensor
    shape: torch.Tensor
    color: torch.Tensor
    size: torch.Tensor
    position: torch.Tensor
    objects: torch.Tensor
    boxes: torch.Tensor
    captions: list[str]
    qa: list[list[tuple[str, str]]]
    config: ShapesWorldConfig = field(default_factory=ShapesWorldConfig)

    def __len__(self) -> int:
        return self.images.shape[0]

    def item(self, i: int) -> dict[str, Any]:
        """Item ``i`` as a dict: image (3, H, W), caption, qa, shape/color/size/position (), objects (K, 4), boxes (K, 4)."""
        return {
            "image": self.images[i],
            "caption": self.captions[i],
            "qa": self.qa[i],
            "shape": self.shape[i],
            "color": self.color[i],
            "size": self.size[i],
            "position": self.position[i],
            "objects": self.objects[i],
            "boxes": self.boxes[i],
        }

    def __getitem__(self, index: int | slice | Sequence[int] | torch.Tensor) -> "dict[str, Any] | ShapesBatch":
        if isinstance(index, (int, np.integer)) or (isinstance(index, torch.Tensor) and index.dim() == 0):
            i = int(index)
            if not -len(self) <= i < len(self):
                raise IndexError(f"index {i} is out of range for a ShapesBatch of {len(self)} images")
            return self.item(i)
        if isinstance(index, slice):
            rows = list(range(len(self)))[index]
        else:
            if isinstance(index, torch.Tensor) and index.dtype == torch.bool:
                raise InputTypeError("boolean masks are not supported as a ShapesBatch index: use torch.nonzero(mask).flatten()")
            if isinstance(index, (str, bytes, float)) or not isinstance(index, (Sequence, torch.Tensor, np.ndarray)):
                raise InputTypeError(f"a ShapesBatch index must be an int, a slice or a list/tensor of ints, got {describe(index)}")
            rows = torch.as_tensor(index).flatten().tolist() if len(index) else []
            bad = [r for r in rows if isinstance(r, bool) or not isinstance(r, int)]
            if bad:
                raise InputTypeError(f"a ShapesBatch index list must hold ints, got {describe(bad[0])}")
            out_of_range = [r for r in rows if not -len(self) <= r < len(self)]
            if out_of_range:
                raise IndexError(f"indices {out_of_range[:5]} are out of range for a ShapesBatch of {len(self)} images")
        idx = torch.as_tensor(rows, dtype=torch.long)
        return ShapesBatch(
            images=self.images[idx],
            shape=self.shape[idx],
            color=self.color[idx],
            size=self.size[idx],
            position=self.position[idx],
            objects=self.objects[idx],
            boxes=self.boxes[idx],
            captions=[self.captions[r] for r in rows],
            qa=[self.qa[r] for r in rows],
            config=self.config,
        )

    def color_shape_labels(self) -> torch.Tensor:
        """(n,) class index of the first object into :func:`color_shape_classes`."""
        return color_shape_index(color=self.color, shape=self.shape)

    def caption_class_labels(self) -> torch.Tensor:
        """(n,) class index of the first object into :func:`all_caption_classes`."""
        return caption_class_index(shape=self.shape, color=self.color, size=self.size, position=self.position)


def generate_shapes(n: int, seed: int = 0, config: ShapesWorldConfig | None = None) -> ShapesBatch:
    """Draw ``n`` images of the shapes world with labels, captions and questions; same seed, same data.

    Returns a :class:`ShapesBatch` with images (n, 3, H, W) float32 in [0, 1].
    """
    check_int(n, "n")
    check_int(seed, "seed", minimum=0)
    if config is None:
        config = ShapesWorldConfig()
    if not isinstance(config, ShapesWorldConfig):
        raise InputTypeError(f"config must be a ShapesWorldConfig or None, got {describe(config)}")
    n, cfg, k = int(n), config, config.num_shapes
    rng = np.random.default_rng(seed)
    size_px, quad = cfg.image_size, cfg.image_size / 2

    # Labels for every image first, so chunked rendering below cannot change them.
    def pick(allowed: tuple[str, ...], names: tuple[str, ...]) -> np.ndarray:
        table = np.array([names.index(a) for a in allowed])
        return table[rng.integers(0, len(table), size=(n, k))]

    shape = pick(cfg.shapes, SHAPES)
    color = pick(cfg.colors, COLORS)
    size = pick(cfg.sizes, SIZES)
    pos_table = np.array([POSITIONS.index(p) for p in cfg.positions])
    position = np.sort(pos_table[np.argsort(rng.random((n, len(pos_table))), axis=1)[:, :k]], axis=1)  # reading order

    scale = np.array([SIZE_SCALE[s] for s in SIZES])[size]
    radius = scale * (quad / 2) * (1 + cfg.size_jitter * rng.uniform(-1, 1, size=(n, k)))  # (n, K) half-extent, px
    room = np.maximum(quad / 2 - radius - 0.5, 0.0)  # how far the centre may move and stay in the quadrant
    offset = cfg.position_jitter * room[..., None] * rng.uniform(-1, 1, size=(n, k, 2))
    row, col = position // 2, position % 2
    cx = col * quad + quad / 2 + offset[..., 0]  # (n, K)
    cy = row * quad + quad / 2 + offset[..., 1]
    base = np.array([COLOR_RGB[c] for c in COLORS])[color]  # (n, K, 3)
    rgb = np.clip(base + cfg.color_jitter * rng.uniform(-1, 1, size=(n, k, 3)), 0, 1).astype(np.float32)
    grey = (cfg.background + cfg.background_jitter * rng.uniform(-1, 1, size=n)).astype(np.float32)

    images = np.empty((n, 3, size_px, size_px), dtype=np.float32)
    grid = np.arange(size_px, dtype=np.float32) + 0.5  # pixel centres
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(start + _CHUNK, n))
        m = sl.stop - sl.start
        img = np.broadcast_to(grey[sl, None, None, None], (m, 3, size_px, size_px)).copy()
        for j in range(k):
            r = radius[sl, j, None, None].astype(np.float32)
            u = (grid[None, None, :] - cx[sl, j, None, None].astype(np.float32)) / r  # (m, 1, W)
            v = (grid[None, :, None] - cy[sl, j, None, None].astype(np.float32)) / r  # (m, H, 1)
            mask = np.zeros((m, size_px, size_px), dtype=bool)
            kinds = shape[sl, j]
            for s, name in enumerate(SHAPES):
                sel = kinds == s
                if sel.any():
                    mask[sel] = _MASKS[name](u[sel], v[sel])
            img = np.where(mask[:, None], rgb[sl, j, :, None, None], img)
        if cfg.noise > 0:
            img += cfg.noise * rng.standard_normal(img.shape, dtype=np.float32)
        images[sl] = np.clip(img, 0.0, 1.0)

    objects = np.stack([shape, color, size, position], axis=-1)  # (n, K, 4)
    boxes = np.stack([cx - radius, cy - radius, cx + radius, cy + radius], axis=-1).clip(0, size_px)
    objects_list = objects.tolist()
    first = torch.from_numpy(objects[:, 0]).long()
    return ShapesBatch(
        images=torch.from_numpy(images),
        shape=first[:, 0].contiguous(),
        color=first[:, 1].contiguous(),
        size=first[:, 2].contiguous(),
        position=first[:, 3].contiguous(),
        objects=torch.from_numpy(objects).long(),
        boxes=torch.from_numpy(boxes.astype(np.float32)),
        captions=[scene_caption(objs) for objs in objects_list],
        qa=[questions_for(objs) for objs in objects_list],
        config=cfg,
    )


class ShapesDataset(Dataset):
    """A ``torch`` Dataset over a :class:`ShapesBatch`; items are dicts (see :meth:`ShapesBatch.item`).

    Build it from a batch, ``ShapesDataset(generate_shapes(1000))``, or from ``(n, seed, config)``.
    Batch it with ``DataLoader(ds, batch_size=..., collate_fn=collate_shapes)``.
    """

    def __init__(self, data: ShapesBatch | int, seed: int = 0, config: ShapesWorldConfig | None = None):
        if isinstance(data, ShapesBatch):
            self.batch = data
        elif isinstance(data, (int, np.integer)) and not isinstance(data, bool):
            self.batch = generate_shapes(int(data), seed=seed, config=config)
        else:
            raise InputTypeError(f"data must be a ShapesBatch or a number of images, got {describe(data)}")

    def __len__(self) -> int:
        return len(self.batch)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            if not (isinstance(i, torch.Tensor) and i.dim() == 0 and not i.is_floating_point()):
                raise InputTypeError(f"a ShapesDataset index must be an int, got {describe(i)}")
        return self.batch[int(i)]


def collate_shapes(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of items: tensors gain a leading batch dim (image -> (B, 3, H, W)); strings and QA stay lists."""
    if isinstance(items, (str, bytes, dict)) or not isinstance(items, Sequence):
        raise InputTypeError(f"collate_shapes needs a list of items (dicts from a ShapesDataset), got {describe(items)}")
    if not items:
        raise ValueError("collate_shapes needs at least one item, got an empty list")
    bad = [i for i, item in enumerate(items) if not isinstance(item, dict)]
    if bad:
        raise InputTypeError(f"collate_shapes needs dict items (from a ShapesDataset), item {bad[0]} is {describe(items[bad[0]])}")
    keys = set(items[0])
    if any(set(item) != keys for item in items):
        raise ValueError(f"every item must have the same keys {sorted(keys)}")
    out: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return out
