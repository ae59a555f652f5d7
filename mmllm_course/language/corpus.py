"""Text the course's LM is pretrained on: captions and answers of the shapes world, with or without a context to read.

A real LLM has read so much text that it copies facts from its context into its answer. A frozen LM
that has only ever seen isolated captions ("a small red circle in the top left") has not: it learned
the caption *distribution*, never to look back at earlier tokens. Put image tokens in front of it
and there is nothing in its weights that reads them, so a bridge trained into the frozen LM learns
nothing useful (chapter 5 measures it: exact captions stay near chance).

The fix imitates in-context reading with text alone. Each example starts with ``S`` context slots
(:class:`CorpusConfig` ``min_slots``..``max_slots``) of random filler tokens with the example's key
words (size, colour, shape, position) dropped in at random slots, in random order, some repeated;
then the prompt, then the caption (or a question and its answer)::

    <bos> | ' yellow' 'ĠA' ... ' star' ' bottom' ' right' ... ' large' | Describe the image. | a large yellow star in the bottom right <eos>
          |<---------------------- S context slots ------------------->|<------- prompt ---->|<---------- target (loss) ----------->|

To write the caption the LM must find the words in the slots: it learns to read its context. Later
the image tokens a bridge produces take the slots' place, and the bridge learns to "write" key-word-like
vectors that the frozen LM already knows how to read. Loss is on the target only (labels -100 elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmllm_course._checks import InputTypeError, check_int, check_number, describe
from mmllm_course.data import COLORS, POSITIONS, SHAPES, SIZES, caption_for, questions_for

CAPTION_PROMPT = "Describe the image."
IGNORE_INDEX = -100  # label of a position that takes no loss (PyTorch's cross_entropy default)
KEY_TOKENS = 5  # size, colour, shape, and the two words of a position ("top left") are one token each


@dataclass
class CorpusConfig:
    """What a text corpus holds. ``context_reading=False`` gives the pitfall's isolated examples (no slots)."""

    context_reading: bool = True
    min_slots: int = 6  # S is drawn uniformly in [min_slots, max_slots] per example
    max_slots: int = 24
    max_repeats: int = 2  # each key word appears 1..max_repeats times in the slots (once each if S is too short)
    qa_fraction: float = 0.0  # share of question -> answer examples (the rest are captions)
    prompt: str = CAPTION_PROMPT

    def __post_init__(self) -> None:
        if not isinstance(self.context_reading, bool):
            raise InputTypeError(f"context_reading must be a bool, got {describe(self.context_reading)}")
        check_int(self.min_slots, "min_slots")
        check_int(self.max_slots, "max_slots")
        check_int(self.max_repeats, "max_repeats")
        check_number(self.qa_fraction, "qa_fraction", 0.0, 1.0)
        if not isinstance(self.prompt, str):
            raise InputTypeError(f"prompt must be a str, got {describe(self.prompt)}")
        if self.max_slots < self.min_slots:
            raise ValueError(f"max_slots={self.max_slots} must be >= min_slots={self.min_slots}")
        if self.min_slots < KEY_TOKENS:
            raise ValueError(f"min_slots={self.min_slots} must hold the {KEY_TOKENS} key-word tokens "
                             f"(size, colour, shape and the two position words): at least {KEY_TOKENS}")


@dataclass
class TextCorpus:
    """Tokenised examples, right-padded: ``input_ids``, ``attention_mask``, ``labels`` all (n, T); ``objects`` (n, 4)."""

    input_ids: torch.Tensor  # (n, T) long, pad id after the end
    attention_mask: torch.Tensor  # (n, T) long, 1 = real token
    labels: torch.Tensor  # (n, T) long, IGNORE_INDEX except on the target tokens (and eos)
    objects: torch.Tensor  # (n, 4) the (shape, color, size, position) labels each example talks about
    texts: list[str]  # the decoded target of each example (caption or answer)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def tensors(self) -> dict[str, torch.Tensor]:
        """The model inputs as a dict (``input_ids``, ``attention_mask``, ``labels``) for a training loop."""
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "labels": self.labels}


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def key_word_ids(tokenizer) -> set[int]:
    """Ids of every token of every shapes-world attribute word (with its leading space)."""
    ids: set[int] = set()
    for word in SHAPES + COLORS + SIZES + POSITIONS:
        ids.update(_ids(tokenizer, " " + word))
    return ids


def make_text_corpus(n: int, seed: int = 0, config: CorpusConfig | None = None, tokenizer=None) -> TextCorpus:
    """``n`` examples over random shapes-world objects (uniform over the 160 of them), deterministic in ``seed``.

    See the module docstring for the layout. ``tokenizer`` defaults to the course LM tokenizer.
    """
    from mmllm_course.language.lm import course_lm_tokenizer

    n = check_int(n, "n")
    seed = check_int(seed, "seed", minimum=0)
    config = CorpusConfig() if config is None else config
    if not isinstance(config, CorpusConfig):
        raise InputTypeError(f"config must be a CorpusConfig or None, got {describe(config)}")
    tokenizer = course_lm_tokenizer() if tokenizer is None else tokenizer
    g = torch.Generator().manual_seed(seed)
    sizes = (len(SHAPES), len(COLORS), len(SIZES), len(POSITIONS))
    objects = torch.stack([torch.randint(0, k, (n,), generator=g) for k in sizes], dim=1)  # (n, 4)
    keys = key_word_ids(tokenizer)
    specials = set(tokenizer.all_special_ids)
    filler = torch.tensor([i for i in range(len(tokenizer)) if i not in keys and i not in specials])
    word_ids = [[_ids(tokenizer, " " + w) for w in names] for names in (SHAPES, COLORS, SIZES, POSITIONS)]
    prompt_ids = _ids(tokenizer, config.prompt)
    qa_draw = torch.rand(n, generator=g) < config.qa_fraction
    rows, label_rows, texts = [], [], []
    for i in range(n):
        obj = [int(v) for v in objects[i]]
        if bool(qa_draw[i]):
            qa = questions_for([obj])
            q, a = qa[int(torch.randint(len(qa), (1,), generator=g))]
            prefix, target = _ids(tokenizer, q), " " + a
        else:
            prefix, target = prompt_ids, " " + caption_for(*obj)
        target_ids = _ids(tokenizer, target) + [tokenizer.eos_token_id]
        context: list[int] = []
        if config.context_reading:
            slots = int(torch.randint(config.min_slots, config.max_slots + 1, (1,), generator=g))
            pieces = [word_ids[a][obj[a]] for a in range(4)]
            repeats = torch.randint(1, config.max_repeats + 1, (4,), generator=g).tolist()
            if sum(r * len(p) for r, p in zip(repeats, pieces)) > slots:
                repeats = [1, 1, 1, 1]
            pieces = [p for p, r in zip(pieces, repeats) for _ in range(r)]
            n_fill = slots - sum(len(p) for p in pieces)
            units: list[list[int]] = [[int(t)] for t in filler[torch.randint(len(filler), (n_fill,), generator=g)]] + pieces
            for j in torch.randperm(len(units), generator=g).tolist():
                context += units[j]
        ids = [tokenizer.bos_token_id] + context + prefix + target_ids
        labels = [IGNORE_INDEX] * (len(ids) - len(target_ids)) + target_ids
        rows.append(ids)
        label_rows.append(labels)
        texts.append(target)
    length = max(len(r) for r in rows)
    input_ids = torch.full((n, length), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros(n, length, dtype=torch.long)
    labels = torch.full((n, length), IGNORE_INDEX, dtype=torch.long)
    for i, (r, lab) in enumerate(zip(rows, label_rows)):
        input_ids[i, : len(r)] = torch.tensor(r)
        attention_mask[i, : len(r)] = 1
        labels[i, : len(lab)] = torch.tensor(lab)
    return TextCorpus(input_ids, attention_mask, labels, objects, texts)
