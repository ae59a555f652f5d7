"""The Vision Transformer (ViT): patch tokens + a [CLS] token through a stack of transformer blocks.

Dims: ``B`` batch, ``C x H x W`` images, ``N`` patches, ``D`` width, ``L`` depth (blocks).

    images (B, C, H, W) -> VisionEmbeddings -> (B, 1+N, D) -> [pre LayerNorm] -> L blocks
                        -> final LayerNorm -> last_hidden_state (B, 1+N, D), pooled (B, D)

Where the final LayerNorm sits (``ViTConfig.final_norm``) is the one real difference between the
two families we load weights from:

* ``"tokens"`` (HF ``ViTModel``): the LayerNorm is applied to every token, so ``last_hidden_state``
  is normalised; ``pooled`` is then the [CLS] row of it (``pooling="cls"``) or the mean of the
  normalised patch tokens (``"mean"``). HF ``ViTModel``'s own ``pooler_output`` adds a
  dense + tanh layer on top (a leftover of BERT, rarely trained); we leave it out: a bridge or a
  linear probe learns its own head.
* ``"pooled"`` (HF ``CLIPVisionModel``): ``last_hidden_state`` is the raw output of the last block
  (NOT normalised) and ``pooled = LayerNorm([CLS])`` (or the LayerNorm of the patch mean); this
  equals CLIP's ``pooler_output``. CLIP also normalises the embeddings before the first block
  (``pre_norm=True``, CLIP's ``pre_layrnorm``).

``hidden_states`` holds L + 1 tensors (B, 1+N, D): the input of the first block (after
``pre_norm``), then the output of every block (before the final LayerNorm), as ``transformers`` does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from mmllm_course.encoders.patches import VisionEmbeddings
from mmllm_course.nn.transformer import ACTIVATIONS, TransformerBlock


@dataclass
class ViTConfig:
    """A ViT's sizes and layout; the defaults give a ~0.1M-parameter model that runs in ms on a CPU."""

    image_size: int = 32
    patch_size: int = 8
    in_channels: int = 3
    dim: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_dim: int = 256
    pooling: str = "cls"  # "cls": the [CLS] token; "mean": the mean of the patch tokens
    pre_norm: bool = False  # LayerNorm on the embeddings before the first block (CLIP's pre_layrnorm)
    final_norm: str = "tokens"  # "tokens": LayerNorm on every output token (ViT); "pooled": only on pooled (CLIP)
    activation: str = "gelu"  # "gelu" | "quick_gelu" | "gelu_tanh"
    layer_norm_eps: float = 1e-5
    position: str = "learned"  # "learned" | "sincos"
    patch_bias: bool = True  # CLIP's patch projection has no bias
    dropout: float = 0.0
    # Per-channel (x - mean) / std applied to the images first, so the model takes pixels in [0, 1].
    # None (the default, as in transformers, whose image processors normalise instead) skips it.
    pixel_mean: tuple[float, ...] | None = None
    pixel_std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} is not divisible by num_heads={self.num_heads}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size={self.image_size} is not divisible by patch_size={self.patch_size}")
        for name, value, allowed in (
            ("pooling", self.pooling, ("cls", "mean")),
            ("final_norm", self.final_norm, ("tokens", "pooled")),
            ("activation", self.activation, ACTIVATIONS),
            ("position", self.position, ("learned", "sincos")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")

        for name in ("pixel_mean", "pixel_std"):
            value = getattr(self, name)
            if value is not None and len(value) != self.in_channels:
                raise ValueError(f"{name} needs one value per channel ({self.in_channels}), got {value}")
        if (self.pixel_mean is None) != (self.pixel_std is None):
            raise ValueError("give both pixel_mean and pixel_std, or neither")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass
class ViTOutput:
    """What a :class:`ViT` returns (shapes for ``B`` images, ``N`` patches, width ``D``)."""

    last_hidden_state: torch.Tensor  # (B, 1+N, D), [CLS] first
    pooled: torch.Tensor  # (B, D)
    hidden_states: tuple[torch.Tensor, ...] | None = None  # depth + 1 tensors (B, 1+N, D)
    attentions: tuple[torch.Tensor, ...] | None = None  # depth tensors (B, H, 1+N, 1+N)


class ViT(nn.Module):
    """Vision Transformer: images (B, C, H, W) -> :class:`ViTOutput`. See the module docstring."""

    def __init__(self, config: ViTConfig | None = None):
        super().__init__()
        self.config = config = config or ViTConfig()
        self.embeddings = VisionEmbeddings(
            config.image_size, config.patch_size, config.in_channels, config.dim,
            cls_token=True, position=config.position, patch_bias=config.patch_bias,
        )
        self.pre_norm = nn.LayerNorm(config.dim, eps=config.layer_norm_eps) if config.pre_norm else nn.Identity()
        self.blocks = nn.ModuleList(
            TransformerBlock(config.dim, config.num_heads, hidden_dim=config.mlp_dim, activation=config.activation,
                             layer_norm_eps=config.layer_norm_eps, dropout=config.dropout)
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.dim, eps=config.layer_norm_eps)
        if config.pixel_mean is not None:
            self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(-1, 1, 1), persistent=False)
            self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(-1, 1, 1), persistent=False)
        else:
            self.pixel_mean = self.pixel_std = None

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0] if self.config.pooling == "cls" else x[:, 1:].mean(dim=1)  # (B, 1+N, D) -> (B, D)

    def forward(self, images: torch.Tensor, output_hidden_states: bool = False, output_attentions: bool = False) -> ViTOutput:
        """images: (B, C, H, W) with C, H, W as in the config (ValueError otherwise)."""
        if self.pixel_mean is not None:
            self.embeddings.patch_embedding.check_images(images)  # every size check before any arithmetic
            images = (images - self.pixel_mean.to(images.dtype)) / self.pixel_std.to(images.dtype)
        x = self.pre_norm(self.embeddings(images))  # (B, 1+N, D)
        hidden = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        for block in self.blocks:
            x, weights = block(x, return_weights=output_attentions)  # fast SDPA path unless weights are asked for
            if hidden is not None:
                hidden.append(x)
            if attentions is not None:
                attentions.append(weights)
        if self.config.final_norm == "tokens":
            x = self.norm(x)
            pooled = self._pool(x)
        else:
            pooled = self.norm(self._pool(x))
        return ViTOutput(
            last_hidden_state=x,
            pooled=pooled,
            hidden_states=tuple(hidden) if hidden is not None else None,
            attentions=tuple(attentions) if attentions is not None else None,
        )


# --- weights from transformers -------------------------------------------------------------------

_HF_ACTIVATIONS = {"gelu": "gelu", "quick_gelu": "quick_gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}


def _activation_from_hf(hidden_act: str) -> str:
    if hidden_act not in _HF_ACTIVATIONS:
        raise ValueError(f"unsupported hidden_act {hidden_act!r}: expected one of {sorted(_HF_ACTIVATIONS)}")
    return _HF_ACTIVATIONS[hidden_act]


def _resolve_hf_model(model_or_path: object, class_name: str) -> nn.Module:
    """A model object is returned as is; a folder path (or hub name) is loaded with ``transformers.<class_name>``."""
    if isinstance(model_or_path, (str, os.PathLike)):
        import transformers  # lazy: importing transformers takes seconds

        return getattr(transformers, class_name).from_pretrained(str(model_or_path))
    if not isinstance(model_or_path, nn.Module):
        raise ValueError(f"expected a transformers {class_name} or a folder path, got {type(model_or_path).__name__}")
    return model_or_path


def _block_state(sd: dict[str, torch.Tensor], src: str, names: dict[str, str]) -> dict[str, torch.Tensor]:
    """Map one HF layer (prefix ``src``) onto a :class:`TransformerBlock`; ``names`` maps ours -> theirs.

    A missing q/k/v bias (ViT with ``qkv_bias=False``) becomes zeros, which computes the same thing.
    """
    out = {}
    for ours, theirs in names.items():
        out[f"{ours}.weight"] = sd[f"{src}{theirs}.weight"]
        out[f"{ours}.bias"] = sd.get(f"{src}{theirs}.bias", torch.zeros(sd[f"{src}{theirs}.weight"].shape[0]))
    return out


def _conv_to_linear(weight: torch.Tensor) -> torch.Tensor:
    """A patch conv kernel (D, C, p, p) -> our PatchEmbedding's Linear weight (D, p*p*C)."""
    return rearrange(weight, "d c p1 p2 -> d (p1 p2 c)")


def vit_from_transformers(model_or_path: object) -> ViT:
    """Our :class:`ViT` holding the weights of a ``transformers`` ``ViTModel`` (object or saved folder).

    Live 5.x names: ``embeddings.{cls_token, position_embeddings, patch_embeddings.projection}``,
    ``layers.i.attention.{q,k,v,o}_proj``, ``layers.i.{layernorm_before, layernorm_after}``,
    ``layers.i.mlp.{fc1, fc2}``, ``layernorm``. The ``pooler`` (dense + tanh) is not ported:
    our ``pooled`` is the normalised [CLS] token (``last_hidden_state[:, 0]``).
    """
    hf = _resolve_hf_model(model_or_path, "ViTModel")
    hf = getattr(hf, "vit", hf)  # ViTForImageClassification wraps a ViTModel
    c = hf.config
    config = ViTConfig(
        image_size=c.image_size, patch_size=c.patch_size, in_channels=c.num_channels, dim=c.hidden_size,
        depth=c.num_hidden_layers, num_heads=c.num_attention_heads, mlp_dim=c.intermediate_size,
        pooling="cls", pre_norm=False, final_norm="tokens", activation=_activation_from_hf(c.hidden_act),
        layer_norm_eps=c.layer_norm_eps, position="learned", patch_bias=True,
    )
    sd = hf.state_dict()
    new = {
        "embeddings.cls_token": sd["embeddings.cls_token"],
        "embeddings.position_embedding": sd["embeddings.position_embeddings"],
        "embeddings.patch_embedding.proj.weight": _conv_to_linear(sd["embeddings.patch_embeddings.projection.weight"]),
        "embeddings.patch_embedding.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": sd["layernorm.weight"],
        "norm.bias": sd["layernorm.bias"],
    }
    names = {"attn.q_proj": "attention.q_proj", "attn.k_proj": "attention.k_proj", "attn.v_proj": "attention.v_proj",
             "attn.out_proj": "attention.o_proj", "ln1": "layernorm_before", "ln2": "layernorm_after",
             "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    for i in range(config.depth):
        for k, v in _block_state(sd, f"layers.{i}.", names).items():
            new[f"blocks.{i}.{k}"] = v
    ours = ViT(config)
    ours.load_state_dict(new)  # strict: a name we forgot to map fails here
    return ours.train(hf.training)


def clip_vision_state_dict(sd: dict[str, torch.Tensor], depth: int, prefix: str = "") -> dict[str, torch.Tensor]:
    """Rename a ``CLIPVisionModel`` state dict (keys under ``prefix``) to our :class:`ViT`'s names."""
    p = prefix
    new = {
        "embeddings.cls_token": sd[f"{p}embeddings.class_embedding"][None, None, :],  # (D,) -> (1, 1, D)
        "embeddings.position_embedding": sd[f"{p}embeddings.position_embedding.weight"][None],  # (1+N, D) -> (1, 1+N, D)
        "embeddings.patch_embedding.proj.weight": _conv_to_linear(sd[f"{p}embeddings.patch_embedding.weight"]),
        "pre_norm.weight": sd[f"{p}pre_layrnorm.weight"],
        "pre_norm.bias": sd[f"{p}pre_layrnorm.bias"],
        "norm.weight": sd[f"{p}post_layernorm.weight"],
        "norm.bias": sd[f"{p}post_layernorm.bias"],
    }
    names = {"attn.q_proj": "self_attn.q_proj", "attn.k_proj": "self_attn.k_proj", "attn.v_proj": "self_attn.v_proj",
             "attn.out_proj": "self_attn.out_proj", "ln1": "layer_norm1", "ln2": "layer_norm2",
             "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    for i in range(depth):
        for k, v in _block_state(sd, f"{p}encoder.layers.{i}.", names).items():
            new[f"blocks.{i}.{k}"] = v
    return new


def clip_vision_config_from_hf(c: object) -> ViTConfig:
    """Our :class:`ViTConfig` for a ``transformers`` ``CLIPVisionConfig``."""
    return ViTConfig(
        image_size=c.image_size, patch_size=c.patch_size, in_channels=c.num_channels, dim=c.hidden_size,
        depth=c.num_hidden_layers, num_heads=c.num_attention_heads, mlp_dim=c.intermediate_size,
        pooling="cls", pre_norm=True, final_norm="pooled", activation=_activation_from_hf(c.hidden_act),
        layer_norm_eps=c.layer_norm_eps, position="learned", patch_bias=False,
    )


def clip_vision_from_transformers(model_or_path: object) -> ViT:
    """Our :class:`ViT` holding the weights of a ``transformers`` ``CLIPVisionModel`` (object or folder).

    Also accepts a ``CLIPModel`` object (its ``vision_model`` is used). Live 5.x names:
    ``embeddings.{class_embedding, patch_embedding, position_embedding}``, ``pre_layrnorm``,
    ``encoder.layers.i.{self_attn.{q,k,v,out}_proj, layer_norm1, layer_norm2, mlp.fc1, mlp.fc2}``,
    ``post_layernorm``. Our ``pooled`` equals CLIP's ``pooler_output``.
    """
    hf = _resolve_hf_model(model_or_path, "CLIPVisionModel")
    hf = getattr(hf, "vision_model", hf)
    config = clip_vision_config_from_hf(hf.config)
    ours = ViT(config)
    ours.load_state_dict(clip_vision_state_dict(hf.state_dict(), config.depth))
    return ours.train(hf.training)
