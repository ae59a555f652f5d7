"""The judge: a small CNN trained on REAL shapes-world images that reads what a generated image shows.

A generator is measured by asking an independent model what it drew. The judge never sees a
generated image in training (only real images drawn by :func:`~mmllm_course.data.generate_shapes`,
with three pixel-noise levels so that smooth decoded images are in range), so a high score on
generated images means the generator draws what the world looks like, not what the judge was
tuned on. Its own accuracy on real held-out images is measured (:func:`evaluate_judge`) and
stored with the shipped weights.

    images (B, 3, 32, 32) in [0, 1] -> 3 x [conv 3x3 -> GroupNorm -> SiLU -> max-pool 2]  (B, 4C, 4, 4)
                                    -> flatten -> linear -> SiLU -> 4 heads:
                                       shape (B, 5), color (B, 4), size (B, 2), position (B, 4)

:func:`judge_images` returns the fraction of images whose shape, colour, size, position, colour
AND shape, and all four are read as the caption (or labels) asked.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmllm_course._checks import InputTypeError, check_int, check_number, check_tensor, describe, to_module_dtype
from mmllm_course.data.shapes import COLORS, POSITIONS, SHAPES, SIZES, ShapesBatch, ShapesWorldConfig, generate_shapes

HEADS: dict[str, int] = {"shape": len(SHAPES), "color": len(COLORS), "size": len(SIZES), "position": len(POSITIONS)}
_CAPTION = re.compile(r"^a (\w+) (\w+) (\w+) in the (\w+ \w+)$")


@dataclass
class JudgeConfig:
    """Sizes of the judge CNN (``channels`` C: widths C, 2C, 4C) and its training recipe."""

    image_size: int = 32
    channels: int = 32
    hidden: int = 128
    steps: int = 1500
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    train_size: int = 24000  # split evenly over the noise levels
    noise_levels: tuple[float, ...] = (0.0, 0.04, 0.08)
    data_seed: int = 9100  # other seeds than every generator and held-out set of chapter 9

    def __post_init__(self) -> None:
        for name in ("image_size", "channels", "hidden", "batch_size", "train_size"):
            check_int(getattr(self, name), name)
        check_int(self.steps, "steps", minimum=0)
        check_int(self.data_seed, "data_seed", minimum=0)
        check_number(self.lr, "lr", low=0.0, low_open=True)
        check_number(self.weight_decay, "weight_decay", low=0.0)
        if self.image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8 (three 2x poolings), got {self.image_size}")
        if not self.noise_levels:
            raise ValueError("noise_levels must hold at least one noise level, got ()")
        for v in self.noise_levels:
            check_number(v, "noise level", 0.0, 1.0)


class ShapesJudge(nn.Module):
    """images (B, 3, H, W) in [0, 1] -> dict of logits ``{"shape": (B, 5), "color": (B, 4), "size": (B, 2), "position": (B, 4)}``."""

    def __init__(self, config: JudgeConfig | None = None):
        super().__init__()
        if config is not None and not isinstance(config, JudgeConfig):
            raise InputTypeError(f"config must be a JudgeConfig or None, got {describe(config)}")
        self.config = c = config or JudgeConfig()
        widths = (3, c.channels, 2 * c.channels, 4 * c.channels)
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(w_in, w_out, 3, padding=1), nn.GroupNorm(8, w_out), nn.SiLU(), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        side = c.image_size // 8
        self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(widths[-1] * side * side, c.hidden), nn.SiLU())
        self.heads = nn.ModuleDict({name: nn.Linear(c.hidden, n) for name, n in HEADS.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        s = self.config.image_size
        check_tensor(images, "images", f"(B, 3, {s}, {s})", ndim=4, kind="float")
        if tuple(images.shape[1:]) != (3, s, s) or images.shape[0] == 0:
            raise ValueError(f"images must be (B, 3, {s}, {s}) with B >= 1, got {tuple(images.shape)}")
        h = self.trunk(self.features(to_module_dtype(images, self) * 2 - 1))  # (B, hidden)
        return {name: head(h) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 512) -> dict[str, torch.Tensor]:
        """images (B, 3, H, W) -> predicted labels ``{"shape": (B,), ...}`` (eval mode, no gradient)."""
        check_int(batch_size, "batch_size")
        check_tensor(images, "images", "(B, 3, H, W)", ndim=4, kind="float")
        was_training = self.training
        self.eval()
        try:
            outs = [self(images[i : i + batch_size]) for i in range(0, len(images), batch_size)] or [self(images)]
        finally:
            self.train(was_training)
        return {name: torch.cat([o[name] for o in outs]).argmax(-1) for name in HEADS}


def caption_labels(captions: Sequence[str]) -> torch.Tensor:
    """One-object captions ("a small red circle in the top left") -> labels (n, 4) in ATTRIBUTES order."""
    if isinstance(captions, str) or not isinstance(captions, Sequence):
        raise InputTypeError(f"captions must be a list of caption strings, got {describe(captions)}")
    rows = []
    for i, caption in enumerate(captions):
        if not isinstance(caption, str):
            raise InputTypeError(f"captions must hold strings, caption {i} is {describe(caption)}")
        m = _CAPTION.match(caption)
        if m is None:
            raise ValueError(f"caption {i} must read like 'a small red circle in the top left' (one object), got {caption!r}")
        size, color, shape, position = m.groups()
        for value, names, what in ((shape, SHAPES, "shape"), (color, COLORS, "color"), (size, SIZES, "size"), (position, POSITIONS, "position")):
            if value not in names:
                raise ValueError(f"caption {i} ({caption!r}): {what} must be one of {names}, got {value!r}")
        rows.append((SHAPES.index(shape), COLORS.index(color), SIZES.index(size), POSITIONS.index(position)))
    return torch.tensor(rows, dtype=torch.long).reshape(-1, 4)


def _labels_of(targets: Sequence[str] | torch.Tensor | ShapesBatch, n: int) -> torch.Tensor:
    if isinstance(targets, ShapesBatch):
        labels = targets.objects[:, 0]
    elif isinstance(targets, torch.Tensor):
        check_tensor(targets, "labels", "(n, 4) in (shape, color, size, position) order", ndim=2, kind="int")
        if targets.shape[1] != 4:
            raise ValueError(f"labels must be (n, 4) in (shape, color, size, position) order, got {tuple(targets.shape)}")
        labels = targets.long()
        for j, (what, k) in enumerate(HEADS.items()):
            if len(labels) and (int(labels[:, j].min()) < 0 or int(labels[:, j].max()) >= k):
                raise ValueError(f"{what} labels (column {j}) must lie in [0, {k}), got values in [{int(labels[:, j].min())}, {int(labels[:, j].max())}]")
    else:
        labels = caption_labels(targets)
    if len(labels) != n:
        raise ValueError(f"got {n} images but {len(labels)} captions/labels: expected one per image")
    return labels


def judge_images(judge: ShapesJudge, images: torch.Tensor, targets: Sequence[str] | torch.Tensor | ShapesBatch) -> dict[str, float]:
    """Fractions of ``images`` (B, 3, H, W) that the judge reads as ``targets`` asked.

    ``targets``: one-object captions (B strings), labels (B, 4) in (shape, color, size, position)
    order, or a :class:`ShapesBatch` (its first objects). Returns ``{"shape", "color", "size",
    "position", "color_shape" (both right), "all" (all four right)}``.
    """
    if not isinstance(judge, ShapesJudge):
        raise InputTypeError(f"judge must be a ShapesJudge (e.g. load_judge()), got {describe(judge)}")
    check_tensor(images, "images", "(B, 3, H, W)", ndim=4, kind="float")
    if images.shape[0] == 0:
        raise ValueError("images is empty: expected at least one image (B >= 1)")
    labels = _labels_of(targets, images.shape[0])
    pred = judge.predict(images)
    right = {name: pred[name] == labels[:, j] for j, name in enumerate(HEADS)}
    out = {name: right[name].float().mean().item() for name in HEADS}
    out["color_shape"] = (right["color"] & right["shape"]).float().mean().item()
    out["all"] = torch.stack(list(right.values())).all(0).float().mean().item()
    return out


def judge_data(config: JudgeConfig) -> ShapesBatch:
    """The judge's real training images: ``train_size`` one-object images, split over the noise levels."""
    parts = [generate_shapes(config.train_size // len(config.noise_levels), seed=config.data_seed + i, config=ShapesWorldConfig(noise=noise))
             for i, noise in enumerate(config.noise_levels)]
    return ShapesBatch(images=torch.cat([p.images for p in parts]), shape=torch.cat([p.shape for p in parts]),
                       color=torch.cat([p.color for p in parts]), size=torch.cat([p.size for p in parts]),
                       position=torch.cat([p.position for p in parts]), objects=torch.cat([p.objects for p in parts]),
                       boxes=torch.cat([p.boxes for p in parts]), captions=sum((p.captions for p in parts), []),
                       qa=sum((p.qa for p in parts), []), config=parts[0].config)


def train_judge(config: JudgeConfig | None = None, seed: int = 0, progress: bool = False) -> tuple[ShapesJudge, dict[str, float]]:
    """Train the judge (AdamW, warmup + cosine, cross-entropy summed over the 4 heads); returns ``(judge, stats)``."""
    from tqdm.auto import tqdm

    from mmllm_course.utils import seed_everything

    config = config or JudgeConfig()
    if not isinstance(config, JudgeConfig):
        raise InputTypeError(f"config must be a JudgeConfig or None, got {describe(config)}")
    check_int(seed, "seed", minimum=0)
    data = judge_data(config)
    gen = seed_everything(seed)
    judge = ShapesJudge(config)
    opt = torch.optim.AdamW(judge.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(1, config.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, config.steps) / max(config.steps, 1))))
    labels = data.objects[:, 0]  # (n, 4)
    start, loss = time.perf_counter(), torch.tensor(float("nan"))
    judge.train()
    for _ in tqdm(range(config.steps), desc="judge", disable=not progress):
        idx = torch.randint(0, len(data), (config.batch_size,), generator=gen)
        logits = judge(data.images[idx])
        loss = sum(F.cross_entropy(logits[name], labels[idx, j]) for j, name in enumerate(HEADS))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    judge.eval().requires_grad_(False)
    return judge, {"train_seconds": time.perf_counter() - start, "final_loss": float(loss.detach())}


def evaluate_judge(judge: ShapesJudge, n: int = 2000, seed: int = 9199) -> dict[str, float]:
    """The judge's accuracies on ``n`` REAL held-out images (the default world, noise 0.04; seed unused in training)."""
    check_int(n, "n")
    held = generate_shapes(n, seed=seed)
    return judge_images(judge, held.images, held)
