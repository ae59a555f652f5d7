"""The Perceiver Resampler bridge (Flamingo, arXiv:2204.14198; Idefics2's variant): K latents summarise N features.

Dims: ``B`` batch, ``N`` feature tokens, ``D_in`` encoder width, ``K`` (``num_latents``) latents,
``D`` = ``D_llm`` (``out_dim``) the width the latents live in, ``H`` query heads, ``H_kv`` key/value
heads, ``Dh`` the width of one head.

    x = input_proj(features)                                  (B, N, D_in) -> (B, N, D)
    z = latents                                               (K, D) -> (B, K, D)
    for each layer:
        z = z + Attn(q = norm(z), kv = [norm(x) ; norm(z)])   latents read the features AND each other
        z = z + MLP(norm(z))
    out = norm(z)                                             (B, K, D),  K fixed whatever N is

Two things set it apart from the Q-Former: the keys and values are the **concatenation** of the
media features and the latents (so one attention does both the "read the image" and the "talk to
each other" jobs), and it is pre-norm, with a final norm. Flamingo uses LayerNorm and a GELU MLP
(the defaults here); Idefics2 uses RMSNorm, a gated SiLU MLP (SwiGLU), grouped-query attention
(``num_kv_heads`` < ``num_heads``) and no biases: ``norm="rmsnorm"``, ``mlp="swiglu"``. Flamingo
also adds learned time embeddings for video frames, left out here (one image, one frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mmllm_course._checks import check_choice, check_dropout, check_int, check_number
from mmllm_course._convert import Plan, apply_plan, load_exact, resolve_hf_model
from mmllm_course.bridges.base import QueryBridge, resolve_config
from mmllm_course.nn.attention import merge_heads, scaled_dot_product_attention

NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu")
INPUT_PROJECTIONS = ("linear", "swiglu", "none")


@dataclass
class PerceiverResamplerBridgeConfig:
    in_dim: int = 64  # D_in
    out_dim: int = 128  # D = D_llm: the latents' width
    num_latents: int = 8  # K
    depth: int = 2
    num_heads: int = 4  # H
    head_dim: int | None = None  # Dh; None = out_dim // num_heads
    num_kv_heads: int | None = None  # H_kv (grouped-query attention); None = num_heads
    mlp_dim: int | None = None  # None = 4 * out_dim
    mlp: str = "gelu"  # "gelu": Linear-GELU-Linear (Flamingo) | "swiglu": down(silu(gate x) * up x) (Idefics2)
    norm: str = "layernorm"  # "layernorm" (Flamingo) | "rmsnorm" (Idefics2)
    norm_eps: float = 1e-5
    bias: bool = False  # Flamingo and Idefics2 both use bias-free linear layers here
    input_projection: str = "linear"  # D_in -> D: "linear" | "swiglu" (Idefics2's modality_projection) | "none"
    input_mlp_dim: int | None = None  # hidden width of a "swiglu" input projection; None = 4 * out_dim
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("in_dim", "out_dim", "num_latents", "depth", "num_heads"):
            check_int(getattr(self, name), name)
        for name in ("head_dim", "num_kv_heads", "mlp_dim", "input_mlp_dim"):
            if getattr(self, name) is not None:
                check_int(getattr(self, name), name)
        if self.head_dim is None and self.out_dim % self.num_heads:
            raise ValueError(f"out_dim={self.out_dim} is not divisible by num_heads={self.num_heads}: set head_dim")
        if self.num_heads % self.kv_heads:
            raise ValueError(f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.kv_heads}")
        for name, value, allowed in (("mlp", self.mlp, MLPS), ("norm", self.norm, NORMS),
                                     ("input_projection", self.input_projection, INPUT_PROJECTIONS)):
            check_choice(value, name, allowed)
        check_number(self.norm_eps, "norm_eps", low=0.0, low_open=True)
        check_dropout(self.dropout, "dropout")
        if self.input_projection == "none" and self.in_dim != self.out_dim:
            raise ValueError(f"input_projection='none' needs in_dim == out_dim, got {self.in_dim} and {self.out_dim}")

    @property
    def dh(self) -> int:
        return self.out_dim // self.num_heads if self.head_dim is None else self.head_dim

    @property
    def kv_heads(self) -> int:
        return self.num_heads if self.num_kv_heads is None else self.num_kv_heads


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, computed in float32 (Llama / Idefics2). (.., D) -> (.., D)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    return nn.LayerNorm(dim, eps=eps) if kind == "layernorm" else RMSNorm(dim, eps=eps)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)): the gated MLP of Llama and Idefics2. (.., D) -> (.., D_out)."""

    def __init__(self, dim: int, hidden_dim: int, out_dim: int, bias: bool = False):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden_dim, bias=bias)
        self.up_proj = nn.Linear(dim, hidden_dim, bias=bias)
        self.down_proj = nn.Linear(hidden_dim, out_dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class GELUMLP(nn.Module):
    """fc2(GELU(fc1(x))): Flamingo's feed-forward. (.., D) -> (.., D)."""

    def __init__(self, dim: int, hidden_dim: int, bias: bool = False):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.fc2 = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class PerceiverAttention(nn.Module):
    """Latents (B, K, D) attend to [media (B, N, D) ; latents (B, K, D)] -> (B, K, D).

    Queries come from the latents only; keys and values from the concatenation, with ``H_kv`` heads
    each shared by ``H / H_kv`` query heads (grouped-query attention; H_kv = H is plain multi-head).
    ``key_mask``: (B, N + K), True = keep.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int, num_kv_heads: int, bias: bool = False, dropout: float = 0.0):
        super().__init__()
        self.num_heads, self.head_dim, self.num_kv_heads, self.dropout = num_heads, head_dim, num_kv_heads, dropout
        self.q_proj = nn.Linear(dim, num_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(dim, num_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(dim, num_kv_heads * head_dim, bias=bias)
        self.out_proj = nn.Linear(num_heads * head_dim, dim, bias=bias)

    def forward(
        self, latents: torch.Tensor, media: torch.Tensor, key_mask: torch.Tensor | None = None, return_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, k, _ = latents.shape
        kv = torch.cat([media, latents], dim=1)  # (B, N + K, D)
        m = kv.shape[1]
        q = self.q_proj(latents).view(b, k, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, K, Dh)
        keys = self.k_proj(kv).view(b, m, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, H_kv, N+K, Dh)
        values = self.v_proj(kv).view(b, m, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if self.num_kv_heads != self.num_heads:  # each key/value head serves H / H_kv query heads
            group = self.num_heads // self.num_kv_heads
            keys, values = keys.repeat_interleave(group, dim=1), values.repeat_interleave(group, dim=1)  # (B, H, N+K, Dh)
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, N+K)
        out, weights = scaled_dot_product_attention(
            q, keys, values, attn_mask=mask, return_weights=return_weights,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out_proj(merge_heads(out)), weights  # (B, K, D), (B, H, K, N+K) | None


class PerceiverLayer(nn.Module):
    """z = z + attn(norm(z), [norm(x); norm(z)]); z = z + mlp(norm(z)). Latents (B, K, D) -> (B, K, D)."""

    def __init__(self, c: PerceiverResamplerBridgeConfig):
        super().__init__()
        d, hidden = c.out_dim, (4 * c.out_dim if c.mlp_dim is None else c.mlp_dim)
        self.norm_latents = make_norm(c.norm, d, c.norm_eps)
        self.norm_media = make_norm(c.norm, d, c.norm_eps)
        self.attn = PerceiverAttention(d, c.num_heads, c.dh, c.kv_heads, bias=c.bias, dropout=c.dropout)
        self.norm_mlp = make_norm(c.norm, d, c.norm_eps)
        self.mlp = SwiGLU(d, hidden, d, bias=c.bias) if c.mlp == "swiglu" else GELUMLP(d, hidden, bias=c.bias)
        self.drop = nn.Dropout(c.dropout)

    def forward(
        self, z: torch.Tensor, x: torch.Tensor, key_mask: torch.Tensor | None = None, return_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        h, weights = self.attn(self.norm_latents(z), self.norm_media(x), key_mask, return_weights=return_weights)
        z = z + self.drop(h)  # (B, K, D)
        z = z + self.drop(self.mlp(self.norm_mlp(z)))
        return z, weights


class PerceiverResamplerBridge(QueryBridge):
    """features (B, N, D_in) [, mask (B, N)] -> (B, K, D_llm), K = ``num_latents`` whatever N is."""

    def __init__(self, config: PerceiverResamplerBridgeConfig | None = None):
        super().__init__()
        self.config = c = resolve_config(config, PerceiverResamplerBridgeConfig, "PerceiverResamplerBridge")
        self.in_dim, self.out_dim, self.num_queries = c.in_dim, c.out_dim, c.num_latents
        if c.input_projection == "linear":
            self.input_proj: nn.Module = nn.Linear(c.in_dim, c.out_dim, bias=c.bias)
        elif c.input_projection == "swiglu":
            hidden = 4 * c.out_dim if c.input_mlp_dim is None else c.input_mlp_dim
            self.input_proj = SwiGLU(c.in_dim, hidden, c.out_dim, bias=c.bias)
        else:
            self.input_proj = nn.Identity()
        self.latents = nn.Parameter(torch.randn(c.num_latents, c.out_dim))  # (K, D), Flamingo's init
        self.layers = nn.ModuleList(PerceiverLayer(c) for _ in range(c.depth))
        self.norm = make_norm(c.norm, c.out_dim, c.norm_eps)

    def _run(
        self, features: torch.Tensor, mask: torch.Tensor | None, return_weights: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features, mask = self.check_inputs(features, mask)
        b = features.shape[0]
        x = self.input_proj(features)  # (B, N, D)
        z = self.latents.unsqueeze(0).expand(b, -1, -1)  # (B, K, D)
        key_mask = None
        if mask is not None:  # the latents are always visible to themselves
            ones = torch.ones(b, self.config.num_latents, dtype=torch.bool, device=features.device)
            key_mask = torch.cat([mask, ones], dim=1)  # (B, N + K)
        maps = []
        for layer in self.layers:
            z, weights = layer(z, x, key_mask, return_weights=return_weights)
            if weights is not None:
                maps.append(weights)
        return self.norm(z), maps  # (B, K, D)

    def cross_attention_maps(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Attention of each latent over the N features (the latent part dropped): one (B, H, K, N) per layer.

        Rows do not sum to one: the rest of each row went to the latents themselves.
        """
        n = features.shape[1] if isinstance(features, torch.Tensor) and features.dim() == 3 else 0
        return [w[..., :n] for w in self._run(features, mask, return_weights=True)[1]]


# --- weights from transformers -------------------------------------------------------------------


def perceiver_resampler_bridge_from_transformers(model_or_path: object) -> PerceiverResamplerBridge:
    """Our :class:`PerceiverResamplerBridge` holding the weights of ``transformers``' Idefics2 resampler.

    Accepts an ``Idefics2PerceiverResampler`` (``model_type`` ``"idefics2_perceiver"``; then
    ``input_projection="none"``, ``in_dim == out_dim``) or a whole Idefics2 model (``"idefics2"``:
    ``Idefics2Model`` / ``Idefics2ForConditionalGeneration``), whose connector's ``modality_projection``
    (a SwiGLU from the vision width to the text width) becomes our ``input_proj``; objects or saved
    folders. Live 5.x names, layer ``i``: ``latents``, ``layers.i.{input_latents_norm,
    input_context_norm, post_attention_layernorm}.weight`` (RMSNorm), ``layers.i.self_attn.{q,k,v,o}_proj``,
    ``layers.i.mlp.{gate,up,down}_proj``, ``norm.weight``.
    """
    what = "perceiver_resampler_bridge_from_transformers"
    hf = resolve_hf_model(
        model_or_path, what,
        {"idefics2_perceiver": "transformers.models.idefics2.modeling_idefics2.Idefics2PerceiverResampler",
         "idefics2": "Idefics2ForConditionalGeneration"},
        only={"idefics2": ("perceiver_resampler.", "modality_projection.")},  # a bare resampler: every weight is ours
        module_classes=("Idefics2Connector",),
    )
    connector = hf
    for attr in ("model", "connector"):
        connector = getattr(connector, attr, connector)
    resampler = getattr(connector, "perceiver_resampler", connector)
    if type(resampler).__name__ != "Idefics2PerceiverResampler":
        raise ValueError(f"{what}: found no Idefics2PerceiverResampler in a {type(hf).__name__}")
    pc = resampler.config
    if pc.hidden_act != "silu":
        raise ValueError(f"{what}: unsupported resampler hidden_act {pc.hidden_act!r}; expected 'silu'")
    sd = {f"resampler.{k}": v for k, v in resampler.state_dict().items()}
    projection = getattr(connector, "modality_projection", None)
    if projection is not None:
        if type(projection.act_fn).__name__ not in ("SiLU", "SiLUActivation"):
            raise ValueError(f"{what}: unsupported modality_projection activation {type(projection.act_fn).__name__}; expected SiLU")
        sd.update({f"projection.{k}": v for k, v in projection.state_dict().items()})

    plan: Plan = {"latents": ("resampler.latents", None), "norm.weight": ("resampler.norm.weight", None)}
    if projection is not None:
        for name in ("gate_proj", "up_proj", "down_proj"):
            plan[f"input_proj.{name}.weight"] = (f"projection.{name}.weight", None)
    names = {"norm_latents": "input_latents_norm", "norm_media": "input_context_norm", "norm_mlp": "post_attention_layernorm",
             "attn.q_proj": "self_attn.q_proj", "attn.k_proj": "self_attn.k_proj", "attn.v_proj": "self_attn.v_proj",
             "attn.out_proj": "self_attn.o_proj", "mlp.gate_proj": "mlp.gate_proj", "mlp.up_proj": "mlp.up_proj",
             "mlp.down_proj": "mlp.down_proj"}
    for i in range(pc.resampler_depth):
        for ours, theirs in names.items():
            plan[f"layers.{i}.{ours}.weight"] = (f"resampler.layers.{i}.{theirs}.weight", None)
    source = f"a {type(resampler).__name__} ({what})"
    new = apply_plan(sd, plan, source)
    latents = new["latents"]  # (K, D)
    d = latents.shape[1]
    input_mlp_dim, in_dim = new["input_proj.gate_proj.weight"].shape if projection is not None else (None, d)
    config = PerceiverResamplerBridgeConfig(
        in_dim=in_dim, out_dim=d, num_latents=latents.shape[0], depth=pc.resampler_depth,
        num_heads=pc.resampler_n_heads, head_dim=pc.resampler_head_dim, num_kv_heads=pc.num_key_value_heads,
        mlp_dim=4 * d, mlp="swiglu", norm="rmsnorm", norm_eps=pc.rms_norm_eps, bias=False,
        input_projection="swiglu" if projection is not None else "none", input_mlp_dim=input_mlp_dim,
    )
    return load_exact(PerceiverResamplerBridge(config), new, source).train(resampler.training)
