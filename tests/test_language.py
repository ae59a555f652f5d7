"""The course's tiny causal LMs (transformers LLaMA / GPT-2) and their pretraining text."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from mmllm_course.data import COLORS, POSITIONS, SHAPES, SIZES, caption_for  # noqa: E402
from mmllm_course.language import (  # noqa: E402
    CAPTION_PROMPT,
    IMAGE_TOKEN,
    CausalLMConfig,
    CorpusConfig,
    course_lm_tokenizer,
    make_causal_lm,
    make_text_corpus,
)


@pytest.fixture(scope="module")
def tok():
    return course_lm_tokenizer()


def test_tokenizer_has_the_image_placeholder(tok):
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    assert image_id == 3 and (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) == (0, 1, 2)
    ids = tok("x<image>y <image>", add_special_tokens=False)["input_ids"]
    assert ids.count(image_id) == 2
    assert tok.decode([image_id]) == IMAGE_TOKEN


@pytest.mark.parametrize("arch,cls", [("llama", "LlamaForCausalLM"), ("gpt2", "GPT2LMHeadModel")])
def test_make_causal_lm_builds_transformers_models(tok, arch, cls):
    config = CausalLMConfig(arch=arch, dim=32, depth=1, num_heads=4, num_kv_heads=2, mlp_dim=64, context_length=40)
    lm = make_causal_lm(config, tok, seed=0)
    assert type(lm).__name__ == cls and not lm.training
    ids = torch.randint(0, len(tok), (2, 7))
    out = lm(input_ids=ids, labels=ids)
    assert out.logits.shape == (2, 7, len(tok)) and out.loss.dim() == 0
    assert lm.get_input_embeddings().weight is lm.get_output_embeddings().weight  # tied
    again = make_causal_lm(config, tok, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(lm.state_dict().values(), again.state_dict().values()))
    # the same model through the inputs_embeds door (what the multimodal model uses)
    emb = lm.get_input_embeddings()(ids)
    assert torch.allclose(lm(inputs_embeds=emb).logits, out.logits, atol=1e-6)


def test_config_refuses_bad_sizes():
    with pytest.raises(ValueError, match="arch"):
        CausalLMConfig(arch="mamba")
    with pytest.raises(ValueError, match="divisible"):
        CausalLMConfig(dim=30, num_heads=4)
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        CausalLMConfig(num_heads=4, num_kv_heads=3)
    with pytest.raises(TypeError):
        CausalLMConfig(dim=32.0)


def _words(tok, ids):
    return [tok.decode([i]) for i in ids]


def test_context_reading_corpus_layout(tok):
    corpus = make_text_corpus(50, seed=3, config=CorpusConfig(min_slots=6, max_slots=10), tokenizer=tok)
    prompt = tok(CAPTION_PROMPT, add_special_tokens=False)["input_ids"]
    for i in range(len(corpus)):
        ids = corpus.input_ids[i][corpus.attention_mask[i].bool()].tolist()
        labels = corpus.labels[i][corpus.attention_mask[i].bool()].tolist()
        s, c, z, p = corpus.objects[i].tolist()
        caption = caption_for(s, c, z, p)
        target = tok(" " + caption, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert ids[0] == tok.bos_token_id and ids[-len(target):] == target
        assert labels[-len(target):] == target and all(v == -100 for v in labels[:-len(target)])
        start = len(ids) - len(target) - len(prompt)
        assert ids[start:start + len(prompt)] == prompt
        slots = ids[1:start]
        assert 6 <= len(slots) <= 10
        words = _words(tok, slots)
        for needed in (" " + SHAPES[s], " " + COLORS[c], " " + SIZES[z], *(" " + w for w in POSITIONS[p].split())):
            assert needed in words  # every key word is somewhere in the context
        other_colors = {" " + x for x in COLORS} - {" " + COLORS[c]}
        assert not other_colors & set(words)  # fillers never hold another key word
        assert corpus.texts[i] == " " + caption


def test_isolated_corpus_has_no_context_and_corpus_is_deterministic(tok):
    iso = make_text_corpus(20, seed=1, config=CorpusConfig(context_reading=False), tokenizer=tok)
    prompt = tok(CAPTION_PROMPT, add_special_tokens=False)["input_ids"]
    assert iso.input_ids[:, 1:1 + len(prompt)].tolist() == [prompt] * 20
    a = make_text_corpus(30, seed=5, tokenizer=tok)
    b = make_text_corpus(30, seed=5, tokenizer=tok)
    c = make_text_corpus(30, seed=6, tokenizer=tok)
    assert torch.equal(a.input_ids, b.input_ids) and not torch.equal(a.input_ids, c.input_ids)
    qa = make_text_corpus(200, seed=0, config=CorpusConfig(qa_fraction=0.5), tokenizer=tok)
    answers = sum(not t.startswith(" a ") for t in qa.texts)
    assert 60 < answers < 140


def test_corpus_config_refuses_bad_values():
    with pytest.raises(ValueError, match="min_slots=3 must hold the 5 key-word tokens"):
        CorpusConfig(min_slots=3, max_slots=10)
    with pytest.raises(ValueError, match="max_slots"):
        CorpusConfig(min_slots=10, max_slots=8)
    with pytest.raises(ValueError):
        CorpusConfig(qa_fraction=1.5)
    with pytest.raises(TypeError):
        make_text_corpus(10, config={"min_slots": 6})
