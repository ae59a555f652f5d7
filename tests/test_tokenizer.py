"""The offline byte-level BPE tokenizer: deterministic training, exact round trips, special tokens, save/reload."""

import pytest

from mmllm_course.data import (
    COLORS,
    SHAPES,
    SIZES,
    all_caption_classes,
    default_corpus,
    shapes_tokenizer,
    train_bpe_tokenizer,
)

SIGNALS = ["[IMG0]", "[IMG1]", "<image>"]


@pytest.fixture(scope="module")
def tok():
    return train_bpe_tokenizer(vocab_size=512, extra_special_tokens=SIGNALS)


def test_default_corpus_is_deterministic_and_covers_the_world():
    corpus = default_corpus()
    assert corpus == default_corpus()
    text = "\n".join(corpus)
    assert set(all_caption_classes()) <= set(corpus)
    assert all(w in text for w in SHAPES + COLORS + SIZES)


def test_training_is_deterministic(tok):
    again = train_bpe_tokenizer(vocab_size=512, extra_special_tokens=SIGNALS)
    assert tok.backend_tokenizer.to_str() == again.backend_tokenizer.to_str()  # same vocabulary and merges
    assert len(tok) == 512


def test_special_token_ids(tok):
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) == (0, 1, 2)
    assert tok.convert_tokens_to_ids(SIGNALS) == [3, 4, 5]
    batch = tok(["a red star", "a small red star in the top left"], padding=True)
    assert batch["input_ids"][0][-1] == tok.pad_token_id and batch["attention_mask"][0][-1] == 0
    assert len(batch["input_ids"][0]) == len(batch["input_ids"][1])


@pytest.mark.parametrize(
    "text",
    [
        "a small red circle in the top left",
        "  leading spaces, trailing\n\ttabs  ",
        "Ünïcödé, 漢字, emoji 😀🚀 and a zero-width\u200bjoiner",
        "x",
        "",
        "supercalifragilistic1234567890!?",
    ],
)
def test_round_trip_any_text(tok, text):
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    assert all(0 <= i < len(tok) for i in ids)


def test_signal_tokens_never_split(tok):
    for signal in SIGNALS:
        for text in [signal, f"look{signal}here", f"a {signal} b", f"{signal}{signal}"]:
            ids = tok(text)["input_ids"]
            sid = tok.convert_tokens_to_ids(signal)
            assert ids.count(sid) == text.count(signal), (text, tok.convert_ids_to_tokens(ids))
            assert tok.decode(ids) == text
    # Without being special, "[IMG0]" would be several byte-level pieces.
    plain = train_bpe_tokenizer(vocab_size=512)
    assert len(plain("[IMG0]")["input_ids"]) > 1


def test_shapes_words_are_single_tokens():
    tok = shapes_tokenizer()
    for word in SHAPES + COLORS + SIZES + ("top", "bottom", "left", "right", "colour", "shape"):
        assert len(tok(" " + word)["input_ids"]) == 1, (word, tok.tokenize(" " + word))
    caption = "a small red circle in the top left"
    assert len(tok(caption)["input_ids"]) == len(caption.split())
    assert tok.eos_token_id == 1 and tok.pad_token_id == 0


def test_shapes_tokenizer_is_cached_but_each_copy_is_independent():
    a, b = shapes_tokenizer(), shapes_tokenizer()
    assert a is not b and a("a blue star")["input_ids"] == b("a blue star")["input_ids"]
    a.add_special_tokens({"extra_special_tokens": ["[NEW]"]})
    assert len(a) == len(b) + 1
    assert len(shapes_tokenizer()) == len(b)


def test_save_and_reload_gives_the_same_ids(tok, tmp_path):
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    back = AutoTokenizer.from_pretrained(tmp_path)
    texts = ["a large yellow cross in the bottom right", "look[IMG1]at 😀<image>", "What colour is the star?"]
    for text in texts:
        assert back(text)["input_ids"] == tok(text)["input_ids"]
    assert (back.pad_token_id, back.eos_token_id, back.bos_token_id) == (0, 1, 2)
    assert list(back.extra_special_tokens) == SIGNALS
    assert len(back) == len(tok)


def test_training_on_custom_text_with_no_merges():
    texts = ["hello hello world", "héllo"]
    tok = train_bpe_tokenizer(texts, vocab_size=259)  # 256 bytes + 3 specials: no room for merges
    assert len(tok) == 259
    assert len(tok("hello")["input_ids"]) == 5
    assert tok.decode(tok("héllo wörld")["input_ids"]) == "héllo wörld"
    bigger = train_bpe_tokenizer(texts, vocab_size=300)
    assert len(bigger("hello")["input_ids"]) == 1  # frequent word merged into one token


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"vocab_size": 100}, r">= 259"),
        ({"vocab_size": 259, "extra_special_tokens": ["[IMG0]"]}, r">= 260"),
        ({"vocab_size": 512.0}, "vocab_size"),
        ({"extra_special_tokens": ["<|eos|>"]}, "distinct"),
        ({"extra_special_tokens": [""]}, "non-empty"),
        ({"texts": []}, "texts"),
        ({"min_frequency": 0}, "min_frequency"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train_bpe_tokenizer(**kwargs)
