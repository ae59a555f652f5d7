"""The Q-Former bridge (BLIP-2, arXiv:2301.12597): K learned queries read the image through cross-attention.

Dims: ``B`` batch, ``N`` image feature tokens, ``D_in`` encoder width, ``K`` (``num_queries``) the
learned queries, ``D`` the Q-Former's width, ``F`` its MLP width, ``D_llm`` (``out_dim``) LLM width.

    q = LayerNorm(queries)                                (1, K, D) -> (B, K, D)
    for each layer i:
        q = LayerNorm(q + SelfAttn(q))                    queries exchange information
        if i % cross_attention_frequency == 0:
            q = LayerNorm(q + CrossAttn(q, features))     queries read the image: (B, K, D) x (B, N, D_in)
        q = LayerNorm(q + MLP(q))                         each query on its own
    out = q W^T + b                                       (B, K, D) -> (B, K, D_llm),  K fixed whatever N is

The Q-Former is BERT-shaped, so unlike ViT, CLIP or GPT-2 it is **post-norm**: the LayerNorm comes
after the residual sum (``LayerNorm(x + f(x))``), and the queries are normalised once before the
first layer. BLIP-2 initialises it from BERT-base (cross-attention every 2nd layer) and trains the
queries to extract what the frozen LLM needs; the output is always ``K`` tokens (32 in BLIP-2),
however many patches the encoder produced: the LLM's cost no longer grows with the image.
Text input (BLIP-2's first-stage image-text losses) is left out: as a bridge it only sees queries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmllm_course.bridges.base import Bridge, check_eps, check_fraction, check_mask_2d, check_positive, resolve_config
from mmllm_course.nn.attention import MultiHeadAttention
from mmllm_course.nn.transformer import ACTIVATIONS, MLP


@dataclass
class QFormerBridgeConfig:
    in_dim: int = 64  # D_in: the encoder's width (BLIP-2's encoder_hidden_size)
    out_dim: int = 128  # D_llm
    dim: int = 64  # D: the Q-Former's width
    num_queries: int = 8  # K
    depth: int = 2  # number of layers
    num_heads: int = 4
    mlp_dim: int = 256  # F
    cross_attention_frequency: int = 1  # layer i cross-attends when i % frequency == 0 (BLIP-2: 2)
    activation: str = "gelu"
    layer_norm_eps: float = 1e-12  # BERT's
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("in_dim", "out_dim", "dim", "num_queries", "depth", "num_heads", "mlp_dim", "cross_attention_frequency"):
            check_positive(name, getattr(self, name))
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} is not divisible by num_heads={self.num_heads}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        check_eps("layer_norm_eps", self.layer_norm_eps)
        check_fraction("dropout", self.dropout)


class QFormerLayer(nn.Module):
    """One post-norm Q-Former layer on the queries: (B, K, D) [x features (B, N, D_in)] -> (B, K, D)."""

    def __init__(self, config: QFormerBridgeConfig, cross_attention: bool):
        super().__init__()
        c = config
        self.self_attn = MultiHeadAttention(c.dim, c.num_heads, dropout=c.dropout)
        self.ln_self = nn.LayerNorm(c.dim, eps=c.layer_norm_eps)
        self.cross_attn = MultiHeadAttention(c.dim, c.num_heads, kv_dim=c.in_dim, dropout=c.dropout) if cross_attention else None
        self.ln_cross = nn.LayerNorm(c.dim, eps=c.layer_norm_eps) if cross_attention else None
        self.mlp = MLP(c.dim, c.mlp_dim, c.activation, dropout=c.dropout)
        self.ln_mlp = nn.LayerNorm(c.dim, eps=c.layer_norm_eps)
        self.drop = nn.Dropout(c.dropout)

    def forward(
        self, q: torch.Tensor, features: torch.Tensor, mask: torch.Tensor | None = None, return_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """q: (B, K, D), features: (B, N, D_in), mask: (B, N) True = real -> (q (B, K, D), cross weights (B, H, K, N) | None)."""
        h, _ = self.self_attn(q)  # (B, K, D): queries look at each other
        q = self.ln_self(q + self.drop(h))  # post-norm: normalise after the residual sum
        weights = None
        if self.cross_attn is not None:
            h, weights = self.cross_attn(q, features, key_padding_mask=mask, return_weights=return_weights)  # (B, K, D)
            q = self.ln_cross(q + self.drop(h))
        q = self.ln_mlp(q + self.mlp(q))  # (B, K, D)
        return q, weights


class QFormerBridge(Bridge):
    """features (B, N, D_in) [, mask (B, N)] -> (B, K, D_llm), K = ``num_queries`` whatever N is."""

    def __init__(self, config: QFormerBridgeConfig | None = None):
        super().__init__()
        self.config = c = resolve_config(config, QFormerBridgeConfig, "QFormerBridge")
        self.in_dim, self.out_dim = c.in_dim, c.out_dim
        self.queries = nn.Parameter(torch.randn(1, c.num_queries, c.dim) * 0.02)  # (1, K, D), BLIP-2's init
        self.ln_queries = nn.LayerNorm(c.dim, eps=c.layer_norm_eps)
        self.drop = nn.Dropout(c.dropout)
        self.layers = nn.ModuleList(
            QFormerLayer(c, cross_attention=i % c.cross_attention_frequency == 0) for i in range(c.depth)
        )
        self.proj = nn.Linear(c.dim, c.out_dim)  # BLIP-2's language_projection

    def num_output_tokens(self, n: int) -> int:
        check_positive("n", n)
        return self.config.num_queries

    def output_mask(self, mask: torch.Tensor) -> torch.Tensor:
        mask = check_mask_2d(mask, type(self).__name__)
        return torch.ones(mask.shape[0], self.config.num_queries, dtype=torch.bool, device=mask.device)

    def _run(
        self, features: torch.Tensor, mask: torch.Tensor | None, return_weights: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features, mask = self.check_inputs(features, mask)
        q = self.drop(self.ln_queries(self.queries)).expand(features.shape[0], -1, -1)  # (B, K, D)
        maps = []
        for layer in self.layers:
            q, weights = layer(q, features, mask, return_weights=return_weights)
            if weights is not None:
                maps.append(weights)
        return self.proj(q), maps  # (B, K, D_llm)

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """features: (B, N, D_in); mask: (B, N), True/1 = real feature (padding is never attended). -> (B, K, D_llm)."""
        return self._run(features, mask, return_weights=False)[0]

    def cross_attention_maps(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """How much each query looks at each feature: one (B, H, K, N) tensor per cross-attention layer."""
        return self._run(features, mask, return_weights=True)[1]


# --- weights from transformers -------------------------------------------------------------------

_BLIP2_ACTIVATIONS = {"gelu": "gelu", "quick_gelu": "quick_gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}


def qformer_bridge_from_transformers(model_or_path: object) -> QFormerBridge:
    """Our :class:`QFormerBridge` holding BLIP-2's ``query_tokens``, ``qformer`` and ``language_projection``.

    Accepts a ``Blip2ForConditionalGeneration`` or ``Blip2Model`` object, or a folder saved from one
    (``model_type`` ``"blip-2"``; any other type is refused). Live 5.x names, layer ``i``:
    ``qformer.encoder.layer.i.attention.{attention.{query,key,value}, output.{dense,LayerNorm}}``,
    ``...crossattention.(same)`` on cross-attention layers, ``...{intermediate_query,output_query}.dense``,
    ``...output_query.LayerNorm``; ``qformer.layernorm`` normalises the queries first. A Q-Former
    built with ``use_qformer_text_input`` also has a text feed-forward (``intermediate``, ``output``)
    that only text tokens use: a bridge sees no text, so those weights are refused rather than dropped.
    """
    from mmllm_course.bridges._convert import WeightMap, check_loading_problems, resolve_reference

    what = "qformer_bridge_from_transformers"
    hf, problems = resolve_reference(model_or_path, {"blip-2": "Blip2ForConditionalGeneration"}, (), what)
    check_loading_problems(problems, ("query_tokens", "qformer.", "language_projection."), what)
    if not all(hasattr(hf, a) for a in ("query_tokens", "qformer", "language_projection")):
        raise ValueError(f"{what}: a {type(hf).__name__} has no query_tokens + qformer + language_projection "
                         "(use Blip2ForConditionalGeneration or Blip2Model)")
    qc = hf.config.qformer_config
    if qc.hidden_act not in _BLIP2_ACTIVATIONS:
        raise ValueError(f"{what}: unsupported Q-Former hidden_act {qc.hidden_act!r}; expected one of {sorted(_BLIP2_ACTIVATIONS)}")
    state = {"query_tokens": hf.query_tokens.detach()}
    state.update({f"qformer.{k}": v for k, v in hf.qformer.state_dict().items()})
    state.update({f"language_projection.{k}": v for k, v in hf.language_projection.state_dict().items()})
    weights = WeightMap(state, what)

    queries = weights.take("query_tokens")  # (1, K, D)
    proj = weights.take("language_projection.weight")  # (D_llm, D)
    config = QFormerBridgeConfig(
        in_dim=qc.encoder_hidden_size, out_dim=proj.shape[0], dim=qc.hidden_size, num_queries=queries.shape[1],
        depth=qc.num_hidden_layers, num_heads=qc.num_attention_heads, mlp_dim=qc.intermediate_size,
        cross_attention_frequency=qc.cross_attention_frequency, activation=_BLIP2_ACTIVATIONS[qc.hidden_act],
        layer_norm_eps=qc.layer_norm_eps,
    )
    new = {"queries": queries, "proj.weight": proj, "proj.bias": weights.take("language_projection.bias")}
    for p in ("weight", "bias"):
        new[f"ln_queries.{p}"] = weights.take(f"qformer.layernorm.{p}")
    names = {  # ours (within layer i) -> theirs (within qformer.encoder.layer.i)
        "self_attn.q_proj": "attention.attention.query", "self_attn.k_proj": "attention.attention.key",
        "self_attn.v_proj": "attention.attention.value", "self_attn.out_proj": "attention.output.dense",
        "ln_self": "attention.output.LayerNorm",
        "mlp.fc1": "intermediate_query.dense", "mlp.fc2": "output_query.dense", "ln_mlp": "output_query.LayerNorm",
    }
    cross_names = {
        "cross_attn.q_proj": "crossattention.attention.query", "cross_attn.k_proj": "crossattention.attention.key",
        "cross_attn.v_proj": "crossattention.attention.value", "cross_attn.out_proj": "crossattention.output.dense",
        "ln_cross": "crossattention.output.LayerNorm",
    }
    for i in range(config.depth):
        layer_names = dict(names, **(cross_names if i % config.cross_attention_frequency == 0 else {}))
        for ours, theirs in layer_names.items():
            for p in ("weight", "bias"):
                new[f"layers.{i}.{ours}.{p}"] = weights.take(f"qformer.encoder.layer.{i}.{theirs}.{p}")
    weights.finish()
    ours = QFormerBridge(config)
    ours.load_state_dict(new)
    return ours.train(hf.training)
