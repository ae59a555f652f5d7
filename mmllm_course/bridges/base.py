"""What every bridge promises: features (B, N, D_in) [+ padding mask (B, N)] -> LLM tokens (B, K, D_llm).

Dims: ``B`` batch, ``N`` input feature tokens (patches), ``D_in`` the encoder's width, ``K`` output
tokens, ``D_llm`` (``out_dim``) the LLM's token-embedding width.

The padding mask follows the library's convention (``mmllm_course.nn.attention``): **True (or 1) =
a real feature token, False (or 0) = padding**, shape (B, N), dtype bool or integer. Bridges that map
each token on its own (linear, MLP) check it and leave it to the caller (padded positions stay
padding for the LLM: :meth:`Bridge.output_mask`); bridges that attend (Q-Former, resampler) never let
a query look at a padded feature.
"""

from __future__ import annotations

import torch
from torch import nn


class Bridge(nn.Module):
    """Base class of the input projectors. Subclasses set ``in_dim`` and ``out_dim`` and implement
    ``forward(features, mask=None) -> (B, K, out_dim)`` and ``num_output_tokens(n) -> K``."""

    in_dim: int
    out_dim: int

    def num_output_tokens(self, n: int) -> int:
        """K, the number of LLM tokens this bridge produces from ``n`` feature tokens."""
        raise NotImplementedError

    def output_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """Boolean (B, K) mask of real output tokens for an input padding mask (B, N).

        Token-wise bridges (K = N) keep the mask as is; query bridges always give K real tokens.
        """
        raise NotImplementedError

    def check_inputs(
        self, features: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Checked inputs: ``features`` (B, N, in_dim) in the bridge's parameter dtype, ``mask`` as bool (B, N).

        ValueError naming the sizes when ``features`` is not (B, N, in_dim) or ``mask`` not a (B, N)
        bool / 0-1 integer mask. Floating-point features of another dtype (float64, float16) are cast
        to the parameters' dtype, the rule ``transformers`` modules follow.
        """
        who = type(self).__name__
        check_features(features, self.in_dim, who)
        if mask is not None:
            check_mask(mask, features.shape[0], features.shape[1], who)
            mask = mask.to(device=features.device, dtype=torch.bool)
            if bool(mask.all()):
                mask = None  # nothing to hide: the unmasked attention path is faster and gives the same numbers
        dtype = next((p.dtype for p in self.parameters() if p.is_floating_point()), features.dtype)
        return features.to(dtype), mask


def check_mask_2d(mask: torch.Tensor, who: str = "bridge") -> torch.Tensor:
    """A (B, N) bool / 0-1 integer mask on its own (no features to compare with) -> bool (B, N)."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{who}: mask must be a torch.Tensor (B, N), got {type(mask).__name__}")
    if mask.dim() != 2:
        raise ValueError(f"{who}: mask must be (B, N) with True/1 = real feature, got shape {tuple(mask.shape)}")
    check_mask(mask, mask.shape[0], mask.shape[1], who)
    return mask.bool()


def check_features(features: torch.Tensor, in_dim: int, who: str = "bridge") -> None:
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{who}: features must be a torch.Tensor (B, N, {in_dim}), got {type(features).__name__}")
    if features.dim() != 3 or features.shape[-1] != in_dim:
        raise ValueError(
            f"{who}: features must be (B, N, D_in) with D_in = {in_dim}, got shape {tuple(features.shape)}"
        )
    if features.shape[1] == 0:
        raise ValueError(f"{who}: features must hold at least one token (N >= 1), got shape {tuple(features.shape)}")
    if not features.is_floating_point():
        raise ValueError(f"{who}: features must be floating point, got dtype {features.dtype}")


def check_mask(mask: torch.Tensor, b: int, n: int, who: str = "bridge") -> None:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{who}: mask must be a torch.Tensor (B, N) = ({b}, {n}), got {type(mask).__name__}")
    if tuple(mask.shape) != (b, n):
        raise ValueError(
            f"{who}: mask must be (B, N) = ({b}, {n}) with True/1 = real feature, got shape {tuple(mask.shape)}"
        )
    if mask.is_floating_point() or mask.is_complex():
        raise ValueError(f"{who}: mask must be bool or integer (True/1 = real, False/0 = padding), got dtype {mask.dtype}")
    if mask.dtype != torch.bool and mask.numel() and bool(((mask != 0) & (mask != 1)).any()):
        raise ValueError(f"{who}: an integer mask holds only 0 (padding) and 1 (real), got values {mask.unique().tolist()}")


def check_positive(name: str, value: object) -> None:
    """Config fields that count something must be positive ints (bools are not counts)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def check_fraction(name: str, value: object, low: float = 0.0, high: float = 1.0) -> None:
    """A probability such as dropout: a real number in [low, high)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not low <= value < high:
        raise ValueError(f"{name} must lie in [{low:g}, {high:g}), got {value!r}")


def check_eps(name: str, value: object) -> None:
    """A normalisation epsilon: a positive real number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def resolve_config(config: object, config_cls: type, who: str) -> object:
    """``config`` itself when it is a ``config_cls``, a default one for None; a TypeError otherwise."""
    if config is None:
        return config_cls()
    if not isinstance(config, config_cls):
        raise TypeError(
            f"{who} expects a {config_cls.__name__} (or None for the defaults), got {type(config).__name__}: "
            f"build one with {config_cls.__name__}(...) or use make_bridge(name, **fields)"
        )
    return config
