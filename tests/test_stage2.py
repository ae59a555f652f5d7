"""Stage 2 (instruction tuning): the instruction data, the chat template, labels on the answer only, and a short run that learns."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from mmllm_course.data import COLORS, POSITIONS, QUESTION_TYPES, SHAPES, SIZES, generate_shapes, make_instructions, question_type
from mmllm_course.language import CHAT_TEMPLATE, chat_prompts, chat_tokenizer, image_question


def test_every_question_is_answered_from_the_image_labels():
    shapes = generate_shapes(200, seed=4)
    qs = make_instructions(shapes, seed=0, questions_per_image=len(QUESTION_TYPES))
    assert len(qs) == 200 * len(QUESTION_TYPES) and Counter(qs.types) == {t: 200 for t in QUESTION_TYPES}
    for q, a, t, i in zip(qs.questions, qs.answers, qs.types, qs.image_index.tolist()):
        s, c, z, p = (int(v) for v in shapes.objects[i, 0])
        assert question_type(q) == t
        want = {"color_of_shape": COLORS[c], "shape_at": SHAPES[s], "size_of_color": SIZES[z], "position_of_shape": POSITIONS[p],
                "color_at": COLORS[c]}.get(t)
        if t == "yes_no":
            named = q.removeprefix("Is there a ").removesuffix("?")
            want = "yes" if named == f"{COLORS[c]} {SHAPES[s]}" else "no"
        assert a == want, (q, a, shapes.captions[i])
    yes = sum(a == "yes" for a, t in zip(qs.answers, qs.types) if t == "yes_no")
    assert 70 <= yes <= 130  # about half
    again = make_instructions(shapes, seed=0, questions_per_image=len(QUESTION_TYPES))
    assert again.questions == qs.questions and torch.equal(again.image_index, qs.image_index)
    assert make_instructions(shapes, seed=1).questions != make_instructions(shapes, seed=0).questions


def test_chat_template_renders_turns_and_the_generation_prompt():
    tok = chat_tokenizer()
    assert tok.chat_template == CHAT_TEMPLATE
    assert chat_prompts(["What colour is the circle?"], tok) == ["<image>Q: What colour is the circle? A:"]
    chat = image_question("What colour is the circle?") + [{"role": "assistant", "content": "red"},
                                                           {"role": "user", "content": "Where is it?"},
                                                           {"role": "assistant", "content": "top left"}]
    text = tok.apply_chat_template(chat, tokenize=False)
    assert text == "<image>Q: What colour is the circle? A: red<|eos|> Q: Where is it? A: top left<|eos|>"
    assert chat_prompts(["Where?"], tok, num_images=2) == ["<image><image>Q: Where? A:"]
    with pytest.raises(Exception, match="role must be user or assistant"):
        tok.apply_chat_template([{"role": "system", "content": "hi"}], tokenize=False)


def test_labels_fall_on_the_answer_only():
    from mmllm_course.backbones import UnifiedEmbeddingMLLM
    from mmllm_course.bridges import make_bridge
    from mmllm_course.language import CausalLMConfig, make_causal_lm

    tok = chat_tokenizer()
    lm = make_causal_lm(CausalLMConfig(dim=32, depth=1, num_heads=4, num_kv_heads=2, mlp_dim=32), tok, seed=0)
    model = UnifiedEmbeddingMLLM(None, make_bridge("mlp", in_dim=16, out_dim=32), lm, tok, num_image_features=4)
    batch = model.tokenize(chat_prompts(["What colour is the circle?", "Where is the star?"], tok), [" red", " top left"])
    for row, answer in zip(batch["labels"], [" red", " top left"]):
        assert tok.decode(row[row != -100]) == answer + tok.eos_token
    ids = batch["input_ids"][0]
    assert (ids == tok.convert_tokens_to_ids("<image>")).sum() == model.num_image_tokens  # the image part, expanded


def test_a_short_stage2_learns_with_only_lora_and_the_bridge_trained():
    """Chapter 5's LM (frozen) with LoRA, a fresh bridge, random-but-fixed features per image: the answer loss falls."""
    from mmllm_course.training import TrainConfig, add_lora, freeze_for_stage, stage_parameter_counts, train
    from mmllm_course.training.recipes import build_captioner, encode_all
    from mmllm_course.training.recipes_ch07 import instruction_batch

    model = build_captioner(seed=0)
    base = {k: v.clone() for k, v in model.lm.state_dict().items()}
    model.lm = add_lora(model.lm, 4)
    freeze_for_stage(model, "stage2")
    counts = stage_parameter_counts(model)
    assert counts["lm"] == 0 and counts["encoder"] == 0 and counts["lm_lora"] > 0
    shapes = generate_shapes(512, seed=0)
    data = instruction_batch(model, shapes, encode_all(model, shapes.images), seed=0)
    history = train(model, data, TrainConfig(steps=60, batch_size=32, lr=3e-3, warmup_steps=5), progress=False)
    first, last = sum(history.loss[:5]) / 5, sum(history.loss[-5:]) / 5
    assert last < 0.5 * first, (first, last)
    merged_base = {k.removeprefix("base_model.model.").replace(".base_layer", ""): v
                   for k, v in model.lm.state_dict().items() if "lora_" not in k}
    assert all(torch.equal(merged_base[k], base[k]) for k in base), "the LM's own weights must not change in stage 2"


def test_evaluate_qa_scores_exact_answers_per_type_and_the_bars():
    """evaluate_qa against a stand-in model that answers right except on every other 'What shape is in ...?'."""
    from types import SimpleNamespace

    from mmllm_course.training.recipes_ch07 import CHAPTER7_BARS, Stage2Run, chapter7_failures, evaluate_qa
    from mmllm_course.training.loop import TrainHistory

    shapes = generate_shapes(40, seed=2)
    qs = make_instructions(shapes, seed=0, questions_per_image=5, types=QUESTION_TYPES[:5])
    calls = []

    def generate(prompts, image_features, max_new_tokens):  # questions come in order, in batches
        start = sum(calls)
        calls.append(image_features.shape[0])
        out = []
        for i, p in enumerate(prompts, start):
            assert p == f"<image>Q: {qs.questions[i]} A:"
            out.append("nonsense" if qs.types[i] == "shape_at" and i % 2 == 0 else qs.answers[i])
        return out

    model = SimpleNamespace(tokenizer=chat_tokenizer(), bridge=torch.nn.Linear(1, 1), generate=generate)
    run = Stage2Run(model, TrainHistory(), "lora", qs, torch.zeros(40, 3, 4))
    from mmllm_course.training import recipes_ch07

    metrics = evaluate_qa(run)
    assert len(calls) == 1
    calls.clear()
    run.answers = recipes_ch07.answer_questions(model, qs, run.held_out_features, batch_size=64)  # several batches
    assert len(calls) == 4 and sum(calls) == len(qs)
    right = [a == t for a, t in zip(run.answers, qs.answers)]
    shape_at = [right[i] for i in qs.of_type("shape_at")]
    assert metrics["qa_all"] == sum(right) / len(right) and metrics["qa_shape_at"] == sum(shape_at) / len(shape_at) < 1
    assert metrics["qa_worst_type"] == metrics["qa_shape_at"] and metrics["qa_color_at"] == 1.0
    assert chapter7_failures(metrics) == [f"{k} {metrics[k]:.1%} < {bar:.0%}" for k, bar in CHAPTER7_BARS.items() if metrics[k] < bar]
    assert chapter7_failures({"qa_all": 0.99, "qa_worst_type": 0.95}) == []
    assert chapter7_failures({"qa_all": 0.90, "qa_worst_type": 0.95}) == ["qa_all 90.0% < 95%"]


def test_caption_replay_puts_stage1_rows_back_into_the_mix():
    from mmllm_course.backbones import UnifiedEmbeddingMLLM
    from mmllm_course.bridges import make_bridge
    from mmllm_course.language import CausalLMConfig, make_causal_lm
    from mmllm_course.training.recipes_ch07 import instruction_batch

    tok = chat_tokenizer()
    lm = make_causal_lm(CausalLMConfig(dim=32, depth=1, num_heads=4, num_kv_heads=2, mlp_dim=32), tok, seed=0)
    model = UnifiedEmbeddingMLLM(None, make_bridge("mlp", in_dim=16, out_dim=32), lm, tok, num_image_features=4)
    shapes = generate_shapes(200, seed=1)
    features = torch.randn(200, 4, 16)
    plain = instruction_batch(model, shapes, features, seed=0)
    mixed = instruction_batch(model, shapes, features, seed=0, caption_fraction=0.3)
    decoded = [tok.decode(row[row != -100], skip_special_tokens=True).strip() for row in mixed["labels"]]
    captions = [i for i, d in enumerate(decoded) if d == shapes.captions[i]]
    assert 40 <= len(captions) <= 80  # about 30% of 200
    assert torch.equal(mixed["image_features"], plain["image_features"]) and torch.equal(plain["image_features"], features)
    for i in range(200):  # the other rows are the questions, unchanged
        if i not in captions:
            a = plain["labels"][i][plain["labels"][i] != -100]
            b = mixed["labels"][i][mixed["labels"][i] != -100]
            assert torch.equal(a, b)
