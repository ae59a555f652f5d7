"""CLIP's text encoder: a causal transformer over token ids, read out at the end-of-text token.

Dims: ``B`` batch, ``L`` tokens (at most ``context_length``), ``D`` width, ``V`` vocabulary size.

    input_ids (B, L) -> token + learned position embeddings (B, L, D) -> causal pre-norm blocks
                     -> final LayerNorm -> last_hidden_state (B, L, D)
                     -> pooled (B, D) = last_hidden_state at the FIRST ``eos_token_id`` of each row

Why the end-of-text token: with a causal mask, token t sees tokens 0..t only, so the first eos is
the first position that has read the whole caption. Tokens after it (padding) change nothing
before it, so padding needs no mask for the pooled vector; ``attention_mask`` (B, L), 1 = real
token, 0 = padding, is still accepted and hides padded keys, as ``transformers`` does.

Token ids of any integer dtype are accepted; ``attention_mask`` must be boolean or hold only 0 and 1.
Dropout as in ``transformers``' CLIP: ``attention_dropout`` on the attention weights; ``dropout``
on each sub-layer's output (0 for CLIP checkpoints, which have none). No dropout on the embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmllm_course._checks import InputTypeError, check_dropout, check_int, check_number, check_tensor, describe, keep_mask
from mmllm_course._convert import Plan
from mmllm_course._convert import activation_from_hf as _activation_from_hf
from mmllm_course._convert import apply_plan as _apply_plan
from mmllm_course._convert import dropout_from_hf as _dropout_from_hf
from mmllm_course._convert import load_exact as _load_exact
from mmllm_course._convert import resolve_hf_model as _resolve_hf_model
from mmllm_course.nn.position import LearnedPositionEmbedding
from mmllm_course.nn.transformer import ACTIVATIONS, TransformerBlock


@dataclass
class TextTransformerConfig:
    """Sizes of the text tower; the defaults give a tiny CPU-fast model (vocabulary of 100 ids)."""

    vocab_size: int = 100
    context_length: int = 16
    dim: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_dim: int = 256
    activation: str = "gelu"  # "gelu" | "quick_gelu" (CLIP checkpoints) | "gelu_tanh"
    layer_norm_eps: float = 1e-5
    eos_token_id: int = 1  # end of text: the pooled position (first occurrence in each row)
    pad_token_id: int | None = 0  # what a tokenizer pads with; the model itself only reads attention_mask
    dropout: float = 0.0  # on each sub-layer's output
    attention_dropout: float = 0.0  # on the attention weights (CLIP's attention_dropout)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "dim", "num_heads", "mlp_dim"):
            check_int(getattr(self, name), name)
        check_int(self.depth, "depth", minimum=0)
        check_number(self.layer_norm_eps, "layer_norm_eps", low=0.0, low_open=True)
        check_dropout(self.dropout, "dropout")
        check_dropout(self.attention_dropout, "attention_dropout")
        check_int(self.eos_token_id, "eos_token_id", minimum=None)
        if self.pad_token_id is not None:
            check_int(self.pad_token_id, "pad_token_id", minimum=None)
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} is not divisible by num_heads={self.num_heads}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        for name in ("eos_token_id", "pad_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ValueError(f"{name}={value} is outside the vocabulary [0, {self.vocab_size})")


@dataclass
class TextTransformerOutput:
    """What a :class:`TextTransformer` returns."""

    last_hidden_state: torch.Tensor  # (B, L, D), after the final LayerNorm
    pooled: torch.Tensor  # (B, D), at the first eos of each row
    hidden_states: tuple[torch.Tensor, ...] | None = None  # depth + 1 tensors (B, L, D), before the final LayerNorm
    attentions: tuple[torch.Tensor, ...] | None = None  # depth tensors (B, H, L, L)


class TextTransformer(nn.Module):
    """CLIP-style causal text encoder: input_ids (B, L) -> :class:`TextTransformerOutput`."""

    def __init__(self, config: TextTransformerConfig | None = None):
        super().__init__()
        if config is not None and not isinstance(config, TextTransformerConfig):
            raise InputTypeError(f"config must be a TextTransformerConfig or None, got {describe(config)}")
        self.config = config = config or TextTransformerConfig()
        self.token_embedding = nn.Embedding(config.vocab_size, config.dim)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.position_embedding = LearnedPositionEmbedding(config.context_length, config.dim)
        self.blocks = nn.ModuleList(
            TransformerBlock(config.dim, config.num_heads, hidden_dim=config.mlp_dim, activation=config.activation,
                             layer_norm_eps=config.layer_norm_eps, dropout=config.dropout,
                             attention_dropout=config.attention_dropout)
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.dim, eps=config.layer_norm_eps)

    def _check_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """Raise on bad input; return the attention mask as booleans (True = real token) or None."""
        c = self.config
        check_tensor(input_ids, "input_ids", "(B, L) of token ids")
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be a (B, L) tensor of token ids, got {tuple(input_ids.shape)}")
        if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
            raise InputTypeError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
        b, length = input_ids.shape
        if b == 0 or length == 0:
            raise ValueError(f"input_ids must hold at least one row of at least one token, got shape {tuple(input_ids.shape)}")
        if length > c.context_length:
            raise ValueError(f"text of {length} tokens is longer than context_length={c.context_length}")
        if input_ids.numel():
            lo, hi = int(input_ids.min()), int(input_ids.max())
            if lo < 0 or hi >= c.vocab_size:
                raise ValueError(f"token ids must lie in [0, {c.vocab_size}) (vocab_size={c.vocab_size}), got ids in [{lo}, {hi}]")
        has_eos = (input_ids == c.eos_token_id).any(dim=1)  # (B,)
        if not bool(has_eos.all()):
            rows = torch.nonzero(~has_eos).flatten().tolist()
            raise ValueError(
                f"every row needs an end-of-text token (eos_token_id={c.eos_token_id}) to pool at; "
                f"rows {rows[:10]} of {b} have none"
            )
        if attention_mask is None:
            return None
        check_tensor(attention_mask, "attention_mask", f"(B, L) = ({b}, {length})")
        if tuple(attention_mask.shape) != (b, length):
            raise ValueError(f"attention_mask must be (B, L) = ({b}, {length}), got {tuple(attention_mask.shape)}")
        return keep_mask(attention_mask, "attention_mask")

    def eos_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B,): index of the first ``eos_token_id`` in each row (argmax returns the first max)."""
        return (input_ids == self.config.eos_token_id).int().argmax(dim=1)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> TextTransformerOutput:
        """input_ids: (B, L) ints in [0, V) with an eos in each row; attention_mask: (B, L), 1 = real token."""
        attention_mask = self._check_inputs(input_ids, attention_mask)
        input_ids = input_ids.long()  # nn.Embedding takes int64 (or int32) ids: any integer dtype is fine here
        x = self.position_embedding(self.token_embedding(input_ids))  # (B, L, D)
        hidden = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        for block in self.blocks:
            x, weights = block(x, key_padding_mask=attention_mask, causal=True, return_weights=output_attentions)
            if hidden is not None:
                hidden.append(x)
            if attentions is not None:
                attentions.append(weights)
        x = self.norm(x)
        pooled = x[torch.arange(x.shape[0], device=x.device), self.eos_positions(input_ids)]  # (B, D)
        return TextTransformerOutput(
            last_hidden_state=x,
            pooled=pooled,
            hidden_states=tuple(hidden) if hidden is not None else None,
            attentions=tuple(attentions) if attentions is not None else None,
        )


# --- weights from transformers -------------------------------------------------------------------


def clip_text_config_from_hf(c: object) -> TextTransformerConfig:
    """Our :class:`TextTransformerConfig` for a ``transformers`` ``CLIPTextConfig``.

    Legacy configs (``eos_token_id == 2``, e.g. the original openai checkpoints) make ``transformers``
    pool at ``argmax(input_ids)``, the highest id; CLIP's end-of-text token is the last id of its
    vocabulary, so we pool at the first ``vocab_size - 1``, which is the same position.
    ``attention_dropout`` carries over; CLIP applies no other dropout, so ``dropout`` is 0.
    """
    eos = c.eos_token_id if c.eos_token_id != 2 else c.vocab_size - 1
    pad = c.pad_token_id if c.pad_token_id is not None and 0 <= c.pad_token_id < c.vocab_size else None
    return TextTransformerConfig(
        vocab_size=c.vocab_size, context_length=c.max_position_embeddings, dim=c.hidden_size,
        depth=c.num_hidden_layers, num_heads=c.num_attention_heads, mlp_dim=c.intermediate_size,
        activation=_activation_from_hf(c.hidden_act), layer_norm_eps=c.layer_norm_eps,
        eos_token_id=eos, pad_token_id=pad,
        dropout=0.0, attention_dropout=_dropout_from_hf(getattr(c, "attention_dropout", 0.0), "attention_dropout"),
    )


def clip_text_plan(depth: int, prefix: str = "") -> Plan:
    """Plan from a ``CLIPTextModel`` state dict (keys under ``prefix``) to our :class:`TextTransformer`'s names.

    Live 5.x names: ``embeddings.{token_embedding, position_embedding}.weight``,
    ``encoder.layers.i.{self_attn.{q,k,v,out}_proj, layer_norm1, layer_norm2, mlp.fc1, mlp.fc2}``,
    ``final_layer_norm``.
    """
    p = prefix
    plan: Plan = {
        "token_embedding.weight": (f"{p}embeddings.token_embedding.weight", None),
        "position_embedding.weight": (f"{p}embeddings.position_embedding.weight", None),
        "norm.weight": (f"{p}final_layer_norm.weight", None),
        "norm.bias": (f"{p}final_layer_norm.bias", None),
    }
    names = {"attn.q_proj": "self_attn.q_proj", "attn.k_proj": "self_attn.k_proj", "attn.v_proj": "self_attn.v_proj",
             "attn.out_proj": "self_attn.out_proj", "ln1": "layer_norm1", "ln2": "layer_norm2",
             "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    for i in range(depth):
        for ours, theirs in names.items():
            for kind in ("weight", "bias"):
                plan[f"blocks.{i}.{ours}.{kind}"] = (f"{p}encoder.layers.{i}.{theirs}.{kind}", None)
    return plan


def clip_text_state_dict(sd: dict[str, torch.Tensor], depth: int, prefix: str = "") -> dict[str, torch.Tensor]:
    """Rename a ``CLIPTextModel`` state dict (keys under ``prefix``) to our :class:`TextTransformer`'s names.

    Only the keys under ``prefix`` are considered; a missing or unused one raises a ``ValueError``.
    """
    own = {k: v for k, v in sd.items() if k.startswith(prefix)}
    return _apply_plan(own, clip_text_plan(depth, prefix), "a CLIP text tower")


def clip_text_from_transformers(model_or_path: object) -> TextTransformer:
    """Our :class:`TextTransformer` holding the weights of a ``transformers`` ``CLIPTextModel`` (object or folder).

    Also accepts a ``CLIPModel`` (object or folder): its ``text_model`` is used. Any other
    ``model_type`` raises a ``ValueError`` listing the supported ones. Our ``pooled`` equals its ``pooler_output``.
    """
    accepted = {"clip_text_model": "CLIPTextModel", "clip": "CLIPModel"}
    hf = _resolve_hf_model(model_or_path, "clip_text_from_transformers", accepted, ignore=("text_projection.",))
    hf = getattr(hf, "text_model", hf)
    config = clip_text_config_from_hf(hf.config)
    source = f"a {type(hf).__name__} (CLIP text tower)"
    new = _apply_plan(hf.state_dict(), clip_text_plan(config.depth), source)
    return _load_exact(TextTransformer(config), new, source).train(hf.training)
