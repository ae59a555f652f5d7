"""Synthetic point clouds: the shapes world's solids, sampled on their surfaces with numpy.

    SOLIDS = ("sphere", "cube", "cylinder", "cone", "torus")

Each cloud is ``num_points`` points drawn uniformly over the *area* of one solid's surface (by
parametric sampling: pick a face or part with probability proportional to its area, then a uniform
point on it), then varied so that a classifier must learn the shape, not the pose:
anisotropic stretch (each axis by ``1 +- stretch``), normalisation to a max norm of 1, a uniformly
random 3-D rotation, a random overall scale and Gaussian jitter. The 2-D shapes world's "circle",
"square" and "triangle" have 3-D counterparts in ``SOLID_FOR_SHAPE`` (sphere, cube, cone).

Dims: ``n`` clouds, ``P`` points per cloud. Deterministic in ``seed``; no dependency beyond numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mmllm_course._checks import InputTypeError, check_index, check_int, check_number, describe

SOLIDS: tuple[str, ...] = ("sphere", "cube", "cylinder", "cone", "torus")
SOLID_FOR_SHAPE: dict[str, str] = {"circle": "sphere", "square": "cube", "triangle": "cone"}

# Sizes of the canonical solids (before stretch and normalisation).
CYLINDER_RADIUS, CYLINDER_HEIGHT = 0.6, 1.6
CONE_RADIUS, CONE_HEIGHT = 0.8, 1.6
TORUS_MAJOR, TORUS_MINOR = 0.7, 0.25


def _sphere(m: int, p: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal((m, p, 3))
    return v / np.linalg.norm(v, axis=-1, keepdims=True)  # uniform on the unit sphere


def _cube(m: int, p: int, rng: np.random.Generator) -> np.ndarray:
    face = rng.integers(0, 6, (m, p))  # 6 faces of equal area
    uv = rng.uniform(-1.0, 1.0, (m, p, 2))
    axis, sign = face // 2, np.where(face % 2 == 0, 1.0, -1.0)
    out = np.empty((m, p, 3))
    for a in range(3):  # the fixed coordinate is +-1 on the face's axis; the other two are uv
        others = [b for b in range(3) if b != a]
        on = axis == a
        out[..., a] = np.where(on, sign, 0.0)
        for j, b in enumerate(others):
            out[..., b] = np.where(on, uv[..., j], out[..., b])
    return out


def _cylinder(m: int, p: int, rng: np.random.Generator) -> np.ndarray:
    r, h = CYLINDER_RADIUS, CYLINDER_HEIGHT
    side, cap = 2 * math.pi * r * h, math.pi * r * r
    part = rng.choice(3, size=(m, p), p=np.array([side, cap, cap]) / (side + 2 * cap))  # side, top, bottom
    theta = rng.uniform(0, 2 * math.pi, (m, p))
    rad = np.where(part == 0, r, r * np.sqrt(rng.uniform(0, 1, (m, p))))  # sqrt: uniform over a disc's area
    z = np.where(part == 0, rng.uniform(-h / 2, h / 2, (m, p)), np.where(part == 1, h / 2, -h / 2))
    return np.stack([rad * np.cos(theta), rad * np.sin(theta), z], axis=-1)


def _cone(m: int, p: int, rng: np.random.Generator) -> np.ndarray:
    r, h = CONE_RADIUS, CONE_HEIGHT
    lateral, base = math.pi * r * math.hypot(r, h), math.pi * r * r
    on_side = rng.uniform(0, 1, (m, p)) < lateral / (lateral + base)
    u = np.sqrt(rng.uniform(0, 1, (m, p)))  # distance from the apex (side) or the centre (base): area grows linearly
    theta = rng.uniform(0, 2 * math.pi, (m, p))
    rad = r * u
    z = np.where(on_side, h / 2 - h * u, -h / 2)  # apex at +h/2, base at -h/2
    return np.stack([rad * np.cos(theta), rad * np.sin(theta), z], axis=-1)


def _torus(m: int, p: int, rng: np.random.Generator) -> np.ndarray:
    big, small = TORUS_MAJOR, TORUS_MINOR
    # The area element is proportional to (R + r cos(phi)): rejection-sample phi with that weight.
    phi = np.empty((m, p))
    todo = np.ones((m, p), dtype=bool)
    while todo.any():
        cand = rng.uniform(0, 2 * math.pi, (m, p))
        keep = todo & (rng.uniform(0, 1, (m, p)) * (big + small) <= big + small * np.cos(cand))
        phi[keep] = cand[keep]
        todo &= ~keep
    theta = rng.uniform(0, 2 * math.pi, (m, p))
    ring = big + small * np.cos(phi)
    return np.stack([ring * np.cos(theta), ring * np.sin(theta), small * np.sin(phi)], axis=-1)


_SAMPLERS = {"sphere": _sphere, "cube": _cube, "cylinder": _cylinder, "cone": _cone, "torus": _torus}


def sample_surface(solid: str, num_points: int, count: int = 1, seed: int | np.random.Generator = 0) -> np.ndarray:
    """``count`` canonical clouds of one solid, uniform over its surface area: (count, num_points, 3), float64."""
    if not isinstance(solid, str) or solid not in _SAMPLERS:
        raise ValueError(f"solid must be one of {SOLIDS}, got {solid!r}")
    num_points, count = check_int(num_points, "num_points"), check_int(count, "count")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(check_int(seed, "seed", minimum=0))
    return _SAMPLERS[solid](count, num_points, rng)


def random_rotations(count: int, seed: int | np.random.Generator = 0) -> np.ndarray:
    """(count, 3, 3) rotation matrices, uniform over SO(3): QR of a Gaussian matrix, signs fixed, det +1."""
    count = check_int(count, "count")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(check_int(seed, "seed", minimum=0))
    q, r = np.linalg.qr(rng.standard_normal((count, 3, 3)))
    q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    q[np.linalg.det(q) < 0, :, 0] *= -1  # reflections -> rotations
    return q


@dataclass
class PointCloudConfig:
    """How the clouds vary. Defaults: 256 points, any rotation, scale 0.6-1.0, stretch +-20%, jitter 0.01."""

    num_points: int = 256
    solids: Sequence[str] = SOLIDS
    rotate: bool = True  # a uniformly random 3-D rotation per cloud
    scale_range: tuple[float, float] = (0.6, 1.0)  # overall size after normalisation to max norm 1
    stretch: float = 0.2  # each axis scaled by a factor in [1 - stretch, 1 + stretch] before normalising
    noise: float = 0.01  # std of Gaussian jitter on every coordinate

    def __post_init__(self) -> None:
        self.num_points = check_int(self.num_points, "num_points")
        if not isinstance(self.rotate, (bool, np.bool_)):
            raise InputTypeError(f"rotate must be True or False, got {describe(self.rotate)}")
        if not isinstance(self.solids, (str, list, tuple)):
            raise InputTypeError(f"solids must be a tuple of names from {SOLIDS}, got {describe(self.solids)}")
        solids = (self.solids,) if isinstance(self.solids, str) else tuple(self.solids)
        unknown = [s for s in solids if s not in SOLIDS]
        if not solids or unknown:
            raise ValueError(f"solids must be a non-empty subset of {SOLIDS}, got {solids!r} (unknown: {unknown})")
        self.solids = solids
        if not isinstance(self.scale_range, (tuple, list)):
            raise InputTypeError(f"scale_range must be a (low, high) tuple, got {describe(self.scale_range)}")
        if len(self.scale_range) != 2:
            raise ValueError(f"scale_range must be (low, high), got {self.scale_range!r}")
        low, high = (check_number(v, "scale_range", low=0.0, low_open=True) for v in self.scale_range)
        if low > high:
            raise ValueError(f"scale_range must have low <= high, got {self.scale_range!r}")
        self.scale_range = (low, high)
        self.stretch = check_number(self.stretch, "stretch", low=0.0, high=1.0, high_open=True)
        self.noise = check_number(self.noise, "noise", low=0.0)


@dataclass
class PointCloudBatch:
    """``points`` (n, P, 3) float32, ``labels`` (n,) long indices into ``solids``, ``solids`` their names."""

    points: torch.Tensor
    labels: torch.Tensor
    solids: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def names(self) -> list[str]:
        return [self.solids[i] for i in self.labels.tolist()]


def make_point_clouds(n: int, config: PointCloudConfig | None = None, seed: int = 0,
                      labels: Sequence[int] | None = None) -> PointCloudBatch:
    """``n`` random clouds (balanced random classes unless ``labels`` are given): see the module docstring."""
    n = check_int(n, "n")
    config = PointCloudConfig() if config is None else config
    if not isinstance(config, PointCloudConfig):
        raise InputTypeError(f"config must be a PointCloudConfig, got {describe(config)}")
    rng = np.random.default_rng(check_int(seed, "seed", minimum=0))
    k = len(config.solids)
    if labels is None:
        lab = rng.permutation(np.arange(n) % k)
    else:
        if not isinstance(labels, (list, tuple, range, np.ndarray, torch.Tensor)):
            raise InputTypeError(f"labels must be a sequence of n={n} integers, got {describe(labels)}")
        lab = np.asarray(labels)
        if lab.shape != (n,) or not np.issubdtype(lab.dtype, np.integer) or lab.min() < 0 or lab.max() >= k:
            raise ValueError(f"labels must be n={n} integers in [0, {k}), got shape {lab.shape} dtype {lab.dtype}")
    p = config.num_points
    pts = np.empty((n, p, 3))
    for c, solid in enumerate(config.solids):
        rows = np.flatnonzero(lab == c)
        if len(rows):
            pts[rows] = _SAMPLERS[solid](len(rows), p, rng)
    pts *= rng.uniform(1 - config.stretch, 1 + config.stretch, (n, 1, 3))  # anisotropic stretch
    pts -= pts.mean(axis=1, keepdims=True)
    pts /= np.linalg.norm(pts, axis=-1).max(axis=1)[:, None, None]  # max norm 1
    if config.rotate:
        pts = pts @ random_rotations(n, rng).transpose(0, 2, 1)  # (n, P, 3) @ R^T
    pts *= rng.uniform(*config.scale_range, (n, 1, 1))
    pts += config.noise * rng.standard_normal(pts.shape)
    return PointCloudBatch(torch.from_numpy(pts.astype(np.float32)), torch.from_numpy(lab.astype(np.int64)), config.solids)


class PointCloudDataset(Dataset):
    """A fixed set of clouds generated once: item ``i`` is ``(points (P, 3), label)``."""

    def __init__(self, n: int, config: PointCloudConfig | None = None, seed: int = 0):
        self.batch = make_point_clouds(n, config, seed)

    def __len__(self) -> int:
        return len(self.batch)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = check_index(i, len(self), "clouds")
        return self.batch.points[i], self.batch.labels[i]
