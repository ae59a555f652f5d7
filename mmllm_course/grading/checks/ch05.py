"""Checks for chapter 5, backbone A: the unified embedding decoder (image tokens spliced into a causal LM).

Tiers, as in every chapter:

- **core** functions: expanding the ``<image>`` placeholder to K ids; a padded batch with its
  attention mask and labels (-100 on the prompt, the image tokens and the padding; left padding for
  generation); the splice itself (the bridge's vectors written over the placeholder positions of the
  token embeddings, gradients reaching both); greedy decoding by hand from ``inputs_embeds`` with
  left padding (checked against the LM's own ``generate``). Each runs next to the library's reference
  (:class:`~mmllm_course.backbones.UnifiedEmbeddingMLLM` and its ``tokenize``/``embed``/``position_ids``)
  and the first difference is explained, naming the usual mistake when the output equals what that
  mistake gives;
- **build**: the learner's ``MyUnifiedEmbeddingMLLM(bridge, lm, image_token_id)`` gets the library's
  weights (a ``UnifiedEmbeddingMLLM``'s ``bridge.*`` and ``lm.*``) loaded into it and must give the
  library's logits (on every real token), gradients and loss, for a LLaMA and a GPT-2 LM, a Q-Former
  and an MLP bridge, left and right padding, one and two images per prompt;
- **train**: the learner's stage-1 bridge is measured (never trained here): the shipped frozen
  chapter-2 encoder and chapter-5 LM caption 200 held-out images the check draws with its own seed,
  through the library's ``generate``; the bar is 90% exact captions. The solution notebook's recipe
  (Q-Former, K = 8, 150 steps of 64, AdamW 3e-3, 4,000 training images) measured 96.0%, 95.5%, 95.5%,
  96.0%, 96.0% on seeds 0-4 (bridge init, training images, batch order; 2026-12-03, 1 thread on the
  shared 2-core machine at load 8-10: 21-40 s of training each); with 250 steps 96.5-97.5%;
- a **stretch**: the next-token distribution of sampling with a temperature and top-k, equal to
  ``transformers``' logits warpers.

Every named mistake gives, on at least one case, a result different from the right answer (guards
raise ``RuntimeError`` when the cases stop telling a named mistake apart). Questions store only hashes.
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any, Callable

import torch
from torch import nn

from mmllm_course.bridges import Bridge
from mmllm_course.grading.compare import expect_close_scalar, expect_tensor, same_values
from mmllm_course.grading.core import CheckFailed, a_or_an, answer_hash, call, exercise, question
from mmllm_course.grading.modules import build_learner_module, expect_same_forward, load_reference_weights

IGNORE = -100  # the label of a position that takes no loss
IMAGE_ID = 3  # <image> in the course LM tokenizer (pad 0, eos 1, bos 2)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _one_thread() -> None:
    """Tiny tensors: one thread (the grader gives the learner's thread count back afterwards)."""
    torch.set_num_threads(1)


@lru_cache(maxsize=1)
def _tokenizer():
    from mmllm_course.language import course_lm_tokenizer

    return course_lm_tokenizer()


def _as_id_list(got: Any, what: str) -> list[int]:
    """A learner's list of token ids (a list or tuple of ints, or a 1-d integer tensor) as a plain list."""
    if got is None:
        raise CheckFailed(f"{what} returned None: did you forget `return`?")
    if isinstance(got, torch.Tensor):
        if got.dim() != 1 or got.is_floating_point():
            raise CheckFailed(f"{what} returned a tensor of shape {tuple(got.shape)} and dtype {got.dtype}; expected a list of int ids")
        return [int(v) for v in got.tolist()]
    if not isinstance(got, (list, tuple)):
        raise CheckFailed(f"{what} returned {a_or_an(type(got).__name__)}; expected a list of int token ids")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in got):
        kinds = sorted({type(v).__name__ for v in got if not isinstance(v, int) or isinstance(v, bool)})
        raise CheckFailed(f"{what} returned a list holding {', '.join(kinds)}; expected a list of int token ids")
    return list(got)


# --------------------------------------------------------------------------------------------------
# ch05.expand_placeholder: each <image> id becomes K image-token ids
# --------------------------------------------------------------------------------------------------
_EXPAND_CASES = [  # (ids, image_token_id, K)
    ([2, 3, 40, 41, 42], 3, 4),
    ([2, 50, 3, 60, 61, 3, 70], 3, 3),  # two images, placeholders mid-prompt
    ([2, 17, 17, 9], 17, 2),  # another placeholder id, two adjacent placeholders
    ([3, 44, 45], 3, 1),  # K = 1: nothing changes
    ([2, 30, 31, 3], 3, 5),  # placeholder last
]


def expand_placeholder_reference(ids: list[int], image_token_id: int, k: int) -> list[int]:
    """``ids`` with every ``image_token_id`` replaced by K copies of itself, everything else in place."""
    out: list[int] = []
    for t in ids:
        out += [t] * k if t == image_token_id else [t]
    return out


def _expand_mistakes(ids: list[int], image_token_id: int, k: int) -> dict[str, list[int]]:
    keep_plus_k = []
    for t in ids:
        keep_plus_k += [t] * (k + 1) if t == image_token_id else [t]
    first_only, seen = [], False
    for t in ids:
        if t == image_token_id and not seen:
            first_only += [t] * k
            seen = True
        else:
            first_only.append(t)
    n_img = ids.count(image_token_id)
    text = [t for t in ids if t != image_token_id]
    return {
        "K + 1 ids per placeholder: the placeholder was kept and K copies added beside it; the placeholder itself "
        "becomes the K copies": keep_plus_k,
        "only the first placeholder expanded (ids.index finds the first one only); every <image> in the prompt "
        "becomes K ids": first_only,
        "all the image ids put at the start of the prompt; they go exactly where each placeholder was, between "
        "the text around it": [image_token_id] * (k * n_img) + text,
        "the placeholders removed, not expanded: each one must become K image-token ids": text,
    }


@exercise(
    "ch05.expand_placeholder",
    "Expand each <image> placeholder into K image-token ids",
    hint="walk over the ids; an id equal to image_token_id contributes [image_token_id] * k, any other id itself.",
)
def _check_expand_placeholder(fn) -> str:
    seen: set[str] = set()
    names: set[str] = set()
    for ids, image_id, k in _EXPAND_CASES:
        what = f"expand_placeholder({ids}, image_token_id={image_id}, k={k})"
        expected = expand_placeholder_reference(ids, image_id, k)
        mistakes = _expand_mistakes(ids, image_id, k)
        names |= set(mistakes)
        seen |= {m for m, wrong in mistakes.items() if wrong != expected}
        given = list(ids)
        got = _as_id_list(call(fn, given, image_id, k), what)
        if given != ids:
            raise CheckFailed(f"{what} changed its input list in place (it became {given}); build a new list")
        if got != expected:
            for explanation, wrong in mistakes.items():
                if got == wrong and wrong != expected:
                    raise CheckFailed(f"{what} returned {got}; expected {expected}. That is {explanation}.")
            raise CheckFailed(f"{what} returned {got}; expected {expected}")
    if seen != names:
        raise RuntimeError(f"the placeholder cases never tell these apart from the right answer: {names - seen}")
    return "every <image> became K image-token ids, in place, the rest of the prompt untouched."


# --------------------------------------------------------------------------------------------------
# ch05.make_batch: padding, attention mask and labels
# --------------------------------------------------------------------------------------------------
_BATCH_CASES = [  # (prompt lengths, target lengths or None, pad_id, padding_side, seed)
    ([9, 6, 7], [5, 3, 6], 0, "right", 5100),
    ([8, 5, 10], None, 0, "left", 5101),
    ([6, 9], [4, 2], 7, "left", 5102),
    ([5, 7], None, 7, "right", 5103),
    ([11, 7, 8], [3, 6, 2], 0, "right", 5104),
]


def _batch_inputs(case: tuple) -> tuple[list[list[int]], list[list[int]] | None, int, str]:
    prompt_lengths, target_lengths, pad_id, side, seed = case
    g = _gen(seed)
    prompts = []
    for n in prompt_lengths:  # bos, K = 3 image ids, then prompt text
        text = torch.randint(10, 300, (n - 4,), generator=g).tolist()
        prompts.append([2] + [IMAGE_ID] * 3 + text)
    targets = None
    if target_lengths is not None:
        targets = [torch.randint(10, 300, (n - 1,), generator=g).tolist() + [1] for n in target_lengths]  # text, eos
    return prompts, targets, pad_id, side


def make_batch_reference(prompts: list[list[int]], targets: list[list[int]] | None, pad_id: int,
                         padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Rows prompt (+ target), padded to the longest with ``pad_id`` on ``padding_side``: input_ids, attention_mask [, labels] (B, T)."""
    rows = [list(p) + (list(targets[i]) if targets is not None else []) for i, p in enumerate(prompts)]
    label_rows = [[IGNORE] * len(p) + list(targets[i]) for i, p in enumerate(prompts)] if targets is not None else None
    length = max(len(r) for r in rows)
    out = {"input_ids": torch.full((len(rows), length), pad_id, dtype=torch.long),
           "attention_mask": torch.zeros(len(rows), length, dtype=torch.long)}
    if label_rows is not None:
        out["labels"] = torch.full((len(rows), length), IGNORE, dtype=torch.long)
    for i, r in enumerate(rows):
        span = slice(length - len(r), length) if padding_side == "left" else slice(0, len(r))
        out["input_ids"][i, span] = torch.tensor(r)
        out["attention_mask"][i, span] = 1
        if label_rows is not None:
            out["labels"][i, span] = torch.tensor(label_rows[i])
    return out


def _batch_mistakes(prompts, targets, pad_id, side) -> dict[str, dict[str, torch.Tensor]]:
    right = make_batch_reference(prompts, targets, pad_id, side)
    other = "right" if side == "left" else "left"
    flipped = make_batch_reference(prompts, targets, pad_id, other)
    if side == "left":
        wrong_side = ("right padding where padding_side='left' was asked, the padding used for generation: with left "
                      "padding the pads go BEFORE each row, so that every row ends with its last real token and the next "
                      "token is appended right after it")
    else:
        wrong_side = "left padding where padding_side='right' was asked: the pads go AFTER each row (the training layout)"
    out: dict[str, dict[str, torch.Tensor]] = {wrong_side: flipped}
    out["an attention mask of ones everywhere, the mask forgotten for the padding: padded positions must be 0 so that "
        "no token attends to them"] = dict(right, attention_mask=torch.ones_like(right["attention_mask"]))
    if pad_id != 0:
        zero = make_batch_reference(prompts, targets, 0, side)
        out["rows padded with 0 instead of pad_id"] = dict(zero)
    if targets is not None:
        ids, mask, labels = right["input_ids"], right["attention_mask"], right["labels"]
        out["labels not masked: the prompt (bos, image tokens, prompt text) takes loss; its labels must be -100, only "
            "the target is predicted"] = dict(right, labels=ids.masked_fill(mask == 0, IGNORE))
        out["labels equal to input_ids everywhere: the prompt AND the padding take loss; labels are -100 except on the "
            "target tokens"] = dict(right, labels=ids.clone())
        out["the padding labelled with the pad id instead of -100: padded positions must take no loss"] = dict(
            right, labels=labels.masked_fill(mask == 0, pad_id))
        shifted = torch.full_like(labels, IGNORE)
        shifted[:, :-1] = labels[:, 1:]
        out["labels shifted by one position: a transformers causal LM shifts them itself inside the loss (labels[t] is "
            "the token AT position t; the logits at t - 1 predict it)"] = dict(right, labels=shifted)
        one_more = make_batch_reference([p + t[:1] for p, t in zip(prompts, targets)], [t[1:] for t in targets], pad_id, side)
        out["the first target token masked too (-100 on one position too many): every target token takes loss"] = dict(
            right, labels=one_more["labels"])
        one_less = make_batch_reference([p[:-1] for p in prompts], [p[-1:] + t for p, t in zip(prompts, targets)], pad_id, side)
        out["the last prompt token takes loss (-100 on one position too few): the labels start at the first target "
            "token"] = dict(right, labels=one_less["labels"])
    return out


def _same_batch(got: dict, wrong: dict) -> bool:
    return all(k in got and isinstance(got[k], torch.Tensor) and same_values(got[k].long(), v) for k, v in wrong.items())


@exercise(
    "ch05.make_batch",
    "A padded batch: input ids, attention mask and labels",
    hint="row i = prompt + target; labels = [-100] * len(prompt) + target; pad every row to the longest with pad_id "
    "(labels -100, mask 0) on padding_side: 'right' for training, 'left' for generation.",
)
def _check_make_batch(fn) -> str:
    seen: set[str] = set()
    names: set[str] = set()
    for case in _BATCH_CASES:
        prompts, targets, pad_id, side = _batch_inputs(case)
        expected = make_batch_reference(prompts, targets, pad_id, side)
        mistakes = _batch_mistakes(prompts, targets, pad_id, side)
        names |= set(mistakes)
        seen |= {m for m, wrong in mistakes.items() if not _same_batch(expected, wrong)}
        shown = [len(p) for p in prompts]
        what = (f"make_batch(prompts of lengths {shown}, "
                f"{'targets of lengths ' + str([len(t) for t in targets]) if targets is not None else 'targets=None'}, "
                f"pad_id={pad_id}, padding_side={side!r})")
        copies = ([list(p) for p in prompts], None if targets is None else [list(t) for t in targets])
        got = call(fn, copies[0], copies[1], pad_id, side)
        if copies[0] != prompts or (targets is not None and copies[1] != targets):
            raise CheckFailed(f"{what} changed its input lists in place; build new ones")
        if got is None:
            raise CheckFailed(f"{what} returned None: did you forget `return`?")
        if not isinstance(got, dict):
            raise CheckFailed(f"{what} returned {a_or_an(type(got).__name__)}; expected a dict with "
                              f"{sorted(expected)} (B, T) tensors")
        missing = [k for k in expected if k not in got]
        if missing:
            raise CheckFailed(f"{what} returned a dict without {missing}; expected the keys {sorted(expected)}"
                              + (" (labels whenever targets are given)" if "labels" in missing else ""))
        for key, value in got.items():
            if key in expected and isinstance(value, torch.Tensor) and value.is_floating_point():
                raise CheckFailed(f"{what}: {key} has dtype {value.dtype}; token ids, masks and labels are integer "
                                  "tensors (torch.long)")
        for key in expected:
            value = got[key].long() if isinstance(got[key], torch.Tensor) and got[key].dtype == torch.bool else got[key]
            try:
                expect_tensor(value, expected[key], f"{what}[{key!r}]", atol=0, rtol=0)
            except CheckFailed as exc:
                for explanation, wrong in mistakes.items():
                    if _same_batch(got, wrong) and not _same_batch(expected, wrong):
                        raise CheckFailed(f"{exc}. Your batch equals {explanation}.") from None
                raise
    if seen != names:
        raise RuntimeError(f"the batch cases never tell these apart from the right answer: {names - seen}")
    return ("rows padded to the longest on the side asked, mask 0 on the padding, labels -100 on the prompt, the image "
            "tokens and the padding: exactly what UnifiedEmbeddingMLLM.tokenize builds.")


# --------------------------------------------------------------------------------------------------
# ch05.splice: the bridge's vectors written over the placeholder positions
# --------------------------------------------------------------------------------------------------
# (rows as lists of segments: "t<n>" n text tokens, "i" one image run of K ids, "p<n>" n pads; K, D, vocab, dtype, seed)
_SPLICE_CASES = [
    ([["p2", "t1", "i", "t3"], ["t1", "i", "t5"]], 3, 8, 20, torch.float32, 5200),
    ([["t1", "i", "t2", "i", "t1"], ["t2", "i", "t4"]], 2, 6, 16, torch.float64, 5201),
    ([["t1", "i", "t3", "p2"], ["t6", "p0"], ["t2", "i", "t1", "p1"]], 4, 5, 12, torch.float32, 5202),
]


def _splice_inputs(case: tuple):
    rows, k, d, vocab, dtype, seed = case
    g = _gen(seed)
    id_rows = []
    for segments in rows:
        ids: list[int] = []
        for seg in segments:
            if seg == "i":
                ids += [IMAGE_ID] * k
            elif seg.startswith("p"):
                ids += [0] * int(seg[1:])
            else:
                ids += torch.randint(4, vocab, (int(seg[1:]),), generator=g).tolist()
        id_rows.append(ids)
    length = max(len(r) for r in id_rows)
    input_ids = torch.tensor([r + [0] * (length - len(r)) for r in id_rows])
    n_images = sum(seg == "i" for segments in rows for seg in segments)
    embedding = nn.Embedding(vocab, d).to(dtype)
    with torch.no_grad():
        embedding.weight.copy_(torch.randn(vocab, d, generator=g).to(dtype))
    image_embeds = (2.0 * torch.randn(n_images, k, d, generator=g) + 0.5).to(dtype)
    return input_ids, image_embeds, embedding


def splice_reference(input_ids: torch.Tensor, image_embeds: torch.Tensor, embed_tokens: nn.Embedding,
                     image_token_id: int) -> torch.Tensor:
    """Token embeddings (B, T, D) with image_embeds (B_img, K, D) written over the placeholder positions, row by row."""
    is_image = input_ids == image_token_id
    embeds = embed_tokens(input_ids.masked_fill(is_image, 0))
    return embeds.masked_scatter(is_image.unsqueeze(-1).expand_as(embeds), image_embeds.to(embeds.dtype).reshape(-1, embeds.shape[-1]))


def _splice_mistakes(input_ids, image_embeds, embed_tokens, image_token_id) -> dict[str, torch.Tensor]:
    is_image = input_ids == image_token_id
    d = image_embeds.shape[-1]
    plain = embed_tokens(input_ids)
    flat = image_embeds.reshape(-1, d)

    def scatter(where: torch.Tensor, values: torch.Tensor = flat, base: torch.Tensor = plain) -> torch.Tensor:
        return base.masked_scatter(where.unsqueeze(-1).expand_as(base), values)

    later = torch.zeros_like(is_image)
    later[:, 1:] = is_image[:, :-1]
    earlier = torch.zeros_like(is_image)
    earlier[:, :-1] = is_image[:, 1:]
    out = {}
    if int(later.sum()) == int(is_image.sum()):
        out["the image tokens one position off (written from one position AFTER the first placeholder): the i-th "
            "image's K vectors go exactly on the positions that hold the image-token id"] = scatter(later)
    if int(earlier.sum()) == int(is_image.sum()):
        out["the image tokens one position off (written from one position BEFORE the first placeholder): the i-th "
            "image's K vectors go exactly on the positions that hold the image-token id"] = scatter(earlier)
    out["the image vectors ADDED to the placeholder's embedding; they replace it"] = plain + scatter(
        is_image, flat, torch.zeros_like(plain))
    out["the plain token embeddings, the image vectors never written in"] = plain
    if image_embeds.shape[0] > 1 and image_embeds.shape[1] > 1:
        out["the image vectors in the wrong order (token by token across images); the placeholders fill row by row: "
            "image 0's K vectors, then image 1's (image_embeds.reshape(-1, D))"] = scatter(is_image, image_embeds.transpose(0, 1).reshape(-1, d))
    return out


@exercise(
    "ch05.splice",
    "Splice the image vectors into the token embeddings",
    hint="embeds = embed_tokens(input_ids) (B, T, D); is_image = input_ids == image_token_id; write "
    "image_embeds.reshape(-1, D) over embeds[is_image] (masked_scatter, torch.where or index assignment), keeping "
    "the graph (no .detach(), no torch.no_grad()).",
)
def _check_splice(fn) -> str:
    _one_thread()
    seen: set[str] = set()
    names: set[str] = set()
    for case in _SPLICE_CASES:
        input_ids, image_embeds, embedding = _splice_inputs(case)
        what = (f"splice(input_ids {tuple(input_ids.shape)} with {image_embeds.shape[0]} image run(s) of K = "
                f"{image_embeds.shape[1]}, image_embeds {tuple(image_embeds.shape)} {image_embeds.dtype}, "
                f"embed_tokens Embedding({embedding.num_embeddings}, {embedding.embedding_dim}), image_token_id={IMAGE_ID})")
        with torch.no_grad():
            expected = splice_reference(input_ids, image_embeds, embedding, IMAGE_ID)
            mistakes = _splice_mistakes(input_ids, image_embeds, embedding, IMAGE_ID)
        names |= set(mistakes)
        seen |= {m for m, wrong in mistakes.items() if not same_values(wrong, expected)}
        ids_in = input_ids.clone()
        images_in = image_embeds.clone().requires_grad_(True)
        mine = nn.Embedding(embedding.num_embeddings, embedding.embedding_dim).to(embedding.weight.dtype)
        with torch.no_grad():
            mine.weight.copy_(embedding.weight)
        got = call(fn, ids_in, images_in, mine, IMAGE_ID)
        if not torch.equal(ids_in, input_ids):
            raise CheckFailed(f"{what} changed input_ids in place; leave it as it was")
        if isinstance(got, tuple):
            raise CheckFailed(f"{what} returned a tuple; return only inputs_embeds (B, T, D)")
        try:
            expect_tensor(got, expected, what)
        except CheckFailed as exc:
            for explanation, wrong in mistakes.items():
                if same_values(got, wrong) and not same_values(wrong, expected):
                    raise CheckFailed(f"{exc}. Your output equals {explanation}.") from None
            raise
        if not got.requires_grad:
            raise CheckFailed(f"{what}: your output is cut off from the computation graph (torch.no_grad(), .detach(), "
                              ".data?): no gradient would reach the bridge or the embeddings")
        projection = torch.randn(expected.shape, generator=_gen(case[-1] + 1), dtype=torch.float64)
        ref_images = image_embeds.clone().requires_grad_(True)
        ref_grads = torch.autograd.grad((splice_reference(input_ids, ref_images, embedding, IMAGE_ID) * projection.to(expected.dtype)).sum(),
                                        [ref_images, embedding.weight])
        my_grads = torch.autograd.grad((got * projection.to(got.dtype)).sum(), [images_in, mine.weight], allow_unused=True)
        for label, g_mine, g_ref in zip(("image_embeds", "embed_tokens.weight"), my_grads, ref_grads):
            if g_mine is None or (g_mine.abs().max() == 0 and g_ref.abs().max() > 0):
                extra = (": the bridge that made them would never learn" if label == "image_embeds"
                         else ": the text tokens' embeddings would never learn")
                raise CheckFailed(f"{what}: no gradient reaches {label} through your output{extra} "
                                  "(look for .detach(), .data, torch.no_grad() or a copy through .tolist())")
            try:
                expect_tensor(g_mine, g_ref, f"the gradient with respect to {label}", atol=1e-5 * max(1.0, float(g_ref.abs().max())))
            except CheckFailed as exc:
                raise CheckFailed(f"{what}: the outputs match but the gradients do not. {exc}") from None
    if seen != names:
        raise RuntimeError(f"the splice cases never tell these apart from the right answer: {names - seen}")
    return ("the image vectors sit exactly on the placeholder positions, image after image, the text embeddings "
            "elsewhere, and gradients reach both the bridge's vectors and the embedding table.")


# --------------------------------------------------------------------------------------------------
# ch05.greedy_decode: generation by hand from inputs_embeds, left-padded
# --------------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _shipped_lm():
    from mmllm_course.pretrained import load_chapter5_lm

    return load_chapter5_lm()


@lru_cache(maxsize=1)
def _tiny_gpt2():
    from mmllm_course.language import CausalLMConfig, make_causal_lm

    lm = make_causal_lm(CausalLMConfig(arch="gpt2", dim=32, depth=2, num_heads=4, mlp_dim=64, context_length=64),
                        _tokenizer(), seed=5).requires_grad_(False)
    g = _gen(5309)
    with torch.no_grad():  # weights far from the init's 0.02, so that attention (positions, padding) changes the argmax
        for name, p in lm.named_parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g) + (1.0 if name.endswith("weight") and p.dim() == 1 else 0.0))
    return lm


def _left_pad(rows: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (length - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (length - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


@lru_cache(maxsize=1)
def _decode_cases() -> list[tuple[str, nn.Module, torch.Tensor, torch.Tensor, int]]:
    """(description, lm, inputs_embeds, attention_mask, max_new_tokens): text prompts the LM reads, left-padded."""
    from mmllm_course.language import CorpusConfig, make_text_corpus

    lm, tok = _shipped_lm()
    corpus = make_text_corpus(4, seed=5300, config=CorpusConfig(min_slots=6, max_slots=14), tokenizer=tok)
    rows = []
    for ids, labels in zip(corpus.input_ids, corpus.labels):
        start = int((labels != IGNORE).nonzero()[0])  # the prompt ends where the target starts
        rows.append(ids[:start].tolist())
    ids, mask = _left_pad(rows)
    with torch.no_grad():
        shipped = lm.get_input_embeddings()(ids)
    gpt2 = _tiny_gpt2()
    g = _gen(5301)
    lengths = [7, 4, 9]
    ids2, mask2 = _left_pad([torch.randint(4, len(tok), (n,), generator=g).tolist() for n in lengths])
    with torch.no_grad():
        random_embeds = gpt2.get_input_embeddings()(ids2) + 0.5 * torch.randn(len(lengths), ids2.shape[1], 32, generator=g)
    return [
        ("the shipped chapter-5 LM (LLaMA) on 4 left-padded prompts", lm, shipped, mask, 8),
        ("a random GPT-2 on 3 left-padded rows of vectors", gpt2, random_embeds, mask2, 5),
        ("the shipped LM on one row without padding", lm, shipped[2:3, int((mask[2] == 0).sum()):], mask[2:3, int((mask[2] == 0).sum()):], 6),
    ]


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)


@torch.no_grad()
def greedy_decode_reference(lm: nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                            max_new_tokens: int, *, positions: bool = True, use_mask: bool = True, feed_back: bool = True,
                            column: int = -1) -> torch.Tensor:
    """Greedy decoding without a cache: (B, T, D) + mask (B, T) -> new ids (B, max_new_tokens). Keywords give the mistakes."""
    embeds, mask = inputs_embeds, attention_mask.long()
    table = lm.get_input_embeddings()
    new = []
    for _ in range(max_new_tokens):
        kwargs = {}
        if use_mask:
            kwargs["attention_mask"] = mask
        if positions:
            kwargs["position_ids"] = _positions(mask)
        logits = lm(inputs_embeds=embeds, **kwargs).logits[:, column]  # (B, V)
        token = logits.argmax(dim=-1)  # (B,)
        new.append(token)
        if feed_back:
            embeds = torch.cat([embeds, table(token)[:, None].to(embeds.dtype)], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return torch.stack(new, dim=1)


_DECODE_MISTAKES: dict[str, dict] = {
    "the logits of the FIRST position ([:, 0]); the next token comes from the LAST column ([:, -1]), the one after "
    "the newest token": dict(column=0),
    "the new tokens never fed back: each step predicts from the prompt alone; append the new token's embedding "
    "(lm.get_input_embeddings()) and a 1 to the mask, then predict again": dict(feed_back=False),
    "no position_ids passed: with left padding the LM then numbers the pads too, so a padded row's text starts at "
    "position > 0; pass position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)": dict(positions=False),
    "no attention_mask passed: the padded positions were attended to; pass the mask (extended by a 1 per new "
    "token)": dict(use_mask=False),
}


@lru_cache(maxsize=1)
def _decode_guard() -> None:
    """The reference equals the LM's own ``generate(inputs_embeds=...)`` on the first case (else the check is wrong)."""
    _, lm, embeds, mask, n = _decode_cases()[0]
    tok = _tokenizer()
    with torch.no_grad():
        out = lm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=n, do_sample=False, eos_token_id=None,
                          pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
    if not torch.equal(out[:, -n:], greedy_decode_reference(lm, embeds, mask, n)):
        raise RuntimeError("greedy_decode_reference differs from lm.generate: the check needs fixing")


@exercise(
    "ch05.greedy_decode",
    "Greedy decoding by hand from inputs_embeds",
    hint="loop max_new_tokens times: position_ids = (mask.cumsum(-1) - 1).clamp(min=0); logits = lm(inputs_embeds=embeds, "
    "attention_mask=mask, position_ids=position_ids).logits[:, -1]; token = logits.argmax(-1); append "
    "lm.get_input_embeddings()(token) to embeds and a column of ones to mask.",
    timeout=60.0,  # the first check of a session imports transformers' LLaMA and loads the shipped LM (10 s on a busy CPU)
)
def _check_greedy_decode(fn) -> str:
    _one_thread()
    _decode_guard()
    seen: set[str] = set()
    tok = _tokenizer()
    for description, lm, embeds, mask, n in _decode_cases():
        what = f"greedy_decode({description}: inputs_embeds {tuple(embeds.shape)}, attention_mask {tuple(mask.shape)}, max_new_tokens={n})"
        expected = greedy_decode_reference(lm, embeds, mask, n)
        mistakes = {text: greedy_decode_reference(lm, embeds, mask, n, **kw) for text, kw in _DECODE_MISTAKES.items()}
        seen |= {m for m, wrong in mistakes.items() if not torch.equal(wrong, expected)}
        embeds_in, mask_in = embeds.clone(), mask.clone()
        got = call(fn, lm, embeds_in, mask_in, n)
        if not (torch.equal(embeds_in, embeds) and torch.equal(mask_in, mask)):
            raise CheckFailed(f"{what} changed inputs_embeds or attention_mask in place; build new tensors with torch.cat")
        if isinstance(got, torch.Tensor) and got.shape == (embeds.shape[0], embeds.shape[1] + n):
            raise CheckFailed(f"{what} returned shape {tuple(got.shape)}, the prompt's columns and the new ones; return "
                              f"only the {n} new token ids per row, (B, max_new_tokens) = {tuple(expected.shape)}")
        if isinstance(got, torch.Tensor) and got.is_floating_point():
            raise CheckFailed(f"{what} returned dtype {got.dtype}; expected token ids (torch.long), the argmax of the logits")
        if isinstance(got, torch.Tensor) and got.dtype != torch.long and not got.is_floating_point():
            got = got.long()
        try:
            expect_tensor(got, expected, what, atol=0, rtol=0)
        except CheckFailed as exc:
            said = ""
            if lm is _shipped_lm()[0]:  # a trained LM writes words worth showing
                said = " Expected text per row: " + "; ".join(repr(t) for t in tok.batch_decode(expected)) + "."
            for explanation, wrong in mistakes.items():
                if same_values(got, wrong, atol=0, rtol=0) and not torch.equal(wrong, expected):
                    raise CheckFailed(f"{exc}. Your tokens equal {explanation}.{said}") from None
            raise CheckFailed(f"{exc}.{said}") from None
    if seen != set(_DECODE_MISTAKES):
        raise RuntimeError(f"the decoding cases never tell these apart from the right answer: {set(_DECODE_MISTAKES) - seen}")
    return ("your loop gives the LM's own greedy generate, token for token, with left padding: what "
            "UnifiedEmbeddingMLLM.generate runs (with a key/value cache, which only makes it faster).")


# --------------------------------------------------------------------------------------------------
# ch05.unified_model (build): the splicing forward as a module, with the library's weights
# --------------------------------------------------------------------------------------------------
_MODEL_CASES = [  # (LM architecture, bridge, N image features, D_enc, seed)
    ("llama", "qformer", 5, 16, 5400),
    ("gpt2", "mlp", 3, 12, 5401),
]


def _model_pair(case: tuple):
    """(reference UnifiedEmbeddingMLLM with random weights, a fresh bridge and LM of the same sizes for the learner)."""
    from mmllm_course.backbones import UnifiedEmbeddingMLLM
    from mmllm_course.bridges import make_bridge
    from mmllm_course.language import CausalLMConfig, make_causal_lm

    arch, bridge_name, n, d_enc, seed = case
    tok = _tokenizer()
    config = CausalLMConfig(arch=arch, dim=32, depth=2, num_heads=4, num_kv_heads=2, mlp_dim=64, context_length=64)
    extra = {"num_queries": 4, "dim": 32, "mlp_dim": 64} if bridge_name == "qformer" else {}

    def parts(s: int):
        with torch.random.fork_rng():
            torch.manual_seed(s)
            bridge = make_bridge(bridge_name, in_dim=d_enc, out_dim=32, **extra)
        return bridge, make_causal_lm(config, tok, seed=s)

    ref_bridge, ref_lm = parts(seed)
    with torch.no_grad():  # no parameter left at an init of exactly 0 or 1
        g = _gen(seed + 7)
        for name, p in ref_bridge.named_parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    ref = UnifiedEmbeddingMLLM(None, ref_bridge, ref_lm, tok, num_image_features=n).eval()
    return ref, parts(seed + 1)


def _model_inputs(ref, case: tuple) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """(input_ids, attention_mask, image_features, labels) batches: left-padded prompts, and right-padded training rows."""
    _, _, n, d_enc, seed = case
    g = _gen(seed + 3)
    gen = ref.tokenize(["<image>Describe the image.", "<image> and <image> What colour?", "A <image>?"], padding_side="left")
    train = ref.tokenize(["<image>Describe the image.", "<image>What shape is it?"],
                         [" a small red circle in the top left", " a square"], padding_side="right")
    return [
        (gen["input_ids"], gen["attention_mask"], 1.5 * torch.randn(4, n, d_enc, generator=g), None),
        (train["input_ids"], train["attention_mask"], torch.randn(2, n, d_enc, generator=g) - 0.2, train["labels"]),
    ]


def _real_logits(out: Any, mask: torch.Tensor) -> torch.Tensor:
    """The logits on real tokens (0 on the padding, where any value is right: nothing reads it)."""
    logits = out.logits if hasattr(out, "logits") else out
    return torch.where(mask.bool()[..., None], logits, torch.zeros((), dtype=logits.dtype))


def _model_forward(module, input_ids, attention_mask, image_features):
    return _real_logits(module(input_ids=input_ids, attention_mask=attention_mask, image_features=image_features), attention_mask)


def _model_mistakes(ref) -> Callable[..., dict[str, torch.Tensor]]:
    def diagnose(input_ids, attention_mask, image_features):
        image_embeds = ref.bridge(image_features)
        embeds = ref.embed(input_ids, image_embeds)
        pos = ref.position_ids(attention_mask)
        is_image = input_ids == ref.image_token_id
        later = torch.zeros_like(is_image)
        later[:, 1:] = is_image[:, :-1]
        plain = ref.lm.get_input_embeddings()(input_ids)
        shifted = plain.masked_scatter(later.unsqueeze(-1).expand_as(plain), image_embeds.reshape(-1, plain.shape[-1]))
        lm = ref.lm
        out = {
            "the LM called without position_ids: with left padding it then numbers the pads too; pass position_ids = "
            "(attention_mask.cumsum(-1) - 1).clamp(min=0)": lm(inputs_embeds=embeds, attention_mask=attention_mask),
            "the LM called without the attention_mask: the padding was attended to": lm(inputs_embeds=embeds, position_ids=pos),
            "the image tokens one position off (written from one position after the first placeholder)": lm(
                inputs_embeds=shifted, attention_mask=attention_mask, position_ids=pos),
            "the LM called on input_ids, the image vectors never spliced in (use inputs_embeds=...)": lm(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=pos),
        }
        return {k: _real_logits(v, attention_mask) for k, v in out.items()}

    return diagnose


@exercise(
    "ch05.unified_model",
    "Build the unified embedding model's forward, on the library's weights",
    hint="store self.bridge and self.lm (the only submodules); forward: image_embeds = self.bridge(image_features); "
    "inputs_embeds = your splice over self.lm.get_input_embeddings(); position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0); "
    "return self.lm(inputs_embeds=..., attention_mask=..., position_ids=..., labels=labels).",
    timeout=60.0,  # imports transformers' LLaMA and GPT-2 the first time
)
def _check_unified_model(cls) -> str:
    _one_thread()
    seen: set[str] = set()
    names: set[str] = set()
    for case in _MODEL_CASES:
        ref, (bridge, lm) = _model_pair(case)
        what = f"MyUnifiedEmbeddingMLLM({type(bridge).__name__}, {type(lm).__name__}, image_token_id={IMAGE_ID})"
        mine = build_learner_module(cls, what, bridge, lm, IMAGE_ID)
        load_reference_weights(mine, ref, what)
        inputs = _model_inputs(ref, case)
        diagnose = _model_mistakes(ref)
        with torch.no_grad():
            for ids, mask, feats, _ in inputs:
                expected = _model_forward(ref, ids, mask, feats)
                for text, wrong in diagnose(ids, mask, feats).items():
                    names.add(text)
                    if not same_values(wrong, expected):
                        seen.add(text)
            ids, mask, feats, _ = inputs[0]
            out = call(mine, input_ids=ids, attention_mask=mask, image_features=feats)
        if out is None:
            raise CheckFailed(f"{what}.forward returned None: return the LM's output (it has .logits and .loss)")
        if not hasattr(out, "logits"):
            raise CheckFailed(f"{what}.forward returned {a_or_an(type(out).__name__)}; return the LM's own output object "
                              "(self.lm(...) returns one with .logits and .loss)")
        try:
            expect_same_forward(mine, ref, [item[:3] for item in inputs], what, forward=_model_forward, diagnose=diagnose)
        except CheckFailed as exc:
            text = str(exc)
            if "no gradient reaches the input #2" in text:  # the image features: the bridge's input
                text = text.replace("the input #2", "image_features (through the bridge)") + (
                    " The bridge would never learn: keep its output in the graph all the way into inputs_embeds.")
            raise CheckFailed(text) from None
        # the loss, with labels: the LM computes it (shifting the labels itself)
        ids, mask, feats, labels = inputs[1]
        with torch.no_grad():
            expected = ref(input_ids=ids, attention_mask=mask, labels=labels, image_features=feats).loss
            shifted = torch.full_like(labels, IGNORE)
            shifted[:, :-1] = labels[:, 1:]
            double = ref(input_ids=ids, attention_mask=mask, labels=shifted, image_features=feats).loss
            got = call(mine, input_ids=ids, attention_mask=mask, image_features=feats, labels=labels)
        loss = getattr(got, "loss", None)
        where = f"{what} with labels {tuple(labels.shape)}"
        if loss is None:
            raise CheckFailed(f"{where}: the output has no .loss; pass labels=labels to self.lm(...)")
        if isinstance(loss, torch.Tensor) and loss.numel() == 1 and abs(float(loss) - float(double)) < 1e-5 < abs(float(double) - float(expected)):
            raise CheckFailed(f"{where}: loss {float(loss):.5f}, expected {float(expected):.5f}. You shifted the labels by one; "
                              "the LM shifts them itself: pass the labels as they are")
        expect_close_scalar(loss, float(expected), f"{where}: the loss")
    if seen != names:
        raise RuntimeError(f"the model cases never tell these apart from the right answer: {names - seen}")
    return ("with the library's weights loaded, your model gives UnifiedEmbeddingMLLM's logits, gradients and loss for a "
            "LLaMA and a GPT-2, a Q-Former and an MLP bridge, left and right padding, one or two images per prompt.")


# --------------------------------------------------------------------------------------------------
# ch05.train_captioner (train tier): the learner's stage-1 bridge captions held-out images
# --------------------------------------------------------------------------------------------------
TRAIN_CAPTIONER_THRESHOLD = 0.90  # exact captions on the check's held-out images
TRAIN_CAPTIONER_EVAL_SEED = 50_505
TRAIN_CAPTIONER_EVAL_SIZE = 200
CAPTION_PROMPT = "<image>Describe the image."


@lru_cache(maxsize=1)
def _shipped_clip():
    from mmllm_course.pretrained import load_chapter2_clip

    clip, _ = load_chapter2_clip()
    return clip.eval().requires_grad_(False)


@lru_cache(maxsize=1)
def train_captioner_eval_data() -> tuple[torch.Tensor, torch.Tensor]:
    """The check's held-out data: the frozen chapter-2 encoder's features (n, 17, 64) and the labels (n, 4).

    New images, drawn with the check's own seed; features exactly as ``UnifiedEmbeddingMLLM`` reads
    them from the shipped mini-CLIP (its vision tower's last hidden states, class token included).
    """
    from mmllm_course.data import generate_shapes

    shapes = generate_shapes(TRAIN_CAPTIONER_EVAL_SIZE, seed=TRAIN_CAPTIONER_EVAL_SEED)
    return chapter5_image_features(shapes.images), shapes.objects[:, 0]


def chapter5_image_features(images: torch.Tensor) -> torch.Tensor:
    """The shipped frozen mini-CLIP's features of ``images`` (n, 3, 32, 32): (n, 17, 64), computed without gradients."""
    clip = _shipped_clip()
    with torch.no_grad():
        return torch.cat([clip.vision(images[i:i + 500]).last_hidden_state for i in range(0, images.shape[0], 500)])


def _learner_bridge(answer: Any) -> nn.Module:
    if isinstance(answer, type):
        raise CheckFailed(f"got the class {answer.__name__}; pass your TRAINED bridge (the object), not its class")
    if callable(answer) and not isinstance(answer, nn.Module):
        try:
            params = inspect.signature(answer).parameters.values()
        except (TypeError, ValueError):
            params = []
        required = [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if required:
            raise CheckFailed(f"got a function that needs arguments ({', '.join(required)}); pass your TRAINED bridge "
                              "(what your training function returned), e.g. check('ch05.train_captioner', my_bridge)")
        answer = call(answer)
    if answer is None:
        raise CheckFailed("got None instead of a trained bridge: did your training function forget `return bridge`?")
    if isinstance(answer, nn.Module) and isinstance(getattr(answer, "bridge", None), nn.Module) and hasattr(answer, "lm"):
        answer = answer.bridge  # the learner's whole model: its bridge is what stage 1 trained
    if not isinstance(answer, nn.Module):
        raise CheckFailed(f"expected your trained bridge (an nn.Module), got {a_or_an(type(answer).__name__)}")
    return answer


def _bridge_tokens(bridge: nn.Module, features: torch.Tensor, width: int) -> torch.Tensor:
    device = next((p.device for p in bridge.parameters()), torch.device("cpu"))
    outs = []
    with torch.no_grad():
        for start in range(0, len(features), 100):
            x = features[start:start + 100]
            out = call(bridge, x.to(device))
            what = f"your bridge on features {tuple(x.shape)}"
            if out is None or isinstance(out, tuple) or not isinstance(out, torch.Tensor):
                raise CheckFailed(f"{what} returned {a_or_an(type(out).__name__)}; expected image tokens (B, K, {width})")
            if out.dim() != 3 or out.shape[0] != len(x) or out.shape[2] != width:
                raise CheckFailed(f"{what} returned shape {tuple(out.shape)}; expected (B, K, {width}): out_dim must be "
                                  f"the LM's width, {width}")
            if not out.is_floating_point() or not torch.isfinite(out).all():
                raise CheckFailed(f"{what} returned non-finite or non-float values")
            outs.append(out.detach().cpu().float())
    return torch.cat(outs)


class _FixedTokens(Bridge):
    """Precomputed image tokens (n, K, D) behind the library's Bridge interface, so the library's own generate runs them.

    Its "features" are each image's row number, (B, 1, 1); it returns that image's K tokens.
    """

    def __init__(self, tokens: torch.Tensor):
        super().__init__()
        self.tokens, self.in_dim, self.out_dim = tokens, 1, int(tokens.shape[-1])

    def num_output_tokens(self, n: int) -> int:
        return int(self.tokens.shape[1])

    def forward(self, index: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.tokens[index[:, 0, 0].long()]


def caption_with_tokens(tokens: torch.Tensor, max_new_tokens: int = 10) -> list[str]:
    """Greedy captions from image tokens (n, K, D) with the shipped LM, through ``UnifiedEmbeddingMLLM.generate``."""
    from mmllm_course.backbones import UnifiedEmbeddingMLLM

    lm, tok = _shipped_lm()
    model = UnifiedEmbeddingMLLM(None, _FixedTokens(tokens), lm, tok, num_image_features=1)
    index = torch.arange(len(tokens), dtype=torch.float32)[:, None, None]  # the bridge reads each image's row number
    texts: list[str] = []
    for start in range(0, len(tokens), 100):
        texts += model.generate([CAPTION_PROMPT] * len(index[start:start + 100]), image_features=index[start:start + 100],
                                max_new_tokens=max_new_tokens)
    return texts


@exercise(
    "ch05.train_captioner",
    "Train a stage-1 bridge that makes the frozen LM caption new images",
    hint="train longer (150 steps or more of 64 images), check that only the bridge learns (the LM frozen, "
    "labels -100 on the prompt and image tokens) and that your batches use the prompt '<image>Describe the image.' "
    "with ' ' + caption as the target.",
    timeout=90.0,  # loads the shipped encoder and LM, encodes 200 images, generates 200 captions
)
def _check_train_captioner(answer) -> str:
    _one_thread()
    from mmllm_course.training import caption_metrics

    bridge = _learner_bridge(answer)
    lm, _ = _shipped_lm()
    features, objects = train_captioner_eval_data()
    was_training = bridge.training
    try:
        bridge.eval()
        tokens = _bridge_tokens(bridge, features, lm.config.hidden_size)
    finally:
        bridge.train(was_training)
    k = tokens.shape[1]
    longest = 1 + k + 5 + 12
    if longest > lm.config.max_position_embeddings:
        raise CheckFailed(f"your bridge gives K = {k} image tokens per image: with the prompt and a caption that is "
                          f"{longest} tokens, more than the LM's context of {lm.config.max_position_embeddings}")
    texts = caption_with_tokens(tokens)
    metrics = caption_metrics(texts, objects)
    wrong = [(t, i) for i, t in enumerate(texts) if t != _caption(objects[i])][:2]
    examples = "; ".join(f"said {t!r} for {_caption(objects[i])!r}" for t, i in wrong)
    detail = (f"held-out exact captions {metrics['exact']:.1%} on {len(texts)} new images (shape {metrics['shape']:.0%}, "
              f"colour {metrics['color']:.0%}, size {metrics['size']:.0%}, position {metrics['position']:.0%}; "
              f"K = {k} image tokens)")
    if metrics["exact"] < TRAIN_CAPTIONER_THRESHOLD:
        raise CheckFailed(f"{detail}: below the {TRAIN_CAPTIONER_THRESHOLD:.0%} bar" + (f" (e.g. {examples})" if examples else "") + ".")
    return f"{detail}: above the {TRAIN_CAPTIONER_THRESHOLD:.0%} bar. The frozen LM reads your bridge's vectors."


def train_captioner_solution(seed: int = 0, steps: int = 150, train_size: int = 4000) -> nn.Module:
    """The solution notebook's stage 1 (exercise 6), with the library's model in place of the learner's: the trained bridge.

    Seed ``seed`` sets the bridge's initial weights, the training images (``generate_shapes(train_size,
    seed=seed)``) and the batch order, as the solution notebook does with seed 0: Q-Former (K = 8),
    batches of 64, AdamW 3e-3, 30 warmup steps then a cosine to 0, gradient clipping at 1.0.
    """
    import math

    from mmllm_course.backbones import UnifiedEmbeddingMLLM
    from mmllm_course.bridges import make_bridge
    from mmllm_course.data import generate_shapes

    lm, tok = _shipped_lm()
    shapes = generate_shapes(train_size, seed=seed)
    features = chapter5_image_features(shapes.images)  # (n, 17, 64), the frozen encoder once
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        bridge = make_bridge("qformer", in_dim=64, out_dim=64, num_queries=8)
    model = UnifiedEmbeddingMLLM(None, bridge, lm, tok, num_image_features=features.shape[1])
    batch = model.tokenize([CAPTION_PROMPT] * train_size, [" " + c for c in shapes.captions])
    optimizer = torch.optim.AdamW(bridge.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 30) * 0.5 * (1 + math.cos(math.pi * step / steps)))
    generator = torch.Generator().manual_seed(seed)
    bridge.train()
    for _ in range(steps):
        idx = torch.randperm(train_size, generator=generator)[:64]
        loss = model(input_ids=batch["input_ids"][idx], attention_mask=batch["attention_mask"][idx],
                     labels=batch["labels"][idx], image_features=features[idx]).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(bridge.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    return bridge.eval()


def train_captioner_seed_run(seed: int) -> dict[str, float]:
    """What ``ch05.train_captioner`` measures for :func:`train_captioner_solution` (seed ``seed``): held-out caption metrics.

    For the benchmark's seed runs (``python -m mmllm_course.bench --seeds 5``): the solution's 90% bar
    must hold on the worst seed. About 10-40 s per seed on one CPU thread, depending on the load.
    """
    from mmllm_course.training import caption_metrics

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        bridge = train_captioner_solution(seed)
        features, objects = train_captioner_eval_data()
        with torch.no_grad():
            tokens = bridge(features)
        return caption_metrics(caption_with_tokens(tokens), objects)
    finally:
        torch.set_num_threads(threads)


def train_captioner_failures(metrics: dict[str, float]) -> list[str]:
    """The check's bar that ``metrics`` (from :func:`train_captioner_seed_run`) would miss; empty if none."""
    exact = metrics["exact"]
    return [] if exact >= TRAIN_CAPTIONER_THRESHOLD else [f"exact {exact:.1%} < {TRAIN_CAPTIONER_THRESHOLD:.0%}"]


def _caption(obj: torch.Tensor) -> str:
    from mmllm_course.data import caption_for

    return caption_for(*[int(v) for v in obj])


# --------------------------------------------------------------------------------------------------
# ch05.top_k_probs (stretch): the distribution sampling draws from
# --------------------------------------------------------------------------------------------------
_TOPK_CASES = [  # (B, V, temperature, top_k, dtype, seed)
    (2, 10, 0.7, 3, torch.float32, 5500),
    (3, 16, 1.5, 1, torch.float64, 5501),
    (1, 8, 1.0, None, torch.float32, 5502),
    (2, 6, 2.0, 6, torch.float32, 5503),
    (4, 12, 0.5, 4, torch.float64, 5504),
]


def top_k_probs_reference(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None) -> torch.Tensor:
    """softmax(logits / temperature) over the top_k largest logits of each row (the rest 0): (B, V) -> (B, V)."""
    scores = logits / temperature
    if top_k is not None and top_k < scores.shape[-1]:
        kth = scores.topk(top_k, dim=-1).values[..., -1:]  # (B, 1) the k-th largest
        scores = scores.masked_fill(scores < kth, float("-inf"))
    return scores.softmax(dim=-1)


def _topk_mistakes(logits: torch.Tensor, temperature: float, top_k: int | None) -> dict[str, torch.Tensor]:
    out = {
        "the logits MULTIPLIED by the temperature; divide them (a temperature below 1 sharpens, above 1 flattens)":
            top_k_probs_reference(logits * temperature ** 2, temperature, top_k),
        "the distribution with the temperature ignored (scores = logits / temperature)": top_k_probs_reference(logits, 1.0, top_k),
        "top_k ignored: every token kept": top_k_probs_reference(logits, temperature, None),
    }
    if top_k is not None and top_k < logits.shape[-1]:
        p = (logits / temperature).softmax(-1)
        kth = (logits / temperature).topk(top_k, dim=-1).values[..., -1:]
        out["top-k applied after the softmax without renormalising: the kept probabilities must sum to 1 (filter the "
            "logits with -inf, then softmax)"] = p.masked_fill(logits / temperature < kth, 0.0)
        zeroed = (logits / temperature).masked_fill(logits / temperature < kth, 0.0)
        out["the filtered logits set to 0 instead of -inf: they still get probability"] = zeroed.softmax(-1)
        if top_k > 1:
            out["only k - 1 tokens kept (scores <= the k-th value removed): the k-th largest stays"] = top_k_probs_reference(
                logits, temperature, top_k - 1)
    return out


@exercise(
    "ch05.top_k_probs",
    "Stretch: the next-token distribution with a temperature and top-k",
    hint="scores = logits / temperature; if top_k: the k-th largest score per row (scores.topk(top_k).values[..., -1:]), "
    "every score below it -> -inf; then a softmax over the vocabulary.",
)
def _check_top_k_probs(fn) -> str:
    seen: set[str] = set()
    names: set[str] = set()
    for b, v, temperature, top_k, dtype, seed in _TOPK_CASES:
        logits = (3.0 * torch.randn(b, v, generator=_gen(seed))).to(dtype)
        what = f"top_k_probs(logits {tuple(logits.shape)} {dtype}, temperature={temperature}, top_k={top_k})"
        expected = top_k_probs_reference(logits, temperature, top_k)
        mistakes = _topk_mistakes(logits, temperature, top_k)
        names |= set(mistakes)
        seen |= {m for m, wrong in mistakes.items() if not same_values(wrong, expected)}
        logits_in = logits.clone()
        got = call(fn, logits_in, temperature, top_k)
        if not torch.equal(logits_in, logits):
            raise CheckFailed(f"{what} changed the logits in place; leave them as they were")
        try:
            expect_tensor(got, expected, what)
        except CheckFailed as exc:
            for explanation, wrong in mistakes.items():
                if same_values(got, wrong) and not same_values(wrong, expected):
                    raise CheckFailed(f"{exc}. Your output equals {explanation}.") from None
            raise
    if seen != names:
        raise RuntimeError(f"the top-k cases never tell these apart from the right answer: {names - seen}")
    return ("your distribution equals transformers' TemperatureLogitsWarper + TopKLogitsWarper + softmax: "
            "torch.multinomial(probs, 1) draws the next token from it.")


# --------------------------------------------------------------------------------------------------
# Questions (only hashes of the answers live here)
# --------------------------------------------------------------------------------------------------
question(
    "ch05.q1",
    "What stage 1 trains, and why",
    {
        "a": "Encoder, bridge and LM all together, since a frozen part could never adapt to the new image tokens it is given.",
        "b": "Only the LM, so that it learns to read the encoder's raw features; the bridge stays at its random initial weights.",
        "c": "Only the bridge: the encoder already sees shapes and the LM already writes from what it reads; the bridge learns to link them.",
        "d": "Only the encoder, so that its features move towards the LM's word embeddings while the bridge and the LM stay fixed.",
    },
    [answer_hash("c")],
    explanation="Stage 1 freezes what already works: the encoder's features and the LM's language. The bridge, a small "
    "module, learns to write vectors the LM reads like its own words; that is cheap, and the LM keeps everything it knew.",
    hint="Look at which parameters have requires_grad in the chapter's stage-1 run, and count the trainable parameters.",
)

question(
    "ch05.q2",
    "Why the image tokens take no loss",
    {
        "a": "They are inputs, not text: no token id is right at those positions, and the LM never has to output an image vector.",
        "b": "Their loss would be too large at first and would swamp the caption's loss, so it is switched off for stability.",
        "c": "Their labels are the image-token id, which the LM already predicts perfectly, so the loss there would be zero.",
        "d": "The attention mask hides them from the LM, so the logits at those positions are undefined and cannot be scored.",
    },
    [answer_hash("a")],
    explanation="A label says which token should come next. At an image position the next element is another image "
    "vector, not a word of the vocabulary; the model is trained to write the caption given the image, so only the "
    "caption's tokens are scored (label -100 elsewhere, PyTorch's ignore_index).",
    hint="What would the 'right answer' be at an image-token position, as a token of the vocabulary?",
)

question(
    "ch05.q3",
    "Where the bridge's K image tokens go",
    {
        "a": "They are added to the embeddings of the prompt's first K text tokens, so that the sequence length does not change.",
        "b": "Into a separate cross-attention block in every LM layer, while the LM's input sequence holds only the text tokens.",
        "c": "After the caption: the LM writes its text first and reads the image last, which is why the labels mask them out.",
        "d": "Into the input sequence: they replace the embeddings at the K positions of the expanded placeholder, read by self-attention.",
    },
    [answer_hash("d")],
    explanation="The unified embedding decoder (LLaVA's design): the placeholder becomes K ids, the embedding table's "
    "rows at those positions are overwritten with the bridge's K vectors, and the unchanged LM attends to them like "
    "to any token. Cross-attention (b) is backbone B, chapter 6.",
    hint="Look at what splice does with input_ids == image_token_id.",
)

question(
    "ch05.q4",
    "Why batched generation pads on the left",
    {
        "a": "Because causal attention only looks to the left, so padding on the right would be attended to by every token.",
        "b": "Each row must end with a real token: the next token comes from the last column and is appended after it.",
        "c": "Left padding makes every row's position ids start at the same number, so the LM needs no position_ids at all.",
        "d": "The tokenizer of a causal LM can only pad on the left; right padding exists for encoder models such as BERT.",
    },
    [answer_hash("b")],
    explanation="Generation reads logits[:, -1] and appends one column for the whole batch. With right padding a short "
    "row's last column is a pad, so its next token would be predicted after padding. With left padding the pads come "
    "first, masked out, and position_ids count real tokens only (that is what makes c wrong).",
    hint="In greedy_decode, which column gives the next token, and where does the new token go?",
)
