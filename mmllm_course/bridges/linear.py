"""The linear bridge (MiniGPT-4, arXiv:2304.10592): one matrix maps every feature into the LLM's space.

Dims: ``B`` batch, ``N`` feature tokens, ``D_in`` encoder width, ``D_llm`` (``out_dim``) LLM width.

    X_llm = X W^T + b        (B, N, D_in) -> (B, N, D_llm),  K = N

MiniGPT-4 trains only this layer (on the 32 outputs of BLIP-2's frozen Q-Former) to connect a frozen
vision encoder to a frozen Vicuna. It matches dimensions; it can only rotate, scale and shift, so
whatever the encoder and the LLM disagree on non-linearly, it cannot fix (chapter 3 measures this).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmllm_course._checks import check_int
from mmllm_course.bridges.base import Bridge, resolve_config


@dataclass
class LinearBridgeConfig:
    in_dim: int = 64  # D_in: the chapter-2 ViT's width
    out_dim: int = 128  # D_llm
    bias: bool = True

    def __post_init__(self) -> None:
        check_int(self.in_dim, "in_dim")
        check_int(self.out_dim, "out_dim")


class LinearBridge(Bridge):
    """features (B, N, D_in) [, mask (B, N)] -> (B, N, D_llm): one ``nn.Linear`` applied to every token."""

    def __init__(self, config: LinearBridgeConfig | None = None):
        super().__init__()
        self.config = config = resolve_config(config, LinearBridgeConfig, "LinearBridge")
        self.in_dim, self.out_dim = config.in_dim, config.out_dim
        self.proj = nn.Linear(config.in_dim, config.out_dim, bias=config.bias)

    def num_output_tokens(self, n: int) -> int:
        check_int(n, "n")
        return n  # one LLM token per feature token

    def output_mask(self, mask: torch.Tensor) -> torch.Tensor:
        return self.check_mask(mask)

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """features: (B, N, D_in); mask (B, N) is checked, not applied (padding stays padding). -> (B, N, D_llm)."""
        features, _ = self.check_inputs(features, mask)
        return self.proj(features)
