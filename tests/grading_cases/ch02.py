"""Grader cases for chapter 2: correct versions written several ways, and the mistakes learners make."""

import math

import torch
import torch.nn.functional as F
from einops import rearrange

from mmllm_course.encoders.clip import clip_loss as ref_clip_loss
from mmllm_course.encoders.clip import zero_shot_predict as ref_zero_shot_predict
from mmllm_course.nn.attention import merge_heads as ref_merge_heads
from mmllm_course.nn.attention import scaled_dot_product_attention as ref_sdpa
from mmllm_course.nn.attention import split_heads as ref_split_heads

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


CASES = {
    "ch02.attention": {
        "correct": [attention_reference, attention_torch, attention_einsum],
        "wrong": {
            "no 1/sqrt(d) scale": attention_no_scale,
            "scaled by 1/d": attention_scale_by_d,
            "softmax over the queries": attention_softmax_queries,
            "mask ignored": attention_mask_ignored,
            "mask inverted": attention_mask_inverted,
            "mask applied after softmax": attention_mask_after_softmax,
            "masked scores set to 0": attention_masked_fill_zero,
            "always float32": attention_float32,
            "returns (output, weights)": attention_returns_weights_too,
        },
    },
    "ch02.split_heads": {
        "correct": [split_reference, split_einops, split_chunks],
        "wrong": {
            "reshape without transpose": split_reshape_only,
            "head index fastest": split_heads_fastest,
            "head axis not moved": split_no_transpose,
        },
    },
    "ch02.merge_heads": {
        "correct": [merge_reference, merge_einops, merge_cat],
        "wrong": {
            "reshape without transpose": merge_reshape_only,
            "heads interleaved": merge_heads_fastest,
        },
    },
    "ch02.clip_loss": {
        "correct": [clip_loss_reference, clip_loss_log_softmax],
        "wrong": {
            "one-sided (image->text)": clip_loss_one_sided,
            "one-sided (text->image)": clip_loss_text_side,
            "sum of both directions": clip_loss_sum,
            "targets all zero": clip_loss_zero_targets,
            "targets reversed": clip_loss_reversed_targets,
            "binary cross-entropy": clip_loss_bce,
            "python float": clip_loss_float,
            "no reduction": clip_loss_per_pair,
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
        },
    },
    "ch02.q1": {"answer": "a", "wrong": ["b", "c", "d"]},
    "ch02.q2": {"answer": "d", "wrong": ["a", "b", "c"]},
    "ch02.q3": {"answer": "c", "wrong": ["a", "b", "d"]},
}
