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

from mmllm_course._checks import check_int, check_tensor, padding_mask, to_module_dtype


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
        check_tensor(features, f"{who}: features", f"(B, N, D_in) with D_in = {self.in_dim}", ndim=3, kind="float")
        if features.shape[-1] != self.in_dim:
            raise ValueError(
                f"{who}: features must be (B, N, D_in) with D_in = {self.in_dim}, got shape {tuple(features.shape)}"
            )
        if features.shape[1] == 0:
            raise ValueError(f"{who}: features must hold at least one token (N >= 1), got shape {tuple(features.shape)}")
        if mask is not None:
            mask = padding_mask(mask, f"{who}: mask", tuple(features.shape[:2])).to(features.device)
            if bool(mask.all()):
                mask = None  # nothing to hide: the unmasked attention path is faster and gives the same numbers
        return to_module_dtype(features, self), mask

    def check_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """A (B, N) bool / 0-1 integer padding mask on its own (no features to compare with) -> bool (B, N)."""
        return padding_mask(mask, f"{type(self).__name__}: mask")


class QueryBridge(Bridge):
    """A bridge whose K learned queries read the features: K = ``num_queries`` whatever N is (Q-Former, resampler).

    Subclasses set ``num_queries`` and implement ``_run(features, mask, return_weights) -> (out (B, K, out_dim),
    one cross-attention map (B, H, K, N) per layer that has one, when ``return_weights``)``.
    """

    num_queries: int  # K

    def num_output_tokens(self, n: int) -> int:
        check_int(n, "n")
        return self.num_queries

    def output_mask(self, mask: torch.Tensor) -> torch.Tensor:
        mask = self.check_mask(mask)
        return torch.ones(mask.shape[0], self.num_queries, dtype=torch.bool, device=mask.device)

    def _run(
        self, features: torch.Tensor, mask: torch.Tensor | None, return_weights: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        raise NotImplementedError

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """features: (B, N, D_in); mask: (B, N), True/1 = real feature (padding is never attended). -> (B, K, D_llm)."""
        return self._run(features, mask, return_weights=False)[0]

    def cross_attention_maps(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """How much each query looks at each feature: one (B, H, K, N) tensor per cross-attention layer."""
        return self._run(features, mask, return_weights=True)[1]


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
