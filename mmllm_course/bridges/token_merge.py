"""The token-merging bridge (Idefics3, arXiv:2408.12637; SmolVLM, nanoVLM): pixel shuffle, then a projection.

Dims: ``B`` batch, ``N = S x S`` feature tokens on a square grid, ``D_in`` encoder width, ``r``
(``ratio``) the merge factor, ``K = N / r^2`` output tokens, ``D_llm`` (``out_dim``) LLM width.

    features (B, S*S, D_in) -> grid (B, S, S, D_in)
    pixel shuffle: every r x r block of neighbouring tokens becomes ONE token holding their r^2
    feature vectors side by side: (B, (S/r)*(S/r), r*r*D_in)        (space-to-depth)
    projection (a linear layer, or an MLP with ``depth`` >= 2):  -> (B, K, D_llm),  K = N / r^2

No attention and almost no parameters beyond the projection: the information of the r^2 tokens is
kept (concatenated, not averaged); only their number shrinks, by r^2 (Idefics3 uses r = 2: the
26 x 26 = 676 SigLIP tokens of a 364 x 364 image become 13 x 13 = 169). The channel order inside a merged token
is ``(row offset, column offset, channel)``: the einops pattern
``"b (h r1) (w r2) d -> b (h w) (r1 r2 d)"``, exactly what ``transformers``' ``Idefics3Connector``
computes with its views and permutes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange

from mmllm_course._checks import check_choice, check_int, check_tensor
from mmllm_course._convert import apply_plan, load_exact, resolve_hf_model
from mmllm_course.bridges.base import Bridge, resolve_config
from mmllm_course.bridges.mlp import MLPBridge, MLPBridgeConfig
from mmllm_course.nn.transformer import ACTIVATIONS


def _grid_side(n: int, ratio: int, who: str) -> int:
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(
            f"{who}: pixel shuffle needs a square grid of tokens, got N={n} (not a perfect square; "
            "drop a [CLS] token first: features[:, 1:])"
        )
    if side % ratio:
        raise ValueError(f"{who}: the grid side S={side} (N={n}) is not divisible by the merge ratio r={ratio}")
    return side


def pixel_shuffle(x: torch.Tensor, ratio: int) -> torch.Tensor:
    """Space-to-depth on a square grid of tokens: (B, S*S, D) -> (B, (S/r)^2, r*r*D).

    Token ``(i, j)`` of the output holds the tokens ``(r*i + a, r*j + b)`` for ``a, b`` in ``0..r-1``,
    ordered ``a`` (row offset) first, then ``b``, then the channel, as Idefics3 / SmolVLM do.
    """
    check_tensor(x, "pixel_shuffle: x", "(B, N, D)", ndim=3)
    check_int(ratio, "ratio")
    side = _grid_side(x.shape[1], ratio, "pixel_shuffle")
    # Teaching form: rearrange(x, "b (h r1 w r2) d -> b (h w) (r1 r2 d)", r1=ratio, r2=ratio, h=side // ratio)
    b, _, d = x.shape
    g = side // ratio
    x = x.reshape(b, g, ratio, g, ratio, d)  # (B, h, r1, w, r2, D): row = h*r + r1, column = w*r + r2
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, g * g, ratio * ratio * d)  # (B, h*w, r1*r2*D)


def pixel_shuffle_einops(x: torch.Tensor, ratio: int) -> torch.Tensor:
    """The same as :func:`pixel_shuffle`, written as one einops pattern (the notebook's version)."""
    side = _grid_side(x.shape[1], ratio, "pixel_shuffle_einops")
    return rearrange(x, "b (h r1 w r2) d -> b (h w) (r1 r2 d)", r1=ratio, r2=ratio, h=side // ratio)


@dataclass
class TokenMergeBridgeConfig:
    in_dim: int = 64  # D_in
    out_dim: int = 128  # D_llm
    ratio: int = 2  # r: every r x r block of tokens becomes one token
    depth: int = 1  # 1: one linear layer (Idefics3, SmolVLM, nanoVLM); 2+: an MLP with GELUs
    hidden_dim: int | None = None  # the MLP's hidden width when depth >= 2; None = out_dim
    activation: str = "gelu"
    bias: bool = False  # Idefics3's projection has no bias

    def __post_init__(self) -> None:
        for name in ("in_dim", "out_dim", "ratio", "depth"):
            check_int(getattr(self, name), name)
        if self.hidden_dim is not None:
            check_int(self.hidden_dim, "hidden_dim")
        check_choice(self.activation, "activation", ACTIVATIONS)


class TokenMergeBridge(Bridge):
    """features (B, S*S, D_in) [, mask (B, N)] -> (B, N / r^2, D_llm): pixel shuffle, then a projection."""

    def __init__(self, config: TokenMergeBridgeConfig | None = None):
        super().__init__()
        self.config = c = resolve_config(config, TokenMergeBridgeConfig, "TokenMergeBridge")
        self.in_dim, self.out_dim = c.in_dim, c.out_dim
        self.proj = MLPBridge(MLPBridgeConfig(
            in_dim=c.in_dim * c.ratio**2, out_dim=c.out_dim, hidden_dim=c.hidden_dim, depth=c.depth,
            activation=c.activation, bias=c.bias,
        ))

    def num_output_tokens(self, n: int) -> int:
        check_int(n, "n")
        return (_grid_side(n, self.config.ratio, type(self).__name__) // self.config.ratio) ** 2

    def output_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """A merged token is real when any of its r x r source tokens is: (B, N) -> (B, N / r^2)."""
        mask = self.check_mask(mask)
        merged = pixel_shuffle(mask.to(torch.float32)[..., None], self.config.ratio)  # (B, K, r*r)
        return merged.amax(dim=-1) > 0

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """features: (B, N, D_in) with N = S*S and S divisible by r; mask (B, N) is checked, not applied."""
        features, _ = self.check_inputs(features, mask)
        _grid_side(features.shape[1], self.config.ratio, type(self).__name__)
        return self.proj.project(pixel_shuffle(features, self.config.ratio))  # (B, K, r*r*D_in) -> (B, K, D_llm)


# --- weights from transformers -------------------------------------------------------------------


def token_merge_bridge_from_transformers(model_or_path: object) -> TokenMergeBridge:
    """Our :class:`TokenMergeBridge` holding the connector of Idefics3 or SmolVLM.

    Accepts an ``Idefics3Connector`` / ``SmolVLMConnector``, an Idefics3 or SmolVLM model object
    (``...Model`` or ``...ForConditionalGeneration``), or a folder saved from one (``model_type``
    ``"idefics3"`` or ``"smolvlm"``; any other type is refused). Live 5.x names:
    ``model.connector.modality_projection.proj.weight`` (bias-free), ratio = ``config.scale_factor``.
    """
    what = "token_merge_bridge_from_transformers"
    hf = resolve_hf_model(
        model_or_path, what,
        {"idefics3": "Idefics3ForConditionalGeneration", "smolvlm": "SmolVLMForConditionalGeneration"},
        only={"idefics3": ("connector.",), "smolvlm": ("connector.",)},
        module_classes=("Idefics3Connector", "SmolVLMConnector"),
    )
    connector = hf
    for attr in ("model", "connector"):
        connector = getattr(connector, attr, connector)
    if type(connector).__name__ not in ("Idefics3Connector", "SmolVLMConnector"):
        raise ValueError(f"{what}: found no Idefics3Connector / SmolVLMConnector in a {type(hf).__name__}")
    ratio = int(connector.scale_factor)
    sd = connector.state_dict()
    bias = "modality_projection.proj.bias" in sd
    plan = {f"proj.layers.0.{p}": (f"modality_projection.proj.{p}", None) for p in ("weight", "bias")[: 1 + bias]}
    source = f"a {type(connector).__name__} ({what})"
    new = apply_plan(sd, plan, source)
    w = new["proj.layers.0.weight"]  # (D_llm, r*r*D_in)
    if w.shape[1] % (ratio * ratio):
        raise ValueError(f"{what}: projection input width {w.shape[1]} is not divisible by scale_factor^2 = {ratio * ratio}")
    config = TokenMergeBridgeConfig(in_dim=w.shape[1] // ratio**2, out_dim=w.shape[0], ratio=ratio, depth=1, bias=bias)
    return load_exact(TokenMergeBridge(config), new, source).train(connector.training)
