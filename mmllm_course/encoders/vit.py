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

Dropout as in ``transformers``' ViT: ``dropout`` (``hidden_dropout_prob``) on the embeddings and on
each sub-layer's output, ``attention_dropout`` (``attention_probs_dropout_prob``) on the attention
weights. Images of another floating dtype are cast to the parameter dtype (as ``ViTModel`` does).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from mmllm_course._checks import (
    InputTypeError,
    check_choice,
    check_dropout,
    check_int,
    check_number,
    describe,
    to_module_dtype,
)
from mmllm_course._convert import (
    Plan,
    activation_from_hf,
    apply_plan,
    dropout_from_hf,
    load_exact,
    resolve_hf_model,
)
from mmllm_course.encoders.patches import VisionEmbeddings, check_image_size
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
    dropout: float = 0.0  # on the embeddings and each sub-layer's output (ViT's hidden_dropout_prob)
    attention_dropout: float = 0.0  # on the attention weights (ViT's attention_probs_dropout_prob)
    # Per-channel (x - mean) / std applied to the images first, so the model takes pixels in [0, 1].
    # None (the default, as in transformers, whose image processors normalise instead) skips it.
    pixel_mean: tuple[float, ...] | None = None
    pixel_std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        self.image_size = check_image_size(self.image_size)
        for name in ("patch_size", "in_channels", "dim", "num_heads", "mlp_dim"):
            check_int(getattr(self, name), name)
        check_int(self.depth, "depth", minimum=0)
        check_number(self.layer_norm_eps, "layer_norm_eps", low=0.0, low_open=True)
        check_dropout(self.dropout, "dropout")
        check_dropout(self.attention_dropout, "attention_dropout")
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
            check_choice(value, name, allowed)
        if self.position == "sincos" and self.dim % 4:
            raise ValueError(f"position='sincos' needs dim divisible by 4, got dim={self.dim}")

        for name in ("pixel_mean", "pixel_std"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
                raise InputTypeError(f"{name} must be a tuple of {self.in_channels} numbers (one per channel), got {describe(value)}")
            if len(value) != self.in_channels:
                raise ValueError(f"{name} needs one value per channel ({self.in_channels}), got {value}")
            numbers = tuple(check_number(v, f"{name}[{i}]") for i, v in enumerate(value))
            if name == "pixel_std" and any(v <= 0 for v in numbers):
                raise ValueError(f"pixel_std must be positive in every channel (images are divided by it), got {value}")
            setattr(self, name, numbers)
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
        if config is not None and not isinstance(config, ViTConfig):
            raise InputTypeError(f"config must be a ViTConfig or None, got {describe(config)}")
        self.config = config = config or ViTConfig()
        self.embeddings = VisionEmbeddings(
            config.image_size, config.patch_size, config.in_channels, config.dim,
            cls_token=True, position=config.position, patch_bias=config.patch_bias,
        )
        self.embed_drop = nn.Dropout(config.dropout)  # ViT's embeddings.dropout
        self.pre_norm = nn.LayerNorm(config.dim, eps=config.layer_norm_eps) if config.pre_norm else nn.Identity()
        self.blocks = nn.ModuleList(
            TransformerBlock(config.dim, config.num_heads, hidden_dim=config.mlp_dim, activation=config.activation,
                             layer_norm_eps=config.layer_norm_eps, dropout=config.dropout,
                             attention_dropout=config.attention_dropout)
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
        """images: (B, C, H, W) floats with C, H, W as in the config (ValueError otherwise)."""
        self.embeddings.patch_embedding.check_images(images)  # every size check before any arithmetic
        images = to_module_dtype(images, self)  # the dtype rule: images follow the weights
        if self.pixel_mean is not None:
            images = (images - self.pixel_mean.to(images.dtype)) / self.pixel_std.to(images.dtype)
        x = self.pre_norm(self.embed_drop(self.embeddings(images)))  # (B, 1+N, D)
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
#
# The shared converter plumbing (model_type check before loading, plans that fail on a missing or an
# unused weight, shape check before ``load_state_dict``) lives in ``mmllm_course._convert``.

def _block_plan(src: str, dst: str, names: dict[str, str], optional_bias: bool = False) -> Plan:
    """Plan for one HF layer (prefix ``src``) onto a :class:`TransformerBlock` (prefix ``dst``); ``names`` maps ours -> theirs.

    With ``optional_bias``, a missing q/k/v bias (ViT's ``qkv_bias=False``) becomes zeros, which computes the same thing.
    """
    plan: Plan = {}
    for ours, theirs in names.items():
        weight = f"{src}{theirs}.weight"
        plan[f"{dst}{ours}.weight"] = (weight, None)
        if optional_bias and ours in ("attn.q_proj", "attn.k_proj", "attn.v_proj"):
            plan[f"{dst}{ours}.bias"] = (f"{src}{theirs}.bias", None, lambda: None)
        else:
            plan[f"{dst}{ours}.bias"] = (f"{src}{theirs}.bias", None)
    return plan


def _zeros_for_missing_biases(new: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace the ``None`` of an absent bias by zeros the size of its weight's output."""
    for k, v in list(new.items()):
        if v is None and k.endswith(".bias"):
            weight = new[k[: -len("bias")] + "weight"]
            new[k] = torch.zeros(weight.shape[0], dtype=weight.dtype)
    return new


def _conv_to_linear(weight: torch.Tensor) -> torch.Tensor:
    """A patch conv kernel (D, C, p, p) -> our PatchEmbedding's Linear weight (D, p*p*C)."""
    return rearrange(weight, "d c p1 p2 -> d (p1 p2 c)")


_VIT_HEADS = ("pooler.", "embeddings.mask_token", "classifier.")  # not ported: dense+tanh pooler, MIM mask token, class head


def vit_from_transformers(model_or_path: object) -> ViT:
    """Our :class:`ViT` holding the weights of a ``transformers`` ``ViTModel`` (object or saved folder).

    Accepts ``model_type == "vit"`` only (``ViTModel``, ``ViTForImageClassification``); anything
    else (a CLIP, DeiT, DINOv2, SigLIP checkpoint...) raises a ``ValueError`` naming what came and
    what is supported, and so does a checkpoint with a missing or an unused weight.
    Live 5.x names: ``embeddings.{cls_token, position_embeddings, patch_embeddings.projection}``,
    ``layers.i.attention.{q,k,v,o}_proj``, ``layers.i.{layernorm_before, layernorm_after}``,
    ``layers.i.mlp.{fc1, fc2}``, ``layernorm``. The ``pooler`` (dense + tanh) is not ported:
    our ``pooled`` is the normalised [CLS] token (``last_hidden_state[:, 0]``). Dropout carries over:
    ``hidden_dropout_prob`` -> ``dropout``, ``attention_probs_dropout_prob`` -> ``attention_dropout``.
    """
    hf = resolve_hf_model(model_or_path, "vit_from_transformers", {"vit": "ViTModel"}, ignore=_VIT_HEADS)
    hf = getattr(hf, "vit", hf)  # ViTForImageClassification wraps a ViTModel
    c = hf.config
    config = ViTConfig(
        image_size=c.image_size, patch_size=c.patch_size, in_channels=c.num_channels, dim=c.hidden_size,
        depth=c.num_hidden_layers, num_heads=c.num_attention_heads, mlp_dim=c.intermediate_size,
        pooling="cls", pre_norm=False, final_norm="tokens", activation=activation_from_hf(c.hidden_act),
        layer_norm_eps=c.layer_norm_eps, position="learned", patch_bias=True,
        dropout=dropout_from_hf(c.hidden_dropout_prob, "hidden_dropout_prob"),
        attention_dropout=dropout_from_hf(c.attention_probs_dropout_prob, "attention_probs_dropout_prob"),
    )
    plan: Plan = {
        "embeddings.cls_token": ("embeddings.cls_token", None),
        "embeddings.position_embedding": ("embeddings.position_embeddings", None),
        "embeddings.patch_embedding.proj.weight": ("embeddings.patch_embeddings.projection.weight", _conv_to_linear),
        "embeddings.patch_embedding.proj.bias": ("embeddings.patch_embeddings.projection.bias", None),
        "norm.weight": ("layernorm.weight", None),
        "norm.bias": ("layernorm.bias", None),
    }
    names = {"attn.q_proj": "attention.q_proj", "attn.k_proj": "attention.k_proj", "attn.v_proj": "attention.v_proj",
             "attn.out_proj": "attention.o_proj", "ln1": "layernorm_before", "ln2": "layernorm_after",
             "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    for i in range(config.depth):
        plan.update(_block_plan(f"layers.{i}.", f"blocks.{i}.", names, optional_bias=True))
    source = f"a {type(hf).__name__} (model_type 'vit')"
    new = _zeros_for_missing_biases(apply_plan(hf.state_dict(), plan, source, ignore=_VIT_HEADS))
    return load_exact(ViT(config), new, source).train(hf.training)


def clip_vision_plan(depth: int, prefix: str = "") -> Plan:
    """Plan from a ``CLIPVisionModel`` state dict (keys under ``prefix``) to our :class:`ViT`'s names."""
    p = prefix
    plan: Plan = {
        "embeddings.cls_token": (f"{p}embeddings.class_embedding", lambda t: t[None, None, :]),  # (D,) -> (1, 1, D)
        "embeddings.position_embedding": (f"{p}embeddings.position_embedding.weight", lambda t: t[None]),  # (1+N, D) -> (1, 1+N, D)
        "embeddings.patch_embedding.proj.weight": (f"{p}embeddings.patch_embedding.weight", _conv_to_linear),
        "pre_norm.weight": (f"{p}pre_layrnorm.weight", None),
        "pre_norm.bias": (f"{p}pre_layrnorm.bias", None),
        "norm.weight": (f"{p}post_layernorm.weight", None),
        "norm.bias": (f"{p}post_layernorm.bias", None),
    }
    names = {"attn.q_proj": "self_attn.q_proj", "attn.k_proj": "self_attn.k_proj", "attn.v_proj": "self_attn.v_proj",
             "attn.out_proj": "self_attn.out_proj", "ln1": "layer_norm1", "ln2": "layer_norm2",
             "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    for i in range(depth):
        plan.update(_block_plan(f"{p}encoder.layers.{i}.", f"blocks.{i}.", names))
    return plan


def clip_vision_state_dict(sd: dict[str, torch.Tensor], depth: int, prefix: str = "") -> dict[str, torch.Tensor]:
    """Rename a ``CLIPVisionModel`` state dict (keys under ``prefix``) to our :class:`ViT`'s names.

    Only the keys under ``prefix`` are considered; a missing one raises a ``ValueError``.
    """
    own = {k: v for k, v in sd.items() if k.startswith(prefix)}
    return apply_plan(own, clip_vision_plan(depth, prefix), "a CLIP vision tower")


def clip_vision_config_from_hf(c: object) -> ViTConfig:
    """Our :class:`ViTConfig` for a ``transformers`` ``CLIPVisionConfig``.

    ``attention_dropout`` carries over; CLIP has no other dropout (``transformers``' CLIP applies
    none to embeddings or sub-layer outputs), so ``dropout`` is 0.
    """
    return ViTConfig(
        image_size=c.image_size, patch_size=c.patch_size, in_channels=c.num_channels, dim=c.hidden_size,
        depth=c.num_hidden_layers, num_heads=c.num_attention_heads, mlp_dim=c.intermediate_size,
        pooling="cls", pre_norm=True, final_norm="pooled", activation=activation_from_hf(c.hidden_act),
        layer_norm_eps=c.layer_norm_eps, position="learned", patch_bias=False,
        dropout=0.0, attention_dropout=dropout_from_hf(getattr(c, "attention_dropout", 0.0), "attention_dropout"),
    )


def clip_vision_from_transformers(model_or_path: object) -> ViT:
    """Our :class:`ViT` holding the weights of a ``transformers`` ``CLIPVisionModel`` (object or folder).

    Also accepts a ``CLIPModel`` (object or folder): its ``vision_model`` is used, the text tower
    and projections are left aside. Any other ``model_type`` raises a ``ValueError`` that lists the
    supported ones. Live 5.x names:
    ``embeddings.{class_embedding, patch_embedding, position_embedding}``, ``pre_layrnorm``,
    ``encoder.layers.i.{self_attn.{q,k,v,out}_proj, layer_norm1, layer_norm2, mlp.fc1, mlp.fc2}``,
    ``post_layernorm``. Our ``pooled`` equals CLIP's ``pooler_output``.
    """
    accepted = {"clip_vision_model": "CLIPVisionModel", "clip": "CLIPModel"}
    hf = resolve_hf_model(model_or_path, "clip_vision_from_transformers", accepted, ignore=("visual_projection.",))
    hf = getattr(hf, "vision_model", hf)
    config = clip_vision_config_from_hf(hf.config)
    source = f"a {type(hf).__name__} (CLIP vision tower)"
    new = apply_plan(hf.state_dict(), clip_vision_plan(config.depth), source)
    return load_exact(ViT(config), new, source).train(hf.training)
