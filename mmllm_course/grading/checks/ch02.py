"""Checks for chapter 2, attention, the ViT and CLIP.

Three tiers, as in every chapter:

- **core** functions (attention, head split and merge, CLIP's loss, zero-shot prediction): the
  learner's function runs next to the library's reference on several random inputs (batch 1 and
  >1, several sizes, float32 and float64: the output dtype must follow the input), and the first
  difference is explained, naming the usual mistake when the output equals what that mistake gives;
- **build**: the learner's ``MultiHeadAttention`` and ``TransformerBlock`` classes are built with the
  documented arguments, get the library's weights loaded into them (so parameter names must
  match) and must give the library's outputs and gradients; ``vit_forward`` runs over a library
  ``ViT`` of four layouts;
- **train**: the learner's own trained mini-CLIP is evaluated (never trained here) on held-out
  images the check draws with its own seed;
- a **stretch**: SigLIP's sigmoid loss, checked against the reference written below.

Every case is sized so that each named mistake gives a different result from the right answer and
from every other named mistake (guards raise ``RuntimeError`` when a case stops telling two apart).
Questions store only answer hashes.
"""

from __future__ import annotations

import copy
import inspect
import math
from functools import lru_cache, partial
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from mmllm_course.encoders.clip import clip_loss as _ref_clip_loss
from mmllm_course.encoders.clip import zero_shot_predict as _ref_zero_shot_predict
from mmllm_course.encoders.vit import ViT, ViTConfig
from mmllm_course.grading.compare import expect_close_scalar, expect_tensor, same_values
from mmllm_course.grading.core import CheckFailed, LearnerError, answer_hash, call, exercise, question
from mmllm_course.grading.modules import build_learner_module, expect_same_forward, load_reference_weights
from mmllm_course.nn.attention import MultiHeadAttention as _RefMultiHeadAttention
from mmllm_course.nn.attention import causal_mask
from mmllm_course.nn.attention import merge_heads as _ref_merge_heads
from mmllm_course.nn.attention import scaled_dot_product_attention as _ref_sdpa
from mmllm_course.nn.attention import split_heads as _ref_split_heads
from mmllm_course.nn.transformer import TransformerBlock as _RefTransformerBlock


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _type_name(x: Any) -> str:
    name = type(x).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _nan_tolerant_same(got: torch.Tensor, wrong: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """``got`` equals ``wrong``, reading NaN as 0 on both sides (a fully masked row: NaN from a softmax of -inf)."""
    if not isinstance(got, torch.Tensor) or not isinstance(wrong, torch.Tensor) or got.shape != wrong.shape:
        return False
    try:
        g = got.detach().cpu().double().nan_to_num(nan=0.0)
    except (RuntimeError, NotImplementedError):
        return False
    return same_values(g, wrong.detach().cpu().double().nan_to_num(nan=0.0), atol, rtol)


def _expect_or_diagnose(got: Any, expected: torch.Tensor, what: str, mistakes: dict[str, torch.Tensor]) -> None:
    """:func:`expect_tensor`, then name the known mistake the output equals, NaN rows included.

    A mistake that masks every key of a query gives NaN there (softmax of all -inf); the learner's
    output is then compared with NaN read as 0, so that mistake is named instead of a bare
    "returned NaN or inf values".
    """
    try:
        expect_tensor(got, expected, what)
    except CheckFailed as exc:
        if isinstance(got, torch.Tensor) and got.shape == expected.shape and got.dtype == expected.dtype:
            has_nan = bool(torch.isnan(got.detach()).any())
            for explanation, wrong in mistakes.items():
                if same_values(wrong, expected):
                    continue  # this case cannot show that mistake
                if _nan_tolerant_same(got, wrong):
                    note = " (NaN where a query had every key masked, so its softmax divided 0 by 0)" if has_nan else ""
                    raise CheckFailed(f"{exc}{note}. Your output equals {explanation}.") from None
        raise


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


_INVERTED_MASK = (
    "attention with the mask used the wrong way round: masked_fill(mask, -inf) removes the keys to KEEP. "
    "Here True = keep (the convention of F.scaled_dot_product_attention's boolean attn_mask and of a "
    "tokenizer's attention_mask); nn.MultiheadAttention's key_padding_mask is the opposite (True = ignore). "
    "Use masked_fill(~mask, float('-inf'))"
)


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
        plain = q @ k.transpose(-2, -1) / math.sqrt(d)  # (B, H, N, M)
        out["attention with the mask ignored"] = attend(1 / math.sqrt(d), use_mask=None)
        out[_INVERTED_MASK] = attend(1 / math.sqrt(d), use_mask=~mask)
        out["the mask applied AFTER the softmax (masked weights zeroed, the rest no longer sums to 1): "
            "mask the scores before the softmax"] = (plain.softmax(dim=-1) * mask) @ v
        out["masked scores set to 0 instead of -inf: a score of 0 still gets weight exp(0) after the softmax"] = (
            plain.masked_fill(~mask, 0.0).softmax(dim=-1) @ v
        )
        out["the boolean mask ADDED to the scores (True counts as +1, False as 0, so nothing is masked): "
            "a boolean mask selects with masked_fill; only a float mask of 0 and -inf is added"] = (
            (plain + mask.to(q.dtype)).softmax(dim=-1) @ v
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
        mistakes = _attention_mistakes(q, k, v, mask)
        got = call(fn, q.clone(), k.clone(), v.clone(), None if mask is None else mask.clone())
        if isinstance(got, tuple):
            raise CheckFailed(f"{what} returned a tuple; return only the output tensor (B, H, N, d)")
        _expect_or_diagnose(got, expected, what, mistakes)
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
        if n != h and tuple(getattr(got, "shape", ())) == (b, n, h, d // h):
            raise CheckFailed(
                f"{what} returned shape {tuple(got.shape)}, that is (B, N, H, D/H); expected (B, H, N, D/H) = "
                f"{(b, h, n, d // h)}: move the head axis in front of the tokens with transpose(1, 2)"
            )
        _expect_or_diagnose(got, _ref_split_heads(x, h), what, _split_mistakes(x, h))
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
        _expect_or_diagnose(got, _ref_merge_heads(x), what, _merge_mistakes(x))
    return "merge_heads(split_heads(x)) gives x back: your merge is the exact inverse of the split."


# --------------------------------------------------------------------------------------------------
# ch02.clip_loss
# --------------------------------------------------------------------------------------------------
# B >= 3 everywhere: at B = 2 "summed over the batch" and "sum of the two directions" give the same number.
_CLIP_LOSS_CASES = [(3, torch.float32), (5, torch.float64), (8, torch.float32), (16, torch.float64)]


def _clip_loss_mistakes(logits: torch.Tensor) -> dict[str, float]:
    b = logits.shape[0]
    t = torch.arange(b)
    zeros = torch.zeros(b, dtype=torch.long)
    i2t, t2i = F.cross_entropy(logits, t).item(), F.cross_entropy(logits.T, t).item()
    mean = (i2t + t2i) / 2
    return {
        "the image->text cross-entropy alone; CLIP's loss is symmetric: average it with the text->image one "
        "(cross-entropy of logits.T)": i2t,
        "the text->image cross-entropy alone; average it with the image->text one": t2i,
        "the SUM of the two directions; CLIP takes their mean (divide by 2)": i2t + t2i,
        "the cross-entropies SUMMED over the batch (reduction='sum') instead of averaged over the B pairs": b * mean,
        "the cross-entropies summed over the batch AND over the two directions: average both": 2 * b * mean,
        "a cross-entropy with every target 0; the right text of image i is text i, so targets = arange(B)": (
            F.cross_entropy(logits, zeros).item() + F.cross_entropy(logits.T, zeros).item()
        ) / 2,
        "the targets in reverse order; the right text of image i is text i, so targets = arange(B)": (
            F.cross_entropy(logits, t.flip(0)).item() + F.cross_entropy(logits.T, t.flip(0)).item()
        ) / 2,
        "a binary cross-entropy against the identity matrix; CLIP uses a softmax cross-entropy over each row "
        "and each column": F.binary_cross_entropy_with_logits(logits, torch.eye(b, dtype=logits.dtype)).item(),
    }


def _expect_distinct(values: dict[str, float], right: float, what: str) -> None:
    """Guard on the check itself: every named mistake must give a number of its own on this case."""
    items = [("the right answer", right), *values.items()]
    for i, (name_a, a) in enumerate(items):
        for name_b, b in items[i + 1 :]:
            if abs(a - b) <= 1e-3 * max(1.0, abs(a), abs(b)):
                raise RuntimeError(f"{what}: the case cannot tell {name_a!r} from {name_b!r}")


def _loss_leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(True)


def _expect_loss(got: Any, expected: torch.Tensor, mistakes: dict[str, float], dtype: torch.dtype, what: str) -> None:
    """The learner's loss: the reference's value (naming the mistake it equals otherwise), then :func:`_expect_scalar_loss`."""
    if got is not None and not isinstance(got, torch.Tensor):
        raise CheckFailed(f"{what} returned {_type_name(got)}; expected a 0-d torch.Tensor (so that .backward() works)")
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        try:
            expect_close_scalar(got.detach(), expected.item(), what)
        except CheckFailed as exc:
            for explanation, wrong in mistakes.items():
                if abs(got.item() - wrong) <= 1e-5 + 1e-4 * abs(wrong):
                    raise CheckFailed(f"{exc}. That is {explanation}.") from None
            raise
    _expect_scalar_loss(got, dtype, what)


def _expect_scalar_loss(got: Any, dtype: torch.dtype, what: str) -> None:
    """A 0-d tensor of ``dtype`` that still has its autograd history (so ``.backward()`` trains the model)."""
    if got is None:
        raise CheckFailed(f"{what} returned None: did you forget `return`?")
    if not isinstance(got, torch.Tensor):
        raise CheckFailed(f"{what} returned {_type_name(got)}; expected a 0-d torch.Tensor (so that .backward() works)")
    if got.numel() != 1:
        raise CheckFailed(f"{what} returned shape {tuple(got.shape)}; expected a single number (a 0-d tensor): average over the batch")
    if got.dim() != 0:
        raise CheckFailed(
            f"{what} returned shape {tuple(got.shape)}; expected a 0-d tensor, shape () (the spec's 'a single number'): "
            "reduce without keepdim, or .squeeze() the result"
        )
    if got.dtype != dtype:
        raise CheckFailed(f"{what} returned dtype {got.dtype}; expected {dtype} (the dtype of the inputs)")
    if not got.requires_grad or got.grad_fn is None:
        raise CheckFailed(
            f"{what} returned a tensor cut off from its inputs (no autograd history): loss.backward() would train "
            "nothing. Keep the computation in torch; torch.tensor(x.item(), requires_grad=True) makes a NEW tensor "
            "that remembers nothing of the inputs"
        )


def _expect_same_grads(got: torch.Tensor, expected: torch.Tensor, mine: list[torch.Tensor], ref: list[torch.Tensor],
                       names: list[str], what: str, grad_mistakes: dict[str, list[torch.Tensor]] | None = None) -> None:
    """Gradients of the learner's loss w.r.t. its inputs ``mine`` must equal the reference's w.r.t. ``ref``."""
    ref_grads = torch.autograd.grad(expected, ref, allow_unused=True)
    try:
        my_grads = call(torch.autograd.grad, got, mine, allow_unused=True)
    except Exception:  # noqa: BLE001 - a learner's custom autograd may fail: say so plainly
        raise CheckFailed(f"{what}: backpropagating through your loss failed") from None
    for j, (name, g_mine, g_ref) in enumerate(zip(names, my_grads, ref_grads)):
        g_ref = torch.zeros_like(ref[j]) if g_ref is None else g_ref
        if g_mine is None:
            raise CheckFailed(f"{what}: the value is right but no gradient reaches {name}: something is detached")
        tol = 1e-5 * max(1.0, float(g_ref.abs().max()))
        if not same_values(g_mine, g_ref, atol=tol):
            for explanation, wrong in (grad_mistakes or {}).items():
                if same_values(g_mine, wrong[j], atol=tol):
                    raise CheckFailed(f"{what}: the value is right but the gradient with respect to {name} is not: {explanation}")
            diff = (g_mine.detach().double() - g_ref.double()).abs().max().item()
            raise CheckFailed(
                f"{what}: the value is right but the gradient with respect to {name} differs from the library's "
                f"(max abs difference {diff:.3g}): part of your computation is detached (.detach(), .item(), .data, "
                "torch.no_grad()) or computed from a copy"
            )


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
        ref_leaf = _loss_leaf(logits)
        expected = _ref_clip_loss(ref_leaf)
        mistakes = _clip_loss_mistakes(logits)
        _expect_distinct(mistakes, expected.item(), what)
        leaf = _loss_leaf(logits)
        got = call(fn, leaf)
        _expect_loss(got, expected, mistakes, dtype, what)
        t = torch.arange(b)
        half = [torch.autograd.grad(F.cross_entropy(ref_leaf, t) / 2, ref_leaf)[0]]
        other = [torch.autograd.grad(F.cross_entropy(ref_leaf.T, t) / 2, ref_leaf)[0]]
        _expect_same_grads(got, expected, [leaf], [ref_leaf], ["the logits"], what, {
            "only the image->text half reaches the logits, so the text->image direction is detached (computed on "
            "logits.T.detach(), a copy, or .data): compute both directions from the same logits": half,
            "only the text->image half reaches the logits, so the image->text direction is detached: compute both "
            "directions from the same logits": other,
        })
    return "your loss equals the library's symmetric InfoNCE, and so does its gradient with respect to the logits."


# --------------------------------------------------------------------------------------------------
# ch02.zero_shot
# --------------------------------------------------------------------------------------------------
# (B images, K classes, E width, dtype); B != K so an argmax over the wrong axis has the wrong shape.
# K goes well past 10 (and the right class of many images lies beyond index 10).
_ZERO_SHOT_CASES = [
    (7, 3, 8, torch.float32),
    (1, 5, 4, torch.float64),
    (16, 10, 32, torch.float32),
    (9, 4, 16, torch.float64),
    (24, 37, 16, torch.float32),
    (13, 64, 8, torch.float64),
]


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
    raw_differs = beyond_ten = False
    for i, (b, k, e, dtype) in enumerate(_ZERO_SHOT_CASES):
        images, classes = _zero_shot_inputs(b, k, e, dtype, seed=500 + i)
        what = f"zero_shot_predict(image_embeds {tuple(images.shape)}, class_embeds {tuple(classes.shape)}, {dtype})"
        got = call(fn, images.clone(), classes.clone())
        expected = _ref_zero_shot_predict(images, classes)
        cos = F.normalize(images, dim=-1) @ F.normalize(classes, dim=-1).T  # (B, K)
        raw = (images @ classes.T).argmax(dim=-1)
        raw_differs |= not torch.equal(raw, expected)
        beyond_ten |= bool((expected >= 10).any())
        if got is None:
            raise CheckFailed(f"{what} returned None: did you forget `return`?")
        if not isinstance(got, torch.Tensor):
            raise CheckFailed(f"{what} returned {_type_name(got)}; expected a torch.Tensor of shape ({b},)")
        if got.shape != expected.shape:
            extra = " (that is one index per CLASS: take the argmax over the classes, dim=-1)" if tuple(got.shape) == (k,) else ""
            raise CheckFailed(f"{what} returned shape {tuple(got.shape)}; expected ({b},), one class index per image{extra}")
        if got.is_floating_point():
            raise CheckFailed(f"{what} returned dtype {got.dtype}; expected integer class indices (argmax gives torch.long)")
        got = got.detach().cpu().long()
        if not torch.equal(got, expected):
            if torch.equal(got, raw):
                raise CheckFailed(
                    f"{what} returned {got.tolist()}; expected {expected.tolist()}. Your predictions are the argmax of raw "
                    "dot products: the embeddings here are not unit length, so a long class vector wins whatever its "
                    "direction. Normalise both sides first (cosine similarity)."
                )
            if k > 10 and torch.equal(got, cos[:, :10].argmax(dim=-1)):
                raise CheckFailed(
                    f"{what} returned {got.tolist()}; expected {expected.tolist()}. Your predictions only ever pick one "
                    f"of the first 10 classes: there are {k} here; take the argmax over all of them."
                )
            if torch.equal(got, cos.argmin(dim=-1)):
                raise CheckFailed(
                    f"{what} returned {got.tolist()}; expected {expected.tolist()}: the LEAST similar class of each "
                    "image (argmin); the prediction is the most similar one (argmax of the cosine)."
                )
            raise CheckFailed(f"{what} returned {got.tolist()}; expected {expected.tolist()}")
    if not raw_differs or not beyond_ten:  # a guard on the check itself: its inputs must tell these apart
        raise RuntimeError("the zero-shot inputs no longer separate cosine from raw dot products, or never pick a class >= 10")
    return "your predictions match the library's cosine-similarity argmax, whatever the vectors' lengths and however many classes."


# --------------------------------------------------------------------------------------------------
# Build tier: helpers shared by the module checks
# --------------------------------------------------------------------------------------------------


def _randomize(module: nn.Module, seed: int, std: float = 0.3) -> nn.Module:
    """Every parameter drawn afresh (LayerNorm weights around 1), so that no mistake hides behind an init of 0 or 1."""
    g = _gen(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g) * std
            if isinstance(_owner(module, name), nn.LayerNorm) and name.endswith("weight"):
                noise = noise + 1.0
            p.copy_(noise)
    return module


def _owner(module: nn.Module, name: str) -> nn.Module:
    for part in name.split(".")[:-1]:
        module = getattr(module, part)
    return module


def _variants(variant: Callable, table: dict[str, dict[str, Any]]) -> dict[str, Callable]:
    """Named mistakes from a table {explanation: keyword arguments of ``variant``}: each one a ``variant`` with them bound."""
    return {explanation: partial(variant, **kwargs) for explanation, kwargs in table.items()}


def _run_learner(module: nn.Module, x: torch.Tensor, causal: bool) -> Any:
    """The learner's module returns the output alone."""
    return module(x, causal=causal)


def _run_library(module: nn.Module, x: torch.Tensor, causal: bool) -> torch.Tensor:
    """The library's modules return (output, attention weights): the output."""
    return module(x, causal=causal)[0]


def _first_difference(mine: nn.Module, ref: nn.Module, inputs: list[tuple], mistakes: dict[str, Callable]) -> str | None:
    """The explanation of the named mistake the learner's output equals, on the first input where it is wrong."""
    with torch.no_grad():
        for args in inputs:
            expected = _run_library(ref, *args)
            got = call(_run_learner, mine, *args)
            if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
                return None
            if same_values(got, expected):
                continue
            for explanation, wrong_fn in mistakes.items():
                wrong = wrong_fn(ref, *args)
                if not same_values(wrong, expected) and _nan_tolerant_same(got, wrong):
                    return explanation
            return None
    return None


def _check_module(cls: Any, name: str, ctor: tuple, ref: nn.Module, inputs: list[tuple],
                  mistakes: dict[str, Callable]) -> None:
    """Build ``cls(*ctor)``, load ``ref``'s weights into it, compare outputs and gradients, name a known mistake."""
    what = f"{name}({', '.join(map(str, ctor))})"
    mine = build_learner_module(cls, what, *ctor)
    load_reference_weights(mine, ref, what)
    # A first call with clear messages for the usual shape slips.
    x, causal = inputs[0]
    with torch.no_grad():
        got = call(_run_learner, mine, x.clone(), causal)
    if isinstance(got, tuple):
        raise CheckFailed(
            f"{what}(x {tuple(x.shape)}, causal={causal}) returned a tuple of {len(got)}; return only the output "
            f"tensor {tuple(x.shape)} (the library's modules also return attention weights; yours does not need to)"
        )

    def forward(module, *args):
        return _run_library(module, *args) if module is ref else _run_learner(module, *args)

    try:
        expect_same_forward(mine, ref, inputs, what, forward=forward)
    except CheckFailed as exc:
        if "gradient" not in str(exc):
            explanation = _first_difference(mine, ref, inputs, mistakes)
            if explanation:
                raise CheckFailed(f"{exc}. Your output equals {explanation}.") from None
        raise


# --------------------------------------------------------------------------------------------------
# ch02.multi_head_attention
# --------------------------------------------------------------------------------------------------
_MHA_CASES = [(16, 4, 600), (24, 3, 601)]  # (dim, num_heads, seed)


def _mha_inputs(dim: int, seed: int) -> list[tuple[torch.Tensor, bool]]:
    g = _gen(seed)
    return [
        (torch.randn(1, 5, dim, generator=g), False),
        (torch.randn(3, 7, dim, generator=g), True),
        (torch.randn(2, 6, dim, generator=g), False),
        (torch.randn(2, 6, dim, generator=g), True),
    ]


def _mha_variant(ref: _RefMultiHeadAttention, x: torch.Tensor, causal: bool, *, split: str = "heads", scale: str = "head",
                 out_proj: bool = True, keep: str = "tril", heads: int | None = None) -> torch.Tensor:
    """The library's attention with one thing done differently (for naming a learner's mistake)."""
    b, n, d = x.shape
    h = ref.num_heads if heads is None else heads
    dh = d // h

    def split_(t):
        if split == "fastest":
            return t.view(b, n, dh, h).permute(0, 3, 1, 2)
        if split == "reshape":
            return t.reshape(b, h, n, dh)
        return t.view(b, n, h, dh).transpose(1, 2)

    def merge_(t):
        if split == "fastest":
            return t.permute(0, 2, 3, 1).reshape(b, n, d)
        if split == "reshape":
            return t.reshape(b, n, d)
        return t.transpose(1, 2).reshape(b, n, d)

    q, k, v = split_(ref.q_proj(x)), split_(ref.k_proj(x)), split_(ref.v_proj(x))
    s = q @ k.transpose(-2, -1) * {"head": dh ** -0.5, "model": d ** -0.5, "none": 1.0}[scale]
    if causal and keep != "none":
        tri = torch.ones(n, n, dtype=torch.bool).tril()
        allowed = {"tril": tri, "triu": torch.ones(n, n, dtype=torch.bool).triu(), "inverted": ~tri}[keep]
        s = s.masked_fill(~allowed, float("-inf"))
    out = merge_(s.softmax(dim=-1) @ v)  # NaN where a mistake masks every key: compared with NaN read as 0
    return ref.out_proj(out) if out_proj else out


_MHA_MISTAKES: dict[str, Callable] = _variants(_mha_variant, {
    "attention WITHOUT the output projection: the merged heads must go through out_proj (W_O)":
        dict(out_proj=False),
    "heads split with the head index varying fastest (channels h, h+H, ... to head h); head h must own the "
    "contiguous channels h*Dh .. (h+1)*Dh - 1 (view(B, N, H, Dh).transpose(1, 2))":
        dict(split="fastest"),
    "heads made with reshape(B, H, N, Dh) without a transpose: that cuts the TOKENS into H groups instead of each "
    "token's channels; view(B, N, H, Dh) then transpose(1, 2)":
        dict(split="reshape"),
    "attention with the causal flag ignored: with causal=True, query i may only see keys 0..i":
        dict(keep="none"),
    "a causal mask the wrong way round: query i sees keys i..N-1 (the future); keep the LOWER triangle (tril)":
        dict(keep="triu"),
    "a causal mask used inverted (the lower triangle masked out instead of kept): True = keep, so masked_fill(~mask, -inf)":
        dict(keep="inverted"),
    "scores scaled by 1/sqrt(D), the model width; the scale is 1/sqrt(Dh), the width of ONE head":
        dict(scale="model"),
    "attention without the 1/sqrt(Dh) scale":
        dict(scale="none"),
    "ONE head of width D (num_heads ignored): split q, k and v into num_heads heads of D/num_heads channels":
        dict(heads=1, scale="model"),
})


@exercise(
    "ch02.multi_head_attention",
    "Build MultiHeadAttention with W_Q, W_K, W_V and W_O",
    hint="q_proj, k_proj, v_proj map (B, N, D) to (B, N, D); split each into (B, H, N, D/H) heads, attend with "
    "scale 1/sqrt(D/H) (and the causal mask when asked), merge the heads back to (B, N, D), then out_proj.",
)
def _check_multi_head_attention(cls) -> str:
    for dim, heads, seed in _MHA_CASES:
        ref = _randomize(_RefMultiHeadAttention(dim, heads), seed)
        _check_module(cls, "MultiHeadAttention", (dim, heads), ref, _mha_inputs(dim, seed), _MHA_MISTAKES)
    return ("with the library's weights loaded, your MultiHeadAttention gives the library's outputs and gradients, "
            "with and without the causal mask.")


# --------------------------------------------------------------------------------------------------
# ch02.transformer_block
# --------------------------------------------------------------------------------------------------
_BLOCK_CASES = [(16, 4, 32, 700), (24, 3, 40, 701)]  # (dim, num_heads, mlp_dim, seed)


def _block_inputs(dim: int, seed: int) -> list[tuple[torch.Tensor, bool]]:
    g = _gen(seed)
    # Tokens with a mean and a spread of their own, so that a missing or misplaced LayerNorm shows.
    return [(1.5 * torch.randn(b, n, dim, generator=g) + 0.5, causal) for b, n, causal in ((1, 4, False), (3, 6, True), (2, 5, False))]


def _block_variant(ref: _RefTransformerBlock, x: torch.Tensor, causal: bool, *, kind: str = "pre") -> torch.Tensor:
    attn = lambda h: ref.attn(h, causal=causal and kind != "no_causal")[0]  # noqa: E731
    mlp = ref.mlp
    if kind == "relu":
        mlp = lambda h: ref.mlp.fc2(F.relu(ref.mlp.fc1(h)))  # noqa: E731
    elif kind == "gelu_tanh":
        mlp = lambda h: ref.mlp.fc2(F.gelu(ref.mlp.fc1(h), approximate="tanh"))  # noqa: E731
    if kind == "post":
        x = ref.ln1(x + attn(x))
        return ref.ln2(x + mlp(x))
    if kind == "parallel":
        return x + attn(ref.ln1(x)) + mlp(ref.ln2(x))
    if kind == "normed_residual":
        h = ref.ln1(x)
        x = h + attn(h)
        h = ref.ln2(x)
        return h + mlp(h)
    if kind == "ln1_twice":
        x = x + attn(ref.ln1(x))
        return x + mlp(ref.ln1(x))
    a = attn(ref.ln1(x))
    x = a if kind in ("no_attn_residual", "no_residual") else x + a
    m = mlp(ref.ln2(x))
    return m if kind in ("no_mlp_residual", "no_residual") else x + m


_BLOCK_MISTAKES: dict[str, Callable] = _variants(_block_variant, {
    "a POST-norm block, x = ln(x + sublayer(x)); this block is pre-norm: x = x + attn(ln1(x)), then x = x + mlp(ln2(x))":
        dict(kind="post"),
    "a block without the attention's residual connection: x = x + attn(ln1(x)), not x = attn(ln1(x))":
        dict(kind="no_attn_residual"),
    "a block without the MLP's residual connection: x = x + mlp(ln2(x)), not x = mlp(ln2(x))":
        dict(kind="no_mlp_residual"),
    "a block without any residual connection: each sub-layer ADDS to x (x = x + ...)":
        dict(kind="no_residual"),
    "a block whose residual carries the NORMALISED tokens (x = ln1(x) and then x + attn(x)): the LayerNorm goes "
    "inside the branch only, the residual stream stays un-normalised":
        dict(kind="normed_residual"),
    "a block that uses ln1 before the MLP too; ln2 belongs to the MLP":
        dict(kind="ln1_twice"),
    "attention and MLP side by side on the same input (x + attn(ln1(x)) + mlp(ln2(x))); the MLP reads the output "
    "of the attention's residual step":
        dict(kind="parallel"),
    "an MLP with ReLU; the library's MLP uses GELU (nn.GELU(), the exact erf form)":
        dict(kind="relu"),
    "an MLP with GELU's tanh approximation; the library uses the exact GELU, nn.GELU() (approximate='none')":
        dict(kind="gelu_tanh"),
    "a block that does not pass causal on to its attention: with causal=True, token i may only see tokens 0..i":
        dict(kind="no_causal"),
})


@exercise(
    "ch02.transformer_block",
    "Build a pre-norm transformer block",
    hint="two residual steps, each with its LayerNorm inside the branch: x = x + attn(ln1(x), causal), then "
    "x = x + mlp(ln2(x)) with mlp = fc1 -> GELU -> fc2.",
)
def _check_transformer_block(cls) -> str:
    for dim, heads, mlp_dim, seed in _BLOCK_CASES:
        ref = _randomize(_RefTransformerBlock(dim, heads, hidden_dim=mlp_dim), seed, std=0.25)
        _check_module(cls, "TransformerBlock", (dim, heads, mlp_dim), ref, _block_inputs(dim, seed),
                      _BLOCK_MISTAKES)
    return ("with the library's weights loaded, your pre-norm block gives the library's outputs and gradients, "
            "causal or not.")


# --------------------------------------------------------------------------------------------------
# ch02.vit_forward
# --------------------------------------------------------------------------------------------------
# Four layouts: HF ViT (CLS, LayerNorm on every token), CLIP (pre-norm, LayerNorm on the pooled CLS),
# this chapter's mini-CLIP (mean pooling, pixel normalisation), and mean pooling with a final LayerNorm on tokens.
_VIT_CASES = [
    (ViTConfig(image_size=16, patch_size=4, dim=16, depth=2, num_heads=4, mlp_dim=32), (2, 1)),
    (ViTConfig(image_size=16, patch_size=4, dim=16, depth=2, num_heads=2, mlp_dim=32, pre_norm=True, final_norm="pooled",
               patch_bias=False), (3,)),
    (ViTConfig(image_size=16, patch_size=8, dim=24, depth=2, num_heads=3, mlp_dim=48, pre_norm=True, final_norm="pooled",
               pooling="mean", pixel_mean=(0.5, 0.4, 0.3), pixel_std=(0.25, 0.2, 0.3)), (2,)),
    (ViTConfig(image_size=24, patch_size=8, dim=16, depth=1, num_heads=4, mlp_dim=32, pooling="mean"), (2,)),
]


def _vit_variant(model: ViT, images: torch.Tensor, *, pooling: str | None = None, final_norm: str | None = None,
                 pre_norm: bool = True, pixels: bool = True, mean_with_cls: bool = False,
                 final: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The library's ViT forward with one thing done differently (for naming a learner's mistake)."""
    c = model.config
    pooling, final_norm = pooling or c.pooling, final_norm or c.final_norm
    if pixels and model.pixel_mean is not None:
        images = (images - model.pixel_mean) / model.pixel_std
    x = model.embeddings(images)
    if pre_norm:
        x = model.pre_norm(x)
    for block in model.blocks:
        x, _ = block(x)

    def pool(t):
        if pooling == "cls":
            return t[:, 0]
        return t.mean(dim=1) if mean_with_cls else t[:, 1:].mean(dim=1)

    if not final:
        return x, pool(x)
    if final_norm == "tokens":
        x = model.norm(x)
        return x, pool(x)
    return x, model.norm(pool(x))


def _vit_mistakes(model: ViT) -> dict[str, Callable]:
    c = model.config
    other_pool = "mean" if c.pooling == "cls" else "cls"
    other_norm = "pooled" if c.final_norm == "tokens" else "tokens"
    out = {
        f"{other_pool!r} pooling where this model's config says pooling={c.pooling!r}: "
        + ("[CLS] is x[:, 0]" if c.pooling == "cls" else "the mean of the PATCH tokens is x[:, 1:].mean(dim=1)"):
            partial(_vit_variant, pooling=other_pool),
        f"the final LayerNorm placed as for final_norm={other_norm!r}; this model says final_norm={c.final_norm!r}: "
        + ("normalise every token, then pool" if c.final_norm == "tokens" else "pool the raw tokens, then normalise only the pooled vector"):
            partial(_vit_variant, final_norm=other_norm),
        "a forward without the final LayerNorm (model.norm)": partial(_vit_variant, final=False),
    }
    if c.pooling == "mean":
        out["a mean over ALL tokens, [CLS] included; mean pooling averages the patch tokens only, x[:, 1:]"] = (
            partial(_vit_variant, mean_with_cls=True))
    if c.pre_norm:
        out["a forward that skips model.pre_norm (CLIP's LayerNorm on the embeddings before the first block)"] = (
            partial(_vit_variant, pre_norm=False))
    if c.pixel_mean is not None:
        out["a forward without the pixel normalisation: this model has pixel_mean and pixel_std, so the images "
            "become (images - model.pixel_mean) / model.pixel_std first"] = partial(_vit_variant, pixels=False)
    return out


_WHOLE_FORWARD = (
    "vit_forward must run the model's parts itself (model.embeddings, model.pre_norm, model.blocks, model.norm), "
    "not the whole model(images)"
)


class _WholeForwardRefused:
    """Stands in for ``model.forward`` in the learner's copy: the exercise is to run the parts."""

    def __init__(self) -> None:
        self.called = False

    def __call__(self, *args, **kwargs):
        self.called = True
        raise RuntimeError(_WHOLE_FORWARD)


def _vit_what(config: ViTConfig, images: torch.Tensor) -> str:
    layout = f"pooling={config.pooling!r}, final_norm={config.final_norm!r}, pre_norm={config.pre_norm}"
    if config.pixel_mean is not None:
        layout += ", pixel_mean/std set"
    return f"vit_forward(ViT({layout}), images {tuple(images.shape)})"


@exercise(
    "ch02.vit_forward",
    "The ViT forward pass over the library's modules",
    hint="pixels (normalised if the model has pixel_mean) -> embeddings ([CLS] + patches + positions) -> pre_norm -> "
    "every block -> the final LayerNorm, on every token (final_norm='tokens') or on the pooled vector only "
    "('pooled'); pooling 'cls' reads x[:, 0], 'mean' averages x[:, 1:].",
)
def _check_vit_forward(fn) -> str:
    for i, (config, batches) in enumerate(_VIT_CASES):
        model = _randomize(ViT(config), 800 + i, std=0.2).eval()
        mistakes = _vit_mistakes(model)
        g = _gen(850 + i)
        for b in batches:
            images = torch.rand(b, config.in_channels, config.image_size, config.image_size, generator=g)
            what = _vit_what(config, images)
            mine = copy.deepcopy(model)
            mine.forward = refused = _WholeForwardRefused()
            leaf = images.clone().requires_grad_(True)
            try:
                got = call(fn, mine, leaf)
            except LearnerError:
                if refused.called:
                    raise CheckFailed(f"{what}: {_WHOLE_FORWARD}") from None
                raise
            if not isinstance(got, (tuple, list)) or len(got) != 2:
                kind = f"a tuple of {len(got)}" if isinstance(got, (tuple, list)) else _type_name(got)
                raise CheckFailed(f"{what} returned {kind}; expected a pair (last_hidden_state (B, 1+N, D), pooled (B, D))")
            ref_leaf = images.clone().requires_grad_(True)
            ref_out = model(ref_leaf)
            expected = (ref_out.last_hidden_state, ref_out.pooled)
            for j, name in enumerate(("last_hidden_state", "pooled")):
                wrong = {}
                with torch.no_grad():
                    for explanation, wrong_fn in mistakes.items():
                        wrong[explanation] = wrong_fn(model, images)[j]
                _expect_or_diagnose(got[j], expected[j], f"{what}: {name}", wrong)
            _expect_vit_grads(got, expected, mine, model, leaf, ref_leaf, what)
    return ("your forward pass gives the library's last_hidden_state and pooled vector, and the same gradients, for "
            "the ViT, CLIP and mean-pooled layouts.")


def _expect_vit_grads(got, expected, mine: ViT, model: ViT, leaf, ref_leaf, what: str) -> None:
    g = _gen(900)
    r = [torch.randn(t.shape, generator=g) for t in expected]
    ref_loss = sum((t * w).sum() for t, w in zip(expected, r))
    names = [n for n, _ in model.named_parameters()]
    ref_grads = torch.autograd.grad(ref_loss, [ref_leaf, *model.parameters()], allow_unused=True)
    if not any(t.requires_grad for t in got):
        raise CheckFailed(f"{what}: your outputs are cut off from the graph (no gradient): look for torch.no_grad() or .detach()")
    my_loss = sum((t * w).sum() for t, w in zip(got, r))
    my_params = dict(mine.named_parameters())
    my_grads = torch.autograd.grad(my_loss, [leaf, *[my_params[n] for n in names]], allow_unused=True)
    for label, mine_g, ref_g in zip(["the images", *[f"parameter `{n}`" for n in names]], my_grads, ref_grads):
        if ref_g is None:
            continue
        if mine_g is None or not same_values(mine_g, ref_g, atol=1e-5 * max(1.0, float(ref_g.abs().max()))):
            raise CheckFailed(
                f"{what}: the outputs match but the gradient with respect to {label} does not "
                f"({'none reaches it' if mine_g is None else 'different values'}): a detached branch or a term used twice"
            )


# --------------------------------------------------------------------------------------------------
# ch02.train_clip: the learner's own trained mini-CLIP, evaluated on held-out images
# --------------------------------------------------------------------------------------------------
TRAIN_CLIP_THRESHOLD = 0.90  # zero-shot accuracy over the 20 colour x shape classes
TRAIN_CLIP_EVAL_SEED = 20_251  # the check's own held-out images: generate_shapes(TRAIN_CLIP_EVAL_SIZE, seed=...)
TRAIN_CLIP_EVAL_SIZE = 2_000


def train_clip_templates() -> list[str]:
    """The prompt ensemble the check uses: every size and position around a class name (8 prompts per class)."""
    from mmllm_course.data import POSITIONS, SIZES

    return [f"a {size} {{}} in the {pos}" for size in SIZES for pos in POSITIONS]


@lru_cache(maxsize=1)
def train_clip_eval_data() -> tuple[torch.Tensor, torch.Tensor]:
    """The check's held-out images (n, 3, 32, 32) and their colour x shape labels (n,)."""
    from mmllm_course.data import generate_shapes

    held = generate_shapes(TRAIN_CLIP_EVAL_SIZE, seed=TRAIN_CLIP_EVAL_SEED)
    return held.images, held.color_shape_labels()


@lru_cache(maxsize=1)
def _course_tokenizer():
    from mmllm_course.data import shapes_tokenizer

    return shapes_tokenizer()


def _embeddings(out: Any, rows: int, what: str) -> torch.Tensor:
    if out is None:
        raise CheckFailed(f"{what} returned None: did you forget `return`?")
    if isinstance(out, tuple) or not isinstance(out, torch.Tensor):
        raise CheckFailed(f"{what} returned {_type_name(out)}; expected one tensor of embeddings ({rows}, E)")
    if out.dim() != 2 or out.shape[0] != rows:
        raise CheckFailed(f"{what} returned shape {tuple(out.shape)}; expected ({rows}, E), one embedding per row")
    if not out.is_floating_point() or not torch.isfinite(out).all():
        raise CheckFailed(f"{what} returned non-finite or non-float values (dtype {out.dtype})")
    return F.normalize(out.detach().cpu().double(), dim=-1)


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _trained_model(answer: Any) -> nn.Module:
    """The learner's model, or what their zero-argument function returns."""
    if isinstance(answer, type):
        raise CheckFailed(f"got the class {answer.__name__}; pass your TRAINED model (the object), not its class")
    if not isinstance(answer, nn.Module):
        try:
            params = inspect.signature(answer).parameters.values()
        except (TypeError, ValueError):
            params = []
        required = [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if required:
            raise CheckFailed(
                f"got a function that needs arguments ({', '.join(required)}); pass your TRAINED model "
                "(what your training function returned), e.g. check('ch02.train_clip', my_clip)"
            )
        answer = call(answer)  # a function with no arguments that returns the model
    if answer is None:
        raise CheckFailed("got None instead of a trained model: did your training function forget `return model`?")
    if not isinstance(answer, nn.Module) or not callable(getattr(answer, "encode_image", None)) or not callable(
        getattr(answer, "encode_text", None)
    ):
        raise CheckFailed(
            f"expected your trained CLIP (an nn.Module with encode_image and encode_text), got {_type_name(answer)}"
        )
    return answer


@exercise(
    "ch02.train_clip",
    "Train your own mini-CLIP to 90% zero-shot accuracy",
    hint="train longer or with a higher learning rate (with warmup), check your clip_loss, batches without repeated "
    "captions, and the course tokenizer's ids; the notebook's recipe reaches the bar in about a minute.",
    timeout=60.0,
)
def _check_train_clip(answer) -> str:
    model = _trained_model(answer)
    tokenizer = _course_tokenizer()
    config = getattr(getattr(model, "config", None), "text", None)
    vocab = getattr(config, "vocab_size", None)
    if isinstance(vocab, int) and vocab != len(tokenizer):
        raise CheckFailed(
            f"your text tower has a vocabulary of {vocab} ids but the course tokenizer (shapes_tokenizer()) has "
            f"{len(tokenizer)}: build the model with vocab_size=len(tokenizer) and train it on that tokenizer's ids"
        )
    if isinstance(getattr(config, "eos_token_id", None), int) and config.eos_token_id != tokenizer.eos_token_id:
        raise CheckFailed(
            f"your text tower pools at eos_token_id={config.eos_token_id}, but the course tokenizer's end-of-text id is "
            f"{tokenizer.eos_token_id}: build the model with eos_token_id=tokenizer.eos_token_id"
        )
    from mmllm_course.data import SHAPES, color_shape_classes

    images, labels = train_clip_eval_data()
    classes, templates = color_shape_classes(), train_clip_templates()
    device = _model_device(model)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            # Text: every prompt with its end-of-text token, prompts of the same length together (no padding at all).
            rows = [tokenizer(t.format(c), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                    for c in classes for t in templates]
            prompt_embeds = torch.empty(len(rows), 0, dtype=torch.float64)
            for length in sorted({len(r) for r in rows}):
                idx = [i for i, r in enumerate(rows) if len(r) == length]
                ids = torch.tensor([rows[i] for i in idx], device=device)
                z = _embeddings(call(model.encode_text, ids), len(idx), f"your model's encode_text(input_ids {tuple(ids.shape)})")
                if prompt_embeds.shape[1] == 0:
                    prompt_embeds = torch.empty(len(rows), z.shape[1], dtype=torch.float64)
                elif z.shape[1] != prompt_embeds.shape[1]:
                    raise CheckFailed(f"your model's encode_text returned widths {prompt_embeds.shape[1]} and {z.shape[1]}")
                prompt_embeds[idx] = z
            class_embeds = F.normalize(prompt_embeds.view(len(classes), len(templates), -1).mean(dim=1), dim=-1)  # (K, E)
            image_embeds = torch.cat([
                _embeddings(call(model.encode_image, images[i : i + 500].clone().to(device)), len(images[i : i + 500]),
                            f"your model's encode_image(images {tuple(images[i : i + 500].shape)})")
                for i in range(0, len(images), 500)
            ])  # (n, E)
            if image_embeds.shape[1] != class_embeds.shape[1]:
                raise CheckFailed(
                    f"your model's image embeddings have width {image_embeds.shape[1]} but its text embeddings "
                    f"{class_embeds.shape[1]}: both towers must project into the same space"
                )
            predictions = (image_embeds @ class_embeds.T).argmax(dim=-1)  # (n,)
    finally:
        model.train(was_training)
    accuracy = (predictions == labels).double().mean().item()
    colour_ok = (predictions // len(SHAPES) == labels // len(SHAPES)).double().mean().item()
    shape_ok = (predictions % len(SHAPES) == labels % len(SHAPES)).double().mean().item()
    detail = (f"zero-shot accuracy {accuracy:.1%} over the {len(classes)} colour x shape classes on {len(labels)} new "
              f"images (colour right {colour_ok:.1%}, shape right {shape_ok:.1%}; chance is {1 / len(classes):.0%}, "
              f"prompts: {len(templates)} per class, '{templates[0]}', ...)")
    if accuracy < TRAIN_CLIP_THRESHOLD:
        weaker = "the shapes" if shape_ok < colour_ok else "the colours"
        raise CheckFailed(f"{detail}: below the {TRAIN_CLIP_THRESHOLD:.0%} bar. Your model confuses {weaker} most.")
    return f"{detail}: above the {TRAIN_CLIP_THRESHOLD:.0%} bar. You trained a CLIP."


# --------------------------------------------------------------------------------------------------
# ch02.siglip_loss (stretch): SigLIP's pairwise sigmoid loss, Zhai et al. 2023, arXiv:2303.15343
# --------------------------------------------------------------------------------------------------


def siglip_loss_reference(image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor,
                          logit_bias: torch.Tensor) -> torch.Tensor:
    """SigLIP's loss for B pairs: image_embeds (B, E), text_embeds (B, E), 0-d logit_scale (log t) and logit_bias b.

    logits = t * cos(image_i, text_j) + b (B, B), label +1 on the diagonal and -1 elsewhere, and
    loss = -(1/B) * sum over all B*B pairs of log sigmoid(label * logit): every pair is its own binary
    problem, with no softmax over the batch. The paper's pseudo-code (section 3.3) exactly.
    """
    img = F.normalize(image_embeds, dim=-1)
    txt = F.normalize(text_embeds, dim=-1)
    logits = img @ txt.T * logit_scale.exp() + logit_bias  # (B, B)
    b = logits.shape[0]
    labels = 2 * torch.eye(b, dtype=logits.dtype, device=logits.device) - 1  # +1 diagonal, -1 elsewhere
    return -F.logsigmoid(labels * logits).sum() / b


def _siglip_mistakes(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> dict[str, float]:
    b = img.shape[0]
    cos = F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    t = scale.exp()
    eye = torch.eye(b, dtype=img.dtype)
    labels = 2 * eye - 1

    def loss(logits, lab=labels, norm=b):
        return (-F.logsigmoid(lab * logits).sum() / norm).item()

    right = cos * t + bias
    clip = ((F.cross_entropy(right, torch.arange(b)) + F.cross_entropy(right.T, torch.arange(b))) / 2).item()
    return {
        "the mean over all B*B pairs (normalised by B^2, as a default reduction='mean' does); SigLIP sums over the "
        "pairs and divides by B": loss(right, norm=b * b),
        "the sum over the pairs without dividing by B": loss(right, norm=1),
        "labels 0/1 (the identity matrix) inside log sigmoid(label * logit): the labels are +1 for the matching pair "
        "and -1 for every other pair (2 * eye - 1)": loss(right, lab=eye),
        "logit_scale used as the scale itself; it is log t, so the logits are cos * logit_scale.exp() + logit_bias": loss(
            cos * scale + bias),
        "the cosines divided by t (CLIP's temperature view) instead of multiplied by t = exp(logit_scale)": loss(cos / t + bias),
        "the logit_bias left out: the logits are t * cos + b": loss(cos * t),
        "the logit_bias subtracted; it is added: t * cos + b": loss(cos * t - bias),
        "the bias scaled with the cosines, t * (cos + b); only the cosines are scaled: t * cos + b": loss(t * (cos + bias)),
        "the embeddings used without L2 normalisation: the logits are built from cosine similarities": loss(
            img @ txt.T * t + bias),
        "only the matching pairs (the diagonal); SigLIP scores every pair, the B*(B-1) non-matching ones with label -1": (
            -F.logsigmoid(right.diagonal()).sum() / b).item(),
        "CLIP's softmax loss (cross-entropy over rows and columns); SigLIP's is an independent sigmoid per pair": clip,
    }


_SIGLIP_CASES = [  # (B, E, dtype, logit_scale = log t, logit_bias)
    (3, 8, torch.float32, math.log(10.0), -10.0),  # the paper's initialisation
    (5, 16, torch.float64, 1.2, -2.0),
    (8, 4, torch.float32, 0.5, 0.7),
    (6, 32, torch.float64, 2.0, -4.0),
]


@exercise(
    "ch02.siglip_loss",
    "Stretch: SigLIP's sigmoid loss",
    hint="normalise both embeddings; logits = exp(logit_scale) * cos + logit_bias (B, B); labels = 2 * eye(B) - 1; "
    "loss = -sum(log sigmoid(labels * logits)) / B.",
)
def _check_siglip_loss(fn) -> str:
    for i, (b, e, dtype, scale, bias) in enumerate(_SIGLIP_CASES):
        g = _gen(950 + i)
        img = (torch.randn(b, e, generator=g) * torch.empty(b, 1).uniform_(0.5, 3.0, generator=g)).to(dtype)
        txt = (torch.randn(b, e, generator=g) * torch.empty(b, 1).uniform_(0.5, 3.0, generator=g)).to(dtype)
        txt = txt + 1.5 * img.norm(dim=-1, keepdim=True).reciprocal() * img * txt.norm(dim=-1, keepdim=True)  # pairs alike
        s, bb = torch.tensor(scale, dtype=dtype), torch.tensor(bias, dtype=dtype)
        what = (f"siglip_loss(image_embeds {tuple(img.shape)}, text_embeds {tuple(txt.shape)}, logit_scale={scale:.3g}, "
                f"logit_bias={bias:g}, {dtype})")
        ref_inputs = [_loss_leaf(t) for t in (img, txt, s, bb)]
        expected = siglip_loss_reference(*ref_inputs)
        mistakes = _siglip_mistakes(img, txt, s, bb)
        _expect_distinct(mistakes, expected.item(), what)
        inputs = [_loss_leaf(t) for t in (img, txt, s, bb)]
        got = call(fn, *inputs)
        _expect_loss(got, expected, mistakes, dtype, what)
        _expect_same_grads(got, expected, inputs, ref_inputs,
                           ["image_embeds", "text_embeds", "logit_scale", "logit_bias"], what)
    return ("your loss and its gradients (with respect to both embeddings, the scale and the bias) equal SigLIP's, "
            "as the paper's pseudo-code computes it.")


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
