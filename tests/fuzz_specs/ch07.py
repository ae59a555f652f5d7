"""Fuzz specs for chapter 7's exports: instruction data, the chat template, LoRA and the stages."""

from __future__ import annotations

import os
import tempfile


def specs(fuzz):
    import torch

    from mmllm_course.data import InstructionSet, generate_shapes, make_instructions, question_type, scene_questions
    from mmllm_course.language import CausalLMConfig, chat_prompts, chat_tokenizer, image_question, make_causal_lm
    from mmllm_course.training import (
        add_lora,
        freeze_for_stage,
        load_adapters,
        lora_parameter_count,
        merge_lora,
        save_adapters,
        stage_parameter_counts,
    )

    Spec, Call, fs = fuzz.Spec, fuzz.Call, fuzz._fs

    def lm(seed=0):
        return make_causal_lm(CausalLMConfig(dim=32, depth=1, num_heads=4, num_kv_heads=2, mlp_dim=32), seed=seed)

    def adapted():
        return add_lora(lm(), 2, ("q_proj", "v_proj"))

    def saved() -> str:
        folder = os.path.join(tempfile.gettempdir(), f"mmllm_fuzz_lora_{os.getpid()}")
        save_adapters(adapted(), folder)
        return folder

    def mllm(lora: bool = False):
        from mmllm_course.backbones import UnifiedEmbeddingMLLM
        from mmllm_course.bridges import make_bridge

        torch.manual_seed(0)
        return UnifiedEmbeddingMLLM(torch.nn.Linear(4, 16), make_bridge("mlp", in_dim=16, out_dim=32), adapted() if lora else lm(),
                                    chat_tokenizer(), num_image_features=3)

    def shapes():
        return generate_shapes(4, seed=0)

    return {
        "CHAT_TEMPLATE": fuzz.CONSTANT,
        "QUESTION_TYPES": fuzz.CONSTANT,
        "LLAMA_ATTENTION": fuzz.CONSTANT,
        "STAGES": fuzz.CONSTANT,
        "chat_tokenizer": Spec(lambda: [Call(chat_tokenizer)]),
        "image_question": Spec(lambda: [Call(image_question, ("What colour is the circle?",), dict(num_images=2), zero_ok=fs("num_images"))],
                               lambda: [("question 5", lambda: image_question(5))]),
        "chat_prompts": Spec(
            lambda: [Call(chat_prompts, (["What colour is the circle?", "Where is the star?"],), dict(tokenizer=chat_tokenizer(), num_images=1),
                          zero_ok=fs("num_images"))],
            lambda: [("one str", lambda: chat_prompts("What colour is the circle?")), ("no questions", lambda: chat_prompts([]))]),
        "InstructionSet": Spec(lambda: [Call(InstructionSet, (["q"], ["a"], ["color_at"], torch.zeros(1, dtype=torch.long)))], mutate=False),
        "make_instructions": Spec(
            lambda: [Call(make_instructions, (shapes(),), dict(seed=1, questions_per_image=2, types=("shape_at", "yes_no")), zero_ok=fs("seed"))],
            lambda: [("unknown type", lambda: make_instructions(shapes(), types=("colour",))),
                     ("3 per image of 2 types", lambda: make_instructions(shapes(), questions_per_image=3, types=("shape_at", "yes_no"))),
                     ("images tensor", lambda: make_instructions(shapes().images))]),
        "question_type": Spec(lambda: [Call(question_type, ("Where is the star?",))],
                              lambda: [("not a question of ours", lambda: question_type("Hello?")), ("5", lambda: question_type(5))]),
        "scene_questions": Spec(
            lambda: [Call(scene_questions, ([[0, 1, 1, 2]],), dict(generator=torch.Generator().manual_seed(0)))],
            lambda: [("shape label 9", lambda: scene_questions([[9, 0, 0, 0]])), ("generator 'abc'", lambda: scene_questions([[0, 0, 0, 0]], "abc"))]),
        "lora_parameter_count": Spec(
            lambda: [Call(lora_parameter_count, (lm(), 4, ("q_proj", "v_proj")))],
            lambda: [("missing target", lambda: lora_parameter_count(lm(), 4, ("query",))), ("a peft model", lambda: lora_parameter_count(adapted(), 4))]),
        "add_lora": Spec(
            lambda: [Call(add_lora, (lm(), 2, ("q_proj", "o_proj")), dict(alpha=4.0, dropout=0.1, seed=1), zero_ok=fs("seed", "dropout"))],
            lambda: [("missing target", lambda: add_lora(lm(), 2, ("query",))), ("dropout 1", lambda: add_lora(lm(), 2, dropout=1.0)),
                     ("twice", lambda: add_lora(adapted(), 2)), ("targets of ints", lambda: add_lora(lm(), 2, (1, 2)))]),
        "merge_lora": Spec(lambda: [Call(merge_lora, (adapted(),))], lambda: [("plain LM", lambda: merge_lora(lm()))]),
        "save_adapters": Spec(
            lambda: [Call(save_adapters, (adapted(), os.path.join(tempfile.gettempdir(), f"mmllm_fuzz_lora_save_{os.getpid()}")))],
            lambda: [("plain LM", lambda: save_adapters(lm(), tempfile.gettempdir()))]),
        "load_adapters": Spec(
            lambda: [Call(load_adapters, (lm(), saved()), dict(trainable=True))],
            lambda: [("missing folder", lambda: load_adapters(lm(), fuzz.MISSING_FOLDER)), ("onto a peft model", lambda: load_adapters(adapted(), saved())),
                     ("trainable 'yes'", lambda: load_adapters(lm(), saved(), trainable="yes"))]),
        "freeze_for_stage": Spec(
            lambda: [Call(freeze_for_stage, (mllm(), "stage1")), Call(freeze_for_stage, (mllm(True), "stage2")), Call(freeze_for_stage, (mllm(), "full"))],
            lambda: [("stage 3", lambda: freeze_for_stage(mllm(), "stage3")), ("stage2 without LoRA", lambda: freeze_for_stage(mllm(), "stage2")),
                     ("full on LoRA", lambda: freeze_for_stage(mllm(True), "full")), ("a bare LM", lambda: freeze_for_stage(lm(), "stage1"))]),
        "stage_parameter_counts": Spec(lambda: [Call(stage_parameter_counts, (mllm(True),))],
                                       lambda: [("a bare LM", lambda: stage_parameter_counts(lm()))]),
    }
