"""An offline byte-level BPE tokenizer: text -> token ids, trained in milliseconds on local text.

Byte-level BPE (GPT-2's scheme): the text is cut into words by a regex, each word is written as its
UTF-8 bytes (256 base symbols, so ANY unicode text encodes and decodes exactly), and the trainer
learns merges of frequent byte pairs until the vocabulary reaches ``vocab_size``. A word that
follows a space carries it as a leading ``Ġ`` ("Ġred"), so " red" and "red" are different tokens.

Ids: ``<|pad|>`` = 0, ``<|eos|>`` = 1, ``<|bos|>`` = 2 (matching ``TextTransformerConfig``'s
defaults), then any extra special tokens (signal tokens such as ``[IMG0]``), then the 256 bytes,
then the merges. Special tokens are matched before the word split, so they never break apart.
Nothing is added automatically on encode: append ``tok.eos_token`` (CLIP pools at it) or prepend
``tok.bos_token`` yourself. ``transformers`` is imported only when a tokenizer is built.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Iterable, Sequence

from mmllm_course._checks import check_int, check_str_sequence
from mmllm_course.data.shapes import COLORS, POSITIONS, SHAPES, SIZES, all_caption_classes, questions_for

if TYPE_CHECKING:  # imported lazily: transformers takes seconds to import
    from transformers import PreTrainedTokenizerFast

BOS_TOKEN, EOS_TOKEN, PAD_TOKEN = "<|bos|>", "<|eos|>", "<|pad|>"
BYTE_ALPHABET_SIZE = 256

# Hand-written sentences so the vocabulary also covers the words the course talks about.
_SENTENCES = (
    "An image is a grid of pixels, and each pixel holds a red, a green and a blue value.",
    "A vision transformer cuts the image into patches and turns each patch into a token.",
    "With a patch size of eight, a 32 by 32 image becomes sixteen patch tokens.",
    "Each patch is flattened and projected to the width of the model by one linear layer.",
    "Position embeddings tell the model where each patch came from.",
    "The class token collects a summary of the whole image.",
    "Attention lets every token look at every other token and mix what it finds.",
    "A query is compared with every key, and the scores weight the values.",
    "The softmax turns the scores into weights that sum to one.",
    "Many heads attend in parallel, each with its own queries, keys and values.",
    "A causal mask stops a token from looking at the tokens that come after it.",
    "A tokenizer turns text into a sequence of integer ids, and back again.",
    "Byte pair encoding merges the most frequent pairs of symbols, one merge at a time.",
    "Special tokens mark the beginning and the end of a text, or where an image goes.",
    "Padding makes every row of a batch the same length; the attention mask hides it.",
    "The embedding table maps every token id to a vector.",
    "A language model predicts the next token from the tokens before it.",
    "The loss is the cross entropy between the predicted and the true next token.",
    "CLIP trains an image encoder and a text encoder so that matching pairs have similar embeddings.",
    "The contrastive loss pulls each image towards its own caption and away from the others.",
    "Zero-shot classification compares an image with a prompt for every class, such as a photo of a dog.",
    "A bridge, or projector, maps image features into the embedding space of the language model.",
    "LLaVA feeds projected image tokens to the language model in front of the text.",
    "A Q-Former uses a few learned queries to read the image with cross attention.",
    "Flamingo adds gated cross attention layers between the frozen layers of a language model.",
    "The backbone is a large language model that reads text tokens and image tokens alike.",
    "The output projection turns hidden states into logits over the vocabulary.",
    "A generator can decode tokens back into text, an image, a sound or a shape.",
    "A diffusion model learns to remove noise from an image, one step at a time.",
    "Audio is turned into a log-mel spectrogram before an encoder reads it.",
    "A point cloud describes a three-dimensional shape with a few hundred points.",
    "The model is small, the data is synthetic, and it trains on a laptop in a minute.",
    "Training uses the AdamW optimizer, a warmup and a cosine learning rate schedule.",
    "A frozen model keeps its weights; only the new layers learn.",
    "Describe the image. What do you see in this picture?",
    "There is one shape in the picture. There are two shapes in the picture.",
    "The picture shows a shape on a grey background with a little noise.",
    "Answer the question about the image with a single word.",
    "Question: what colour is it? Answer: it is red.",
    "The colours are red, green, blue and yellow; the sizes are small and large.",
    "The shapes are a circle, a square, a triangle, a star and a cross.",
    "The four quadrants are the top left, the top right, the bottom left and the bottom right.",
)


def default_corpus() -> list[str]:
    """A small deterministic English corpus built in memory: shapes-world text plus course sentences.

    Every one-object caption (plain and as "a photo of ..."), every question the shapes world asks,
    its answers, and the hand-written sentences above. No files, no downloads.
    """
    captions = all_caption_classes()
    texts = list(captions)
    texts += [f"a photo of {c}" for c in captions]
    texts += [f"{captions[i]} and {captions[-1 - i]}" for i in range(0, len(captions), 7)]
    for s in range(len(SHAPES)):
        for c in range(len(COLORS)):
            for p in range(len(POSITIONS)):
                texts += [f"{q} {a}" for q, a in questions_for([(s, c, (s + p) % len(SIZES), p)])]
    texts += list(SHAPES + COLORS + SIZES + POSITIONS)
    texts += list(_SENTENCES)
    return texts


def train_bpe_tokenizer(
    texts: Iterable[str] | None = None,
    vocab_size: int = 512,
    *,
    extra_special_tokens: Sequence[str] = (),
    bos_token: str = BOS_TOKEN,
    eos_token: str = EOS_TOKEN,
    pad_token: str = PAD_TOKEN,
    min_frequency: int = 2,
) -> "PreTrainedTokenizerFast":
    """Train a byte-level BPE tokenizer on ``texts`` (default: :func:`default_corpus`), deterministically.

    Returns a ``transformers.PreTrainedTokenizerFast`` with bos/eos/pad set and
    ``extra_special_tokens`` (e.g. ``["[IMG0]", "[IMG1]"]``) registered as tokens that never split.
    ``vocab_size`` counts everything: specials + 256 bytes + merges, so it must be at least
    ``256 + number of special tokens``. Save with ``save_pretrained``; reload with ``AutoTokenizer.from_pretrained``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    # A bare str would be iterated character by character: refuse it (wrap it in a list).
    texts = None if texts is None else check_str_sequence(texts, "texts")
    extra_special_tokens = check_str_sequence(extra_special_tokens, "extra_special_tokens")
    specials = [pad_token, eos_token, bos_token, *extra_special_tokens]
    if any(not isinstance(t, str) or not t for t in specials):
        raise ValueError(f"special tokens must be non-empty strings, got {specials!r}")
    if len(set(specials)) != len(specials):
        raise ValueError(f"special tokens must be distinct, got {specials!r}")
    minimum = BYTE_ALPHABET_SIZE + len(specials)
    check_int(vocab_size, "vocab_size")
    if vocab_size < minimum:
        raise ValueError(
            f"vocab_size must be an integer >= {minimum} (256 bytes + {len(specials)} special tokens), got {vocab_size!r}"
        )
    check_int(min_frequency, "min_frequency")
    texts = default_corpus() if texts is None else texts
    if not texts:
        raise ValueError(f"texts must be a non-empty iterable of strings, got {len(texts)} items")

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return _wrap(backend, bos_token, eos_token, pad_token, extra_special_tokens)


def _wrap(backend, bos_token: str, eos_token: str, pad_token: str, extra_special_tokens: Sequence[str]):
    """A ``tokenizers`` backend as a ``transformers`` fast tokenizer with its special tokens named."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos_token,
        eos_token=eos_token,
        pad_token=pad_token,
        extra_special_tokens=list(extra_special_tokens),
    )


@functools.lru_cache(maxsize=8)
def _shapes_backend_json(vocab_size: int, extra_special_tokens: tuple[str, ...]) -> str:
    tok = train_bpe_tokenizer(None, vocab_size, extra_special_tokens=extra_special_tokens)
    return tok.backend_tokenizer.to_str()


def shapes_tokenizer(vocab_size: int = 512, extra_special_tokens: Sequence[str] = ()) -> "PreTrainedTokenizerFast":
    """The course tokenizer: trained on :func:`default_corpus`, so shapes-world words are single tokens.

    Training runs once per process and settings; each call returns a fresh wrapper, so adding
    tokens to one copy leaves the others unchanged. Ids: pad 0, eos 1, bos 2.
    """
    from tokenizers import Tokenizer

    extra = tuple(check_str_sequence(extra_special_tokens, "extra_special_tokens"))
    vocab_size = check_int(vocab_size, "vocab_size")
    backend = Tokenizer.from_str(_shapes_backend_json(vocab_size, extra))
    return _wrap(backend, BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, extra)
