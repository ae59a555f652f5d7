"""Position embeddings: how a transformer, which sees a set, learns where each token sits.

Dims: ``N`` tokens, ``D`` embedding width, ``(H', W')`` the grid of patches.
"""

from __future__ import annotations

import torch
from torch import nn

from mmllm_course._checks import InputTypeError, check_int, check_number, check_tensor, to_module_dtype


def sincos_1d_position_embedding(positions: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 1-D sine-cosine embedding of integer or real ``positions``.

    positions: (N,) -> (N, dim). The first half of the channels are sines, the second half cosines,
    at frequencies ``1 / temperature^(2i/dim)`` (the transformer paper's formula, channels grouped
    by function rather than interleaved, as MAE and ViT-style code do).
    """
    check_tensor(positions, "positions", "(N,)")
    dim = check_int(dim, "dim")
    temperature = check_number(temperature, "temperature", low=0.0, low_open=True)
    if dim % 2 != 0:
        raise ValueError(f"sincos_1d_position_embedding needs an even dim, got dim={dim}")
    if positions.dtype == torch.bool or positions.is_complex():
        raise InputTypeError(f"positions must be integer or real numbers, got dtype {positions.dtype}")
    if positions.dim() != 1:
        raise ValueError(f"positions must be 1-D (N,), got shape {tuple(positions.shape)}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / temperature**omega  # (dim/2,)
    angles = positions.to(torch.float64)[:, None] * omega[None, :]  # (N, dim/2)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).to(torch.float32)


def sincos_2d_position_embedding(grid_h: int, grid_w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2-D sine-cosine embedding for a ``grid_h x grid_w`` grid of patches, row-major.

    Returns (grid_h * grid_w, dim). Half of the channels encode the row, half the column, each with
    :func:`sincos_1d_position_embedding`; so ``dim`` must be divisible by 4.
    Patch ``k`` sits at row ``k // grid_w`` and column ``k % grid_w``, the order :func:`patchify` uses.
    """
    dim = check_int(dim, "dim")
    if dim % 4 != 0:
        raise ValueError(f"sincos_2d_position_embedding needs dim divisible by 4, got dim={dim}")
    grid_h, grid_w = check_int(grid_h, "grid_h", minimum=None), check_int(grid_w, "grid_w", minimum=None)
    if grid_h < 1 or grid_w < 1:
        raise ValueError(f"grid must be at least 1x1, got {grid_h}x{grid_w}")
    rows = torch.arange(grid_h).repeat_interleave(grid_w)  # (N,) 0,0,..,1,1,..
    cols = torch.arange(grid_w).repeat(grid_h)  # (N,) 0,1,..,0,1,..
    emb_rows = sincos_1d_position_embedding(rows, dim // 2, temperature)  # (N, D/2)
    emb_cols = sincos_1d_position_embedding(cols, dim // 2, temperature)  # (N, D/2)
    return torch.cat([emb_rows, emb_cols], dim=1)


class LearnedPositionEmbedding(nn.Module):
    """A trainable vector per position, added to the tokens: x (B, N, D) -> (B, N, D)."""

    def __init__(self, num_positions: int, dim: int, init_std: float = 0.02):
        super().__init__()
        num_positions, dim = check_int(num_positions, "num_positions"), check_int(dim, "dim")
        init_std = check_number(init_std, "init_std", low=0.0)
        self.num_positions = num_positions
        self.weight = nn.Parameter(torch.randn(num_positions, dim) * init_std)  # (N_max, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", f"(B, N, {self.weight.shape[1]})", kind="float")
        if x.dim() != 3 or x.shape[-1] != self.weight.shape[1]:
            raise ValueError(f"expected tokens (B, N, {self.weight.shape[1]}), got {tuple(x.shape)}")
        if x.shape[1] > self.num_positions:
            raise ValueError(f"got {x.shape[1]} tokens but this embedding holds {self.num_positions} positions")
        return to_module_dtype(x, self) + self.weight[: x.shape[1]]
