"""The MLP bridge (LLaVA-1.5, arXiv:2310.03744): Linear -> GELU -> Linear, token by token.

Dims: ``B`` batch, ``N`` feature tokens, ``D_in`` encoder width, ``D_llm`` (``out_dim``) LLM width,
``F`` (``hidden_dim``) the hidden width (LLaVA: F = D_llm).

    h = GELU(X W1^T + b1)    (B, N, D_in) -> (B, N, F)
    Y = h W2^T + b2          (B, N, F)    -> (B, N, D_llm),   K = N

LLaVA (v1) used one linear layer; LLaVA-1.5 replaced it with this two-layer MLP ("mlp2x_gelu") and
reported better results: the non-linearity lets the bridge bend the encoder's space into the LLM's.
``depth`` sets the number of linear layers (1 = the linear bridge, 2 = LLaVA-1.5, 3+ = deeper).
The layer names map one to one onto ``transformers``' ``LlavaMultiModalProjector`` (``linear_1``,
``linear_2``): see :func:`mlp_bridge_from_transformers`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmllm_course.bridges.base import Bridge, check_mask_2d, check_positive, resolve_config
from mmllm_course.nn.transformer import ACTIVATIONS, make_activation


@dataclass
class MLPBridgeConfig:
    in_dim: int = 64  # D_in
    out_dim: int = 128  # D_llm
    hidden_dim: int | None = None  # F; None = out_dim, as LLaVA-1.5
    depth: int = 2  # number of linear layers; a GELU between consecutive ones
    activation: str = "gelu"  # "gelu" | "quick_gelu" | "gelu_tanh"
    bias: bool = True

    def __post_init__(self) -> None:
        check_positive("in_dim", self.in_dim)
        check_positive("out_dim", self.out_dim)
        check_positive("depth", self.depth)
        if self.hidden_dim is not None:
            check_positive("hidden_dim", self.hidden_dim)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")

    @property
    def widths(self) -> list[int]:
        """[D_in, F, ..., F, D_llm]: the input and output width of every layer."""
        hidden = self.out_dim if self.hidden_dim is None else self.hidden_dim
        return [self.in_dim] + [hidden] * (self.depth - 1) + [self.out_dim]


class MLPBridge(Bridge):
    """features (B, N, D_in) [, mask (B, N)] -> (B, N, D_llm) through ``depth`` linear layers with GELUs between."""

    def __init__(self, config: MLPBridgeConfig | None = None):
        super().__init__()
        self.config = config = resolve_config(config, MLPBridgeConfig, "MLPBridge")
        self.in_dim, self.out_dim = config.in_dim, config.out_dim
        w = config.widths
        self.layers = nn.ModuleList(nn.Linear(w[i], w[i + 1], bias=config.bias) for i in range(config.depth))
        self.act = make_activation(config.activation)

    def num_output_tokens(self, n: int) -> int:
        check_positive("n", n)
        return n

    def output_mask(self, mask: torch.Tensor) -> torch.Tensor:
        return check_mask_2d(mask, type(self).__name__)

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """features: (B, N, D_in); mask (B, N) is checked, not applied (padding stays padding). -> (B, N, D_llm)."""
        features, _ = self.check_inputs(features, mask)
        return self.project(features)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The layers alone, without the input checks of ``forward``: (.., D_in) -> (.., D_llm)."""
        x = self.layers[0](x)  # (.., F)
        for layer in self.layers[1:]:
            x = layer(self.act(x))  # (.., F) ... -> (.., D_llm)
        return x


# --- weights from transformers -------------------------------------------------------------------

_LLAVA_ACTIVATIONS = {"gelu": "gelu", "quick_gelu": "quick_gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}


def mlp_bridge_from_transformers(model_or_path: object) -> MLPBridge:
    """Our :class:`MLPBridge` holding the weights of LLaVA's projector (``LlavaMultiModalProjector``).

    Accepts the projector itself, a ``LlavaModel`` / ``LlavaForConditionalGeneration`` object, or a
    folder saved from one (``model_type`` ``"llava"``; any other type is refused). Live 5.x names:
    ``linear_1.{weight,bias}``, ``linear_2.{weight,bias}``, under ``model.multi_modal_projector.``
    in the full model; the activation is the config's ``projector_hidden_act``.
    """
    from mmllm_course.bridges._convert import WeightMap, check_loading_problems, resolve_reference

    what = "mlp_bridge_from_transformers"
    hf, problems = resolve_reference(
        model_or_path, {"llava": "LlavaForConditionalGeneration"}, ("LlavaMultiModalProjector",), what
    )
    check_loading_problems(problems, ("multi_modal_projector.",), what)
    projector = hf
    for attr in ("model", "multi_modal_projector"):  # LlavaForConditionalGeneration -> LlavaModel -> projector
        projector = getattr(projector, attr, projector)
    if type(projector).__name__ != "LlavaMultiModalProjector":
        raise ValueError(f"{what}: found no LlavaMultiModalProjector in a {type(hf).__name__}")
    act_name = getattr(getattr(hf, "config", None), "projector_hidden_act", None)
    if act_name is None:  # a bare projector: read its activation module
        act_name = {"GELUActivation": "gelu", "QuickGELUActivation": "quick_gelu", "NewGELUActivation": "gelu_new",
                    "PytorchGELUTanh": "gelu_pytorch_tanh", "GELUTanh": "gelu_pytorch_tanh"}.get(type(projector.act).__name__)
    if act_name not in _LLAVA_ACTIVATIONS:
        raise ValueError(f"{what}: unsupported projector activation {act_name!r}; expected one of {sorted(_LLAVA_ACTIVATIONS)}")

    weights = WeightMap(projector.state_dict(), what)
    w1, w2 = weights.take("linear_1.weight"), weights.take("linear_2.weight")
    bias = "linear_1.bias" in weights
    config = MLPBridgeConfig(in_dim=w1.shape[1], out_dim=w2.shape[0], hidden_dim=w1.shape[0], depth=2,
                             activation=_LLAVA_ACTIVATIONS[act_name], bias=bias)
    new = {"layers.0.weight": w1, "layers.1.weight": w2}
    if bias:
        new["layers.0.bias"], new["layers.1.bias"] = weights.take("linear_1.bias"), weights.take("linear_2.bias")
    weights.finish()
    ours = MLPBridge(config)
    ours.load_state_dict(new)
    return ours.train(projector.training)
