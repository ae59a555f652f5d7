"""A point-cloud encoder: Point-BERT's tokenisation (FPS + kNN groups + mini-PointNet) and a transformer.

Dims: ``B`` batch, ``P`` points per cloud, ``G`` groups (tokens), ``K`` points per group, ``D`` width.

A point cloud is a *set* of 3-D points: no grid, no order. Point-BERT (Yu et al. 2021,
arXiv:2111.14819) turns it into tokens the way ViT turns an image into patches:

    points (B, P, 3) -> farthest point sampling -> G centres (B, G, 3)
                     -> k nearest neighbours of each centre -> groups (B, G, K, 3), relative to their centre
                     -> mini-PointNet (shared MLP on every point, max-pool over the group) -> (B, G, D)
                     -> + MLP(centre) positions, [CLS] -> L transformer blocks -> LayerNorm -> (B, 1+G, D)

* Farthest point sampling (FPS) spreads the centres over the whole shape: each new centre is the
  point farthest from all centres chosen so far. Random sampling would crowd centres where points
  are dense and leave thin parts (a cone's tip, a torus' inner ring) without a token.
* PointNet (Qi et al. 2017, arXiv:1612.00593) is order-invariant by construction: the same MLP on
  every point, then a max over points. Point-BERT's mini-PointNet runs it twice, the second time on
  each point's feature concatenated with the group's max-pooled feature.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmllm_course._checks import (
    InputTypeError,
    check_choice,
    check_dropout,
    check_int,
    check_number,
    check_same_float_dtype,
    check_tensor,
    describe,
    to_module_dtype,
)
from mmllm_course.nn.transformer import TransformerBlock


def check_points(points: object, name: str = "points", min_points: int = 1) -> torch.Tensor:
    """``points`` when it is a finite float tensor (B, P, 3) with P >= ``min_points``; raise otherwise."""
    check_tensor(points, name, "(B, P, 3)", kind="float")
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"{name} must be (B, P, 3) xyz coordinates, got shape {tuple(points.shape)}")
    if points.shape[0] == 0 or points.shape[1] == 0:
        raise ValueError(f"{name} is empty: got shape {tuple(points.shape)}")
    if points.shape[1] < min_points:
        raise ValueError(f"{name} has P={points.shape[1]} points per cloud, fewer than the {min_points} needed")
    if not bool(torch.isfinite(points).all()):
        bad = int((~torch.isfinite(points)).any(dim=-1).sum())
        raise ValueError(f"{name} of shape {tuple(points.shape)} holds NaN or infinite coordinates ({bad} points)")
    return points


def farthest_point_sampling(points: torch.Tensor, num_samples: int, start: int | torch.Tensor = 0) -> torch.Tensor:
    """Indices (B, S) of ``num_samples`` points spread over each cloud (B, P, 3), S <= P.

    Greedy: start from point ``start`` (an int for every cloud, or a (B,) tensor of indices, e.g.
    random ones), then repeat: take the point whose distance to its nearest chosen point is the
    largest. Each step updates that distance with the newest point only, so it costs O(S * P).
    """
    check_points(points)
    b, p, _ = points.shape
    s = check_int(num_samples, "num_samples")
    if s > p:
        raise ValueError(f"cannot sample num_samples={s} points from clouds of P={p} points: need P >= {s}")
    if isinstance(start, torch.Tensor):
        check_tensor(start, "start", "(B,)", kind="int")
        if tuple(start.shape) != (b,):
            raise ValueError(f"start must be (B,) = ({b},) indices, got shape {tuple(start.shape)}")
        current = start.to(points.device, torch.long)
    else:
        current = torch.full((b,), check_int(start, "start", minimum=0), dtype=torch.long, device=points.device)
    if bool(((current < 0) | (current >= p)).any()):
        raise ValueError(f"start indices must lie in [0, {p}), got {current.tolist()[:8]}")
    chosen = torch.empty(b, s, dtype=torch.long, device=points.device)
    nearest = torch.full((b, p), float("inf"), dtype=points.dtype, device=points.device)  # (B, P)
    rows = torch.arange(b, device=points.device)
    for i in range(s):
        chosen[:, i] = current
        newest = points[rows, current]  # (B, 3)
        nearest = torch.minimum(nearest, ((points - newest[:, None, :]) ** 2).sum(-1))  # (B, P)
        current = nearest.argmax(dim=1)  # the point farthest from every chosen one
    return chosen


def gather_points(points: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """points (B, P, C), indices (B, ...) -> (B, ..., C): ``points[b, indices[b, ...]]``."""
    check_tensor(points, "points", "(B, P, C)", ndim=3)
    check_tensor(indices, "indices", "(B, ...)", kind="int")
    if indices.dim() < 1 or indices.shape[0] != points.shape[0]:
        raise ValueError(f"indices must be (B, ...) with B={points.shape[0]} like points, got shape {tuple(indices.shape)}")
    p = points.shape[1]
    if indices.numel() and bool(((indices < 0) | (indices >= p)).any()):
        raise ValueError(f"indices must lie in [0, P={p}), got values from {indices.min().item()} to {indices.max().item()}")
    b = points.shape[0]
    flat = indices.reshape(b, -1)  # (B, S)
    out = torch.gather(points, 1, flat[..., None].expand(-1, -1, points.shape[-1]))  # (B, S, C)
    return out.reshape(*indices.shape, points.shape[-1])


def knn_group(points: torch.Tensor, centers: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest points of each centre: (indices (B, G, K), groups (B, G, K, 3) minus their centre).

    points (B, P, 3), centers (B, G, 3). Distances are Euclidean over the 3 coordinates; neighbours
    come nearest first (a centre taken from the cloud is its own first neighbour, offset 0).
    Subtracting the centre makes each group's shape independent of where it sits: the position goes
    back in through the position embedding of the centre.
    """
    check_points(points)
    check_points(centers, "centers")
    k = check_int(k, "k")
    check_same_float_dtype({"points": points, "centers": centers})
    if centers.shape[0] != points.shape[0]:
        raise ValueError(f"batch sizes differ: points has B={points.shape[0]}, centers has B={centers.shape[0]}")
    if k > points.shape[1]:
        raise ValueError(f"cannot take k={k} neighbours from clouds of P={points.shape[1]} points: need P >= {k}")
    dist = torch.cdist(centers, points)  # (B, G, P)
    idx = dist.topk(k, dim=-1, largest=False).indices  # (B, G, K), nearest first
    groups = gather_points(points, idx) - centers[:, :, None, :]  # (B, G, K, 3)
    return idx, groups


@dataclass
class PointEncoderConfig:
    """Sizes of the point tokenizer and transformer; defaults: 256 points -> 16 tokens of width 64."""

    num_groups: int = 16  # G tokens (FPS centres)
    group_size: int = 16  # K neighbours per token
    dim: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_dim: int = 128
    pointnet_dim: int = 64  # width of the mini-PointNet's first shared MLP
    pooling: str = "cls"  # "cls" | "mean" (of the group tokens)
    fps_start: str = "first"  # "first": FPS starts at point 0 (deterministic); "random": a random point per cloud
    layer_norm_eps: float = 1e-5
    dropout: float = 0.0
    attention_dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("num_groups", "group_size", "dim", "depth", "num_heads", "mlp_dim", "pointnet_dim"):
            setattr(self, name, check_int(getattr(self, name), name))
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} is not divisible by num_heads={self.num_heads}")
        check_choice(self.pooling, "pooling", ("cls", "mean"))
        check_choice(self.fps_start, "fps_start", ("first", "random"))
        self.layer_norm_eps = check_number(self.layer_norm_eps, "layer_norm_eps", low=0.0, low_open=True)
        self.dropout = check_dropout(self.dropout)
        self.attention_dropout = check_dropout(self.attention_dropout, "attention_dropout")

    @property
    def min_points(self) -> int:
        return max(self.num_groups, self.group_size)


class MiniPointNet(nn.Module):
    """Point-BERT's group encoder: groups (B, G, K, 3) -> one token per group (B, G, D).

    Two shared MLPs (the same weights for every point: order does not matter) with a max over the K
    points after each: ``f = MLP1(xyz)``, ``g = max_K f``, ``h = MLP2([f, g])``, ``token = max_K h``.
    Point-BERT uses 1x1 convolutions with BatchNorm; we use Linear + LayerNorm (the same per point, and
    no train/eval difference on small batches).
    """

    def __init__(self, dim: int, hidden: int = 64, eps: float = 1e-5):
        super().__init__()
        self.dim, hidden = check_int(dim, "dim"), check_int(hidden, "hidden")
        eps = check_number(eps, "eps", low=0.0, low_open=True)
        self.first = nn.Sequential(nn.Linear(3, hidden), nn.LayerNorm(hidden, eps=eps), nn.GELU(), nn.Linear(hidden, hidden))
        self.second = nn.Sequential(nn.Linear(2 * hidden, dim), nn.LayerNorm(dim, eps=eps), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        check_tensor(groups, "groups", "(B, G, K, 3)", kind="float")
        if groups.dim() != 4 or groups.shape[-1] != 3:
            raise ValueError(f"groups must be (B, G, K, 3), got shape {tuple(groups.shape)}")
        if 0 in groups.shape:
            raise ValueError(f"groups is empty: got shape {tuple(groups.shape)}")
        if not bool(torch.isfinite(groups).all()):
            raise ValueError(f"groups of shape {tuple(groups.shape)} holds NaN or infinite coordinates")
        groups = to_module_dtype(groups, self)
        f = self.first(groups)  # (B, G, K, H)
        g = f.amax(dim=2, keepdim=True).expand_as(f)  # (B, G, K, H): the group's summary, next to every point
        h = self.second(torch.cat([f, g], dim=-1))  # (B, G, K, D)
        return h.amax(dim=2)  # (B, G, D)


@dataclass
class PointEncoderOutput:
    """``last_hidden_state`` (B, 1+G, D) ([CLS] first), ``pooled`` (B, D), ``centers`` (B, G, 3), ``groups`` (B, G, K, 3)."""

    last_hidden_state: torch.Tensor
    pooled: torch.Tensor
    centers: torch.Tensor
    groups: torch.Tensor


class PointEncoder(nn.Module):
    """Point-BERT-style encoder: points (B, P, 3) -> :class:`PointEncoderOutput` (see the module docstring).

    Positions: a small MLP of each token's centre (Point-BERT's), added to the token. A learned
    [CLS] token (with its own learned position) is prepended; ``pooled`` is the normalised [CLS]
    (``pooling="cls"``) or the mean of the normalised group tokens (``"mean"``).
    """

    def __init__(self, config: PointEncoderConfig | None = None):
        super().__init__()
        self.config = c = PointEncoderConfig() if config is None else config
        if not isinstance(c, PointEncoderConfig):
            raise InputTypeError(f"config must be a PointEncoderConfig, got {describe(c)}")
        self.tokenizer = MiniPointNet(c.dim, c.pointnet_dim, c.layer_norm_eps)
        self.position = nn.Sequential(nn.Linear(3, c.dim), nn.GELU(), nn.Linear(c.dim, c.dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim))
        self.cls_position = nn.Parameter(torch.zeros(1, 1, c.dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.cls_position, std=0.02)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(c.dim, c.num_heads, hidden_dim=c.mlp_dim, layer_norm_eps=c.layer_norm_eps,
                             dropout=c.dropout, attention_dropout=c.attention_dropout)
            for _ in range(c.depth)
        )
        self.norm = nn.LayerNorm(c.dim, eps=c.layer_norm_eps)

    def tokenize(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """points (B, P, 3) -> (tokens (B, G, D), centres (B, G, 3), groups (B, G, K, 3))."""
        c = self.config
        check_points(points, "points")
        if points.shape[1] < c.min_points:
            raise ValueError(
                f"points has P={points.shape[1]} points per cloud, fewer than num_groups={c.num_groups} "
                f"or group_size={c.group_size}: need P >= {c.min_points}"
            )
        points = to_module_dtype(points, self)
        b, p, _ = points.shape
        if c.fps_start == "random" and self.training:
            start: int | torch.Tensor = torch.randint(0, p, (b,), device=points.device)
        else:
            start = 0
        with torch.no_grad():
            centre_idx = farthest_point_sampling(points.detach(), c.num_groups, start)  # (B, G)
        centers = gather_points(points, centre_idx)  # (B, G, 3)
        _, groups = knn_group(points, centers, c.group_size)  # (B, G, K, 3)
        return self.tokenizer(groups), centers, groups

    def forward(self, points: torch.Tensor) -> PointEncoderOutput:
        tokens, centers, groups = self.tokenize(points)  # (B, G, D), (B, G, 3), (B, G, K, 3)
        b = tokens.shape[0]
        x = tokens + self.position(centers)  # (B, G, D)
        cls = (self.cls_token + self.cls_position).expand(b, -1, -1)  # (B, 1, D)
        x = self.drop(torch.cat([cls, x], dim=1))  # (B, 1+G, D)
        for block in self.blocks:
            x, _ = block(x)
        x = self.norm(x)
        pooled = x[:, 0] if self.config.pooling == "cls" else x[:, 1:].mean(dim=1)  # (B, D)
        return PointEncoderOutput(last_hidden_state=x, pooled=pooled, centers=centers, groups=groups)
