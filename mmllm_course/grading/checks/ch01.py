"""Checks for chapter 1, tokens and patches.

Every coding check runs the learner's function next to the library's reference on several random
inputs (batch 1 and >1, square and non-square images, several patch sizes, float32 and float64) and
explains the first difference it finds, naming the usual mistake when it recognises it.
Questions store only answer hashes.
"""

from __future__ import annotations

import torch
from einops import rearrange

from mmllm_course.encoders.patches import patchify as _ref_patchify
from mmllm_course.grading.compare import expect_tensor_or_diagnose
from mmllm_course.grading.core import CheckFailed, answer_hash, call, exercise, question
from mmllm_course.nn.position import sincos_2d_position_embedding as _ref_sincos_2d


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)

# --------------------------------------------------------------------------------------------------
# ch01.patchify
# --------------------------------------------------------------------------------------------------
# (batch, channels, height, width, patch size, dtype): batch 1 and >1, non-square, several p, both dtypes.
_PATCHIFY_CASES = [
    (1, 3, 8, 8, 4, torch.float32),
    (2, 2, 6, 9, 3, torch.float32),
    (2, 3, 12, 8, 4, torch.float64),
    (3, 1, 6, 6, 2, torch.float32),
    (1, 3, 4, 4, 4, torch.float64),
]


def _patchify_mistakes(images: torch.Tensor, p: int) -> dict[str, torch.Tensor]:
    return {
        "flattening each patch channel-first, (c p1 p2); the order asked for is (p1 p2 c), "
        "the channels of one pixel side by side": rearrange(images, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1=p, p2=p),
        "numbering the patches column by column (the grid transposed); number them row by row, "
        "left to right then top to bottom": rearrange(images, "b c (h p1) (w p2) -> b (w h) (p1 p2 c)", p1=p, p2=p),
        "listing each patch's pixels column-major, (p2 p1 c); go along a row of the patch first": rearrange(
            images, "b c (h p1) (w p2) -> b (h w) (p2 p1 c)", p1=p, p2=p
        ),
    }


@exercise(
    "ch01.patchify",
    "Cut images into flattened patches",
    hint="split H into (H/p, p) and W into (W/p, p), then order the axes as (batch, patch row, patch column, "
    "pixel row, pixel column, channel) before flattening; einops' rearrange or reshape + permute both work.",
)
def _check_patchify(fn) -> str:
    for i, (b, c, h, w, p, dtype) in enumerate(_PATCHIFY_CASES):
        images = torch.rand(b, c, h, w, generator=_gen(100 + i), dtype=dtype)
        original = images.clone()
        what = f"patchify(images of shape {(b, c, h, w)} {str(dtype).replace('torch.', '')}, patch_size={p})"
        got = call(fn, images, p)
        expected = _ref_patchify(original, p)
        if isinstance(got, torch.Tensor) and got.shape != expected.shape and got.dim() == 3:
            n, k = (h // p) * (w // p), p * p * c
            raise CheckFailed(
                f"{what} returned shape {tuple(got.shape)}; expected (B, N, p*p*C) = ({b}, {n}, {k}): "
                f"N = (H/p)*(W/p) = ({h}/{p})*({w}/{p}) = {n} patches of p*p*C = {p}*{p}*{c} = {k} numbers each"
            )
        expect_tensor_or_diagnose(got, expected, what, _patchify_mistakes(original, p))
        if not torch.equal(images, original):
            raise CheckFailed(f"{what} changed its input images in place; patchify must leave them as they were")
    return "your patches match the library's patchify on every shape, patch size and dtype tried."


# --------------------------------------------------------------------------------------------------
# ch01.patch_embedding
# --------------------------------------------------------------------------------------------------
# (batch, channels, height, width, patch size, width D, dtype). The first case has D == p*p*C, so a
# forgotten weight transpose still runs and is caught by its values rather than by a shape error.
_EMBED_CASES = [
    (2, 3, 8, 8, 2, 12, torch.float32),
    (1, 3, 8, 12, 4, 10, torch.float64),
    (3, 1, 6, 6, 3, 5, torch.float32),
    (2, 2, 8, 4, 2, 7, torch.float64),
]


def _embed_mistakes(images, weight, bias, p) -> dict[str, torch.Tensor]:
    good = _ref_patchify(images, p)
    cfirst = rearrange(images, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1=p, p2=p)
    out = {
        "the right answer without the bias: add `+ bias`": good @ weight.T,
        "flattening patches channel-first, (c p1 p2): weight's columns are in (p1 p2 c) order": cfirst @ weight.T + bias,
    }
    if weight.shape[0] == weight.shape[1]:
        out["`patches @ weight + bias`: the weight is (D, p*p*C), so use `patches @ weight.T` (as nn.Linear does)"] = (
            good @ weight + bias
        )
    return out


@exercise(
    "ch01.patch_embedding",
    "Linear patch embedding (the forward of PatchEmbedding)",
    hint="first flatten the patches exactly as in the patchify exercise, then apply one linear map to every "
    "patch; weight is (D, p*p*C), so think about which side of the product it goes on.",
)
def _check_patch_embedding(fn) -> str:
    for i, (b, c, h, w, p, d, dtype) in enumerate(_EMBED_CASES):
        g = _gen(200 + i)
        k = p * p * c
        images = torch.rand(b, c, h, w, generator=g, dtype=dtype)
        weight = torch.randn(d, k, generator=g, dtype=dtype) / k**0.5
        bias = torch.randn(d, generator=g, dtype=dtype)
        args = [t.clone() for t in (images, weight, bias)]
        what = (
            f"patch_embedding(images {(b, c, h, w)}, weight {(d, k)}, bias ({d},), patch_size={p}) "
            f"in {str(dtype).replace('torch.', '')}"
        )
        got = call(fn, *args, p)
        expected = _ref_patchify(images, p) @ weight.T + bias  # (B, N, D)
        if isinstance(got, torch.Tensor) and got.shape != expected.shape:
            n = (h // p) * (w // p)
            raise CheckFailed(f"{what} returned shape {tuple(got.shape)}; expected (B, N, D) = ({b}, {n}, {d}), one D-vector per patch")
        expect_tensor_or_diagnose(got, expected, what, _embed_mistakes(images, weight, bias, p))
        if not all(torch.equal(a, o) for a, o in zip(args, (images, weight, bias))):
            raise CheckFailed(f"{what} changed one of its inputs in place; leave images, weight and bias as they were")
    # A property: the same patch gives the same token wherever it sits (one shared linear map).
    tile = torch.rand(1, 3, 4, 4, generator=_gen(299))
    images = tile.repeat(1, 1, 2, 3)  # a 2x3 grid of identical patches
    weight, bias = torch.randn(6, 48, generator=_gen(298)), torch.randn(6, generator=_gen(297))
    tokens = call(fn, images, weight, bias, 4)
    if not isinstance(tokens, torch.Tensor) or tokens.shape != (1, 6, 6):
        raise CheckFailed(f"images (1, 3, 8, 12) with patch_size=4 and D=6 should give tokens (1, 6, 6); got {getattr(tokens, 'shape', tokens)!r:.80}")
    if not torch.allclose(tokens, tokens[:, :1].expand_as(tokens), atol=1e-5):
        raise CheckFailed("six identical patches gave different tokens: every patch must go through the same weight and bias")
    return "your tokens match PatchEmbedding's: one shared linear map per (p1 p2 c)-flattened patch."


# --------------------------------------------------------------------------------------------------
# ch01.sincos_2d
# --------------------------------------------------------------------------------------------------
_SINCOS_CASES = [(2, 3, 8), (4, 4, 16), (3, 5, 32), (1, 1, 4), (6, 2, 12)]


def _sincos_mistakes(gh: int, gw: int, dim: int) -> dict[str, torch.Tensor]:
    def table(
        freq_exponent_scale: float = 1.0, swap_sincos: bool = False, swap_axes: bool = False, interleave: bool = False
    ) -> torch.Tensor:
        q = dim // 4
        omega = 1.0 / 10000.0 ** (torch.arange(q, dtype=torch.float64) / (q * freq_exponent_scale))
        rows = torch.arange(gh).repeat_interleave(gw).double()
        cols = torch.arange(gw).repeat(gh).double()

        def one(pos):
            a = pos[:, None] * omega[None]
            parts = [torch.cos(a), torch.sin(a)] if swap_sincos else [torch.sin(a), torch.cos(a)]
            if interleave:
                return torch.stack(parts, dim=-1).reshape(len(pos), 2 * q)
            return torch.cat(parts, dim=1)

        halves = [one(cols), one(rows)] if swap_axes else [one(rows), one(cols)]
        return torch.cat(halves, dim=1).float()

    return {
        "the right table with sin and cos swapped: sines come first in each half": table(swap_sincos=True),
        "the right table with rows and columns swapped: the first half encodes the row (k // grid_w)": table(swap_axes=True),
        "a table whose frequencies use the 1-D exponent with the full width, omega_i = 1 / 10000^(i / (dim/2)); "
        "each axis has dim/2 channels, so use omega_i = 1 / 10000^(i / (dim/4))": table(2.0),
        "sin and cos interleaved (sin, cos, sin, cos, ...); here each half is all its sines, then all its cosines": table(
            interleave=True
        ),
    }


@exercise(
    "ch01.sincos_2d",
    "2-D sine-cosine position embedding",
    hint="patch k sits at row k // grid_w and column k % grid_w; each axis gets dim/2 channels (a 1-D table of "
    "width dim/2), sines before cosines, row half first; return float32.",
)
def _check_sincos_2d(fn) -> str:
    for gh, gw, dim in _SINCOS_CASES:
        what = f"sincos_2d_position_embedding(grid_h={gh}, grid_w={gw}, dim={dim})"
        got = call(fn, gh, gw, dim)
        expected = _ref_sincos_2d(gh, gw, dim)
        if isinstance(got, torch.Tensor) and got.shape != expected.shape:
            raise CheckFailed(
                f"{what} returned shape {tuple(got.shape)}; expected (grid_h*grid_w, dim) = ({gh * gw}, {dim}): one row per patch"
            )
        if isinstance(got, torch.Tensor) and got.dtype != torch.float32:
            raise CheckFailed(f"{what} returned dtype {got.dtype}; expected torch.float32 (compute in float64 if you like, then .float())")
        expect_tensor_or_diagnose(got, expected, what, _sincos_mistakes(gh, gw, dim))
    return "your table matches the library's 2-D sin-cos embedding, channel for channel."


# --------------------------------------------------------------------------------------------------
# Questions (only hashes of the answers live here)
# --------------------------------------------------------------------------------------------------
question(
    "ch01.q1",
    "Tokens from a 224x224 image with 16x16 patches, plus [CLS]",
    {"a": "196", "b": "197", "c": "224", "d": "257"},
    [answer_hash("b")],
    explanation="224/16 = 14 patches per side, 14*14 = 196 patches, plus one [CLS] token: 197 (ViT-B/16).",
    hint="Count patches per side first (H/p), square it, then add the [CLS] token.",
)

question(
    "ch01.q2",
    "Why a linear map over flattened patches equals a Conv2d with kernel = stride = p",
    {
        "a": "Because a convolution is approximately linear, so the two agree up to rounding.",
        "b": "They are not equal: the convolution mixes neighbouring patches, the linear map does not.",
        "c": "Because Conv2d pads the image so that every pixel is seen p times, which averages out the same.",
        "d": "The windows tile the image without overlap, and each output is one kernel's dot product with "
        "one window: a row of the linear weight applied to one flattened patch.",
    },
    [answer_hash("d")],
    explanation="Same weights, same pixels, same sums: only the bookkeeping (flatten order vs. kernel "
    "layout (D, C, p, p)) differs, which is why ViT checkpoints store the patch embedding as a conv.",
    hint="Think about which pixels one output position of the convolution sees when kernel = stride = p.",
)

question(
    "ch01.q3",
    "Attention cost when the patch size halves",
    {
        "a": "about 2x: the sequence is twice as long",
        "b": "about 4x: there are 4x as many tokens",
        "c": "about 16x: 4x as many tokens, and attention compares every pair of tokens (N^2)",
        "d": "unchanged: the image has the same number of pixels",
    },
    [answer_hash("c")],
    explanation="N = (H/p)(W/p): halving p gives 4x the tokens (196 -> 784 at 224x224), and self-attention's "
    "N x N score matrix grows 16x. This is why LLaVA-style models care so much about the image-token budget.",
    hint="Write N as a function of p, then remember self-attention scores every pair of tokens.",
)

question(
    "ch01.q4",
    "What the transformer would see without position embeddings",
    {
        "a": "A set: shuffling the patches would only shuffle its outputs the same way, so it could not tell "
        "where in the image a patch came from.",
        "b": "Nothing changes: patches are flattened row-major, so their order is stored in the pixel values.",
        "c": "A model that can no longer be trained: the patch embedding needs them to compute gradients.",
        "d": "The same image without its [CLS] token, which is stored in the position table.",
    },
    [answer_hash("a")],
    explanation="Self-attention is permutation-equivariant; adding a position vector to each token (learned, "
    "or the fixed 2-D sin-cos table) is what tells the model where each patch sits.",
    hint="Ask what happens to self-attention's output if you permute its input tokens.",
)
