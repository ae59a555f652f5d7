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

from mmllm_course._checks import check_choice, check_int
from mmllm_course._convert import Plan, activation_from_hf, apply_plan, load_exact, resolve_hf_model
from mmllm_course.bridges.base import Bridge, resolve_config
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
        check_int(self.in_dim, "in_dim")
        check_int(self.out_dim, "out_dim")
        check_int(self.depth, "depth")
        if self.hidden_dim is not None:
            check_int(self.hidden_dim, "hidden_dim")
        check_choice(self.activation, "activation", ACTIVATIONS)

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
        check_int(n, "n")
        return n

    def output_mask(self, mask: torch.Tensor) -> torch.Tensor:
        return self.check_mask(mask)

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

# A bare projector has no config: its activation module's class names the activation.
_ACTIVATION_MODULES = {"GELUActivation": "gelu", "QuickGELUActivation": "quick_gelu", "NewGELUActivation": "gelu_new",
                       "PytorchGELUTanh": "gelu_pytorch_tanh", "GELUTanh": "gelu_pytorch_tanh"}


def mlp_bridge_from_transformers(model_or_path: object) -> MLPBridge:
    """Our :class:`MLPBridge` holding the weights of LLaVA's projector (``LlavaMultiModalProjector``).

    Accepts the projector itself, a ``LlavaModel`` / ``LlavaForConditionalGeneration`` object, or a
    folder saved from one (``model_type`` ``"llava"``; any other type is refused). Live 5.x names:
    ``linear_1.{weight,bias}``, ``linear_2.{weight,bias}``, under ``model.multi_modal_projector.``
    in the full model; the activation is the config's ``projector_hidden_act``.
    """
    what = "mlp_bridge_from_transformers"
    hf = resolve_hf_model(model_or_path, what, {"llava": "LlavaForConditionalGeneration"},
                          only={"llava": ("multi_modal_projector.",)}, module_classes=("LlavaMultiModalProjector",))
    projector = hf
    for attr in ("model", "multi_modal_projector"):  # LlavaForConditionalGeneration -> LlavaModel -> projector
        projector = getattr(projector, attr, projector)
    if type(projector).__name__ != "LlavaMultiModalProjector":
        raise ValueError(f"{what}: found no LlavaMultiModalProjector in a {type(hf).__name__}")
    act_name = getattr(getattr(hf, "config", None), "projector_hidden_act", None)
    if act_name is None:  # a bare projector: read its activation module
        act_name = _ACTIVATION_MODULES.get(type(projector.act).__name__)
    activation = activation_from_hf(act_name, "projector activation", what)

    sd = projector.state_dict()
    bias = "linear_1.bias" in sd
    plan: Plan = {f"layers.{i}.{p}": (f"linear_{i + 1}.{p}", None) for i in range(2) for p in ("weight", "bias")[: 1 + bias]}
    source = f"a {type(projector).__name__} ({what})"
    new = apply_plan(sd, plan, source)
    w1, w2 = new["layers.0.weight"], new["layers.1.weight"]
    config = MLPBridgeConfig(in_dim=w1.shape[1], out_dim=w2.shape[0], hidden_dim=w1.shape[0], depth=2,
                             activation=activation, bias=bias)
    return load_exact(MLPBridge(config), new, source).train(projector.training)
