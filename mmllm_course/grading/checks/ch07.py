"""Checks for chapter 7, the training stages: what each stage trains, LoRA, instruction data in a chat template.

Tiers, as in every chapter:

- **core** functions: setting ``requires_grad`` for each stage (stage 1: only the bridge; stage 2:
  the bridge and the LM's LoRA adapters; full fine-tuning: the bridge and every LM weight; the
  encoder frozen always), checked by inspecting every parameter of the model after the call, next to
  the library's :func:`~mmllm_course.training.freeze_for_stage`; counting LoRA's trainable numbers
  for a rank and target modules, checked against what ``peft`` actually creates (LLaMA with
  grouped-query attention, its MLP, GPT-2's ``Conv1D`` layers); one training row of a conversation in
  the course's chat template, labels -100 everywhere but the assistant's answers (checked against the
  template ``transformers`` renders, multi-turn, one or two images); the LoRA linear forward
  ``W x + b + (alpha / r) B A x``, outputs and gradients;
- **build**: the learner's ``MyLoRALinear(base, rank, alpha)`` must start as the unchanged layer
  (``B = 0``, ``A`` random, the base frozen), then gets the weights of ``peft``'s own LoRA layer loaded
  into it and must give ``peft``'s outputs and gradients;
- **train**: the learner's stage-2 model (a bridge and an LM with LoRA adapters) is measured, never
  trained here: the LM's own weights must still be the shipped chapter-5 LM's (only adapters
  changed), and it answers every question type about held-out images the check draws with its own
  seed (the shipped frozen chapter-2 encoder's features, cached), greedily, through the library's
  ``generate``; the bar is 90% exact answers. The solution notebook's recipe (stage 1 with the
  library, chapter 5's recipe at 150 steps on 4,000 images; then stage 2 as the solution writes it:
  LoRA rank 8 on the four attention projections plus the Q-Former, one-turn chat rows, 400 steps of
  64, AdamW 3e-3; :func:`train_stage2_seed_run`) measured 98.0%, 95.6%, 98.6%, 98.4%, 96.6% on seeds
  0-4 (data, bridge and adapter init, batch order; 2026-12-03, 1 thread on the shared 2-core machine,
  load 3-12: 7-63 s of stage 1 and 21-117 s of stage 2 each, 52-290 ms per stage-2 step). The weakest
  type is always "What shape is in the ...?" (78-94%). Measured on the way, seed 0 unless said: 250
  stage-2 steps gave 93.4% (seed 1: 83.0%); stage 1 skipped (a fresh bridge, 400 steps) 86.2%, the
  size questions at chance (53%);
- a **stretch**: merging the adapters into the weight, equal to ``peft``'s ``merge_and_unload``.

Every named mistake gives, on at least one case, a result different from the right answer (guards
raise ``RuntimeError`` when a case stops telling a named mistake apart). Questions store only hashes.
"""

from __future__ import annotations

import copy
import inspect
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from mmllm_course.grading.compare import expect_tensor, same_values
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
    from mmllm_course.language import chat_tokenizer

    return chat_tokenizer()


def _tiny_lm(arch: str, seed: int, depth: int = 2, dim: int = 32, kv_heads: int = 2, mlp_dim: int = 48):
    from mmllm_course.language import CausalLMConfig, make_causal_lm

    config = CausalLMConfig(arch=arch, dim=dim, depth=depth, num_heads=4, num_kv_heads=kv_heads if arch == "llama" else 4,
                            mlp_dim=mlp_dim, context_length=64)
    return make_causal_lm(config, _tokenizer(), seed=seed)


# --------------------------------------------------------------------------------------------------
# ch07.freeze_for_stage: requires_grad per stage, checked on the model itself
# --------------------------------------------------------------------------------------------------
STAGES = ("stage1", "stage2", "full")


class _StagedModel(nn.Module):
    """A multimodal model as the stages see it: ``.encoder`` (or None), ``.bridge``, ``.lm``."""

    def __init__(self, encoder: nn.Module | None, bridge: nn.Module, lm: nn.Module):
        super().__init__()
        self.encoder, self.bridge, self.lm = encoder, bridge, lm


def _staged_model(arch: str, lora: bool, encoder: bool, seed: int) -> _StagedModel:
    from mmllm_course.bridges import make_bridge
    from mmllm_course.training import add_lora

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        enc = nn.Sequential(nn.Linear(12, 16), nn.GELU(), nn.LayerNorm(16)) if encoder else None
        bridge = make_bridge("mlp", in_dim=16, out_dim=32)
    lm = _tiny_lm(arch, seed)
    if lora:
        lm = add_lora(lm, 2, ("c_attn",) if arch == "gpt2" else ("q_proj", "v_proj"), seed=seed)
    return _StagedModel(enc, bridge, lm)


# (stage, LM architecture, LoRA on the LM, an encoder, the requires_grad everything starts with, seed)
_FREEZE_CASES = [
    ("stage1", "llama", False, True, True, 7100),
    ("stage2", "llama", True, True, False, 7101),
    ("full", "llama", False, True, False, 7102),
    ("stage2", "gpt2", True, False, True, 7103),
    ("stage1", "gpt2", True, True, False, 7104),  # the LM has adapters, but stage 1 trains none of them
    ("full", "gpt2", False, False, True, 7105),
    ("stage2", "llama", True, False, True, 7106),
]


def _part(name: str) -> str:
    """Which part of the model a parameter name belongs to: encoder, bridge, LoRA adapter or the LM's own weights."""
    if name.startswith("encoder."):
        return "encoder"
    if name.startswith("bridge."):
        return "bridge"
    return "LoRA adapter" if "lora_" in name else "LM weight"


def _expected_trainable(name: str, stage: str) -> bool:
    part = _part(name)
    if part == "encoder":
        return False
    if part == "bridge":
        return True
    if part == "LoRA adapter":
        return stage == "stage2"
    return stage == "full"


def _freeze_message(stage: str, wrong: dict[str, bool]) -> str:
    """What the wrong parameters (name -> the requires_grad they have) say about the mistake."""
    parts: dict[tuple[str, bool], list[str]] = {}
    for name, flag in wrong.items():
        parts.setdefault((_part(name), flag), []).append(name)
    notes = []
    for (part, flag), names in sorted(parts.items()):
        example = names[0]
        if part == "LM weight" and flag and stage == "stage2":
            notes.append(f"the whole LM left trainable: {len(names)} of the LM's own weights have requires_grad=True "
                         f"(e.g. {example}); in stage 2 only the LoRA adapters (names with 'lora_') train")
        elif part == "LM weight" and flag:
            notes.append(f"the LM left trainable in stage 1: {len(names)} of its weights have requires_grad=True (e.g. "
                         f"{example}); stage 1 trains the bridge alone")
        elif part == "LM weight":
            notes.append(f"the LM frozen in full fine-tuning: {len(names)} of its weights have requires_grad=False (e.g. "
                         f"{example}); 'full' trains every weight of the LM")
        elif part == "LoRA adapter" and flag:
            notes.append(f"LoRA adapters trainable in stage 1: {len(names)} adapter weights (e.g. {example}); stage 1 "
                         "trains the bridge alone, adapters or not")
        elif part == "LoRA adapter":
            kinds = sorted({"lora_A" if "lora_A" in n else "lora_B" for n in names})
            notes.append(f"LoRA adapters frozen in stage 2 ({'/'.join(kinds)}: {len(names)} weights, e.g. {example}): "
                         "stage 2 trains both A and B of every adapter")
        elif part == "bridge":
            notes.append(f"the bridge frozen: {len(names)} of its weights have requires_grad=False (e.g. {example}); the "
                         "bridge trains in every stage (set requires_grad=True on it, do not only freeze the rest)")
        else:
            notes.append(f"the encoder trainable: {len(names)} of its weights have requires_grad=True (e.g. {example}); "
                         "the encoder is frozen in every stage")
    return "; ".join(notes)


@exercise(
    "ch07.freeze_for_stage",
    "Freeze exactly the right parameters for each training stage",
    hint="model.encoder (may be None) frozen; model.bridge trainable; model.lm: stage1 all frozen, stage2 only the "
    "parameters whose name holds 'lora_', full all trainable. Set every flag explicitly: the model may come with any.",
    timeout=60.0,  # the first check of a session imports transformers' LLaMA and GPT-2 and peft
)
def _check_freeze_for_stage(fn) -> str:
    _one_thread()
    for stage, arch, lora, encoder, start, seed in _FREEZE_CASES:
        model = _staged_model(arch, lora, encoder, seed)
        model.requires_grad_(start)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        ids = {name: id(p) for name, p in model.named_parameters()}
        what = (f"freeze_for_stage(model with {'an encoder' if encoder else 'encoder=None'}, an MLP bridge and a "
                f"{'LoRA-adapted ' if lora else ''}{'LLaMA' if arch == 'llama' else 'GPT-2'} LM, every parameter "
                f"starting with requires_grad={start}, stage={stage!r})")
        got = call(fn, model, stage)
        if got is not None and got is not model:
            raise CheckFailed(f"{what} returned {a_or_an(type(got).__name__)}; return the model you were given (or "
                              "nothing): set requires_grad on its parameters in place")
        now = dict(model.named_parameters())
        if {n: id(p) for n, p in now.items()} != ids:
            raise CheckFailed(f"{what} replaced or removed parameters of the model; only set their requires_grad")
        changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
        if changed:
            raise CheckFailed(f"{what} changed parameter values ({changed[0]}...); only set requires_grad")
        wrong = {n: p.requires_grad for n, p in now.items() if p.requires_grad != _expected_trainable(n, stage)}
        if wrong:
            raise CheckFailed(f"{what}: {len(wrong)} of the model's {len(now)} parameters have the wrong requires_grad. "
                              f"That is {_freeze_message(stage, wrong)}.")
        from mmllm_course.training import freeze_for_stage

        guard = freeze_for_stage(copy.deepcopy(model), stage)  # the library agrees with the rule above
        if any(p.requires_grad != _expected_trainable(n, stage) for n, p in guard.named_parameters()):
            raise RuntimeError("freeze_for_stage and the check's rule disagree: the check needs fixing")
    return ("stage 1 trains the bridge alone, stage 2 the bridge and the LoRA adapters (the LM's own weights frozen), "
            "full fine-tuning the bridge and the whole LM; the encoder never trains. As freeze_for_stage does.")


# --------------------------------------------------------------------------------------------------
# ch07.lora_parameter_count: r (d_in + d_out) per adapted layer, counted against peft
# --------------------------------------------------------------------------------------------------
# (LM architecture, depth, key/value heads, rank, target modules, seed)
_COUNT_CASES = [
    ("llama", 2, 2, 8, ("q_proj", "k_proj", "v_proj", "o_proj"), 7200),
    ("llama", 3, 1, 4, ("q_proj", "v_proj"), 7201),
    ("llama", 2, 2, 2, ("gate_proj", "up_proj", "down_proj"), 7202),
    ("gpt2", 2, 4, 4, ("c_attn", "c_proj"), 7203),  # c_proj: attention's output AND the MLP's second layer
    ("llama", 1, 4, 16, ("o_proj", "down_proj"), 7204),
]


def _adapted_shapes(lm: nn.Module, targets) -> list[tuple[str, int, int]]:
    """(name, d_in, d_out) of every layer peft adapts for ``targets`` (GPT-2's Conv1D weight is (d_in, d_out))."""
    out = []
    for name, module in lm.named_modules():
        if name.rsplit(".", 1)[-1] not in targets:
            continue
        if isinstance(module, nn.Linear):
            out.append((name, module.in_features, module.out_features))
        elif type(module).__name__ == "Conv1D":
            out.append((name, int(module.weight.shape[0]), int(module.weight.shape[1])))
    return out


def lora_parameter_count_reference(lm: nn.Module, rank: int, targets) -> int:
    """Sum over the adapted layers of r * (d_in + d_out): A is (r, d_in), B is (d_out, r)."""
    return sum(rank * (d_in + d_out) for _, d_in, d_out in _adapted_shapes(lm, targets))


def _count_mistakes(lm: nn.Module, rank: int, targets) -> dict[str, int]:
    shapes = _adapted_shapes(lm, targets)
    first_layer = [s for s in shapes if ".0." in s[0] or ".h.0." in s[0]]
    width = lm.get_input_embeddings().weight.shape[1]
    seen, one_per_name = set(), []
    for s in shapes:
        if s[0].rsplit(".", 1)[-1] not in seen:
            seen.add(s[0].rsplit(".", 1)[-1])
            one_per_name.append(s)
    attention_only = [s for s in shapes if ".mlp." not in s[0]]
    return {
        "the full matrix d_in * d_out counted: LoRA's adapter of rank r holds A (r, d_in) and B (d_out, r), r * (d_in + "
        "d_out) numbers": sum(d_in * d_out for _, d_in, d_out in shapes),
        "only A counted (r * d_in): B (d_out, r) holds r * d_out more": sum(rank * d_in for _, d_in, _ in shapes),
        "only B counted (r * d_out): A (r, d_in) holds r * d_in more": sum(rank * d_out for _, _, d_out in shapes),
        "every adapted matrix taken as D x D (the LM's width): with grouped-query attention k_proj and v_proj are "
        "narrower, and the MLP is wider; read each layer's own shape": sum(rank * 2 * width for _ in shapes),
        "the adapters of the first layer only: every decoder layer has its own q_proj, v_proj...": sum(
            rank * (d_in + d_out) for _, d_in, d_out in first_layer),
        "each target name counted once, not once per layer": sum(rank * (d_in + d_out) for _, d_in, d_out in one_per_name),
        "r * r counted for each adapter": sum(rank * rank for _ in shapes),
        "a bias counted per adapter (d_out more): LoRA's A and B have none": sum(
            rank * (d_in + d_out) + d_out for _, d_in, d_out in shapes),
        "only the layers under attention counted: peft adapts every module of that name (GPT-2's c_proj is also the "
        "MLP's second layer)": sum(rank * (d_in + d_out) for _, d_in, d_out in attention_only),
    }


@exercise(
    "ch07.lora_parameter_count",
    "Count the trainable numbers LoRA adds for a rank and target modules",
    hint="for every module of lm.named_modules() whose last name is in targets, add rank * (d_in + d_out); "
    "sum(module.weight.shape) is d_in + d_out for nn.Linear (out, in) and GPT-2's Conv1D (in, out) alike.",
    timeout=60.0,  # builds peft models of five LMs
)
def _check_lora_parameter_count(fn) -> str:
    _one_thread()
    from mmllm_course.training import add_lora, count_parameters

    seen: set[str] = set()
    names: set[str] = set()
    for arch, depth, kv, rank, targets, seed in _COUNT_CASES:
        lm = _tiny_lm(arch, seed, depth=depth, kv_heads=kv)
        expected = lora_parameter_count_reference(lm, rank, targets)
        peft_count = count_parameters(add_lora(lm, rank, targets), trainable_only=True)
        if peft_count != expected:
            raise RuntimeError(f"the reference count {expected} differs from peft's {peft_count}: the check needs fixing")
        mistakes = _count_mistakes(lm, rank, targets)
        names |= set(mistakes)
        seen |= {m for m, v in mistakes.items() if v != expected}
        shown = {t: sorted({(d_out, d_in) for n, d_in, d_out in _adapted_shapes(lm, targets) if n.endswith(t)})
                 for t in targets}
        what = (f"lora_parameter_count({'LLaMA' if arch == 'llama' else 'GPT-2'} LM of {depth} layers, rank={rank}, "
                f"targets={list(targets)})")
        state = {k: v.clone() for k, v in lm.state_dict().items()}
        got = call(fn, lm, rank, tuple(targets))
        after = lm.state_dict()
        if set(after) != set(state) or any(not torch.equal(v, state[k]) for k, v in after.items()):
            raise CheckFailed(f"{what} changed the LM (its weights or its layers); count without modifying it "
                              "(add_lora and peft work on a copy)")
        if isinstance(got, torch.Tensor) and got.numel() == 1 and not got.is_floating_point():
            got = int(got)
        if got is None:
            raise CheckFailed(f"{what} returned None: did you forget `return`?")
        if isinstance(got, bool) or not isinstance(got, int):
            raise CheckFailed(f"{what} returned {a_or_an(type(got).__name__)}; expected an int (a number of parameters)")
        if got != expected:
            for explanation, wrong in mistakes.items():
                if got == wrong and wrong != expected:
                    raise CheckFailed(f"{what} returned {got:,}; expected {expected:,} (what peft creates). That is "
                                      f"{explanation}.")
            raise CheckFailed(f"{what} returned {got:,}; expected {expected:,}, what peft creates (adapted weights "
                              f"(d_out, d_in) per name: {shown})")
    if seen != names:
        raise RuntimeError(f"the count cases never tell these apart from the right answer: {names - seen}")
    return "your counts equal the trainable parameters peft creates: r * (d_in + d_out) for every adapted layer of every block."


# --------------------------------------------------------------------------------------------------
# ch07.chat_example: one training row of a conversation, loss on the assistant's answers only
# --------------------------------------------------------------------------------------------------
def _user(text: str, images: int = 0) -> dict:
    if images == 0:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [{"type": "image"}] * images + [{"type": "text", "text": text}]}


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


# (conversation, K image tokens per image)
_CHAT_CASES = [
    ([_user("What colour is the circle?", 1), _assistant("red")], 8),
    ([_user("Where is the star?", 1), _assistant("top left"), _user("How big is the red shape?"), _assistant("small")], 4),
    ([_user("What shape is in the bottom right?", 2), _assistant("triangle")], 3),
    ([_user("Where is the square?", 1), _assistant("bottom left"), _user("What colour is the shape in the top right?"),
      _assistant("blue"), _user("What shape is in the top left?"), _assistant("circle")], 2),
]


def chat_example_reference(messages: list[dict], tokenizer, k: int) -> dict[str, torch.Tensor]:
    """``input_ids`` (T,): bos + the rendered conversation, each ``<image>`` as K ids; ``labels`` (T,): -100 but the answers.

    An assistant turn renders as `` A: {answer}<|eos|>``; the answer's tokens and its eos take loss,
    the `` A:`` before it does not (the prompt the model is given at inference ends with it).
    """
    image_id = tokenizer.convert_tokens_to_ids("<image>")

    def ids_of(text: str) -> list[int]:
        out: list[int] = []
        for t in tokenizer(text, add_special_tokens=False)["input_ids"]:
            out += [t] * k if t == image_id else [t]
        return out

    ids, labels = [tokenizer.bos_token_id], [IGNORE]
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        whole = tokenizer.apply_chat_template(messages[:i + 1], tokenize=False)
        before, after = ids_of(prompt), ids_of(whole)
        if after[:len(before)] != before:
            raise RuntimeError("the chat template's tokens are not prefix-stable: the check needs fixing")
        labels += [IGNORE] * (len(before) + 1 - len(ids)) + after[len(before):]
        ids = [tokenizer.bos_token_id] + after
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels)}


def _chat_mistakes(messages: list[dict], tokenizer, k: int) -> dict[str, dict[str, torch.Tensor]]:
    right = chat_example_reference(messages, tokenizer, k)
    ids, labels = right["input_ids"], right["labels"]
    eos = tokenizer.eos_token_id
    out = {
        "labels on every token (the user's turns, the image tokens and the template's words take loss): only the "
        "assistant's answers do": dict(right, labels=ids.clone()),
        "labels on everything but the image tokens: the user's question and the template's 'Q:' take loss too; only the "
        "assistant's answers do": dict(right, labels=ids.masked_fill(ids == IMAGE_ID, IGNORE)),
    }
    no_eos = labels.masked_fill(ids == eos, IGNORE)
    out["the eos after each answer masked (-100): it takes loss, it is how the model learns to stop"] = dict(right, labels=no_eos)
    a_colon = labels.clone()  # " A:" = three tokens before each answer
    starts = [i for i in range(1, len(labels)) if labels[i] != IGNORE and labels[i - 1] == IGNORE]
    for s in starts:
        a_colon[s - 3:s] = ids[s - 3:s]
    out["the template's ' A:' labelled too: it is part of the prompt the model is given (add_generation_prompt), "
        "the loss starts at the answer's first token"] = dict(right, labels=a_colon)
    shifted = torch.full_like(labels, IGNORE)
    shifted[:-1] = labels[1:]
    out["labels shifted by one position: the LM shifts them itself inside the loss (labels[t] is the token AT t)"] = dict(
        right, labels=shifted)
    if len(starts) > 1:
        last = labels.clone()
        last[:starts[-1]] = IGNORE
        out["only the last answer labelled: in a multi-turn conversation every assistant turn takes loss"] = dict(right, labels=last)
        first = labels.clone()
        ends = [i for i in range(len(labels) - 1) if labels[i] != IGNORE and labels[i + 1] == IGNORE] + [len(labels) - 1]
        first[ends[0] + 1:] = IGNORE
        out["only the first answer labelled: every assistant turn takes loss"] = dict(right, labels=first)
    no_bos = dict(input_ids=ids[1:], labels=labels[1:])
    out["no bos at the start: the row starts with the LM's bos token (tokenizer.bos_token_id), labelled -100"] = no_bos
    unexpanded = chat_example_reference(messages, tokenizer, 1)
    out["the <image> placeholder not expanded: each becomes K image-token ids"] = unexpanded
    return out


def _same_row(got: dict, wrong: dict) -> bool:
    return all(k in got and isinstance(got[k], torch.Tensor) and same_values(got[k].long(), v) for k, v in wrong.items())


def _render(messages: list[dict]) -> str:
    return _tokenizer().apply_chat_template(messages, tokenize=False)


@exercise(
    "ch07.chat_example",
    "One training row of a conversation: the chat template, loss on the assistant's answers only",
    hint="text = tokenizer.apply_chat_template(messages, tokenize=False); ids = [bos] + its ids with each <image> "
    "as K ids; labels -100 except the tokens of each ' ' + answer + eos (render messages[:i] with "
    "add_generation_prompt=True to find where answer i starts).",
    timeout=30.0,
)
def _check_chat_example(fn) -> str:
    tokenizer = _tokenizer()
    seen: set[str] = set()
    names: set[str] = set()
    for messages, k in _CHAT_CASES:
        expected = chat_example_reference(messages, tokenizer, k)
        mistakes = _chat_mistakes(messages, tokenizer, k)
        names |= set(mistakes)
        seen |= {m for m, wrong in mistakes.items() if not _same_row(expected, wrong)}
        turns = sum(m["role"] == "assistant" for m in messages)
        what = f"chat_example({turns}-answer conversation {_render(messages)!r}, k={k})"
        given = copy.deepcopy(messages)
        got = call(fn, given, tokenizer, k)
        if given != messages:
            raise CheckFailed(f"{what} changed the messages in place; leave them as they were")
        if got is None:
            raise CheckFailed(f"{what} returned None: did you forget `return`?")
        if not isinstance(got, dict) or any(key not in got for key in expected):
            raise CheckFailed(f"{what} returned {a_or_an(type(got).__name__)}"
                              f"{' without ' + str([k for k in expected if k not in got]) if isinstance(got, dict) else ''}; "
                              "expected a dict with 'input_ids' and 'labels', each a (T,) torch.long tensor")
        for key in expected:
            value = got[key]
            if isinstance(value, list):
                value = torch.tensor(value)
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                raise CheckFailed(f"{what}: {key} has dtype {value.dtype}; token ids and labels are torch.long")
            if isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape[0] == 1:
                value = value[0]
            got[key] = value.long() if isinstance(value, torch.Tensor) else value
        for key in expected:
            try:
                expect_tensor(got[key], expected[key], f"{what}[{key!r}]", atol=0, rtol=0)
            except CheckFailed as exc:
                for explanation, wrong in mistakes.items():
                    if _same_row(got, wrong) and not _same_row(expected, wrong):
                        raise CheckFailed(f"{exc}. Your row equals {explanation}.") from None
                shown = tokenizer.decode(expected["labels"][expected["labels"] != IGNORE])
                raise CheckFailed(f"{exc}. The tokens that take loss are {shown!r}.") from None
    if seen != names:
        raise RuntimeError(f"the chat cases never tell these apart from the right answer: {names - seen}")
    return ("your rows are the chat template's tokens with K ids per image, and only the assistant's answers (and their "
            "eos) take loss, every turn of a multi-turn conversation.")


# --------------------------------------------------------------------------------------------------
# ch07.lora_linear: W x + b + (alpha / r) B A x
# --------------------------------------------------------------------------------------------------
# (input shape, d_in, d_out, rank, alpha, bias, dtype, seed)
_LORA_CASES = [
    ((3, 10), 10, 10, 2, 16.0, True, torch.float64, 7301),  # square first: A and B swapped still fits the shapes
    ((2, 5, 12), 12, 8, 4, 8.0, True, torch.float32, 7300),
    ((4, 6), 6, 9, 3, 3.0, False, torch.float32, 7302),
    ((1, 2, 3, 8), 8, 8, 8, 4.0, True, torch.float64, 7303),
]


def lora_linear_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, lora_A: torch.Tensor,
                          lora_B: torch.Tensor, alpha: float) -> torch.Tensor:
    """x (..., d_in) -> (..., d_out): x W^T + b + (alpha / r) (x A^T) B^T with A (r, d_in), B (d_out, r)."""
    out = x @ weight.T + (bias if bias is not None else 0)
    return out + (alpha / lora_A.shape[0]) * ((x @ lora_A.T) @ lora_B.T)


def _lora_inputs(case: tuple):
    shape, d_in, d_out, rank, alpha, bias, dtype, seed = case
    g = _gen(seed)
    x = torch.randn(shape, generator=g).to(dtype)
    weight = (0.3 * torch.randn(d_out, d_in, generator=g)).to(dtype)
    b = (0.5 * torch.randn(d_out, generator=g)).to(dtype) if bias else None
    a = (0.4 * torch.randn(rank, d_in, generator=g)).to(dtype)
    b_up = (0.4 * torch.randn(d_out, rank, generator=g)).to(dtype)  # B after some training: not zero
    return x, weight, b, a, b_up, alpha


def _lora_mistakes(x, weight, bias, a, b, alpha) -> dict[str, torch.Tensor]:
    r = a.shape[0]
    plain = x @ weight.T + (bias if bias is not None else 0)
    delta = (x @ a.T) @ b.T
    out = {
        "the alpha / r scale forgotten (W x + b + B A x): LoRA scales the adapter's output by alpha / r": plain + delta,
        "scaled by alpha, not alpha / r": plain + alpha * delta,
        "scaled by r / alpha, not alpha / r": plain + (r / alpha) * delta,
        "the adapter's output never added (only W x + b)": plain,
        "the scale applied to the whole output ((alpha / r) (W x + b + B A x)): only the adapter is scaled": (alpha / r) * (plain + delta),
    }
    if bias is not None:
        out["the bias forgotten: the frozen layer's bias is part of W x + b"] = x @ weight.T + (alpha / r) * delta
    if weight.shape[0] == weight.shape[1]:
        out["A and B swapped (x B A): A (r, d_in) comes first, projecting down to r; B (d_out, r) projects back up"] = (
            plain + (alpha / r) * ((x @ b) @ a))
    return out


@exercise(
    "ch07.lora_linear",
    "The LoRA linear forward: W x + b + (alpha / r) B A x",
    hint="r = lora_A.shape[0]; out = x @ weight.T (+ bias if not None) + (alpha / r) * (x @ lora_A.T) @ lora_B.T.",
)
def _check_lora_linear(fn) -> str:
    _one_thread()
    seen: set[str] = set()
    names: set[str] = set()
    for case in _LORA_CASES:
        x, weight, bias, a, b, alpha = _lora_inputs(case)
        what = (f"lora_linear(x {tuple(x.shape)} {x.dtype}, weight {tuple(weight.shape)}, "
                f"{'bias ' + str(tuple(bias.shape)) if bias is not None else 'bias=None'}, lora_A {tuple(a.shape)}, "
                f"lora_B {tuple(b.shape)}, alpha={alpha})")
        expected = lora_linear_reference(x, weight, bias, a, b, alpha)
        mistakes = _lora_mistakes(x, weight, bias, a, b, alpha)
        names |= set(mistakes)
        seen |= {m for m, wrong in mistakes.items() if not same_values(wrong, expected)}
        leaves = [t.clone().requires_grad_(True) if t is not None else None for t in (x, weight, bias, a, b)]
        got = call(fn, *leaves, alpha)
        if any(t is not None and not torch.equal(t.detach(), o) for t, o in zip(leaves, (x, weight, bias, a, b)) if o is not None):
            raise CheckFailed(f"{what} changed an input in place; leave the inputs as they were")
        try:
            expect_tensor(got, expected, what)
        except CheckFailed as exc:
            for explanation, wrong in mistakes.items():
                if same_values(got, wrong) and not same_values(wrong, expected):
                    raise CheckFailed(f"{exc}. Your output equals {explanation}.") from None
            raise
        if not got.requires_grad:
            raise CheckFailed(f"{what}: your output is cut off from the graph (torch.no_grad(), .detach()?): the adapters "
                              "would never learn")
        projection = torch.randn(expected.shape, generator=_gen(case[-1] + 1), dtype=torch.float64).to(expected.dtype)
        ref_leaves = [t.clone().requires_grad_(True) if t is not None else None for t in (x, weight, bias, a, b)]
        ref_out = lora_linear_reference(*ref_leaves, alpha)
        wrt = [i for i, t in enumerate(ref_leaves) if t is not None]
        ref_grads = torch.autograd.grad((ref_out * projection).sum(), [ref_leaves[i] for i in wrt])
        my_grads = torch.autograd.grad((got * projection).sum(), [leaves[i] for i in wrt], allow_unused=True)
        labels = ("x", "weight", "bias", "lora_A", "lora_B")
        for i, mine, ref in zip(wrt, my_grads, ref_grads):
            if mine is None:
                raise CheckFailed(f"{what}: no gradient reaches {labels[i]} through your output (.detach(), .data?)")
            try:
                expect_tensor(mine, ref, f"the gradient with respect to {labels[i]}", atol=1e-5 * max(1.0, float(ref.abs().max())))
            except CheckFailed as err:
                raise CheckFailed(f"{what}: the outputs match but the gradients do not. {err}") from None
    if seen != names:
        raise RuntimeError(f"the LoRA cases never tell these apart from the right answer: {names - seen}")
    return "W x + b + (alpha / r) B A x, outputs and gradients: what peft's lora.Linear computes (without dropout)."


# --------------------------------------------------------------------------------------------------
# ch07.lora_module (build): MyLoRALinear, loaded with peft's own LoRA layer's weights
# --------------------------------------------------------------------------------------------------
class _Holder(nn.Module):
    """One linear layer, for peft to adapt."""

    def __init__(self, layer: nn.Linear):
        super().__init__()
        self.proj = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class _PeftLayerView(nn.Module):
    """peft's ``lora.Linear`` under the learner's names (``base_layer``, ``lora_A``, ``lora_B``); the same tensors."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = [layer]  # not a submodule: the parameters are registered once, under the names below
        self.base_layer, self.lora_A, self.lora_B = layer.base_layer, layer.lora_A["default"], layer.lora_B["default"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer[0](x)


def _peft_layer(d_in: int, d_out: int, rank: int, alpha: float, bias: bool, seed: int) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = get_peft_model(_Holder(nn.Linear(d_in, d_out, bias=bias)),
                               LoraConfig(r=rank, lora_alpha=alpha, target_modules=["proj"], lora_dropout=0.0))
    layer = model.base_model.model.proj
    with torch.no_grad():  # B as after some training (peft starts it at 0)
        layer.lora_B["default"].weight.copy_(0.3 * torch.randn(d_out, rank, generator=_gen(seed + 1)))
    return layer


# (d_in, d_out, rank, alpha, bias, seed)
_MODULE_CASES = [(10, 10, 2, 5.0, False, 7401), (16, 12, 4, 8.0, True, 7400), (8, 20, 8, 32.0, True, 7402)]  # square first


def _lora_module_mistakes(view: _PeftLayerView, rank: int, alpha: float):
    def diagnose(x: torch.Tensor) -> dict[str, torch.Tensor]:
        base = view.base_layer(x)
        delta = view.lora_B(view.lora_A(x))
        out = {"the alpha / r scale forgotten: base(x) + lora_B(lora_A(x)) * alpha / r": base + delta,
               "scaled by alpha, not alpha / r": base + alpha * delta,
               "the adapter never added: only base_layer(x)": base}
        if view.lora_A.weight.shape[1] == view.lora_B.weight.shape[0]:
            out["A and B swapped: lora_A (d_in -> r) comes first, lora_B (r -> d_out) after"] = base + (alpha / rank) * (
                x @ view.lora_B.weight) @ view.lora_A.weight
        return out

    return diagnose


@exercise(
    "ch07.lora_module",
    "Build a LoRA linear layer that takes peft's weights",
    hint="__init__: super().__init__(); self.base_layer = base (frozen: requires_grad_(False)); self.lora_A = "
    "nn.Linear(d_in, rank, bias=False) (random, e.g. its default init); self.lora_B = nn.Linear(rank, d_out, "
    "bias=False) with weight zeroed; self.scaling = alpha / rank. forward: base_layer(x) + scaling * lora_B(lora_A(x)).",
    timeout=30.0,
)
def _check_lora_module(cls) -> str:
    _one_thread()
    seen: set[str] = set()
    names: set[str] = set()
    for d_in, d_out, rank, alpha, bias, seed in _MODULE_CASES:
        base = nn.Linear(d_in, d_out, bias=bias)
        with torch.no_grad():
            for p in base.parameters():
                p.copy_(torch.randn(p.shape, generator=_gen(seed + 5)))
        original = {k: v.clone() for k, v in base.state_dict().items()}
        what = f"MyLoRALinear(nn.Linear({d_in}, {d_out}, bias={bias}), rank={rank}, alpha={alpha})"
        mine = build_learner_module(cls, what, base, rank, alpha)
        # 1. at the start: the unchanged layer, the base frozen, B zero, A random
        params = dict(mine.named_parameters())
        for name, shape in (("lora_A.weight", (rank, d_in)), ("lora_B.weight", (d_out, rank))):
            if name not in params:
                raise CheckFailed(f"{what} has no parameter {name}; expected {name} of shape {shape} (lora_A and lora_B "
                                  f"as nn.Linear without bias). Your parameters: {sorted(params)}")
            if tuple(params[name].shape) != shape:
                raise CheckFailed(f"{what}: {name} has shape {tuple(params[name].shape)}; expected {shape}")
        for name, p in params.items():
            if name.startswith("base_layer.") and p.requires_grad:
                raise CheckFailed(f"{what}: {name} has requires_grad=True; the pretrained layer stays frozen, only "
                                  "lora_A and lora_B train")
            if name.startswith("lora_") and not p.requires_grad:
                raise CheckFailed(f"{what}: {name} has requires_grad=False; the adapters are what trains")
        a0, b0 = params["lora_A.weight"].detach(), params["lora_B.weight"].detach()
        if b0.abs().max() > 0:
            raise CheckFailed(f"{what}: lora_B starts non-zero (max |B| = {float(b0.abs().max()):.3g}); B starts at "
                              "exactly zero, so the adapted layer starts as the pretrained one")
        if a0.abs().max() == 0:
            raise CheckFailed(f"{what}: lora_A starts at zero too; with A = 0 and B = 0 no gradient reaches either "
                              "(dL/dB needs A x, dL/dA needs B): A starts random, only B at zero")
        x = torch.randn(3, d_in, generator=_gen(seed + 2))
        with torch.no_grad():
            got = call(mine, x)
            plain = nn.functional.linear(x, original["weight"], original.get("bias"))
        if not isinstance(got, torch.Tensor) or got.shape != plain.shape:
            raise CheckFailed(f"{what} on x (3, {d_in}) returned "
                              f"{tuple(got.shape) if isinstance(got, torch.Tensor) else a_or_an(type(got).__name__)}; "
                              f"expected a tensor (3, {d_out})")
        if not torch.equal(got, plain):
            raise CheckFailed(f"{what}: at the start its output differs from the pretrained layer's (max difference "
                              f"{float((got - plain).abs().max()):.3g}); with B = 0 it must equal base(x) exactly")
        # 2. peft's trained layer, its weights loaded into the learner's
        layer = _peft_layer(d_in, d_out, rank, alpha, bias, seed)
        view = _PeftLayerView(layer)
        load_reference_weights(mine, view, what)
        diagnose = _lora_module_mistakes(view, rank, alpha)
        inputs = [torch.randn(4, d_in, generator=_gen(seed + 3)), torch.randn(2, 5, d_in, generator=_gen(seed + 4))]
        with torch.no_grad():
            for x in inputs:
                expected = view(x)
                for text, wrong in diagnose(x).items():
                    names.add(text)
                    if not same_values(wrong, expected):
                        seen.add(text)
        expect_same_forward(mine, view, inputs, what + " with peft's weights loaded", diagnose=diagnose)
    if seen != names:
        raise RuntimeError(f"the LoRA-module cases never tell these apart from the right answer: {names - seen}")
    return ("your layer starts as the pretrained one (B = 0, the base frozen) and, with peft's weights, gives peft's "
            "lora.Linear outputs and gradients.")


# --------------------------------------------------------------------------------------------------
# ch07.train_stage2 (train tier): the learner's stage-2 model answers questions about held-out images
# --------------------------------------------------------------------------------------------------
TRAIN_STAGE2_THRESHOLD = 0.90  # exact answers on the check's held-out questions
TRAIN_STAGE2_EVAL_SEED = 70_707
TRAIN_STAGE2_EVAL_IMAGES = 100  # each asked every one of the five question types: 500 questions


@lru_cache(maxsize=1)
def train_stage2_eval_data():
    """The check's held-out data: (features (n, 17, 64) of the shipped frozen mini-CLIP, questions, answers, image index).

    New images drawn with the check's own seed, each asked the five question types of the chapter's
    recipe (``WHAT_WHERE_TYPES``) that it has an answer for.
    """
    from mmllm_course.data import generate_shapes, make_instructions
    from mmllm_course.grading.checks.ch05 import chapter5_image_features
    from mmllm_course.training.recipes_ch07 import WHAT_WHERE_TYPES

    shapes = generate_shapes(TRAIN_STAGE2_EVAL_IMAGES, seed=TRAIN_STAGE2_EVAL_SEED)
    qa = make_instructions(shapes, seed=TRAIN_STAGE2_EVAL_SEED, questions_per_image=len(WHAT_WHERE_TYPES),
                           types=WHAT_WHERE_TYPES)
    return chapter5_image_features(shapes.images), qa


@lru_cache(maxsize=1)
def _shipped_lm_state() -> dict[str, torch.Tensor]:
    from mmllm_course.pretrained import load_chapter5_lm

    return {k: v.clone() for k, v in load_chapter5_lm()[0].state_dict().items()}


def _learner_stage2(answer: Any) -> tuple[nn.Module, nn.Module]:
    if isinstance(answer, type):
        raise CheckFailed(f"got the class {answer.__name__}; pass your TRAINED model (the object), not its class")
    if callable(answer) and not isinstance(answer, nn.Module):
        try:
            params = inspect.signature(answer).parameters.values()
        except (TypeError, ValueError):
            params = []
        required = [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if required:
            raise CheckFailed(f"got a function that needs arguments ({', '.join(required)}); pass your TRAINED model "
                              "(with .bridge and .lm), e.g. check('ch07.train_stage2', my_model)")
        answer = call(answer)
    if answer is None:
        raise CheckFailed("got None instead of a trained model: did your training function forget to return it?")
    if not isinstance(answer, nn.Module) or not isinstance(getattr(answer, "bridge", None), nn.Module) or not isinstance(
            getattr(answer, "lm", None), nn.Module):
        raise CheckFailed(f"expected your trained stage-2 model, an nn.Module with .bridge and .lm (the LM with LoRA "
                          f"adapters), got {a_or_an(type(answer).__name__)}")
    return answer.bridge, answer.lm


def _base_state(lm: nn.Module) -> dict[str, torch.Tensor]:
    """The LM's own weights under the plain LM's names (peft's ``base_model.model.`` and ``.base_layer`` removed)."""
    out = {}
    for name, value in lm.state_dict().items():
        if "lora_" in name:
            continue
        out[name.removeprefix("base_model.model.").replace(".base_layer.", ".")] = value
    return out


def _per_type(right: list[bool], qa) -> dict[str, float]:
    return {t: sum(right[i] for i in qa.of_type(t)) / len(qa.of_type(t)) for t in dict.fromkeys(qa.types)}


def stage2_answers(bridge: nn.Module, lm: nn.Module) -> tuple[list[str], Any]:
    """Greedy answers of (bridge, lm) to the check's 500 held-out questions, through the library's ``generate``.

    Returns ``(answers, questions)``; the bridge reads the cached features of the check's images.
    """
    from mmllm_course.backbones import UnifiedEmbeddingMLLM
    from mmllm_course.grading.checks.ch05 import _bridge_tokens, _FixedTokens
    from mmllm_course.language import chat_prompts

    features, qa = train_stage2_eval_data()
    width = lm.get_input_embeddings().weight.shape[1]
    was_training = (bridge.training, lm.training)
    try:
        bridge.eval()
        lm.eval()
        tokens = _bridge_tokens(bridge, features, width)
        tok = _tokenizer()
        k = tokens.shape[1]
        if 1 + k + 20 > 64:
            raise CheckFailed(f"your bridge gives K = {k} image tokens per image: with a question and its answer that is "
                              "more than the LM's context of 64 tokens")
        device = next(lm.parameters()).device
        model = UnifiedEmbeddingMLLM(None, _FixedTokens(tokens.to(device)), lm, tok, num_image_features=1)
        index = qa.image_index.to(torch.float32)[:, None, None]
        prompts = chat_prompts(qa.questions, tok)
        said: list[str] = []
        for start in range(0, len(prompts), 250):
            said += model.generate(prompts[start:start + 250], image_features=index[start:start + 250].to(device),
                                   max_new_tokens=4)
    finally:
        bridge.train(was_training[0])
        lm.train(was_training[1])
    return said, qa


@exercise(
    "ch07.train_stage2",
    "Instruction-tune (stage 2) with LoRA until the model answers 90% of held-out questions",
    hint="run stage 1 first and train longer (400 steps of 64 rows), check that the bridge and the LoRA adapters both train (your "
    "freeze_for_stage), that the labels cover the answer and its eos only, and that the training prompts are the chat "
    "template's '<image>Q: ... A:' with ' ' + answer after them.",
    timeout=90.0,  # loads the shipped encoder and LM, encodes 100 images, answers 500 questions
)
def _check_train_stage2(answer) -> str:
    _one_thread()
    from mmllm_course.training.stages import is_lora

    bridge, lm = _learner_stage2(answer)
    if not is_lora(lm):
        raise CheckFailed("your model's LM has no LoRA adapters (no parameter named lora_A/lora_B): stage 2 here trains "
                          "adapters added with add_lora, the LM's own weights frozen")
    shipped = _shipped_lm_state()
    base = _base_state(lm)
    if set(base) != set(shipped):
        raise CheckFailed(f"your LM's weights are not the chapter-5 LM's (names {sorted(set(base) ^ set(shipped))[:3]} "
                          "differ): build stage 2 on load_chapter5_lm() with add_lora")
    moved = [k for k in shipped if not torch.equal(base[k].detach().cpu().float(), shipped[k].float())]
    if moved:
        raise CheckFailed(f"the LM's own weights changed in training ({len(moved)} tensors, e.g. {moved[0]}): the whole LM "
                          "was left trainable. In stage 2 with LoRA only the adapters (and the bridge) train; freeze the "
                          "rest (your freeze_for_stage(model, 'stage2')) and train again")
    said, qa = stage2_answers(bridge, lm)
    right = [s == a for s, a in zip(said, qa.answers)]
    per_type = _per_type(right, qa)
    score = sum(right) / len(right)
    worst = min(per_type, key=per_type.get)
    wrong = [i for i, r in enumerate(right) if not r][:2]
    examples = "; ".join(f"{qa.questions[i]!r}: said {said[i]!r}, truth {qa.answers[i]!r}" for i in wrong)
    detail = (f"held-out exact answers {score:.1%} on {len(said)} questions about {TRAIN_STAGE2_EVAL_IMAGES} new images "
              f"(weakest type {worst}: {per_type[worst]:.0%}; "
              + ", ".join(f"{t} {v:.0%}" for t, v in per_type.items() if t != worst) + ")")
    if score < TRAIN_STAGE2_THRESHOLD:
        raise CheckFailed(f"{detail}: below the {TRAIN_STAGE2_THRESHOLD:.0%} bar" + (f" (e.g. {examples})" if examples else "") + ".")
    return (f"{detail}: above the {TRAIN_STAGE2_THRESHOLD:.0%} bar, the LM's own weights untouched. Your adapters and "
            "bridge taught the captioner to answer.")


def train_stage2_seed_run(seed: int = 0, stage1_steps: int = 150, steps: int = 400) -> dict[str, float]:
    """The solution notebook's exercise 6 on ``seed`` (data, bridge and adapter init, batch order), scored as the check scores it.

    Stage 1 with the library (chapter 5's recipe, ``stage1_steps`` steps on 4,000 images ``2 * seed``),
    then stage 2 as the solution writes it: LoRA rank 8 on the attention projections, the library's
    ``freeze_for_stage``, one-turn rows from :func:`chat_example_reference`, AdamW 3e-3, batches of
    64, warmup 20 then cosine, clipping at 1.0. Returns ``{"qa_all", "qa_<type>"..., "qa_worst_type",
    "stage1_seconds", "stage2_seconds"}`` (for the benchmark's seed runs; one thread).
    """
    import dataclasses
    import math
    import time

    from mmllm_course.data import make_instructions
    from mmllm_course.training import add_lora, freeze_for_stage
    from mmllm_course.training.recipes import CHAPTER5, encode_all, train_chapter5_captioner
    from mmllm_course.training.recipes_ch07 import WHAT_WHERE_TYPES

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        recipe = dataclasses.replace(CHAPTER5, steps=stage1_steps, train_size=4000, held_out_size=10)
        stage1 = train_chapter5_captioner(seed, recipe, progress=False)
        model, train_set, tok = stage1.model, stage1.train, _tokenizer()
        features = encode_all(model, train_set.images)
        qa = make_instructions(train_set, seed=seed, types=WHAT_WHERE_TYPES)
        rows = [chat_example_reference([_user(q, 1), _assistant(a)], tok, 8) for q, a in zip(qa.questions, qa.answers)]
        length = max(len(r["input_ids"]) for r in rows)
        batch = {"input_ids": torch.full((len(rows), length), tok.pad_token_id),
                 "attention_mask": torch.zeros(len(rows), length, dtype=torch.long), "labels": torch.full((len(rows), length), IGNORE)}
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            batch["input_ids"][i, :n], batch["labels"][i, :n], batch["attention_mask"][i, :n] = r["input_ids"], r["labels"], 1
        model.lm = add_lora(model.lm, 8, seed=seed)
        freeze_for_stage(model, "stage2")
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=3e-3)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / 20) * 0.5 * (1 + math.cos(math.pi * step / steps)))
        generator = torch.Generator().manual_seed(seed)
        model.train()
        start = time.perf_counter()
        for _ in range(steps):
            idx = torch.randperm(len(rows), generator=generator)[:64]
            out = model(**{k: v[idx] for k, v in batch.items()}, image_features=features[idx])
            optimizer.zero_grad()
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
        seconds = time.perf_counter() - start
        model.eval()
        said, held = stage2_answers(model.bridge, model.lm)
    finally:
        torch.set_num_threads(before)
    right = [s == a for s, a in zip(said, held.answers)]
    per_type = _per_type(right, held)
    return {"qa_all": sum(right) / len(right), **{f"qa_{t}": v for t, v in per_type.items()},
            "qa_worst_type": min(per_type.values()), "stage1_seconds": stage1.history.seconds, "stage2_seconds": seconds}


def train_stage2_failures(metrics: dict[str, float]) -> list[str]:
    """What the check would fail in ``metrics`` (from :func:`train_stage2_seed_run`): empty when the bar is met."""
    return [] if metrics["qa_all"] >= TRAIN_STAGE2_THRESHOLD else [f"qa_all {metrics['qa_all']:.1%} < {TRAIN_STAGE2_THRESHOLD:.0%}"]


# --------------------------------------------------------------------------------------------------
# ch07.merge_lora (stretch): fold the adapter into the weight
# --------------------------------------------------------------------------------------------------
def merge_lora_reference(weight: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, alpha: float) -> torch.Tensor:
    """W + (alpha / r) B A: (d_out, d_in), the weight of a plain layer with the adapter's outputs."""
    return weight + (alpha / lora_A.shape[0]) * (lora_B @ lora_A)


# (d_in, d_out, rank, alpha, seed)
_MERGE_CASES = [(12, 8, 4, 8.0, 7500), (10, 10, 2, 3.0, 7501), (6, 14, 3, 12.0, 7502)]


@exercise(
    "ch07.merge_lora",
    "Stretch: merge a LoRA adapter into its weight",
    hint="weight + (alpha / r) * lora_B @ lora_A, with r = lora_A.shape[0]; leave the inputs unchanged.",
    timeout=30.0,
)
def _check_merge_lora(fn) -> str:
    _one_thread()
    seen: set[str] = set()
    names: set[str] = set()
    for d_in, d_out, rank, alpha, seed in _MERGE_CASES:
        layer = _peft_layer(d_in, d_out, rank, alpha, True, seed)
        weight = layer.base_layer.weight.detach().clone()
        a, b = layer.lora_A["default"].weight.detach().clone(), layer.lora_B["default"].weight.detach().clone()
        expected = merge_lora_reference(weight, a, b, alpha)
        merged = copy.deepcopy(layer)
        merged.merge()  # peft's own merge: the reference must equal it
        if not same_values(merged.base_layer.weight, expected):
            raise RuntimeError("merge_lora_reference differs from peft's merge: the check needs fixing")
        mistakes = {
            "the alpha / r scale forgotten (W + B A)": weight + b @ a,
            "scaled by alpha, not alpha / r": weight + alpha * (b @ a),
            "the update replaces the weight (only (alpha / r) B A): it is ADDED to W": (alpha / rank) * (b @ a),
        }
        names |= set(mistakes)
        seen |= {m for m, v in mistakes.items() if not same_values(v, expected)}
        what = f"merge_lora(weight {tuple(weight.shape)}, lora_A {tuple(a.shape)}, lora_B {tuple(b.shape)}, alpha={alpha})"
        w_in, a_in, b_in = weight.clone(), a.clone(), b.clone()
        got = call(fn, w_in, a_in, b_in, alpha)
        if not (torch.equal(w_in, weight) and torch.equal(a_in, a) and torch.equal(b_in, b)):
            raise CheckFailed(f"{what} changed its inputs in place (weight += ...?); return a new tensor")
        try:
            expect_tensor(got, expected, what)
        except CheckFailed as exc:
            for explanation, wrong in mistakes.items():
                if same_values(got, wrong) and not same_values(wrong, expected):
                    raise CheckFailed(f"{exc}. Your weight equals {explanation}.") from None
            raise
        x = torch.randn(5, d_in, generator=_gen(seed + 9))
        with torch.no_grad():
            gap = float((x @ got.T + layer.base_layer.bias - layer(x)).abs().max())
        if gap > 1e-5:
            raise RuntimeError(f"the merged weight's outputs differ from the adapted layer's by {gap}: the check needs fixing")
    if seen != names:
        raise RuntimeError(f"the merge cases never tell these apart from the right answer: {names - seen}")
    return ("your merged weight equals peft's merge: a plain layer with it gives the adapted layer's outputs, with no "
            "adapter left to run at inference.")


# --------------------------------------------------------------------------------------------------
# Questions (only hashes of the answers live here)
# --------------------------------------------------------------------------------------------------
question(
    "ch07.q1",
    "What LoRA trains",
    {
        "a": "A copy of every weight matrix of the LM, trained at a lower learning rate and averaged with the original at the end.",
        "b": "Two small matrices beside each adapted weight, A (r, d_in) and B (d_out, r); W itself stays frozen and B A is its change.",
        "c": "Only the LM's biases and layer norms, which are small enough to train while the weight matrices stay frozen.",
        "d": "The rank-r singular vectors of each weight W, found by an SVD of W at the start and then fine-tuned in place of W.",
    },
    [answer_hash("b")],
    explanation="LoRA adds W + (alpha / r) B A: W is frozen, A and B are the only new trainable numbers, r (d_in + "
    "d_out) per adapted matrix. B starts at zero, so training starts from the unchanged LM; afterwards B A can be "
    "merged into W.",
    hint="Look at the parameter names and requires_grad of a model after add_lora, and at lora_parameter_count.",
)

question(
    "ch07.q2",
    "What stage 2 teaches that stage 1 does not",
    {
        "a": "To see the image: stage 1 only trained the LM, so the bridge first learns to read the encoder's features in stage 2.",
        "b": "The vocabulary of the shapes world, which the frozen LM never saw in its pretraining on text.",
        "c": "To follow an instruction: read the question in the chat template and answer it, not describe the whole image.",
        "d": "To write longer outputs: stage-1 captions are short, and stage 2 trains the LM to continue for more tokens.",
    },
    [answer_hash("c")],
    explanation="After stage 1 the model describes whatever it is asked (the chapter's first cells show it captioning "
    "when asked a question). Stage 2 trains on question -> answer pairs in the chat template, so the model learns to "
    "read the instruction and answer only what was asked.",
    hint="Look at what the stage-1 model says when given a question in the chat template.",
)

question(
    "ch07.q3",
    "Why the LM is frozen in stage 1",
    {
        "a": "The LM already writes well; the bridge must learn to speak its language, and a trainable LM would drift on captions alone and forget.",
        "b": "A transformers LM cannot compute gradients with respect to its weights once inputs_embeds are passed instead of input_ids.",
        "c": "Frozen weights make every stage-1 step exactly as expensive as an unfrozen one, so freezing only keeps the runs comparable.",
        "d": "The image tokens would otherwise overwrite the LM's embedding table, since they share its rows for the image positions.",
    },
    [answer_hash("a")],
    explanation="Stage 1 is alignment: the bridge learns to write vectors the frozen LM reads like words. The LM keeps "
    "what it knew (no drift on a narrow caption task), and only the small bridge trains, which is cheap. The chapter "
    "measures the other side: stage 2 on questions alone makes the model forget captioning.",
    hint="What does a trainable model lose when trained on one narrow task? The chapter measures it (forgetting).",
)

question(
    "ch07.q4",
    "Why LoRA's B starts at zero",
    {
        "a": "Zero is the only value for which A's gradient is defined; a non-zero B would make the loss non-differentiable.",
        "b": "It keeps the adapter's numbers small so that the adapters can be saved in 4 bits, as QLoRA does.",
        "c": "So that B A has rank zero forever: LoRA only rescales W and never changes the directions it maps to.",
        "d": "B A is then zero, so the adapted LM starts exactly as the pretrained one; A is random, so B still gets a gradient.",
    },
    [answer_hash("d")],
    explanation="With B = 0 the adapted layer's output is W x at the first step (exercise 5's check tests it with torch.equal). "
    "dL/dB = (upstream gradient) (A x)^T is non-zero because A is random, so B moves at once; with both at zero neither "
    "would ever move.",
    hint="What is W x + (alpha / r) B A x when B = 0, and which gradient does B get when A is random?",
)
