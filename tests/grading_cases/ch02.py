"""Grader cases for chapter 2: correct versions written several ways, and the mistakes learners make.

Besides ``correct`` and ``wrong``, an exercise may list ``diagnoses``: ``{label: (answer, words)}``, a
wrong answer whose ``fail`` message must contain ``words`` (the check names that mistake, not another).
"""

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mmllm_course.data import COLORS, SHAPES, shapes_tokenizer
from mmllm_course.encoders.clip import CLIP, CLIPConfig
from mmllm_course.encoders.clip import clip_loss as ref_clip_loss
from mmllm_course.encoders.clip import zero_shot_predict as ref_zero_shot_predict
from mmllm_course.encoders.text import TextTransformerConfig
from mmllm_course.encoders.vit import ViTConfig
from mmllm_course.grading.checks.ch02 import siglip_loss_reference, train_clip_eval_data
from mmllm_course.nn.attention import MultiHeadAttention as LibraryMultiHeadAttention
from mmllm_course.nn.attention import merge_heads as ref_merge_heads
from mmllm_course.nn.attention import scaled_dot_product_attention as ref_sdpa
from mmllm_course.nn.attention import split_heads as ref_split_heads
from mmllm_course.nn.transformer import MLP as LibraryMLP

# ------------------------------------------------------------------------------------------- attention


def attention_reference(q, k, v, mask=None):
    return ref_sdpa(q, k, v, attn_mask=mask)[0]


def attention_torch(q, k, v, mask=None):
    """Correct: torch's fused kernel."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def attention_einsum(q, k, v, mask=None):
    """Correct, written with einsum and a float mask."""
    scores = torch.einsum("bhnd,bhmd->bhnm", q, k) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores + torch.zeros_like(scores).masked_fill(~mask, float("-inf"))
    return torch.einsum("bhnm,bhmd->bhnd", scores.softmax(dim=-1), v)


def _attend(q, k, v, mask, scale, dim=-1, invert=False):
    s = q @ k.transpose(-2, -1) * scale
    if mask is not None:
        s = s.masked_fill(mask if invert else ~mask, float("-inf"))
    return s.softmax(dim=dim) @ v


def attention_no_scale(q, k, v, mask=None):
    """Wrong: forgets the 1/sqrt(d)."""
    return _attend(q, k, v, mask, 1.0)


def attention_scale_by_d(q, k, v, mask=None):
    """Wrong: divides by d."""
    return _attend(q, k, v, mask, 1.0 / q.shape[-1])


def attention_softmax_queries(q, k, v, mask=None):
    """Wrong: softmax over the queries axis."""
    return _attend(q, k, v, mask, 1 / math.sqrt(q.shape[-1]), dim=-2)


def attention_mask_ignored(q, k, v, mask=None):
    """Wrong: never uses the mask."""
    return _attend(q, k, v, None, 1 / math.sqrt(q.shape[-1]))


def attention_mask_inverted(q, k, v, mask=None):
    """Wrong: masks the keys it should keep (nan where a row keeps nothing, so replaced by 0)."""
    return _attend(q, k, v, mask, 1 / math.sqrt(q.shape[-1]), invert=True).nan_to_num(0.0)


def attention_mask_after_softmax(q, k, v, mask=None):
    """Wrong: zeroes masked weights after the softmax, so rows no longer sum to 1."""
    w = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(dim=-1)
    return (w if mask is None else w * mask) @ v


def attention_masked_fill_zero(q, k, v, mask=None):
    """Wrong: masked scores set to 0, which still get exp(0) of weight."""
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    return (s if mask is None else s.masked_fill(~mask, 0.0)).softmax(dim=-1) @ v


def attention_float32(q, k, v, mask=None):
    """Wrong: computes in float32 whatever the input."""
    return attention_reference(q.float(), k.float(), v.float(), mask)


def attention_returns_weights_too(q, k, v, mask=None):
    """Wrong: returns (output, weights) as the library does, but the exercise asks for the output only."""
    return ref_sdpa(q, k, v, attn_mask=mask, return_weights=True)


# ------------------------------------------------------------------------------------------- heads


def split_reference(x, num_heads):
    return ref_split_heads(x, num_heads)


def split_einops(x, num_heads):
    """Correct, with einops."""
    return rearrange(x, "b n (h d) -> b h n d", h=num_heads)


def split_chunks(x, num_heads):
    """Correct, with chunk + stack."""
    return torch.stack(x.chunk(num_heads, dim=-1), dim=1)


def split_reshape_only(x, num_heads):
    """Wrong: reshape without transpose."""
    b, n, d = x.shape
    return x.reshape(b, num_heads, n, d // num_heads)


def split_heads_fastest(x, num_heads):
    """Wrong: the head index varies fastest among the channels."""
    return rearrange(x, "b n (d h) -> b h n d", h=num_heads)


def split_no_transpose(x, num_heads):
    """Wrong: (B, N, H, Dh), forgot to move the head axis."""
    b, n, d = x.shape
    return x.view(b, n, num_heads, d // num_heads)


def merge_reference(x):
    return ref_merge_heads(x)


def merge_einops(x):
    """Correct, with einops."""
    return rearrange(x, "b h n d -> b n (h d)")


def merge_cat(x):
    """Correct, concatenating the heads."""
    return torch.cat(x.unbind(dim=1), dim=-1)


def merge_reshape_only(x):
    """Wrong: reshape without transpose."""
    b, h, n, dh = x.shape
    return x.reshape(b, n, h * dh)


def merge_heads_fastest(x):
    """Wrong: interleaves the heads."""
    return rearrange(x, "b h n d -> b n (d h)")


# ------------------------------------------------------------------------------------------- clip_loss


def clip_loss_reference(logits):
    return ref_clip_loss(logits)


def clip_loss_log_softmax(logits):
    """Correct, with log_softmax over rows and columns of the diagonal."""
    diag_rows = logits.log_softmax(dim=1).diagonal()
    diag_cols = logits.log_softmax(dim=0).diagonal()
    return -(diag_rows.mean() + diag_cols.mean()) / 2


def clip_loss_one_sided(logits):
    """Wrong: image->text only."""
    return F.cross_entropy(logits, torch.arange(logits.shape[0]))


def clip_loss_text_side(logits):
    """Wrong: text->image only."""
    return F.cross_entropy(logits.T, torch.arange(logits.shape[0]))


def clip_loss_sum(logits):
    """Wrong: sums the two directions."""
    t = torch.arange(logits.shape[0])
    return F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t)


def clip_loss_zero_targets(logits):
    """Wrong: targets all zero."""
    t = torch.zeros(logits.shape[0], dtype=torch.long)
    return (F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t)) / 2


def clip_loss_reversed_targets(logits):
    """Wrong: targets in the wrong order."""
    t = torch.arange(logits.shape[0]).flip(0)
    return (F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t)) / 2


def clip_loss_bce(logits):
    """Wrong: binary cross-entropy against the identity."""
    return F.binary_cross_entropy_with_logits(logits, torch.eye(logits.shape[0], dtype=logits.dtype))


def clip_loss_float(logits):
    """Wrong: returns a Python float (no backward)."""
    return ref_clip_loss(logits).item()


def clip_loss_per_pair(logits):
    """Wrong: no reduction (one loss per pair)."""
    t = torch.arange(logits.shape[0])
    return (F.cross_entropy(logits, t, reduction="none") + F.cross_entropy(logits.T, t, reduction="none")) / 2


# ------------------------------------------------------------------------------------------- zero_shot


def zero_shot_reference(image_embeds, class_embeds):
    return ref_zero_shot_predict(image_embeds, class_embeds)


def zero_shot_manual(image_embeds, class_embeds):
    """Correct: divide by the norms of the dot products (cosine), argmax."""
    dots = image_embeds @ class_embeds.T
    cos = dots / (image_embeds.norm(dim=-1, keepdim=True) * class_embeds.norm(dim=-1)[None])
    return cos.argmax(dim=1)


def zero_shot_classes_only(image_embeds, class_embeds):
    """Correct: normalising the image side is optional for the argmax, the class side is not."""
    return (image_embeds @ F.normalize(class_embeds, dim=-1).T).argmax(dim=-1)


def zero_shot_unnormalised(image_embeds, class_embeds):
    """Wrong: raw dot products."""
    return (image_embeds @ class_embeds.T).argmax(dim=-1)


def zero_shot_images_only(image_embeds, class_embeds):
    """Wrong: normalises only the images (which does not change the argmax)."""
    return (F.normalize(image_embeds, dim=-1) @ class_embeds.T).argmax(dim=-1)


def zero_shot_wrong_axis(image_embeds, class_embeds):
    """Wrong: argmax over the images."""
    return (F.normalize(image_embeds, dim=-1) @ F.normalize(class_embeds, dim=-1).T).argmax(dim=0)


def zero_shot_argmin(image_embeds, class_embeds):
    """Wrong: picks the least similar class (e.g. from a distance that was meant to be minimised)."""
    return (F.normalize(image_embeds, dim=-1) @ F.normalize(class_embeds, dim=-1).T).argmin(dim=-1)


def zero_shot_scores(image_embeds, class_embeds):
    """Wrong: returns the similarity matrix instead of indices."""
    return F.normalize(image_embeds, dim=-1) @ F.normalize(class_embeds, dim=-1).T



def attention_mask_wrong_way_round(q, k, v, mask=None):
    """Wrong: nn.MultiheadAttention's convention (True = masked): masked_fill(mask, -inf), NaN rows left as they come."""
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(mask, float("-inf"))
    return s.softmax(dim=-1) @ v


def attention_mask_added(q, k, v, mask=None):
    """Wrong: adds the boolean mask to the scores (True becomes +1)."""
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s + mask
    return s.softmax(dim=-1) @ v


def clip_loss_logsumexp(logits):
    """Correct, from logsumexp over rows and columns."""
    diag = logits.diagonal()
    rows = (torch.logsumexp(logits, dim=1) - diag).mean()
    cols = (torch.logsumexp(logits, dim=0) - diag).mean()
    return 0.5 * (rows + cols)


def clip_loss_item_rewrapped(logits):
    """Wrong: the right number in a new tensor with no history (gradients never reach the logits)."""
    return torch.tensor(ref_clip_loss(logits).item(), dtype=logits.dtype, requires_grad=True)


def clip_loss_detached_transpose(logits):
    """Wrong: the text->image direction computed on a detached copy (half the gradient)."""
    t = torch.arange(logits.shape[0])
    return (F.cross_entropy(logits, t) + F.cross_entropy(logits.T.detach(), t)) / 2


def clip_loss_shape_one(logits):
    """Wrong: shape (1,) instead of a 0-d tensor."""
    return ref_clip_loss(logits).reshape(1)


def clip_loss_batch_sum(logits):
    """Wrong: reduction='sum' over the batch (each direction), then averaged over the two directions."""
    t = torch.arange(logits.shape[0])
    return (F.cross_entropy(logits, t, reduction="sum") + F.cross_entropy(logits.T, t, reduction="sum")) / 2


def zero_shot_first_ten(image_embeds, class_embeds):
    """Wrong: only ever considers the first 10 classes."""
    return (F.normalize(image_embeds, dim=-1) @ F.normalize(class_embeds[:10], dim=-1).T).argmax(dim=-1)


# ------------------------------------------------------------------------------------------- build: MultiHeadAttention


class MHAReference(nn.Module):
    """Correct: projections, split with view/transpose, torch's fused attention, merge, out_proj."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x, causal=False):
        b, n, d = x.shape
        q, k, v = (p(x).view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class MHAEinsum(nn.Module):
    """Correct, written out: einops split, einsum scores, an explicit boolean mask, einsum mix."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.h = num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x, causal: bool = False):
        q, k, v = (rearrange(p(x), "b n (h d) -> b h n d", h=self.h) for p in (self.q_proj, self.k_proj, self.v_proj))
        scores = torch.einsum("bhnd,bhmd->bhnm", q, k) / math.sqrt(q.shape[-1])
        if causal:
            keep = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).tril()
            scores = scores.masked_fill(~keep, float("-inf"))
        out = torch.einsum("bhnm,bhmd->bhnd", scores.softmax(dim=-1), v)
        return self.out_proj(rearrange(out, "b h n d -> b n (h d)"))


class MHAVariant(MHAReference):
    """Base of the wrong versions: the same parameters, the forward built from a few switches."""

    split, scale, out, keep, heads = "heads", "head", True, "tril", None

    def forward(self, x, causal=False):
        b, n, d = x.shape
        h = self.heads or self.num_heads
        dh = d // h

        def split(t):
            if self.split == "fastest":
                return rearrange(t, "b n (d h) -> b h n d", h=h)
            if self.split == "reshape":
                return t.reshape(b, h, n, dh)
            return rearrange(t, "b n (h d) -> b h n d", h=h)

        def merge(t):
            if self.split == "fastest":
                return rearrange(t, "b h n d -> b n (d h)")
            if self.split == "reshape":
                return t.reshape(b, n, d)
            return rearrange(t, "b h n d -> b n (h d)")

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        s = q @ k.transpose(-2, -1) * {"head": dh ** -0.5, "model": d ** -0.5, "none": 1.0}[self.scale]
        if causal and self.keep != "none":
            tri = torch.ones(n, n, dtype=torch.bool).tril()
            if self.keep == "inverted":
                s = s.masked_fill(tri, float("-inf"))
            elif self.keep == "triu":
                s = s.masked_fill(~torch.ones(n, n, dtype=torch.bool).triu(), float("-inf"))
            else:
                s = s.masked_fill(~tri, float("-inf"))
        out = merge(s.softmax(dim=-1) @ v)
        return self.out_proj(out) if self.out else out


def _mha_wrong(name, **switches):
    return type(name, (MHAVariant,), dict(switches, __doc__=f"Wrong: {name}."))


MHANoOutProj = _mha_wrong("MHANoOutProj", out=False)
MHAHeadsFastest = _mha_wrong("MHAHeadsFastest", split="fastest")
MHAReshapeOnly = _mha_wrong("MHAReshapeOnly", split="reshape")
MHACausalIgnored = _mha_wrong("MHACausalIgnored", keep="none")
MHACausalUpper = _mha_wrong("MHACausalUpper", keep="triu")
MHACausalInverted = _mha_wrong("MHACausalInverted", keep="inverted")
MHAScaleModelWidth = _mha_wrong("MHAScaleModelWidth", scale="model")
MHANoScale = _mha_wrong("MHANoScale", scale="none")
MHAOneHead = _mha_wrong("MHAOneHead", heads=1, scale="model")


class MHAOtherNames(nn.Module):
    """Wrong: W_Q, W_K, W_V, W_O named query/key/value/out (the library's weights cannot load)."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.inner = MHAReference(dim, num_heads)
        self.query, self.key, self.value, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x, causal=False):
        return self.inner(x, causal)


class MHANoBias(MHAReference):
    """Wrong: projections without bias."""

    def __init__(self, dim, num_heads):
        super().__init__(dim, num_heads)
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim, bias=False) for _ in range(4))


class MHAReturnsTuple(MHAReference):
    """Wrong: returns (output, weights) like the library's module."""

    def forward(self, x, causal=False):
        return super().forward(x, causal), None


class MHADetachedValues(MHAReference):
    """Wrong: the values detached (right outputs, no gradient to v_proj)."""

    def forward(self, x, causal=False):
        b, n, d = x.shape
        h = self.num_heads
        q, k, v = (rearrange(p(x), "b n (h d) -> b h n d", h=h) for p in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v.detach(), is_causal=causal)
        return self.out_proj(rearrange(out, "b h n d -> b n (h d)"))


# ------------------------------------------------------------------------------------------- build: TransformerBlock


class BlockMLP(nn.Module):
    def __init__(self, dim, mlp_dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class BlockReference(nn.Module):
    """Correct: pre-norm, with the MultiHeadAttention written above and a small MLP module."""

    def __init__(self, dim, num_heads, mlp_dim):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = MHAReference(dim, num_heads)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = BlockMLP(dim, mlp_dim)

    def forward(self, x, causal=False):
        x = x + self.attn(self.ln1(x), causal=causal)
        return x + self.mlp(self.ln2(x))


class BlockLibraryParts(nn.Module):
    """Correct: the library's MultiHeadAttention (which returns a pair) and MLP, an nn.Sequential nowhere."""

    def __init__(self, dim, num_heads, mlp_dim):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = LibraryMultiHeadAttention(dim, num_heads)
        self.mlp = LibraryMLP(dim, mlp_dim)

    def forward(self, x, causal=False):
        h, _ = self.attn(self.ln1(x), causal=causal)
        x = x + h
        return x + self.mlp(self.ln2(x))


class BlockSequentialMLP(nn.Module):
    """Correct: the MLP as a named nn.Sequential (fc1, act, fc2), and the einsum attention."""

    def __init__(self, dim, num_heads, mlp_dim):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = MHAEinsum(dim, num_heads)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(OrderedDict(fc1=nn.Linear(dim, mlp_dim), act=nn.GELU(), fc2=nn.Linear(mlp_dim, dim)))

    def forward(self, x, causal=False):
        x = self.attn(self.ln1(x), causal) + x
        return self.mlp(self.ln2(x)) + x


class BlockVariant(BlockReference):
    kind = "pre"

    def forward(self, x, causal=False):
        attn = lambda h: self.attn(h, causal=causal and self.kind != "no_causal")  # noqa: E731
        mlp = self.mlp
        if self.kind == "relu":
            mlp = lambda h: self.mlp.fc2(F.relu(self.mlp.fc1(h)))  # noqa: E731
        elif self.kind == "gelu_tanh":
            mlp = lambda h: self.mlp.fc2(F.gelu(self.mlp.fc1(h), approximate="tanh"))  # noqa: E731
        if self.kind == "post":
            x = self.ln1(x + attn(x))
            return self.ln2(x + mlp(x))
        if self.kind == "parallel":
            return x + attn(self.ln1(x)) + mlp(self.ln2(x))
        if self.kind == "normed_residual":
            x = self.ln1(x)
            x = x + attn(x)
            x = self.ln2(x)
            return x + mlp(x)
        if self.kind == "ln1_twice":
            x = x + attn(self.ln1(x))
            return x + mlp(self.ln1(x))
        a = attn(self.ln1(x))
        x = a if self.kind in ("no_attn_residual", "no_residual") else x + a
        m = mlp(self.ln2(x))
        return m if self.kind in ("no_mlp_residual", "no_residual") else x + m


def _block_wrong(name, kind):
    return type(name, (BlockVariant,), {"kind": kind, "__doc__": f"Wrong: {kind}."})


BlockPostNorm = _block_wrong("BlockPostNorm", "post")
BlockNoAttnResidual = _block_wrong("BlockNoAttnResidual", "no_attn_residual")
BlockNoMLPResidual = _block_wrong("BlockNoMLPResidual", "no_mlp_residual")
BlockNoResidual = _block_wrong("BlockNoResidual", "no_residual")
BlockNormedResidual = _block_wrong("BlockNormedResidual", "normed_residual")
BlockLn1Twice = _block_wrong("BlockLn1Twice", "ln1_twice")
BlockParallel = _block_wrong("BlockParallel", "parallel")
BlockReLU = _block_wrong("BlockReLU", "relu")
BlockGeluTanh = _block_wrong("BlockGeluTanh", "gelu_tanh")
BlockCausalNotPassed = _block_wrong("BlockCausalNotPassed", "no_causal")


class BlockOtherNames(nn.Module):
    """Wrong: norm1/norm2 and an unnamed nn.Sequential MLP (mlp.0, mlp.2): the weights cannot load."""

    def __init__(self, dim, num_heads, mlp_dim):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = MHAReference(dim, num_heads)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x, causal=False):
        x = x + self.attn(self.norm1(x), causal)
        return x + self.mlp(self.norm2(x))


# ------------------------------------------------------------------------------------------- build: vit_forward


def vit_forward_reference(model, images):
    """Correct, step by step over the library's parts."""
    c = model.config
    if model.pixel_mean is not None:
        images = (images - model.pixel_mean) / model.pixel_std
    x = model.pre_norm(model.embeddings(images))  # (B, 1+N, D)
    for block in model.blocks:
        x, _ = block(x)
    pool = (lambda t: t[:, 0]) if c.pooling == "cls" else (lambda t: t[:, 1:].mean(dim=1))
    if c.final_norm == "tokens":
        x = model.norm(x)
        return x, pool(x)
    return x, model.norm(pool(x))


def vit_forward_other(model, images):
    """Correct, written differently: explicit channel statistics, a sum for the mean, pooling before the branch."""
    c = model.config
    if c.pixel_mean is not None:
        mean = torch.tensor(c.pixel_mean, dtype=images.dtype).view(1, -1, 1, 1)
        std = torch.tensor(c.pixel_std, dtype=images.dtype).view(1, -1, 1, 1)
        images = (images - mean) / std
    x = model.embeddings(images)
    if c.pre_norm:
        x = model.pre_norm(x)
    for block in model.blocks:
        x = block(x)[0]
    tokens = model.norm(x) if c.final_norm == "tokens" else x
    pooled = tokens[:, 0] if c.pooling == "cls" else tokens[:, 1:].sum(dim=1) / (tokens.shape[1] - 1)
    return tokens, (pooled if c.final_norm == "tokens" else model.norm(pooled))


def _vit_wrong(pooling=None, final_norm=None, pre_norm=True, pixels=True, mean_with_cls=False, final=True):
    def vit_forward(model, images):
        c = model.config
        pool_kind, norm_kind = pooling or c.pooling, final_norm or c.final_norm
        if pixels and model.pixel_mean is not None:
            images = (images - model.pixel_mean) / model.pixel_std
        x = model.embeddings(images)
        if pre_norm:
            x = model.pre_norm(x)
        for block in model.blocks:
            x, _ = block(x)
        pool = (lambda t: t[:, 0]) if pool_kind == "cls" else (lambda t: t.mean(1) if mean_with_cls else t[:, 1:].mean(1))
        if not final:
            return x, pool(x)
        if norm_kind == "tokens":
            x = model.norm(x)
            return x, pool(x)
        return x, model.norm(pool(x))

    return vit_forward


vit_forward_always_cls = _vit_wrong(pooling="cls")
vit_forward_always_mean = _vit_wrong(pooling="mean")
vit_forward_always_norm_tokens = _vit_wrong(final_norm="tokens")
vit_forward_always_norm_pooled = _vit_wrong(final_norm="pooled")
vit_forward_no_final_norm = _vit_wrong(final=False)
vit_forward_mean_with_cls = _vit_wrong(mean_with_cls=True)
vit_forward_no_pre_norm = _vit_wrong(pre_norm=False)
vit_forward_no_pixel_norm = _vit_wrong(pixels=False)


def vit_forward_pooled_only(model, images):
    """Wrong: returns only the pooled vector."""
    return vit_forward_reference(model, images)[1]


def vit_forward_whole_model(model, images):
    """Wrong: calls the library's whole forward instead of writing it."""
    out = model(images)
    return out.last_hidden_state, out.pooled


def vit_forward_detached_blocks(model, images):
    """Wrong: runs the blocks under no_grad (right values, no gradient to the blocks or the images)."""
    c = model.config
    if model.pixel_mean is not None:
        images = (images - model.pixel_mean) / model.pixel_std
    x = model.pre_norm(model.embeddings(images))
    with torch.no_grad():
        for block in model.blocks:
            x, _ = block(x)
    if c.final_norm == "tokens":
        x = model.norm(x)
        return x, x[:, 0] if c.pooling == "cls" else x[:, 1:].mean(1)
    return x, model.norm(x[:, 0] if c.pooling == "cls" else x[:, 1:].mean(1))


# ------------------------------------------------------------------------------------------- train: a trained mini-CLIP


class OracleCLIP(nn.Module):
    """A stand-in for a trained CLIP whose accuracy is known: it recognises the check's held-out images.

    Training a real one takes a minute (the solution notebook does it and must pass); here the test
    needs models of a chosen accuracy in milliseconds. Images are looked up by their pixels; texts are
    read for their colour and shape words. ``wrong_every``: every n-th image gets the next class.
    """

    def __init__(self, wrong_every=0, ignore_text=False, colour_only=False, width=24):
        super().__init__()
        self.proj = nn.Parameter(torch.eye(20, width) + 0.01 * torch.randn(20, width, generator=torch.Generator().manual_seed(0)))
        self.wrong_every, self.ignore_text, self.colour_only = wrong_every, ignore_text, colour_only
        self.known = None  # built on first use, so that collecting the tests stays fast

    def _lookup(self) -> dict:
        if self.known is None:
            images, labels = train_clip_eval_data()
            self.known = {img.numpy().tobytes(): (i, int(label)) for i, (img, label) in enumerate(zip(images, labels))}
        return self.known

    def encode_image(self, images):
        rows = []
        for img in images:
            index, label = self._lookup().get(img.cpu().numpy().tobytes(), (0, 0))
            if self.wrong_every and index % self.wrong_every == 0:
                label = (label + 1) % 20
            one_hot = torch.zeros(20)
            if self.colour_only:
                one_hot[(label // len(SHAPES)) * len(SHAPES) : (label // len(SHAPES) + 1) * len(SHAPES)] = 1.0
            else:
                one_hot[label] = 1.0
            rows.append(one_hot)
        return 3.0 * torch.stack(rows) @ self.proj  # not unit length: the check normalises

    def encode_text(self, input_ids):
        rows = []
        for ids in input_ids.tolist():
            words = shapes_tokenizer().decode(ids).split()
            colour = next((COLORS.index(w) for w in words if w in COLORS), 0)
            shape = next((SHAPES.index(w) for w in words if w in SHAPES), 0)
            one_hot = torch.zeros(20)
            one_hot[0 if self.ignore_text else colour * len(SHAPES) + shape] = 1.0
            rows.append(one_hot)
        return torch.stack(rows) @ self.proj


def trained_clip_function():
    """Correct: a function of no arguments that returns the trained model."""
    return OracleCLIP()


def _untrained_clip(vocab_size=None):
    tok = shapes_tokenizer()
    torch.manual_seed(0)
    return CLIP(CLIPConfig(
        vision=ViTConfig(image_size=32, patch_size=8, dim=32, depth=1, num_heads=2, pre_norm=True, final_norm="pooled",
                         pooling="mean"),
        text=TextTransformerConfig(vocab_size=vocab_size or len(tok), context_length=16, dim=32, depth=1, num_heads=2,
                                   eos_token_id=tok.eos_token_id if vocab_size is None else 1, pad_token_id=tok.pad_token_id
                                   if vocab_size is None else 0),
        embed_dim=32,
    ))


class ImageTupleCLIP(OracleCLIP):
    """Wrong: encode_image returns (embeddings, something)."""

    def encode_image(self, images):
        return super().encode_image(images), None


class WidthMismatchCLIP(OracleCLIP):
    """Wrong: image and text embeddings of different widths (no shared space)."""

    def encode_text(self, input_ids):
        return super().encode_text(input_ids)[:, :16]


def train_with_arguments(model, steps):
    """Wrong: the training function itself, not the trained model."""
    return model


# ------------------------------------------------------------------------------------------- stretch: SigLIP


def siglip_reference(image_embeds, text_embeds, logit_scale, logit_bias):
    return siglip_loss_reference(image_embeds, text_embeds, logit_scale, logit_bias)


def siglip_bce(image_embeds, text_embeds, logit_scale, logit_bias):
    """Correct: binary cross-entropy with the identity as targets, summed, divided by B."""
    logits = F.normalize(image_embeds, dim=-1) @ F.normalize(text_embeds, dim=-1).T * logit_scale.exp() + logit_bias
    eye = torch.eye(logits.shape[0], dtype=logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, eye, reduction="sum") / logits.shape[0]


def siglip_text_side(image_embeds, text_embeds, logit_scale, logit_bias):
    """Correct: from logits_per_text (the transpose; the sum over all pairs is the same), with softplus."""
    img = image_embeds / image_embeds.norm(dim=-1, keepdim=True)
    txt = text_embeds / text_embeds.norm(dim=-1, keepdim=True)
    logits = torch.exp(logit_scale) * txt @ img.T + logit_bias
    labels = 2 * torch.eye(logits.shape[0], dtype=logits.dtype) - 1
    return F.softplus(-labels * logits).sum() / logits.shape[0]


def _siglip_wrong(doc, logits_fn=None, labels01=False, norm="b", diagonal_only=False, normalise=True):
    def siglip_loss(image_embeds, text_embeds, logit_scale, logit_bias):
        img, txt = (F.normalize(image_embeds, dim=-1), F.normalize(text_embeds, dim=-1)) if normalise else (image_embeds, text_embeds)
        cos = img @ txt.T
        logits = logits_fn(cos, logit_scale, logit_bias) if logits_fn else cos * logit_scale.exp() + logit_bias
        b = logits.shape[0]
        eye = torch.eye(b, dtype=logits.dtype)
        if diagonal_only:
            return -F.logsigmoid(logits.diagonal()).sum() / b
        labels = eye if labels01 else 2 * eye - 1
        total = -F.logsigmoid(labels * logits).sum()
        return {"b": total / b, "b2": total / (b * b), "1": total}[norm]

    siglip_loss.__doc__ = f"Wrong: {doc}."
    return siglip_loss


siglip_mean = _siglip_wrong("normalised by B^2 (a mean over all pairs)", norm="b2")
siglip_no_division = _siglip_wrong("not divided by B", norm="1")
siglip_labels_01 = _siglip_wrong("labels 0/1", labels01=True)
siglip_scale_not_exp = _siglip_wrong("logit_scale used without exp", logits_fn=lambda c, s, b: c * s + b)
siglip_divide_by_t = _siglip_wrong("cosines divided by t", logits_fn=lambda c, s, b: c / s.exp() + b)
siglip_no_bias = _siglip_wrong("bias forgotten", logits_fn=lambda c, s, b: c * s.exp())
siglip_bias_subtracted = _siglip_wrong("bias subtracted", logits_fn=lambda c, s, b: c * s.exp() - b)
siglip_bias_scaled = _siglip_wrong("bias inside the scaling", logits_fn=lambda c, s, b: s.exp() * (c + b))
siglip_not_normalised = _siglip_wrong("embeddings not normalised", normalise=False)
siglip_diagonal_only = _siglip_wrong("only the matching pairs", diagonal_only=True)


def siglip_softmax(image_embeds, text_embeds, logit_scale, logit_bias):
    """Wrong: CLIP's softmax loss on SigLIP's logits."""
    logits = F.normalize(image_embeds, dim=-1) @ F.normalize(text_embeds, dim=-1).T * logit_scale.exp() + logit_bias
    return ref_clip_loss(logits)


def siglip_scale_detached(image_embeds, text_embeds, logit_scale, logit_bias):
    """Wrong: the scale read as a number (no gradient reaches logit_scale, so t is never learned)."""
    t = math.exp(logit_scale.item())
    return siglip_loss_reference(image_embeds, text_embeds, torch.tensor(math.log(t), dtype=image_embeds.dtype), logit_bias)


def siglip_float(image_embeds, text_embeds, logit_scale, logit_bias):
    """Wrong: a Python float."""
    return siglip_loss_reference(image_embeds, text_embeds, logit_scale, logit_bias).item()


CASES = {
    "ch02.attention": {
        "correct": [attention_reference, attention_torch, attention_einsum],
        "wrong": {
            "no 1/sqrt(d) scale": attention_no_scale,
            "scaled by 1/d": attention_scale_by_d,
            "softmax over the queries": attention_softmax_queries,
            "mask ignored": attention_mask_ignored,
            "mask inverted": attention_mask_inverted,
            "mask the wrong way round, NaN rows": attention_mask_wrong_way_round,
            "mask added to the scores": attention_mask_added,
            "mask applied after softmax": attention_mask_after_softmax,
            "masked scores set to 0": attention_masked_fill_zero,
            "always float32": attention_float32,
            "returns (output, weights)": attention_returns_weights_too,
        },
        "diagnoses": {
            "mask the wrong way round, NaN rows": (attention_mask_wrong_way_round, "the mask used the wrong way round"),
            "mask inverted, NaN replaced by 0": (attention_mask_inverted, "the mask used the wrong way round"),
            "mask added to the scores": (attention_mask_added, "ADDED to the scores"),
            "no scale": (attention_no_scale, "WITHOUT the 1/sqrt(d) scale"),
            "softmax over the queries": (attention_softmax_queries, "wrong axis"),
            "mask ignored": (attention_mask_ignored, "mask ignored"),
            "mask applied after softmax": (attention_mask_after_softmax, "AFTER the softmax"),
            "masked scores set to 0": (attention_masked_fill_zero, "set to 0 instead of -inf"),
        },
    },
    "ch02.split_heads": {
        "correct": [split_reference, split_einops, split_chunks],
        "wrong": {
            "reshape without transpose": split_reshape_only,
            "head index fastest": split_heads_fastest,
            "head axis not moved": split_no_transpose,
        },
        "diagnoses": {
            "head axis not moved": (split_no_transpose, "(B, N, H, D/H)"),
            "head index fastest": (split_heads_fastest, "varies fastest"),
        },
    },
    "ch02.merge_heads": {
        "correct": [merge_reference, merge_einops, merge_cat],
        "wrong": {
            "reshape without transpose": merge_reshape_only,
            "heads interleaved": merge_heads_fastest,
        },
        "diagnoses": {
            "reshape without transpose": (merge_reshape_only, "without moving the head axis back"),
            "heads interleaved": (merge_heads_fastest, "varies fastest"),
        },
    },
    "ch02.clip_loss": {
        "correct": [clip_loss_reference, clip_loss_log_softmax, clip_loss_logsumexp],
        "wrong": {
            "one-sided (image->text)": clip_loss_one_sided,
            "one-sided (text->image)": clip_loss_text_side,
            "sum of both directions": clip_loss_sum,
            "summed over the batch": clip_loss_batch_sum,
            "targets all zero": clip_loss_zero_targets,
            "targets reversed": clip_loss_reversed_targets,
            "binary cross-entropy": clip_loss_bce,
            "python float": clip_loss_float,
            "no reduction": clip_loss_per_pair,
            "the right number with no history": clip_loss_item_rewrapped,
            "text->image direction detached": clip_loss_detached_transpose,
            "shape (1,)": clip_loss_shape_one,
        },
        "diagnoses": {
            "one-sided (image->text)": (clip_loss_one_sided, "image->text cross-entropy alone"),
            "one-sided (text->image)": (clip_loss_text_side, "text->image cross-entropy alone"),
            "sum of both directions": (clip_loss_sum, "the SUM of the two directions"),
            "targets all zero": (clip_loss_zero_targets, "every target 0"),
            "binary cross-entropy": (clip_loss_bce, "binary cross-entropy"),
            "no reduction": (clip_loss_per_pair, "average over the batch"),
            "summed over the batch": (clip_loss_batch_sum, "SUMMED over the batch"),
            "targets reversed": (clip_loss_reversed_targets, "reverse order"),
            "the right number with no history": (clip_loss_item_rewrapped, "cut off"),
            "text->image direction detached": (clip_loss_detached_transpose, "text->image direction is detached"),
            "shape (1,)": (clip_loss_shape_one, "0-d"),
        },
    },
    "ch02.zero_shot": {
        "correct": [zero_shot_reference, zero_shot_manual, zero_shot_classes_only],
        "wrong": {
            "no normalisation": zero_shot_unnormalised,
            "images normalised only": zero_shot_images_only,
            "argmax over the images": zero_shot_wrong_axis,
            "argmin": zero_shot_argmin,
            "similarities instead of indices": zero_shot_scores,
            "first 10 classes only": zero_shot_first_ten,
        },
        "diagnoses": {
            "first 10 classes only": (zero_shot_first_ten, "first 10 classes"),
            "no normalisation": (zero_shot_unnormalised, "raw dot products"),
            "argmin": (zero_shot_argmin, "argmin"),
            "argmax over the images": (zero_shot_wrong_axis, "one index per CLASS"),
        },
    },
    "ch02.multi_head_attention": {
        "correct": [MHAReference, MHAEinsum],
        "wrong": {
            "no out_proj": MHANoOutProj,
            "heads split head-index fastest": MHAHeadsFastest,
            "reshape without transpose": MHAReshapeOnly,
            "causal flag ignored": MHACausalIgnored,
            "causal mask upper triangle": MHACausalUpper,
            "causal mask inverted": MHACausalInverted,
            "scaled by 1/sqrt(D)": MHAScaleModelWidth,
            "no scale": MHANoScale,
            "one head": MHAOneHead,
            "other parameter names": MHAOtherNames,
            "no bias": MHANoBias,
            "returns a tuple": MHAReturnsTuple,
            "values detached": MHADetachedValues,
        },
        "diagnoses": {
            "no out_proj": (MHANoOutProj, "WITHOUT the output projection"),
            "heads split head-index fastest": (MHAHeadsFastest, "varying fastest"),
            "reshape without transpose": (MHAReshapeOnly, "without a transpose"),
            "causal flag ignored": (MHACausalIgnored, "causal flag ignored"),
            "causal mask inverted": (MHACausalInverted, "causal mask used inverted"),
            "scaled by 1/sqrt(D)": (MHAScaleModelWidth, "1/sqrt(D), the model width"),
            "one head": (MHAOneHead, "ONE head"),
            "other parameter names": (MHAOtherNames, "q_proj.weight (16, 16)"),
            "values detached": (MHADetachedValues, "v_proj"),
        },
    },
    "ch02.transformer_block": {
        "correct": [BlockReference, BlockLibraryParts, BlockSequentialMLP],
        "wrong": {
            "post-norm": BlockPostNorm,
            "no attention residual": BlockNoAttnResidual,
            "no MLP residual": BlockNoMLPResidual,
            "no residual": BlockNoResidual,
            "normalised residual": BlockNormedResidual,
            "ln1 used twice": BlockLn1Twice,
            "parallel attention and MLP": BlockParallel,
            "ReLU": BlockReLU,
            "tanh GELU": BlockGeluTanh,
            "causal not passed on": BlockCausalNotPassed,
            "other parameter names": BlockOtherNames,
        },
        "diagnoses": {
            "post-norm": (BlockPostNorm, "POST-norm"),
            "no attention residual": (BlockNoAttnResidual, "attention's residual"),
            "no MLP residual": (BlockNoMLPResidual, "MLP's residual"),
            "normalised residual": (BlockNormedResidual, "NORMALISED tokens"),
            "ReLU": (BlockReLU, "ReLU"),
            "causal not passed on": (BlockCausalNotPassed, "does not pass causal"),
            "other parameter names": (BlockOtherNames, "ln1.weight"),
        },
    },
    "ch02.vit_forward": {
        "correct": [vit_forward_reference, vit_forward_other],
        "wrong": {
            "always [CLS] pooling": vit_forward_always_cls,
            "always mean pooling": vit_forward_always_mean,
            "final norm always on tokens": vit_forward_always_norm_tokens,
            "final norm always on pooled": vit_forward_always_norm_pooled,
            "no final norm": vit_forward_no_final_norm,
            "mean with [CLS]": vit_forward_mean_with_cls,
            "no pre_norm": vit_forward_no_pre_norm,
            "no pixel normalisation": vit_forward_no_pixel_norm,
            "pooled only": vit_forward_pooled_only,
            "the whole model(images)": vit_forward_whole_model,
            "blocks under no_grad": vit_forward_detached_blocks,
        },
        "diagnoses": {
            "always [CLS] pooling": (vit_forward_always_cls, "pooling where this model's config says pooling='mean'"),
            "final norm always on tokens": (vit_forward_always_norm_tokens, "final LayerNorm placed as for final_norm='tokens'"),
            "mean with [CLS]": (vit_forward_mean_with_cls, "[CLS] included"),
            "no pre_norm": (vit_forward_no_pre_norm, "skips model.pre_norm"),
            "no pixel normalisation": (vit_forward_no_pixel_norm, "pixel normalisation"),
            "the whole model(images)": (vit_forward_whole_model, "run the model's parts itself"),
        },
    },
    "ch02.train_clip": {
        "correct": [OracleCLIP(), OracleCLIP(wrong_every=14), trained_clip_function],
        "wrong": {
            "85% right": OracleCLIP(wrong_every=7),
            "text ignored": OracleCLIP(ignore_text=True),
            "colours only": OracleCLIP(colour_only=True),
            "untrained CLIP": _untrained_clip(),
            "another vocabulary": _untrained_clip(vocab_size=100),
            "the class": OracleCLIP,
            "the training function": train_with_arguments,
            "encode_image returns a tuple": ImageTupleCLIP(),
            "widths differ": WidthMismatchCLIP(),
        },
        "diagnoses": {
            "85% right": (OracleCLIP(wrong_every=7), "below the 90% bar"),
            "another vocabulary": (_untrained_clip(vocab_size=100), "vocabulary of 100 ids"),
            "the training function": (train_with_arguments, "pass your TRAINED model"),
            "colours only": (OracleCLIP(colour_only=True), "confuses the shapes"),
        },
    },
    "ch02.siglip_loss": {
        "correct": [siglip_reference, siglip_bce, siglip_text_side],
        "wrong": {
            "normalised by B^2": siglip_mean,
            "not divided by B": siglip_no_division,
            "labels 0/1": siglip_labels_01,
            "scale without exp": siglip_scale_not_exp,
            "divided by t": siglip_divide_by_t,
            "no bias": siglip_no_bias,
            "bias subtracted": siglip_bias_subtracted,
            "bias scaled": siglip_bias_scaled,
            "not normalised": siglip_not_normalised,
            "diagonal only": siglip_diagonal_only,
            "softmax loss": siglip_softmax,
            "scale detached": siglip_scale_detached,
            "python float": siglip_float,
        },
        "diagnoses": {
            "normalised by B^2": (siglip_mean, "normalised by B^2"),
            "labels 0/1": (siglip_labels_01, "labels 0/1"),
            "scale without exp": (siglip_scale_not_exp, "logit_scale used as the scale itself"),
            "bias scaled": (siglip_bias_scaled, "t * (cos + b)"),
            "scale detached": (siglip_scale_detached, "logit_scale"),
        },
    },
    "ch02.q1": {"answer": "a", "wrong": ["b", "c", "d"]},
    "ch02.q2": {"answer": "d", "wrong": ["a", "b", "c"]},
    "ch02.q3": {"answer": "c", "wrong": ["a", "b", "d"]},
}
