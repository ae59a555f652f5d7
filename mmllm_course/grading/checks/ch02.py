"""Checks for chapter 2, attention, the ViT and CLIP.

Every coding check runs the learner's function next to the library's reference on several random
inputs (batch 1 and >1, several sizes, float32 and float64: the output dtype must follow the input)
and explains the first difference it finds, naming the usual mistake when it recognises it.
Questions store only answer hashes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mmllm_course.encoders.clip import clip_loss as _ref_clip_loss
from mmllm_course.encoders.clip import zero_shot_predict as _ref_zero_shot_predict
from mmllm_course.grading.compare import expect_close_scalar, expect_tensor_or_diagnose
from mmllm_course.grading.core import CheckFailed, answer_hash, call, exercise, question
from mmllm_course.nn.attention import causal_mask
from mmllm_course.nn.attention import merge_heads as _ref_merge_heads
from mmllm_course.nn.attention import scaled_dot_product_attention as _ref_sdpa
from mmllm_course.nn.attention import split_heads as _ref_split_heads


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)

# --------------------------------------------------------------------------------------------------
# ch02.attention
# --------------------------------------------------------------------------------------------------
# (B, H, N, M, d, dtype, mask kind)
_ATTENTION_CASES = [
    (1, 1, 4, 4, 8, torch.float32, None),
    (2, 3, 5, 7, 16, torch.float64, None),
    (2, 2, 6, 6, 4, torch.float32, "causal"),
    (3, 2, 4, 6, 8, torch.float64, "padding"),
    (2, 4, 5, 5, 32, torch.float32, "random"),
]


def _attention_inputs(case, seed: int):
    b, h, n, m, d, dtype, kind = case
    g = _gen(seed)
    # Entries of std 2 so the scores are large enough for a missing scale to show clearly.
    q = (2 * torch.randn(b, h, n, d, generator=g)).to(dtype)
    k = (2 * torch.randn(b, h, m, d, generator=g)).to(dtype)
    v = torch.randn(b, h, m, d, generator=g).to(dtype)
    mask = None
    if kind == "causal":
        mask = causal_mask(n, m)  # (N, M)
    elif kind == "padding":
        lengths = torch.randint(2, m + 1, (b,), generator=g)
        lengths[0] = m - 2  # at least one row really padded
        mask = (torch.arange(m)[None] < lengths[:, None])[:, None, None, :]  # (B, 1, 1, M)
    elif kind == "random":
        mask = torch.rand(b, h, n, m, generator=g) < 0.6
        mask[..., 0] = True  # every query keeps at least one key
    return q, k, v, mask


def _attention_mistakes(q, k, v, mask) -> dict[str, torch.Tensor]:
    d = q.shape[-1]

    def attend(scale: float, dim: int = -1, use_mask=mask) -> torch.Tensor:
        s = q @ k.transpose(-2, -1) * scale
        if use_mask is not None:
            s = s.masked_fill(~use_mask, float("-inf"))
        return s.softmax(dim=dim).nan_to_num(0.0) @ v

    out = {
        "attention WITHOUT the 1/sqrt(d) scale (scores = q @ k^T)": attend(1.0),
        "attention scaled by 1/d instead of 1/sqrt(d)": attend(1.0 / d),
        "a softmax over the wrong axis (dim=-2, the queries): each row of weights must sum to 1 over the KEYS": attend(
            1 / math.sqrt(d), dim=-2
        ),
    }
    if mask is not None:
        out["attention with the mask ignored"] = attend(1 / math.sqrt(d), use_mask=None)
        out["attention with the mask inverted: True means KEEP this key, False means mask it out"] = attend(
            1 / math.sqrt(d), use_mask=~mask
        )
        plain = (q @ k.transpose(-2, -1) / math.sqrt(d)).softmax(dim=-1)
        out["the mask applied AFTER the softmax (masked weights zeroed, the rest no longer sums to 1): "
            "mask the scores before the softmax"] = (plain * mask) @ v
        out["masked scores set to 0 instead of -inf: a score of 0 still gets weight exp(0) after the softmax"] = (
            (q @ k.transpose(-2, -1) / math.sqrt(d)).masked_fill(~mask, 0.0).softmax(dim=-1) @ v
        )
    return out


@exercise(
    "ch02.attention",
    "Scaled dot-product attention with a mask",
    hint="score every query against every key, scale by 1/sqrt(d), give masked-out keys a score that the "
    "softmax turns into exactly 0 (before the softmax, not after), normalise over the keys, then mix the values.",
)
def _check_attention(fn) -> str:
    for i, case in enumerate(_ATTENTION_CASES):
        q, k, v, mask = _attention_inputs(case, seed=100 + i)
        mask_txt = "mask=None" if mask is None else f"{case[6]} mask {tuple(mask.shape)}"
        what = f"scaled_dot_product_attention(q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, {mask_txt}, {q.dtype})"
        expected, _ = _ref_sdpa(q, k, v, attn_mask=mask, return_weights=True)  # before learner code can touch anything
        got = call(fn, q.clone(), k.clone(), v.clone(), None if mask is None else mask.clone())
        if isinstance(got, tuple):
            raise CheckFailed(f"{what} returned a tuple; return only the output tensor (B, H, N, d)")
        expect_tensor_or_diagnose(got, expected, what, _attention_mistakes(q, k, v, mask))
    return "your attention matches the library's (and torch's) on every shape, dtype and mask."


# --------------------------------------------------------------------------------------------------
# ch02.split_heads and ch02.merge_heads
# --------------------------------------------------------------------------------------------------
# (B, N, D, H, dtype)
_HEADS_CASES = [
    (1, 3, 8, 2, torch.float32),
    (2, 5, 12, 3, torch.float64),
    (3, 4, 16, 4, torch.float32),
    (2, 1, 6, 6, torch.float64),
]


def _split_mistakes(x: torch.Tensor, h: int) -> dict[str, torch.Tensor]:
    b, n, d = x.shape
    return {
        "x.reshape(B, H, N, D/H) without a transpose: that cuts the token sequence into H chunks instead of "
        "cutting each token's channels into H heads; use view(B, N, H, D/H) then transpose(1, 2)": x.reshape(b, h, n, d // h),
        "a split where the head index varies fastest (channels h, h+H, h+2H, ... go to head h); head h must get the "
        "contiguous channels h*Dh .. (h+1)*Dh - 1": x.view(b, n, d // h, h).permute(0, 3, 1, 2),
    }


@exercise(
    "ch02.split_heads",
    "Split the width into heads",
    hint="head h owns channels h*D/H .. (h+1)*D/H - 1 of every token; split the last axis into (H, D/H) first, "
    "then move the head axis in front of the tokens (a reshape alone mixes tokens and heads).",
)
def _check_split_heads(fn) -> str:
    for i, (b, n, d, h, dtype) in enumerate(_HEADS_CASES):
        x = torch.randn(b, n, d, generator=_gen(200 + i)).to(dtype)
        what = f"split_heads(x {tuple(x.shape)}, num_heads={h}, {dtype})"
        got = call(fn, x.clone(), h)
        expect_tensor_or_diagnose(got, _ref_split_heads(x, h), what, _split_mistakes(x, h))
    return "your heads hold the same channels, in the same layout (B, H, N, D/H), as the library's."


def _merge_mistakes(x: torch.Tensor) -> dict[str, torch.Tensor]:
    b, h, n, dh = x.shape
    return {
        "x.reshape(B, N, H*Dh) without moving the head axis back first: transpose(1, 2) before the reshape": x.reshape(
            b, n, h * dh
        ),
        "a merge where the head index varies fastest inside each token; heads must be concatenated one after "
        "the other (head 0's channels, then head 1's, ...)": x.permute(0, 2, 3, 1).reshape(b, n, h * dh),
    }


@exercise(
    "ch02.merge_heads",
    "Merge the heads back",
    hint="undo split_heads step by step, in reverse order: tokens back in front of heads, then join (H, Dh).",
)
def _check_merge_heads(fn) -> str:
    for i, (b, n, d, h, dtype) in enumerate(_HEADS_CASES):
        x = torch.randn(b, h, n, d // h, generator=_gen(300 + i)).to(dtype)
        what = f"merge_heads(x {tuple(x.shape)}, {dtype})"
        got = call(fn, x.clone())
        expect_tensor_or_diagnose(got, _ref_merge_heads(x), what, _merge_mistakes(x))
    return "merge_heads(split_heads(x)) gives x back: your merge is the exact inverse of the split."


# --------------------------------------------------------------------------------------------------
# ch02.clip_loss
# --------------------------------------------------------------------------------------------------
_CLIP_LOSS_CASES = [(2, torch.float32), (4, torch.float64), (8, torch.float32), (16, torch.float64)]


def _clip_loss_mistakes(logits: torch.Tensor) -> dict[str, float]:
    b = logits.shape[0]
    t = torch.arange(b)
    i2t, t2i = F.cross_entropy(logits, t).item(), F.cross_entropy(logits.T, t).item()
    return {
        "the image->text cross-entropy alone; CLIP's loss is symmetric: average it with the text->image one "
        "(cross-entropy of logits.T)": i2t,
        "the text->image cross-entropy alone; average it with the image->text one": t2i,
        "the SUM of the two directions; CLIP takes their mean": i2t + t2i,
        "a cross-entropy with every target 0; the right text of image i is text i, so targets = arange(B)": (
            F.cross_entropy(logits, torch.zeros(b, dtype=torch.long)).item() + F.cross_entropy(logits.T, torch.zeros(b, dtype=torch.long)).item()
        )
        / 2,
        "a binary cross-entropy against the identity matrix; CLIP uses a softmax cross-entropy over each row "
        "and each column": F.binary_cross_entropy_with_logits(logits, torch.eye(b, dtype=logits.dtype)).item(),
    }


@exercise(
    "ch02.clip_loss",
    "Symmetric InfoNCE, CLIP's loss",
    hint="pair i is (image i, text i), so the right class of row i is i; CLIP scores both directions, "
    "image->text (rows) and text->image (columns), and averages the two.",
)
def _check_clip_loss(fn) -> str:
    for i, (b, dtype) in enumerate(_CLIP_LOSS_CASES):
        g = _gen(400 + i)
        logits = (5 * torch.randn(b, b, generator=g)).to(dtype)
        logits = logits + 3 * torch.eye(b, dtype=dtype) * torch.rand(b, generator=g).to(dtype)  # not symmetric
        what = f"clip_loss(logits_per_image {tuple(logits.shape)}, {dtype})"
        leaf = logits.clone().requires_grad_(True)
        got = call(fn, leaf)
        expected = _ref_clip_loss(logits)
        if isinstance(got, torch.Tensor):
            if got.numel() != 1:
                raise CheckFailed(f"{what} returned shape {tuple(got.shape)}; expected a single number (a 0-d tensor): average over the batch")
            if got.dtype != dtype:
                raise CheckFailed(f"{what} returned dtype {got.dtype}; expected {dtype} (the dtype of the logits)")
            if not got.requires_grad:
                raise CheckFailed(f"{what} returned a tensor cut off from the logits (no grad): keep it a tensor so loss.backward() trains the model")
        elif got is not None:
            raise CheckFailed(f"{what} returned a {type(got).__name__}; expected a 0-d torch.Tensor (so that .backward() works)")
        try:
            expect_close_scalar(got, expected.item(), what)
        except CheckFailed as exc:
            if got is None:
                raise
            for explanation, wrong in _clip_loss_mistakes(logits).items():
                if abs(got.item() - wrong) <= 1e-5 + 1e-4 * abs(wrong):
                    raise CheckFailed(f"{exc}. That is {explanation}.") from None
            raise
    return "your loss equals the library's symmetric InfoNCE, and gradients flow through it."


# --------------------------------------------------------------------------------------------------
# ch02.zero_shot
# --------------------------------------------------------------------------------------------------
# (B images, K classes, E width, dtype); B != K so an argmax over the wrong axis has the wrong shape.
_ZERO_SHOT_CASES = [(7, 3, 8, torch.float32), (1, 5, 4, torch.float64), (16, 10, 32, torch.float32), (9, 4, 16, torch.float64)]


def _zero_shot_inputs(b: int, k: int, e: int, dtype: torch.dtype, seed: int):
    """Embeddings NOT normalised, class norms from 0.2 to 5: raw dot products pick the long vectors."""
    g = _gen(seed)
    images = torch.randn(b, e, generator=g) * torch.empty(b, 1).uniform_(0.5, 3.0, generator=g)
    classes = torch.randn(k, e, generator=g) * torch.linspace(0.2, 5.0, k)[torch.randperm(k, generator=g)][:, None]
    return images.to(dtype), classes.to(dtype)


@exercise(
    "ch02.zero_shot",
    "Zero-shot prediction by cosine similarity",
    hint="zero-shot compares directions (cosine similarity), not lengths: which vectors must have unit length "
    "before the product, and over which axis is the best class chosen?",
)
def _check_zero_shot(fn) -> str:
    raw_differs = False
    for i, (b, k, e, dtype) in enumerate(_ZERO_SHOT_CASES):
        images, classes = _zero_shot_inputs(b, k, e, dtype, seed=500 + i)
        what = f"zero_shot_predict(image_embeds {tuple(images.shape)}, class_embeds {tuple(classes.shape)}, {dtype})"
        got = call(fn, images.clone(), classes.clone())
        expected = _ref_zero_shot_predict(images, classes)
        raw = (images @ classes.T).argmax(dim=-1)
        raw_differs |= not torch.equal(raw, expected)
        if got is None:
            raise CheckFailed(f"{what} returned None: did you forget `return`?")
        if not isinstance(got, torch.Tensor):
            raise CheckFailed(f"{what} returned a {type(got).__name__}; expected a torch.Tensor of shape ({b},)")
        if got.shape != expected.shape:
            extra = " (that is one index per CLASS: take the argmax over the classes, dim=-1)" if tuple(got.shape) == (k,) else ""
            raise CheckFailed(f"{what} returned shape {tuple(got.shape)}; expected ({b},), one class index per image{extra}")
        if got.is_floating_point():
            raise CheckFailed(f"{what} returned dtype {got.dtype}; expected integer class indices (argmax gives torch.long)")
        if not torch.equal(got.long(), expected):
            if torch.equal(got.long(), raw):
                raise CheckFailed(
                    f"{what} returned {got.tolist()}; expected {expected.tolist()}. Your predictions are the argmax of raw "
                    "dot products: the embeddings here are not unit length, so a long class vector wins whatever its "
                    "direction. Normalise both sides first (cosine similarity)."
                )
            raise CheckFailed(f"{what} returned {got.tolist()}; expected {expected.tolist()}")
    if not raw_differs:  # a guard on the check itself: its inputs must tell the two apart
        raise RuntimeError("the zero-shot inputs do not separate cosine from raw dot products")
    return "your predictions match the library's cosine-similarity argmax, whatever the vectors' lengths."


# --------------------------------------------------------------------------------------------------
# Questions (only hashes of the answers live here)
# --------------------------------------------------------------------------------------------------
question(
    "ch02.q1",
    "Softmax attention without 1/sqrt(d) as the head width d grows",
    {
        "a": "The scores spread out like sqrt(d), the softmax saturates towards one-hot weights, and its gradients vanish.",
        "b": "The scores shrink like 1/sqrt(d), the softmax flattens towards uniform weights, and every token averages all the others.",
        "c": "Nothing changes: a softmax only depends on the order of its inputs, and scaling all scores keeps that order.",
        "d": "The output grows like d, the residual stream overflows, and the next LayerNorm returns NaN for every token.",
    },
    [answer_hash("a")],
    explanation="q.k is a sum of d products: with unit-variance entries its variance is d. Dividing by sqrt(d) "
    "keeps the scores at variance 1, so the softmax stays soft and trainable at any head width.",
    hint="Compute the variance of a dot product of two random d-dimensional vectors with unit-variance entries.",
)

question(
    "ch02.q2",
    "What a lower temperature does to CLIP's logits",
    {
        "a": "It divides the cosine similarities by a larger number, so the softmax over the batch gets flatter and softer.",
        "b": "It changes which caption has the highest similarity to an image, so the zero-shot predictions change too.",
        "c": "It has no effect on training at all, because both embeddings are normalised to unit length before the product.",
        "d": "It multiplies the cosine similarities by a larger 1/T, so the softmax gets sharper and near-misses cost more.",
    },
    [answer_hash("d")],
    explanation="logits = cos / T. The ranking (argmax) never changes with T; the sharpness of the softmax does. "
    "CLIP learns T (as log 1/T), starting at 0.07, and caps 1/T at 100.",
    hint="Write the logits as cosine / T and ask what dividing by a smaller number does before a softmax.",
)

question(
    "ch02.q3",
    "Why CLIP classifies images it was never trained to classify",
    {
        "a": "Its image tower was pre-trained with a classification head over those classes, which zero-shot reuses as is.",
        "b": "It memorises every training image with its caption and, at test time, looks up the nearest training image.",
        "c": "The text tower maps any class prompt into the images' space, so the prompts act as a classifier built from text.",
        "d": "It cannot: zero-shot accuracy stays at chance level unless the model is fine-tuned on the new classes first.",
    },
    [answer_hash("c")],
    explanation="Each class prompt's embedding is a row of a classifier matrix (K, E); cosine with the image "
    "embedding is the logit. New classes need only new prompts, as long as the words were seen in training.",
    hint="Look at what zero_shot_classifier returns and what zero_shot_predict does with it.",
)
