"""Attention: every token takes a weighted average of the values of the tokens it looks at.

Dims: ``B`` batch, ``H`` heads, ``N`` queries, ``M`` keys/values, ``D`` model width, ``Dh = D / H``
the width of one head.

Mask convention, used everywhere in this library: **True = keep** (this query may look at this key),
False = masked out. It is the convention of ``torch.nn.functional.scaled_dot_product_attention``
boolean masks and of the ``attention_mask`` a ``transformers`` tokenizer returns (1 = real token,
0 = padding): an integer mask holding only 0 and 1 is read the same way (1 = keep); an integer
mask with any other value is refused. A float ``attn_mask`` is *added* to the scores (0 keeps,
``-inf`` masks), as in torch. A masked key gets exactly zero weight. ``causal`` means query ``i`` sees keys
``0..i`` only: a lower-triangular mask, aligned top-left when ``N != M`` (as torch does). A query
that may see no key at all gets zero weights and a zero output (as torch's fast path returns).

dtypes (see ``mmllm_course._checks``): :class:`MultiHeadAttention` casts floating-point inputs to
its parameter dtype, as ``transformers`` modules do with ``pixel_values``; the functions here need
q, k and v to share one floating dtype and raise a ``TypeError`` naming the dtypes otherwise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mmllm_course._checks import (
    InputTypeError,
    check_dropout,
    check_int,
    check_same_float_dtype,
    check_tensor,
    describe,
    keep_mask,
    to_module_dtype,
)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, D) -> (B, H, N, D/H): head ``h`` gets channels ``h*Dh .. (h+1)*Dh - 1``.

    Same as ``rearrange(x, "b n (h d) -> b h n d", h=num_heads)``, written with view/transpose
    because it runs in every layer and plain ops have less overhead.
    """
    check_tensor(x, "split_heads' x", "(B, N, D)")
    num_heads = check_int(num_heads, "num_heads")
    if x.dim() != 3:
        raise ValueError(f"split_heads expects (B, N, D), got shape {tuple(x.shape)}")
    b, n, d = x.shape
    if d % num_heads:
        raise ValueError(f"width D={d} is not divisible by num_heads={num_heads}")
    return x.view(b, n, num_heads, d // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, N, Dh) -> (B, N, H*Dh): the inverse of :func:`split_heads`."""
    check_tensor(x, "merge_heads' x", "(B, H, N, Dh)")
    if x.dim() != 4:
        raise ValueError(f"merge_heads expects (B, H, N, Dh), got shape {tuple(x.shape)}")
    b, h, n, dh = x.shape
    return x.transpose(1, 2).reshape(b, n, h * dh)


def causal_mask(n: int, m: int | None = None, device: torch.device | None = None) -> torch.Tensor:
    """Boolean (N, M) lower-triangular mask, True = keep: query ``i`` sees keys ``j <= i``."""
    n = check_int(n, "n")
    m = n if m is None else check_int(m, "m")
    return torch.ones(n, m, dtype=torch.bool, device=device).tril()


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(t, name, "(B, H, N, Dh)")
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
    check_same_float_dtype({"q": q, "k": k, "v": v})
    if attn_mask is not None:
        check_tensor(attn_mask, "attn_mask")
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

    ``attn_mask``: boolean, True = keep; integer holding only 0 and 1, 1 = keep (a tokenizer's
    ``attention_mask``); or a float mask added to the scores. Any shape that broadcasts to
    (B, H, N, M). ``is_causal`` adds the lower-triangular mask (combined with ``attn_mask``).
    With ``return_weights=False`` this calls torch's fused ``F.scaled_dot_product_attention``
    (fast, never materialises the weights); with ``True`` it runs the same maths step by step so
    the weights can be plotted. ``dropout_p`` drops weights (pass 0.0 in eval mode); the returned
    weights are those before dropout.
    """
    _check_qkv(q, k, v, attn_mask)
    dropout_p = check_dropout(dropout_p, "dropout_p")
    n, m = q.shape[-2], k.shape[-2]
    if attn_mask is not None:
        attn_mask = keep_mask(attn_mask, "attn_mask", additive_ok=True).to(q.device)
        if attn_mask.is_floating_point():
            attn_mask = attn_mask.to(q.dtype)  # an additive mask in the scores' dtype
    if not return_weights:
        if attn_mask is not None and is_causal:  # torch takes one or the other: fold the causal part in
            causal = causal_mask(n, m, device=q.device)
            if attn_mask.dtype == torch.bool:
                attn_mask = attn_mask & causal
            else:
                attn_mask = attn_mask.masked_fill(~causal, float("-inf"))
            is_causal = False
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal)
        return out, None

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
        dim, num_heads = check_int(dim, "dim"), check_int(num_heads, "num_heads")
        kv_dim = None if kv_dim is None else check_int(kv_dim, "kv_dim")
        dropout = check_dropout(dropout, "dropout")
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
        check_tensor(x, "x", f"(B, N, {self.dim})", kind="float")
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"x must be (B, N, {self.dim}), got shape {tuple(x.shape)}")
        ctx = x if context is None else check_tensor(context, "context", f"(B, M, {self.kv_dim})", kind="float")
        if ctx.dim() != 3 or ctx.shape[-1] != self.kv_dim:
            raise ValueError(f"context must be (B, M, {self.kv_dim}), got shape {tuple(ctx.shape)}")
        if ctx.shape[0] != x.shape[0]:
            raise ValueError(f"batch sizes differ: x has B={x.shape[0]}, context has B={ctx.shape[0]}")
        b, n, m = x.shape[0], x.shape[1], ctx.shape[1]

        mask = None  # boolean, broadcasts to (B, H, N, M), True = keep
        x, ctx = to_module_dtype(x, self), to_module_dtype(ctx, self)  # the dtype rule: inputs follow the weights
        if key_padding_mask is not None:
            check_tensor(key_padding_mask, "key_padding_mask", "(B, M)")
            if tuple(key_padding_mask.shape) != (b, m):
                raise ValueError(
                    f"key_padding_mask must be (B, M) = ({b}, {m}) with True = keep, "
                    f"got shape {tuple(key_padding_mask.shape)}"
                )
            mask = keep_mask(key_padding_mask, "key_padding_mask").to(x.device)[:, None, None, :]  # (B, 1, 1, M)
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
    weights load one to one; heads are read from the module (``num_heads``) and its attention dropout
    (``dropout``, CLIP's ``attention_dropout``) is carried over. Anything else (a missing or an extra
    weight, e.g. ViT's ``o_proj``) raises a ``ValueError`` listing the names.
    """
    if not isinstance(hf_attention, nn.Module):
        raise InputTypeError(f"expected a transformers CLIPAttention module, got {describe(hf_attention)}")
    sd = hf_attention.state_dict()
    names = {f"{p}_proj.{kind}" for p in ("q", "k", "v", "out") for kind in ("weight", "bias")}
    if set(sd) != names or not hasattr(hf_attention, "num_heads"):
        raise ValueError(
            f"not a CLIPAttention: expected exactly the weights {sorted(names)} and a num_heads attribute; "
            f"got a {type(hf_attention).__name__} with missing {sorted(names - set(sd))} and unused "
            f"{sorted(set(sd) - names)[:12]}"
        )
    dim, kv_dim = sd["q_proj.weight"].shape[0], sd["k_proj.weight"].shape[1]
    dropout = float(getattr(hf_attention, "dropout", 0.0) or 0.0)  # CLIPAttention.dropout = config.attention_dropout
    ours = MultiHeadAttention(dim, int(hf_attention.num_heads), kv_dim=kv_dim, dropout=dropout)
    ours.load_state_dict(sd)
    return ours.train(hf_attention.training)
