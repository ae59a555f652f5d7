"""Checks for chapter 1, tokens and patches.

Every coding check runs the learner's function next to the library's reference on several random
inputs (batch 1 and >1, square and non-square images, several patch sizes, float32 and float64) and
explains the first difference it finds, naming the usual mistake when it recognises it.
Tiers: core functions (patchify, patch_embedding, sincos_2d), a module built by the learner
(patch_embedding_module: the library's weights are loaded into it), a model the learner trains
(train_position: only evaluated here), a text exercise (bpe_merges, against the ``tokenizers``
library) and an optional stretch (interpolate_positions). Questions store only answer hashes.
"""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange

from mmllm_course.encoders.patches import PatchEmbedding as _RefPatchEmbedding
from mmllm_course.encoders.patches import patchify as _ref_patchify
from mmllm_course.grading.compare import expect_tensor_or_diagnose
from mmllm_course.grading.core import CheckFailed, answer_hash, call, exercise, question
from mmllm_course.grading.modules import build_learner_module, expect_same_forward, load_reference_weights, predict_logits
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
# ch01.patch_embedding_module (build tier)
# --------------------------------------------------------------------------------------------------
# (image_size, patch_size, in_channels, dim): 3 channels and not, several patch sizes.
_MODULE_CASES = [(32, 8, 3, 16), (12, 4, 2, 10), (16, 2, 1, 6)]
_MODULE_BATCHES = (1, 3)


def _module_mistakes(ref: _RefPatchEmbedding):
    """The outputs of the usual mistakes, computed with the library's weights on the same images."""
    p = ref.patch_size

    def mistakes(images: torch.Tensor) -> dict[str, torch.Tensor]:
        def embed(pattern: str) -> torch.Tensor:
            return ref.proj(rearrange(images, pattern, p1=p, p2=p))

        return {
            "patches flattened channel-first, (c p1 p2); the library's weight columns are in (p1 p2 c) order": embed(
                "b c (h p1) (w p2) -> b (h w) (c p1 p2)"
            ),
            "patches numbered column by column; number them row by row, left to right then top to bottom": embed(
                "b c (h p1) (w p2) -> b (w h) (p1 p2 c)"
            ),
            "each patch's pixels listed column-major, (p2 p1 c); go along a row of the patch first": embed(
                "b c (h p1) (w p2) -> b (h w) (p2 p1 c)"
            ),
        }

    return mistakes


@exercise(
    "ch01.patch_embedding_module",
    "Build the PatchEmbedding module",
    hint="__init__ stores patch_size and creates self.proj = nn.Linear(patch_size * patch_size * in_channels, dim); "
    "forward patchifies in (p1 p2 c) order, row-major over the grid, then applies self.proj to every patch.",
)
def _check_patch_embedding_module(cls) -> str:
    with torch.random.fork_rng(devices=[]):  # leave the learner's random stream as it was
        for i, (size, p, c, d) in enumerate(_MODULE_CASES):
            what = f"PatchEmbedding(image_size={size}, patch_size={p}, in_channels={c}, dim={d})"
            torch.manual_seed(300 + i)
            ref = _RefPatchEmbedding(size, p, c, d)
            mine = build_learner_module(cls, what, image_size=size, patch_size=p, in_channels=c, dim=d)
            try:
                load_reference_weights(mine, ref, what)
            except CheckFailed as exc:
                weight = mine.state_dict().get("proj.weight")
                if isinstance(weight, torch.Tensor) and weight.dim() == 4:
                    raise CheckFailed(
                        f"{exc}. Your proj is a Conv2d (kernel (D, C, p, p)): it computes the same tokens, but the library "
                        f"stores the same numbers as an nn.Linear weight (D, p*p*C) in (p1 p2 c) order; use "
                        f"nn.Linear(p*p*C, D) named proj"
                    ) from None
                raise
            g = torch.Generator().manual_seed(310 + i)
            inputs = [torch.rand(b, c, size, size, generator=g) for b in _MODULE_BATCHES]
            expect_same_forward(mine, ref, inputs, what, diagnose=_module_mistakes(ref))
    return (
        "your PatchEmbedding holds the library's weights under the same names and computes the same tokens and "
        "gradients, on every size tried."
    )


# --------------------------------------------------------------------------------------------------
# ch01.train_position (train tier): only evaluates the learner's trained model
# --------------------------------------------------------------------------------------------------
TRAIN_POSITION_THRESHOLD = 0.90
_TRAIN_POSITION_TEST = (1000, 7101)  # held-out images and their seed (the learner trains on other seeds)


@functools.lru_cache(maxsize=1)
def _position_test_set() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from mmllm_course.data.shapes import generate_shapes

    n, seed = _TRAIN_POSITION_TEST
    data = generate_shapes(n, seed=seed)
    return data.images, data.color, data.position


@exercise(
    "ch01.train_position",
    "Train a colour x position classifier on your patch tokens",
    hint="patch tokens + LEARNED position embeddings (one vector per patch, initialised with std about 1), then a "
    "per-token Linear + GELU, a mean over the tokens and a Linear head to 16 classes; AdamW, lr about 3e-3, "
    "a few hundred steps. Without a nonlinearity between the position embeddings and the mean, they average away.",
    timeout=30.0,
)
def _check_train_position(model) -> str:
    if isinstance(model, type):
        raise CheckFailed(f"got the class {model.__name__}; pass your trained model (an instance), not its class")
    images, color, position = _position_test_set()
    n = images.shape[0]
    logits = predict_logits(model, images.clone(), "your model(images (B, 3, 32, 32))", num_classes=16)
    pred = logits.argmax(dim=1)
    acc = (pred == 4 * color + position).float().mean().item()
    col = (pred // 4 == color).float().mean().item()
    pos = (pred % 4 == position).float().mean().item()
    summary = f"colour right {col:.1%}, quadrant right {pos:.1%}"
    if acc >= TRAIN_POSITION_THRESHOLD:
        return f"held-out accuracy {acc:.1%} on {n} new images ({summary})."
    swapped = ((pred // 4 == position) & (pred % 4 == color)).float().mean().item()
    if swapped >= TRAIN_POSITION_THRESHOLD:
        raise CheckFailed(
            f"your classes look numbered 4 * position + colour ({swapped:.1%} right that way); the class of an image "
            f"is 4 * colour + position (labels = data.color * 4 + data.position)"
        )
    message = (
        f"held-out accuracy {acc:.1%} on {n} new images; it needs at least {TRAIN_POSITION_THRESHOLD:.0%} ({summary}; "
        f"chance is 6%, 25% and 25%)."
    )
    if col >= 0.8 and pos < 0.5:
        message += (
            " Your model tells the colours apart but not where the shape is: a mean over patch tokens is the same "
            "whatever order the patches come in, so only position embeddings, added before a per-token nonlinearity, "
            "tell the quadrants apart."
        )
    elif acc < 0.15:
        message += " That is about chance: is the model trained, and is class 4 * colour + position what comes out?"
    else:
        message += " Train longer (more steps) or with a larger learning rate, following the recipe in the text."
    raise CheckFailed(message)


# --------------------------------------------------------------------------------------------------
# ch01.bpe_merges (text): BPE training by hand, checked against the `tokenizers` library
# --------------------------------------------------------------------------------------------------
# Toy corpora chosen so that every mistake below changes the merge list: ties between old and new
# symbols, repeated words, words whose last and next first letters make a frequent pair, runs "aaaa".
_BPE_CASES: list[tuple[list[str], int]] = [
    (["low low low low low", "lower lower", "newest newest newest newest newest newest", "widest widest widest"], 10),
    (["the cat sat on the mat", "the hat is on the cat", "a cat and a hat"], 12),
    (["banana bandana", "a nab in a band", "aaaa aaa aa"], 12),
    (["ab ab", "c"], 10),  # only one merge exists: stop when no pair is left
    (["dcba dcba dc ba", "cb cb ad ad ad", "abcd"], 8),
    (["ed de ed cd dc", "abc cab bca", "bb b bbb"], 15),
]


def reference_bpe_merges(corpus: list[str], num_merges: int) -> list[tuple[str, str]]:
    """The merges ``tokenizers``' BpeTrainer learns with a whitespace pre-tokenizer, in order (the library's result).

    Words: ``text.split()``; symbols start as characters, no end-of-word marker; ties on count go
    to the smallest (id of left, id of right), ids being the sorted characters then merged symbols
    in order of creation.
    """
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    alphabet = {ch for text in corpus for ch in "".join(text.split())}
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(vocab_size=len(alphabet) + num_merges, min_frequency=0, show_progress=False, special_tokens=[])
    tok.train_from_iterator(corpus, trainer=trainer)
    merges = json.loads(tok.to_str())["model"]["merges"]
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges][:num_merges]


def _bpe_words(corpus: list[str], glue: bool = False, distinct: bool = False) -> Counter:
    words = Counter("".join(t.split()) for t in corpus) if glue else Counter(w for t in corpus for w in t.split())
    return Counter(set(words)) if distinct else words


def _merge_word(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def _pair_counts(seqs: dict[str, list[str]], words: Counter) -> Counter:
    pairs: Counter = Counter()
    for w, n in words.items():
        s = seqs[w]
        for a, b in zip(s, s[1:]):
            pairs[a, b] += n
    return pairs


def _python_bpe(corpus: list[str], num_merges: int, tie: str = "id", glue: bool = False, distinct: bool = False,
                stale: bool = False) -> tuple[list[tuple[str, str]], list[Counter]]:
    """BPE as the spec says (the defaults), or with one mistake; also the pair counts before each merge."""
    words = _bpe_words(corpus, glue, distinct)
    ids = {ch: i for i, ch in enumerate(sorted({ch for w in words for ch in w}))}
    seqs = {w: list(w) for w in words}
    merges: list[tuple[str, str]] = []
    history: list[Counter] = []
    counts = _pair_counts(seqs, words)
    for _ in range(num_merges):
        if not stale:
            counts = _pair_counts(seqs, words)
        counts = Counter({k: v for k, v in counts.items() if v > 0})
        if not counts:
            break
        history.append(counts)
        if tie == "id":
            best = min(counts, key=lambda pr: (-counts[pr], ids[pr[0]], ids[pr[1]]))
        elif tie == "string":
            best = min(counts, key=lambda pr: (-counts[pr], pr))
        else:  # "first": the first pair seen among the most frequent (dict order, as Counter.most_common)
            best = counts.most_common(1)[0][0]
        merges.append(best)
        ids.setdefault(best[0] + best[1], len(ids))
        if stale:
            counts = Counter({k: v for k, v in counts.items() if k != best})
        seqs = {w: _merge_word(s, best) for w, s in seqs.items()}
    return merges, history


_BPE_MISTAKES = {
    "ties broken by comparing the strings (alphabetical order); break them by symbol id: the characters in sorted "
    "order first, then each merged symbol in the order it was created": dict(tie="string"),
    "ties broken by which pair was counted first (dict order, as Counter.most_common or max give); break them by "
    "symbol id, smallest (left id, right id) first": dict(tie="first"),
    "pairs counted across word boundaries (the words of a text glued together); count pairs inside each word "
    "(text.split()) only": dict(glue=True),
    "pair counts computed once and never updated after a merge; count the pairs again (or update them) after "
    "every merge, since merging creates new pairs": dict(stale=True),
    "every distinct word counted once; a word that occurs 5 times contributes its pairs 5 times": dict(distinct=True),
}


def _fmt_corpus(corpus: list[str]) -> str:
    text = repr(corpus)
    return text if len(text) <= 90 else text[:87] + "...]"


def _fmt_merges(merges: list[tuple[str, str]], n: int = 6) -> str:
    return "[" + ", ".join(repr(m) for m in merges[:n]) + (", ...]" if len(merges) > n else "]")


def _as_merge_list(got: Any, what: str) -> list[tuple[str, str]]:
    if got is None:
        raise CheckFailed(f"{what} returned None: did you forget `return`?")
    if not isinstance(got, (list, tuple)):
        raise CheckFailed(f"{what} returned a {type(got).__name__}; expected a list of pairs like [('l', 'o'), ('lo', 'w')]")
    out = []
    for i, item in enumerate(got):
        if isinstance(item, str):
            raise CheckFailed(
                f"{what}: item {i} is the string {item!r}; return the PAIR that was merged, e.g. ('l', 'o'), not the new symbol"
            )
        if not isinstance(item, (list, tuple)) or len(item) != 2 or not all(isinstance(x, str) for x in item):
            raise CheckFailed(f"{what}: item {i} is {item!r:.60}; each merge is a pair of two strings, e.g. ('l', 'o')")
        out.append((item[0], item[1]))
    return out


@exercise(
    "ch01.bpe_merges",
    "Train BPE by hand: the list of merges",
    hint="words = the texts split on whitespace, with their counts; each word starts as a list of characters. "
    "Repeat: count adjacent pairs inside every word (times the word's count), take the most frequent pair "
    "(ties: smallest (left id, right id)), record it, merge it left to right in every word.",
)
def _check_bpe_merges(fn) -> str:
    for corpus, num_merges in _BPE_CASES:
        what = f"bpe_merges({_fmt_corpus(corpus)}, num_merges={num_merges})"
        got = _as_merge_list(call(fn, list(corpus), num_merges), what)
        expected = reference_bpe_merges(corpus, num_merges)
        if got == expected:
            continue
        for explanation, flags in _BPE_MISTAKES.items():
            if got == _python_bpe(corpus, num_merges, **flags)[0]:
                raise CheckFailed(
                    f"{what} gave {_fmt_merges(got)}; expected {_fmt_merges(expected)}. Yours are the merges of {explanation}."
                )
        step = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
        if step == len(expected):
            raise CheckFailed(
                f"{what} returned {len(got)} merges; expected {len(expected)}: after {expected[-1] if expected else 'no merge'} "
                f"no pair is left (or num_merges is reached), so stop there."
            )
        if step == len(got):
            raise CheckFailed(
                f"{what} returned {len(got)} merges, all right; expected {len(expected)}: {_fmt_merges(expected, 12)}. "
                f"Stop only after num_merges merges, or when no pair is left."
            )
        counts = _python_bpe(corpus, num_merges)[1][step]
        theirs = f"{got[step]} occurs {counts.get(got[step], 0)} times" if got[step] in counts else f"{got[step]} is not a pair at that step"
        raise CheckFailed(
            f"{what}: merge #{step + 1} is {got[step]}, expected {expected[step]} (the first {step} agree). At that step "
            f"{expected[step]} occurs {counts[expected[step]]} times and {theirs}."
        )
    return "your merges equal the tokenizers library's BpeTrainer, merge for merge, ties included."


# --------------------------------------------------------------------------------------------------
# ch01.interpolate_positions (optional stretch): learned position embeddings on a new grid
# --------------------------------------------------------------------------------------------------
def reference_interpolate_positions(pos_embed: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """(1, 1 + g*g, D) -> (1, 1 + grid_h*grid_w, D): [CLS] row kept, the g x g grid resized bicubically.

    The computation of ``transformers``' ``ViTEmbeddings.interpolate_pos_encoding`` (bicubic,
    ``align_corners=False``, resize to the exact new grid size).
    """
    d = pos_embed.shape[-1]
    g = int(round((pos_embed.shape[1] - 1) ** 0.5))
    cls_pos, grid = pos_embed[:, :1], pos_embed[:, 1:]
    grid = grid.reshape(1, g, g, d).permute(0, 3, 1, 2)  # (1, D, g, g)
    grid = F.interpolate(grid, size=(grid_h, grid_w), mode="bicubic", align_corners=False)
    return torch.cat([cls_pos, grid.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, d)], dim=1)


# (old grid g, width D, new grid_h, new grid_w, dtype): larger, smaller, non-square, unchanged.
_INTERP_CASES = [
    (4, 8, 6, 6, torch.float32),
    (4, 6, 2, 2, torch.float32),
    (3, 5, 5, 7, torch.float64),
    (2, 4, 3, 5, torch.float32),
    (4, 8, 4, 4, torch.float32),
]


def _interp_mistakes(pos: torch.Tensor, gh: int, gw: int) -> dict[str, torch.Tensor]:
    d = pos.shape[-1]
    g = int(round((pos.shape[1] - 1) ** 0.5))
    cls_pos, grid = pos[:, :1], pos[:, 1:]

    def resize(mode: str = "bicubic", corners: bool | None = False, size=(gh, gw), permute: bool = True) -> torch.Tensor:
        img = grid.reshape(1, g, g, d).permute(0, 3, 1, 2) if permute else grid.reshape(1, d, g, g)
        out = F.interpolate(img, size=size, mode=mode, align_corners=corners)
        flat = out.permute(0, 2, 3, 1).reshape(1, -1, d) if permute else out.reshape(1, -1, d)
        return torch.cat([cls_pos, flat], dim=1)

    out = {
        "a bilinear resize; ViT (as in transformers and DINO) resizes bicubically": resize("bilinear"),
        "a resize with align_corners=True; use align_corners=False": resize(corners=True),
        "a nearest-neighbour resize; ViT resizes bicubically": resize("nearest", None),
        "the grid reshaped straight to (1, D, g, g) without moving the channels: reshape to (1, g, g, D), then permute "
        "to (1, D, g, g)": resize(permute=False),
    }
    if gh != gw:
        out["a resize to (grid_w, grid_h): the rows of the new grid are grid_h, the columns grid_w"] = resize(size=(gw, gh))
    return out


@exercise(
    "ch01.interpolate_positions",
    "Optional: resize learned position embeddings to a new grid",
    hint="keep row 0 ([CLS]); reshape the other g*g rows to (1, g, g, D), permute to (1, D, g, g), "
    "F.interpolate(size=(grid_h, grid_w), mode='bicubic', align_corners=False), then back to (1, grid_h*grid_w, D).",
)
def _check_interpolate_positions(fn) -> str:
    for i, (g, d, gh, gw, dtype) in enumerate(_INTERP_CASES):
        pos = torch.randn(1, 1 + g * g, d, generator=_gen(400 + i), dtype=dtype)
        original = pos.clone()
        what = f"interpolate_positions(pos_embed (1, {1 + g * g}, {d}) {str(dtype).replace('torch.', '')}, grid_h={gh}, grid_w={gw})"
        got = call(fn, pos, gh, gw)
        expected = reference_interpolate_positions(original, gh, gw)
        if isinstance(got, torch.Tensor) and got.shape != expected.shape:
            n = 1 + gh * gw
            hint = " keep the [CLS] row first, unchanged" if tuple(got.shape) == (1, gh * gw, d) else ""
            raise CheckFailed(f"{what} returned shape {tuple(got.shape)}; expected (1, 1 + grid_h*grid_w, D) = (1, {n}, {d}):{hint or ' one row per new patch, after [CLS]'}")
        expect_tensor_or_diagnose(got, expected, what, _interp_mistakes(original, gh, gw))
        if not torch.equal(pos, original):
            raise CheckFailed(f"{what} changed pos_embed in place; return a new tensor")
    return "your resized table matches ViT's interpolate_pos_encoding: the recipe for fine-tuning at a new resolution."


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

question(
    "ch01.q5",
    "The colour x position classifier trained without position embeddings",
    {
        "a": "About 100%: each patch token already says where its patch was, since the patches are numbered row-major.",
        "b": "About 25%: the colour is right, the quadrant is a guess, because the mean over the patch tokens comes out "
        "the same whichever patch the shape is in.",
        "c": "About 6% (chance over 16 classes): without position embeddings the model cannot learn anything.",
        "d": "About 50%: left and right are told apart by the row-major order of the patches, top and bottom are not.",
    },
    [answer_hash("b")],
    explanation="Measured with the exercise's recipe over five seeds: 100% of colours right, 23.5-27% of quadrants "
    "(chance is 25%), so about 25% overall. The mean over tokens cannot depend on their order; a position vector added to each token, "
    "before a per-token nonlinearity, is what makes the pooled features depend on where the shape is.",
    hint="The model averages its patch tokens: ask what that average depends on if nothing marks where a token came from.",
)
