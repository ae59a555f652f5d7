"""Attention: every token takes a weighted average of the values of the tokens it looks at.

Dims: ``B`` batch, ``H`` heads, ``N`` queries, ``M`` keys/values, ``D`` model width, ``Dh = D / H``
the width of one head.

Mask convention, used everywhere in this library: **True = keep** (this query may look at this key),
False = masked out. It is the convention of ``torch.nn.functional.scaled_dot_product_attention``
boolean masks and of the ``attention_mask`` a ``transformers`` tokenizer returns (1 = real token,
0 = padding). A masked key gets exactly zero weight. ``causal`` means query ``i`` sees keys
``0..i`` only: a lower-triangular mask, aligned top-left when ``N != M`` (as torch does). A query
that may see no key at all gets zero weights and a zero output (as torch's fast path returns).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, D) -> (B, H, N, D/H): head ``h`` gets channels ``h*Dh .. (h+1)*Dh - 1``.

    Same as ``rearrange(x, "b n (h d) -> b h n d", h=num_heads)``, written with view/transpose
    because it runs in every layer and plain ops have less overhead.
    """
    if x.dim() != 3:
        raise ValueError(f"split_heads expects (B, N, D), got shape {tuple(x.shape)}")
    b, n, d = x.shape
    if d % num_heads:
        raise ValueError(f"width D={d} is not divisible by num_heads={num_heads}")
    return x.view(b, n, num_heads, d // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, N, Dh) -> (B, N, H*Dh): the inverse of :func:`split_heads`."""
    if x.dim() != 4:
        raise ValueError(f"merge_heads expects (B, H, N, Dh), got shape {tuple(x.shape)}")
    b, h, n, dh = x.shape
    return x.transpose(1, 2).reshape(b, n, h * dh)


def causal_mask(n: int, m: int | None = None, device: torch.device | None = None) -> torch.Tensor:
    """Boolean (N, M) lower-triangular mask, True = keep: query ``i`` sees keys ``j <= i``."""
    m = n if m is None else m
    return torch.ones(n, m, dtype=torch.bool, device=device).tril()


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"{name} must be (B, H, N, Dh), got {t.dim()} dims with shape {tuple(t.shape)}")
    if q.shape[:2] != k.shape[:2] or k.shape[:2] != v.shape[:2]:
        raise ValueError(
            f"q, k, v must share batch and head sizes (B, H): got q {tuple(q.shape[:2])}, "
            f"k {tuple(k.shape[:2])}, v {tuple(v.shape[:2])}"
        )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same head width Dh: got q {q.shape[-1]}, k {k.shape[-1]}")
    if k.shape[2] != v.shape[2]:
        raise ValueError(f"k and v must have the same number of keys M: got k {k.shape[2]}, v {v.shape[2]}")
    if attn_mask is not None:
        target = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
        try:
            ok = torch.broadcast_shapes(attn_mask.shape, target) == torch.Size(target)
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(
                f"attn_mask of shape {tuple(attn_mask.shape)} does not broadcast to (B, H, N, M) = {target}"
            )


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    return_weights: bool = False,
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(q k^T / sqrt(Dh)) v, returning ``(output, weights)``.

    q: (B, H, N, Dh), k: (B, H, M, Dh), v: (B, H, M, Dv) -> output (B, H, N, Dv),
    weights (B, H, N, M) (each row sums to 1) or None.

    ``attn_mask``: boolean, True = keep, or a float mask added to the scores; any shape that
    broadcasts to (B, H, N, M). ``is_causal`` adds the lower-triangular mask.
    With ``return_weights=False`` this calls torch's fused ``F.scaled_dot_product_attention``
    (fast, never materialises the weights); with ``True`` it runs the same maths step by step so
    the weights can be plotted. ``dropout_p`` drops weights (pass 0.0 in eval mode); the returned
    weights are those before dropout.
    """
    _check_qkv(q, k, v, attn_mask)
    if not return_weights:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal)
        return out, None

    n, m = q.shape[-2], k.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, N, M)
    keep = None  # boolean (.., N, M), True = keep
    if is_causal:
        keep = causal_mask(n, m, device=q.device)
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        keep = attn_mask if keep is None else keep & attn_mask
    elif attn_mask is not None:
        scores = scores + attn_mask
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    weights = scores.softmax(dim=-1)
    if keep is not None:
        # A query that may see no key: softmax of all -inf is NaN; torch's fast path returns zeros.
        weights = weights.masked_fill(~keep.any(dim=-1, keepdim=True), 0.0)
    dropped = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    return dropped @ v, weights  # (B, H, N, Dv), (B, H, N, M)


class MultiHeadAttention(nn.Module):
    """Multi-head attention for self-attention (``context=None``) and cross-attention.

    x: (B, N, D) queries; context: (B, M, kv_dim) keys/values (defaults to x, then kv_dim = D).
    Returns ``(output (B, N, D), weights (B, H, N, M) or None)``.

    ``key_padding_mask``: (B, M), **True (or 1) = a real key to keep, False (or 0) = padding**,
    the convention of a tokenizer's ``attention_mask``. ``causal=True``: query i sees keys 0..i.
    Parameter names (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``) follow CLIP's, so
    ``transformers`` weights map one to one.
    """

    def __init__(self, dim: int, num_heads: int, kv_dim: int | None = None, bias: bool = True, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}: expected dim = num_heads * head_dim")
        kv_dim = dim if kv_dim is None else kv_dim
        self.dim, self.num_heads, self.kv_dim, self.head_dim = dim, num_heads, kv_dim, dim // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(kv_dim, dim, bias=bias)
        self.v_proj = nn.Linear(kv_dim, dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        causal: bool = False,
        return_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"x must be (B, N, {self.dim}), got shape {tuple(x.shape)}")
        ctx = x if context is None else context
        if ctx.dim() != 3 or ctx.shape[-1] != self.kv_dim:
            raise ValueError(f"context must be (B, M, {self.kv_dim}), got shape {tuple(ctx.shape)}")
        if ctx.shape[0] != x.shape[0]:
            raise ValueError(f"batch sizes differ: x has B={x.shape[0]}, context has B={ctx.shape[0]}")
        b, n, m = x.shape[0], x.shape[1], ctx.shape[1]

        mask = None  # boolean, broadcasts to (B, H, N, M), True = keep
        if key_padding_mask is not None:
            if tuple(key_padding_mask.shape) != (b, m):
                raise ValueError(
                    f"key_padding_mask must be (B, M) = ({b}, {m}) with True = keep, "
                    f"got shape {tuple(key_padding_mask.shape)}"
                )
            mask = key_padding_mask.to(device=x.device, dtype=torch.bool)[:, None, None, :]  # (B, 1, 1, M)
            if causal:
                mask = mask & causal_mask(n, m, device=x.device)  # (B, 1, N, M)

        q = split_heads(self.q_proj(x), self.num_heads)  # (B, H, N, Dh)
        k = split_heads(self.k_proj(ctx), self.num_heads)  # (B, H, M, Dh)
        v = split_heads(self.v_proj(ctx), self.num_heads)  # (B, H, M, Dh)
        out, weights = scaled_dot_product_attention(
            q, k, v,
            attn_mask=mask,
            is_causal=causal and mask is None,  # with a padding mask the causal part is already in `mask`
            return_weights=return_weights,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out_proj(merge_heads(out)), weights  # (B, N, D), (B, H, N, M) | None


def attention_from_clip(hf_attention: nn.Module) -> MultiHeadAttention:
    """Our :class:`MultiHeadAttention` holding the weights of a ``transformers`` ``CLIPAttention``.

    Its live ``state_dict()`` has ``{q,k,v,out}_proj.{weight,bias}``, the names we use, so the
    weights load one to one; heads are read from the module (``num_heads``).
    """
    sd = hf_attention.state_dict()
    if "q_proj.weight" not in sd or "out_proj.weight" not in sd:
        raise ValueError(f"not a CLIPAttention state dict: expected q_proj/k_proj/v_proj/out_proj, found {sorted(sd)}")
    dim, kv_dim = sd["q_proj.weight"].shape[0], sd["k_proj.weight"].shape[1]
    ours = MultiHeadAttention(dim, int(hf_attention.num_heads), kv_dim=kv_dim, bias="q_proj.bias" in sd)
    ours.load_state_dict(sd)
    return ours
