"""Signal tokens: the words an LM says when it means "an image goes here" (NExT-GPT, GILL).

An LLM that should *produce* an image cannot write pixels, and writing a caption for a separate
text-to-image model throws away everything the caption's words cannot say. NExT-GPT
(Wu et al. 2023, https://arxiv.org/abs/2309.05519) and GILL (Koh et al. 2023,
https://arxiv.org/abs/2305.17216) instead add ``k`` new tokens ``[IMG0]..[IMGk-1]`` to the
vocabulary. The LM learns to emit them after a request ("draw a small red circle in the top
left"), and their **hidden states**, continuous vectors, not the words, go through an output
projector to the generator::

    request ids (B, T)  -> LM -> ... [IMG0] [IMG1] ... [IMGk-1]
    hidden states (B, T, D) at those k positions -> (B, K, D) -> OutputProjector -> (B, L, D_cond)

This module holds the token bookkeeping: the names (:func:`signal_token_names`), adding them to a
``transformers`` tokenizer and LM (:func:`add_signal_tokens`), the labels of the signal-token NLL
(:func:`signal_token_labels`) and the gather of their hidden states (:func:`signal_hidden_states`).
Dims: ``B`` rows, ``T`` tokens, ``V`` vocabulary, ``D`` the LM's width, ``K`` signal tokens.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from mmllm_course._checks import InputTypeError, check_int, check_tensor, describe

_PREFIX = re.compile(r"^[A-Za-z0-9_]+$")


def signal_token_names(prefix: str = "IMG", count: int = 4) -> list[str]:
    """``["[IMG0]", "[IMG1]", ...]``: ``count`` signal-token names (chapter 11 uses ``prefix="3D"``)."""
    if not isinstance(prefix, str):
        raise InputTypeError(f"prefix must be a str such as 'IMG' or '3D', got {describe(prefix)}")
    if not _PREFIX.match(prefix):
        raise ValueError(f"prefix must be letters, digits or '_' (it becomes '[{{prefix}}0]'), got {prefix!r}")
    count = check_int(count, "count")
    return [f"[{prefix}{i}]" for i in range(count)]


def add_signal_tokens(lm, tokenizer, tokens: Sequence[str]) -> list[int]:
    """Add ``tokens`` (e.g. :func:`signal_token_names`) to ``tokenizer`` as special tokens and grow ``lm``'s embeddings; their ids.

    Special tokens are never split by the BPE and each gets one new row in the embedding table (and
    in the tied output layer), ``resize_token_embeddings(len(tokenizer), mean_resizing=False)``.
    Idempotent: calling it twice returns the same ids and resizes nothing. In place.
    See :func:`~mmllm_course.language.add_special_tokens_to_lm` (the shared logic).
    """
    from mmllm_course.language.lm import add_special_tokens_to_lm

    return add_special_tokens_to_lm(lm, tokenizer, tokens)


def _check_ids(ids, name: str, allow_empty: bool = False) -> list[int]:
    if isinstance(ids, torch.Tensor):
        if ids.dim() > 1 or ids.is_floating_point() or ids.dtype == torch.bool:
            raise InputTypeError(f"{name} must be a sequence of token ids (ints), got {describe(ids)}")
        ids = ids.tolist()
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
        raise InputTypeError(f"{name} must be a sequence of token ids (ints, e.g. from add_signal_tokens), got {describe(ids)}")
    out = [check_int(i, f"each of {name}", minimum=0) for i in ids]
    if not out and not allow_empty:
        raise ValueError(f"{name} must hold at least one token id, got an empty sequence")
    if len(set(out)) != len(out):
        raise ValueError(f"{name} must hold distinct token ids, got {out}")
    return out


def _check_input_ids(input_ids) -> torch.Tensor:
    check_tensor(input_ids, "input_ids", "(B, T)", ndim=2, kind="int")
    return input_ids


def signal_token_labels(input_ids: torch.Tensor, signal_ids: Sequence[int], keep_ids: Sequence[int] = ()) -> torch.Tensor:
    """Labels (B, T) for the signal-token NLL: the id where ``input_ids`` holds a signal token (or one of ``keep_ids``), -100 elsewhere.

    The prompt and the padding are masked (-100 is the ignore index of ``transformers``' causal LM
    loss and of :func:`~mmllm_course.output.signal_token_nll`), so the loss only teaches the LM to
    *emit* the signal tokens (and, with ``keep_ids=[eos]``, to stop after them). NOT shifted: the
    causal LM's loss shifts by one itself.
    """
    _check_input_ids(input_ids)
    signal = _check_ids(signal_ids, "signal_ids")
    keep = _check_ids(keep_ids, "keep_ids", allow_empty=True)
    wanted = torch.tensor(signal + keep, dtype=input_ids.dtype, device=input_ids.device)
    hit = torch.isin(input_ids, wanted)
    return torch.where(hit, input_ids.long(), torch.full_like(input_ids, -100, dtype=torch.long))


def signal_hidden_states(hidden: torch.Tensor, input_ids: torch.Tensor, signal_ids: Sequence[int]) -> torch.Tensor:
    """The hidden states (B, K, D) at the positions of the K signal tokens, in the order of ``signal_ids``.

    hidden: (B, T, D), e.g. ``lm(ids, output_hidden_states=True).hidden_states[-1]``; input_ids:
    (B, T). Each row must hold each signal token exactly once (a ValueError names the first row that
    does not: the LM did not emit them, or emitted one twice).
    """
    check_tensor(hidden, "hidden", "(B, T, D)", ndim=3, kind="float")
    _check_input_ids(input_ids)
    signal = _check_ids(signal_ids, "signal_ids")
    if tuple(hidden.shape[:2]) != tuple(input_ids.shape):
        raise ValueError(f"hidden (B, T, D) and input_ids (B, T) must agree on (B, T), got {tuple(hidden.shape)} "
                         f"and {tuple(input_ids.shape)}")
    ids = torch.tensor(signal, dtype=input_ids.dtype, device=input_ids.device)
    match = input_ids.unsqueeze(-1) == ids  # (B, T, K)
    counts = match.sum(1)  # (B, K)
    bad = (counts != 1).any(1).nonzero().flatten()
    if len(bad):
        row = int(bad[0])
        found = {s: int(c) for s, c in zip(signal, counts[row].tolist())}
        raise ValueError(f"row {row} of input_ids must hold each signal token {signal} exactly once, got counts {found} "
                         f"({len(bad)} of {input_ids.shape[0]} rows are like this)")
    positions = match.float().argmax(1)  # (B, K): the one position of each signal token
    return torch.gather(hidden, 1, positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
