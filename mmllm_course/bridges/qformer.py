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

from mmllm_course._checks import check_choice, check_dropout, check_int, check_number
from mmllm_course._convert import Plan, activation_from_hf, apply_plan, load_exact, resolve_hf_model
from mmllm_course.bridges.base import QueryBridge, resolve_config
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
            check_int(getattr(self, name), name)
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} is not divisible by num_heads={self.num_heads}")
        check_choice(self.activation, "activation", ACTIVATIONS)
        check_number(self.layer_norm_eps, "layer_norm_eps", low=0.0, low_open=True)
        check_dropout(self.dropout, "dropout")


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


class QFormerBridge(QueryBridge):
    """features (B, N, D_in) [, mask (B, N)] -> (B, K, D_llm), K = ``num_queries`` whatever N is."""

    def __init__(self, config: QFormerBridgeConfig | None = None):
        super().__init__()
        self.config = c = resolve_config(config, QFormerBridgeConfig, "QFormerBridge")
        self.in_dim, self.out_dim, self.num_queries = c.in_dim, c.out_dim, c.num_queries
        self.queries = nn.Parameter(torch.randn(1, c.num_queries, c.dim) * 0.02)  # (1, K, D), BLIP-2's init
        self.ln_queries = nn.LayerNorm(c.dim, eps=c.layer_norm_eps)
        self.drop = nn.Dropout(c.dropout)
        self.layers = nn.ModuleList(
            QFormerLayer(c, cross_attention=i % c.cross_attention_frequency == 0) for i in range(c.depth)
        )
        self.proj = nn.Linear(c.dim, c.out_dim)  # BLIP-2's language_projection

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


# --- weights from transformers -------------------------------------------------------------------


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
    what = "qformer_bridge_from_transformers"
    hf = resolve_hf_model(model_or_path, what, {"blip-2": "Blip2ForConditionalGeneration"},
                          only={"blip-2": ("query_tokens", "qformer.", "language_projection.")})
    if not all(hasattr(hf, a) for a in ("query_tokens", "qformer", "language_projection")):
        raise ValueError(f"{what}: a {type(hf).__name__} has no query_tokens + qformer + language_projection "
                         "(use Blip2ForConditionalGeneration or Blip2Model)")
    qc = hf.config.qformer_config
    activation = activation_from_hf(qc.hidden_act, "Q-Former hidden_act", what)
    sd = {"query_tokens": hf.query_tokens.detach()}
    sd.update({f"qformer.{k}": v for k, v in hf.qformer.state_dict().items()})
    sd.update({f"language_projection.{k}": v for k, v in hf.language_projection.state_dict().items()})

    plan: Plan = {"queries": ("query_tokens", None), "proj.weight": ("language_projection.weight", None),
                  "proj.bias": ("language_projection.bias", None)}
    for p in ("weight", "bias"):
        plan[f"ln_queries.{p}"] = (f"qformer.layernorm.{p}", None)
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
    for i in range(qc.num_hidden_layers):
        layer_names = dict(names, **(cross_names if i % qc.cross_attention_frequency == 0 else {}))
        for ours, theirs in layer_names.items():
            for p in ("weight", "bias"):
                plan[f"layers.{i}.{ours}.{p}"] = (f"qformer.encoder.layer.{i}.{theirs}.{p}", None)
    source = f"a {type(hf).__name__}'s Q-Former ({what})"
    new = apply_plan(sd, plan, source)
    config = QFormerBridgeConfig(
        in_dim=qc.encoder_hidden_size, out_dim=new["proj.weight"].shape[0], dim=qc.hidden_size,
        num_queries=new["queries"].shape[1], depth=qc.num_hidden_layers, num_heads=qc.num_attention_heads,
        mlp_dim=qc.intermediate_size, cross_attention_frequency=qc.cross_attention_frequency, activation=activation,
        layer_norm_eps=qc.layer_norm_eps,
    )
    return load_exact(QFormerBridge(config), new, source).train(hf.training)
