"""Backbone B, cross-modality attention: gated cross-attention blocks inside a frozen LM (Flamingo, Llama 3.2 Vision).

The image never enters the LM's sequence. Its K bridge tokens are *media* that the text reads through
new cross-attention blocks inserted before every k-th decoder layer of the frozen LM. Dims: ``B``
prompts, ``T`` tokens per prompt, ``M`` images per prompt (the most any row holds), ``K`` bridge
tokens per image, ``S = M * K`` media tokens, ``D`` the LM's width, ``H`` heads, ``V`` vocabulary.

    prompt  "<image>Describe the image."  -- tokenizer, one <image> marker per image -->  ids (B, T)
    images (B_img, 3, H, W) -- encoder --> features -- bridge --> media (B_img, K, D) -> per row (B, S, D)
    mask (B, T, S) = media_attention_mask(ids): which images each text token may see
    before decoder layer l in {0, k, 2k, ...}:   h = block_l(h, media, mask)          (h: (B, T, D))
    logits (B, T, V) = the LM's own layers, norm and head, unchanged

One block (:class:`GatedCrossAttentionBlock`), pre-norm, each branch behind a ``tanh`` gate that
starts at zero (Flamingo, arXiv:2204.14198, eq. 1; Llama 3.2 Vision's ``MllamaCrossAttentionDecoderLayer``)::

    h = h + tanh(a) * CrossAttention(RMSNorm(h), media, mask)       a = 0 at initialisation
    h = h + tanh(m) * FeedForward(RMSNorm(h))                       m = 0 at initialisation

With both gates at zero the block returns ``h`` unchanged, so the untrained model *is* the frozen LM
(``tests/test_cross_attention.py`` checks ``torch.equal`` on the logits): training starts from the
LM's text ability and opens the gates as far as the image helps.

**Media locations** (Flamingo's masking). Each ``<image>`` marker sits where its image belongs in
an interleaved sequence; a text token sees an image only if that image's marker is at or before it.
``attend="last"`` (the default, Flamingo's choice, and the span rule of Mllama's processor, which
differs only for adjacent markers: it lets the text after "<image><image>" see both): a token sees
only the most recent image before it. ``attend="all"``: every image before it. A token with no
image before it (the bos token) sees nothing: both branches of every block add exactly zero there.
Mllama differs in one corner: on a row that sees no image it still adds the attention branch (its
mask turns into all zeros there, i.e. attention over every media token) and zeroes only the
feed-forward branch; ``tests/test_parity_mllama.py`` shows the agreement on every row that sees an
image and that difference on the rows that do not.

The blocks are added **without copying or changing the LM's code**: a forward pre-hook on each chosen
decoder layer replaces the layer's input hidden states with the block's output while a forward of
this model runs (and does nothing otherwise, so the same LM object stays usable on its own). The
hook reads the layer's ``position_ids``, so the mask also holds for tokens generated with a KV cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mmllm_course._checks import (
    InputTypeError,
    check_choice,
    check_int,
    check_number,
    check_tensor,
    describe,
    keep_mask,
    to_module_dtype,
)
from mmllm_course._convert import apply_plan, load_exact, resolve_hf_model
from mmllm_course.backbones.unified import ImagePromptModel
from mmllm_course.bridges.base import Bridge
from mmllm_course.bridges.resampler import RMSNorm, SwiGLU
from mmllm_course.language.lm import IMAGE_TOKEN, lm_width

ATTEND = ("last", "all")


# ------------------------------------------------------------------------------------------ media mask

def media_positions(input_ids: torch.Tensor, image_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each row's images are: ``positions`` (B, M) of the ``<image>`` markers, left to right, and ``valid`` (B, M).

    M is the largest number of markers in a row; a row with fewer images has ``valid`` False (and
    position 0) in its last columns.
    """
    check_tensor(input_ids, "input_ids", "(B, T)", ndim=2, kind="int")
    check_int(image_token_id, "image_token_id", minimum=0)
    is_marker = input_ids == image_token_id  # (B, T)
    counts = is_marker.sum(dim=1)  # (B,)
    m = int(counts.max()) if input_ids.shape[0] else 0
    positions = torch.zeros(input_ids.shape[0], m, dtype=torch.long, device=input_ids.device)
    valid = torch.arange(m, device=input_ids.device)[None, :] < counts[:, None]  # (B, M)
    rows, cols = is_marker.nonzero(as_tuple=True)  # row-major: each row's markers left to right
    rank = torch.cumsum(is_marker.long(), dim=1)[rows, cols] - 1  # which image of its row
    positions[rows, rank] = cols
    return positions, valid


def visible_media(query_positions: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor,
                  attend: str = "last") -> torch.Tensor:
    """(B, T, M) bool: may the token at ``query_positions`` (B, T) see image m, whose marker is at ``positions`` (B, M)?

    The rule of :func:`media_attention_mask`, for any positions (sequence indices, or the position
    ids a generating LM gives its new tokens). Images of a row must be sorted by position.
    """
    check_choice(attend, "attend", ATTEND)
    after = (query_positions[:, :, None] >= positions[:, None, :]) & valid[:, None, :]  # marker at or before the token
    if attend == "all":
        return after
    seen = after.sum(dim=-1, keepdim=True)  # (B, T, 1): how many images lie at or before the token
    index = torch.arange(positions.shape[1], device=positions.device)
    return after & (index == seen - 1)  # only the most recent one


def media_attention_mask(input_ids: torch.Tensor, image_token_id: int, attend: str = "last",
                         attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Flamingo's media mask: (B, T, M) bool, True where text token t may attend to the row's image m.

    ``input_ids`` (B, T) hold one ``image_token_id`` marker where each image sits in the interleaved
    sequence; image m of a row is its m-th marker from the left. A token sees image m when that
    marker is at or before it: with ``attend="last"`` only the most recent such image (Flamingo),
    with ``attend="all"`` every one of them. Tokens before the first marker see no image, and
    padding (``attention_mask`` 0) sees none. Example, one row ``[bos, <image>, a, <image>, b]``::

        attend="last"    image 0: 0 1 1 0 0      attend="all"    image 0: 0 1 1 1 1
                         image 1: 0 0 0 1 1                      image 1: 0 0 0 1 1
    """
    check_tensor(input_ids, "input_ids", "(B, T)", ndim=2, kind="int")
    check_int(image_token_id, "image_token_id", minimum=0)
    check_choice(attend, "attend", ATTEND)
    positions, valid = media_positions(input_ids, image_token_id)
    b, t = input_ids.shape
    mask = visible_media(torch.arange(t, device=input_ids.device).expand(b, t), positions, valid, attend)
    if attention_mask is not None:
        check_tensor(attention_mask, "attention_mask", "(B, T)", ndim=2)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, got {tuple(attention_mask.shape)}")
        if attention_mask.is_floating_point():
            raise InputTypeError(f"attention_mask must be bool or 0/1 integers, got dtype {attention_mask.dtype}")
        mask = mask & keep_mask(attention_mask, "attention_mask")[:, :, None]
    return mask


# ------------------------------------------------------------------------------------------ the block

@dataclass
class GatedCrossAttentionConfig:
    """One gated cross-attention block: text width ``dim``, media width ``media_dim`` (None = ``dim``), heads, MLP width.

    ``num_kv_heads`` < ``num_heads`` is grouped-query attention (Mllama); None = ``num_heads``.
    ``qk_norm``: RMSNorm on each head's queries and keys (Mllama; Flamingo has none).
    """

    dim: int = 64
    num_heads: int = 4
    num_kv_heads: int | None = None
    mlp_dim: int = 128
    media_dim: int | None = None
    eps: float = 1e-5
    qk_norm: bool = True

    def __post_init__(self) -> None:
        for name in ("dim", "num_heads", "mlp_dim"):
            check_int(getattr(self, name), name)
        for name in ("num_kv_heads", "media_dim"):
            if getattr(self, name) is not None:
                check_int(getattr(self, name), name)
        check_number(self.eps, "eps", 0.0, low_open=True)
        if not isinstance(self.qk_norm, bool):
            raise InputTypeError(f"qk_norm must be a bool, got {describe(self.qk_norm)}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} must be divisible by num_heads={self.num_heads}")
        if self.num_heads % self.kv_heads:
            raise ValueError(f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.kv_heads}")

    @property
    def kv_heads(self) -> int:
        return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


class GatedCrossAttentionBlock(nn.Module):
    """Text (B, T, D) reads media (B, S, D_media) through cross-attention and a feed-forward, each behind a zero-init tanh gate.

    Parameters (Mllama's names in brackets, for :func:`gated_cross_attention_from_transformers`):
    ``attn_norm`` [input_layernorm], ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``, ``q_norm``,
    ``k_norm`` [cross_attn.*], ``attn_gate`` [cross_attn_attn_gate], ``mlp_norm``
    [post_attention_layernorm], ``mlp`` (SwiGLU: ``gate_proj``, ``up_proj``, ``down_proj``), ``mlp_gate``
    [cross_attn_mlp_gate]. Both gates are 1-element parameters initialised at 0.
    """

    def __init__(self, config: GatedCrossAttentionConfig | None = None):
        super().__init__()
        config = GatedCrossAttentionConfig() if config is None else config
        if not isinstance(config, GatedCrossAttentionConfig):
            raise InputTypeError(f"config must be a GatedCrossAttentionConfig or None, got {describe(config)}")
        self.config = config
        d, hd, media = config.dim, config.head_dim, config.media_dim or config.dim
        self.attn_norm = RMSNorm(d, eps=config.eps)
        self.q_proj = nn.Linear(d, config.num_heads * hd, bias=False)
        self.k_proj = nn.Linear(media, config.kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(media, config.kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(config.num_heads * hd, d, bias=False)
        self.q_norm = RMSNorm(hd, eps=config.eps) if config.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(hd, eps=config.eps) if config.qk_norm else nn.Identity()
        self.attn_gate = nn.Parameter(torch.zeros(1))
        self.mlp_norm = RMSNorm(d, eps=config.eps)
        self.mlp = SwiGLU(d, config.mlp_dim, d)
        self.mlp_gate = nn.Parameter(torch.zeros(1))

    def gate_values(self) -> dict[str, float]:
        """The gates as the block applies them: ``{"attn": tanh(attn_gate), "mlp": tanh(mlp_gate)}``, each in (-1, 1)."""
        return {"attn": float(self.attn_gate.detach().tanh()), "mlp": float(self.mlp_gate.detach().tanh())}

    def forward(self, x: torch.Tensor, media: torch.Tensor, media_mask: torch.Tensor | None = None,
                return_attention: bool = False):
        """x (B, T, D), media (B, S, D_media), media_mask (B, T, S) bool (True = may attend; None = all) -> (B, T, D).

        A text token whose mask row is all False gets exactly ``x`` back (no image to read).
        ``return_attention=True`` also returns the attention weights (B, H, T, S) (zero on such rows).
        """
        c = self.config
        check_tensor(x, "x", "(B, T, D)", ndim=3, kind="float")
        check_tensor(media, "media", "(B, S, D_media)", ndim=3, kind="float")
        media_dim = c.media_dim or c.dim
        if x.shape[-1] != c.dim:
            raise ValueError(f"x must be (B, T, D) with D = {c.dim}, got {tuple(x.shape)}")
        if media.shape[0] != x.shape[0] or media.shape[-1] != media_dim:
            raise ValueError(f"media must be (B, S, D_media) = ({x.shape[0]}, S, {media_dim}) for x of shape "
                             f"{tuple(x.shape)}, got {tuple(media.shape)}")
        if media.shape[1] == 0:
            raise ValueError("media must hold at least one token (S >= 1), got S = 0")
        b, t, s = x.shape[0], x.shape[1], media.shape[1]
        if media_mask is None:
            sees = torch.ones(b, t, s, dtype=torch.bool, device=x.device)
        else:
            check_tensor(media_mask, "media_mask", "(B, T, S)", ndim=3)
            if tuple(media_mask.shape) != (b, t, s):
                raise ValueError(f"media_mask must be (B, T, S) = {(b, t, s)}, got {tuple(media_mask.shape)}")
            if media_mask.is_floating_point():
                raise InputTypeError(f"media_mask must be bool (True = may attend), got dtype {media_mask.dtype}")
            sees = keep_mask(media_mask, "media_mask")
        row_sees = sees.any(dim=-1, keepdim=True)  # (B, T, 1): does the token see any image?
        x, media = to_module_dtype(x, self), to_module_dtype(media, self)  # the dtype rule of transformers

        h = self.attn_norm(x)
        q = self.q_norm(self.q_proj(h).view(b, t, c.num_heads, c.head_dim).transpose(1, 2))  # (B, H, T, hd)
        k = self.k_norm(self.k_proj(media).view(b, s, c.kv_heads, c.head_dim).transpose(1, 2))  # (B, H_kv, S, hd)
        v = self.v_proj(media).view(b, s, c.kv_heads, c.head_dim).transpose(1, 2)
        groups = c.num_heads // c.kv_heads
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)  # (B, H, S, hd)
        allowed = (sees | ~row_sees)[:, None]  # rows that see nothing attend anywhere; their output is zeroed below
        if return_attention:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(c.head_dim)
            weights = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1) * row_sees[:, None]
            out = weights @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        out = self.o_proj(out.transpose(1, 2).reshape(b, t, c.num_heads * c.head_dim)) * row_sees
        x = x + self.attn_gate.tanh() * out
        x = x + self.mlp_gate.tanh() * (self.mlp(self.mlp_norm(x)) * row_sees)
        return (x, weights) if return_attention else x


def gated_cross_attention_from_transformers(model_or_layer: object, layer: int | None = None) -> GatedCrossAttentionBlock:
    """Our block with the weights of ``transformers``' ``MllamaCrossAttentionDecoderLayer`` (Llama 3.2 Vision).

    ``model_or_layer``: the layer itself, or an Mllama model (``MllamaForConditionalGeneration``,
    ``MllamaForCausalLM``, ``MllamaTextModel``, or a folder saved from one) with ``layer`` = the index
    of one of its cross-attention layers (``config.cross_attention_layers``). Refuses any other kind
    of module and any weight it would not load (the gates included).
    """
    what = "gated_cross_attention_from_transformers"
    if isinstance(model_or_layer, nn.Module) and type(model_or_layer).__name__ == "MllamaCrossAttentionDecoderLayer":
        if layer is not None:
            raise ValueError(f"{what}: got one MllamaCrossAttentionDecoderLayer, so layer must be None, got {layer!r}")
        hf = model_or_layer
    else:
        model = resolve_hf_model(model_or_layer, what, {"mllama": "MllamaForConditionalGeneration",
                                                        "mllama_text_model": "MllamaForCausalLM"},
                                 module_classes=("MllamaCrossAttentionDecoderLayer",))
        layers = {m.layer_idx: m for m in model.modules() if type(m).__name__ == "MllamaCrossAttentionDecoderLayer"}
        if layer is None or isinstance(layer, bool) or not isinstance(layer, int) or layer not in layers:
            raise ValueError(f"{what}: pass layer = the index of a cross-attention layer of this "
                             f"{type(model).__name__}, one of {sorted(layers)}; got {layer!r}")
        hf = layers[layer]
    attn = hf.cross_attn
    act = getattr(attn.config, "hidden_act", None)
    if act != "silu":
        raise ValueError(f"{what}: the layer's feed-forward uses hidden_act {act!r}; our block's SwiGLU needs 'silu'")
    config = GatedCrossAttentionConfig(
        dim=attn.hidden_size, num_heads=attn.num_heads, num_kv_heads=attn.num_key_value_heads,
        mlp_dim=hf.mlp.intermediate_size, eps=float(hf.input_layernorm.variance_epsilon), qk_norm=True)
    if attn.head_dim != config.head_dim:
        raise ValueError(f"{what}: head_dim {attn.head_dim} is not hidden_size / num_heads = {config.head_dim}")
    plan = {"attn_norm.weight": ("input_layernorm.weight", None), "attn_gate": ("cross_attn_attn_gate", None),
            "mlp_norm.weight": ("post_attention_layernorm.weight", None), "mlp_gate": ("cross_attn_mlp_gate", None)}
    for name in ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm"):
        plan[f"{name}.weight"] = (f"cross_attn.{name}.weight", None)
    for name in ("gate_proj", "up_proj", "down_proj"):
        plan[f"mlp.{name}.weight"] = (f"mlp.{name}.weight", None)
    sd = {k: v.detach().clone() for k, v in hf.state_dict().items()}
    new = apply_plan(sd, plan, f"a {type(hf).__name__}")
    return load_exact(GatedCrossAttentionBlock(config), new, f"a {type(hf).__name__}").eval()


# ------------------------------------------------------------------------------------------ backbone B

DECODER_LAYER_PATHS = ("model.layers", "transformer.h", "model.decoder.layers", "gpt_neox.layers")


def decoder_layers(lm: nn.Module) -> nn.ModuleList:
    """The decoder layers of a ``transformers`` causal LM (``model.layers`` for Llama, ``transformer.h`` for GPT-2...)."""
    for path in DECODER_LAYER_PATHS:
        module = lm
        for part in path.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.ModuleList) and len(module):
            return module
    raise InputTypeError(f"cannot find the decoder layers of {describe(lm)}: expected one of {DECODER_LAYER_PATHS}")


class _Media:
    """What the hooks read during one forward: media (B, S, D), marker position ids (B, M), valid (B, M)."""

    def __init__(self, states: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor):
        self.states, self.positions, self.valid = states, positions, valid


class CrossAttentionMLLM(ImagePromptModel):
    """encoder + bridge + frozen causal LM + gated cross-attention blocks: images and prompts -> logits, loss, text.

    - ``encoder``, ``bridge``, ``lm``, ``tokenizer``, ``feature_layer``, ``drop_class_token``,
      ``num_image_features``, ``add_bos``: as in :class:`~mmllm_course.backbones.UnifiedEmbeddingMLLM`
      (the bridge's ``out_dim`` is the LM's width; its K tokens per image are the media).
    - ``every``: a block before decoder layers 0, k, 2k, ... (``every=1``: before every layer; an
      integer from 1 to the LM's depth).
    - ``attend``: ``"last"`` (each token sees the most recent image before it) or ``"all"``; see
      :func:`media_attention_mask`.
    - ``block_config``: the blocks' :class:`GatedCrossAttentionConfig`; None = the LM's own width,
      heads, key-value heads and MLP width (as Mllama does).

    In a prompt each ``<image>`` stays ONE marker token (``num_image_tokens`` = 1): the image takes no
    LM positions. The LM is not copied or changed: see the module docstring for the hooks.
    ``remove_hooks()`` detaches the blocks from the LM for good.
    """

    def __init__(
        self,
        encoder: nn.Module | None,
        bridge: Bridge,
        lm: nn.Module,
        tokenizer,
        *,
        every: int = 1,
        attend: str = "last",
        block_config: GatedCrossAttentionConfig | None = None,
        image_token: str = IMAGE_TOKEN,
        feature_layer: int | None = None,
        drop_class_token: bool = False,
        num_image_features: int | None = None,
        add_bos: bool = True,
    ):
        super().__init__(encoder, bridge, lm, tokenizer, image_token=image_token, feature_layer=feature_layer,
                         drop_class_token=drop_class_token, num_image_features=num_image_features, add_bos=add_bos)
        self.num_image_tokens = 1  # one marker per image in the LM's sequence
        layers = decoder_layers(lm)
        check_int(every, "every", minimum=None)
        if not 1 <= every <= len(layers):
            raise ValueError(f"every must be an integer from 1 to the LM's {len(layers)} decoder layers "
                             f"(a block before layers 0, every, 2*every, ...), got {every!r}")
        check_choice(attend, "attend", ATTEND)
        width = lm_width(lm)
        if block_config is None:
            cfg = lm.config
            heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head")
            kv = getattr(cfg, "num_key_value_heads", None) or heads
            mlp = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * width
            block_config = GatedCrossAttentionConfig(dim=width, num_heads=heads, num_kv_heads=kv, mlp_dim=mlp,
                                                     eps=float(getattr(cfg, "rms_norm_eps", 1e-5)))
        if not isinstance(block_config, GatedCrossAttentionConfig):
            raise InputTypeError(f"block_config must be a GatedCrossAttentionConfig or None, got {describe(block_config)}")
        if block_config.dim != width or (block_config.media_dim or block_config.dim) != bridge.out_dim:
            raise ValueError(f"block_config must have dim = the LM's width {width} and media_dim = the bridge's out_dim "
                             f"{bridge.out_dim}, got dim={block_config.dim}, media_dim={block_config.media_dim}")
        self.every, self.attend = every, attend
        self.block_layers = tuple(range(0, len(layers), every))  # decoder layers with a block before them
        self.blocks = nn.ModuleList(GatedCrossAttentionBlock(block_config) for _ in self.block_layers)
        self._media: _Media | None = None
        self._hooks = [layers[i].register_forward_pre_hook(self._make_hook(j), with_kwargs=True)
                       for j, i in enumerate(self.block_layers)]

    # -------------------------------------------------------------------------------- the hooks

    def _make_hook(self, j: int):
        def hook(module, args, kwargs):
            media = self._media
            if media is None:  # the LM used on its own: nothing to add
                return None
            hidden = args[0] if args else kwargs["hidden_states"]
            b, t = hidden.shape[:2]
            if b != media.states.shape[0]:
                raise ValueError(f"the LM ran on {b} rows but the media are for {media.states.shape[0]} "
                                 f"(beam search and other batch expansion are not supported)")
            pos = kwargs.get("position_ids")
            pos = torch.arange(t, device=hidden.device).expand(b, t) if pos is None else pos.expand(b, t)
            mask = visible_media(pos, media.positions, media.valid, self.attend)  # (B, T, M)
            mask = mask.repeat_interleave(self.num_bridge_tokens, dim=-1)  # (B, T, M * K)
            out = self.blocks[j](hidden, media.states, mask)
            if args:
                return (out, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": out}
        return hook

    def remove_hooks(self) -> None:
        """Detach the blocks from the LM (the LM is then exactly as before); this model no longer works."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    def gate_values(self) -> list[dict[str, float]]:
        """tanh of each block's gates: ``[{"layer": l, "attn": ..., "mlp": ...}, ...]`` in layer order."""
        return [{"layer": layer, **block.gate_values()} for layer, block in zip(self.block_layers, self.blocks)]

    # -------------------------------------------------------------------------------- media

    def media(self, input_ids: torch.Tensor, position_ids: torch.Tensor, images: torch.Tensor | None = None,
              image_features: torch.Tensor | None = None) -> _Media:
        """The bridge tokens of every image, grouped per row: media (B, M * K, D), marker position ids (B, M), valid (B, M).

        The i-th image (row-major over the markers of ``input_ids``) belongs to the i-th marker;
        rows with fewer than M images are padded with zeros that no token sees.
        """
        embeds = self.image_embeddings(images, image_features)  # (B_img, K, D)
        positions, valid = media_positions(input_ids, self.image_token_id)  # (B, M)
        n_markers, n_images = int(valid.sum()), embeds.shape[0]
        if n_markers != n_images:
            more = "more placeholders than images" if n_markers > n_images else "more images than placeholders"
            raise ValueError(f"{more}: the prompts hold {n_markers} {self.image_token!r} placeholder(s) "
                             f"but {n_images} image(s) came")
        b, m, k = input_ids.shape[0], positions.shape[1], self.num_bridge_tokens
        states = embeds.new_zeros(b, m, k, embeds.shape[-1])
        states[valid] = embeds  # row-major: row 0's images, then row 1's...
        marker_pos = torch.gather(position_ids, 1, positions) if m else positions
        return _Media(states.reshape(b, m * k, -1), marker_pos, valid)

    def tokens_in_context(self, attention_mask: torch.Tensor) -> float:
        """Mean number of LM positions per row (B, T) mask: text plus one marker per image."""
        check_tensor(attention_mask, "attention_mask", "(B, T)", ndim=2)
        if attention_mask.is_floating_point():
            raise InputTypeError(f"attention_mask must be bool or 0/1 integers, got dtype {attention_mask.dtype}")
        if attention_mask.shape[0] == 0:
            raise ValueError("attention_mask must hold at least one row, got shape (0, T)")
        return float(keep_mask(attention_mask, "attention_mask").sum(dim=1).float().mean())

    # -------------------------------------------------------------------------------- forward, generate

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ):
        """input_ids (B, T) with one marker per image [, attention_mask, labels (B, T)] + images or image_features.

        Returns the LM's output (``.logits`` (B, T, V); ``.loss`` with ``labels``); the blocks run
        inside the LM's forward through the hooks. ``position_ids`` default to counting real tokens.
        """
        mask, labels, position_ids = self._check_forward_inputs(input_ids, attention_mask, labels, position_ids)
        media = self.media(input_ids, position_ids, images, image_features)
        self._media = media
        try:
            return self.lm(input_ids=input_ids.long(), attention_mask=mask.long(), position_ids=position_ids, labels=labels)
        finally:
            self._media = None

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        images: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        max_new_tokens: int = 12,
        **generate_kwargs,
    ) -> list[str]:
        """Greedy continuation of each prompt, the blocks reading its image(s), through the LM's own ``generate``.

        The prompts are left-padded; the new tokens see the images the row's last token sees.
        Returns the new text of each prompt (special tokens removed, spaces stripped).
        """
        ids, mask = self._generation_inputs(prompts, max_new_tokens)
        was_training = self.training
        self.eval()
        try:
            self._media = self.media(ids, self.position_ids(mask), images, image_features)
            kwargs = self._generate_kwargs(max_new_tokens, generate_kwargs)
            out = self.lm.generate(input_ids=ids, attention_mask=mask, **kwargs)[:, ids.shape[1]:]
        finally:
            self._media = None
            self.train(was_training)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

    def extra_repr(self) -> str:
        return (f"image_token={self.image_token!r} (id {self.image_token_id}), N={self.num_image_features}, "
                f"K={self.num_bridge_tokens} media tokens per image, blocks before layers {list(self.block_layers)}, "
                f"attend={self.attend!r}")
