"""Grader cases for chapter 7: correct versions written several ways, and the mistakes learners make.

``diagnoses``: ``{label: (answer, words)}``, a wrong answer whose ``fail`` message must contain ``words``
(the check names that mistake, not another).
"""

import math

import torch
from torch import nn

from mmllm_course.grading.checks.ch07 import (
    IGNORE,
    chat_example_reference,
    lora_linear_reference,
    lora_parameter_count_reference,
    merge_lora_reference,
    train_stage2_eval_data,
)
from mmllm_course.training import freeze_for_stage

# ------------------------------------------------------------------------------------------- freeze_for_stage


def freeze_by_parts(model, stage):
    """Correct: part by part, the LM's flags by name; returns nothing (the model is changed in place)."""
    if model.encoder is not None:
        for p in model.encoder.parameters():
            p.requires_grad = False
    for p in model.bridge.parameters():
        p.requires_grad = True
    for name, p in model.lm.named_parameters():
        p.requires_grad = stage == "full" or (stage == "stage2" and "lora" in name)


def freeze_by_names(model, stage):
    """Correct: one loop over the whole model's names."""
    for name, p in model.named_parameters():
        if name.startswith("encoder."):
            p.requires_grad_(False)
        elif name.startswith("lm."):
            p.requires_grad_({"stage1": False, "stage2": "lora_A" in name or "lora_B" in name, "full": True}[stage])
        else:
            p.requires_grad_(True)
    return model


def _freeze_variant(kind):
    def freeze(model, stage):
        freeze_by_parts(model, stage)
        if kind == "whole LM" and stage == "stage2":
            model.lm.requires_grad_(True)
        elif kind == "bridge frozen" and stage == "stage2":
            model.bridge.requires_grad_(False)
        elif kind == "encoder trainable" and model.encoder is not None:
            model.encoder.requires_grad_(True)
        elif kind == "only lora_B" and stage == "stage2":
            for name, p in model.lm.named_parameters():
                p.requires_grad_("lora_B" in name)
        elif kind == "LM in stage 1" and stage == "stage1":
            model.lm.requires_grad_(True)
        elif kind == "LM frozen in full" and stage == "full":
            model.lm.requires_grad_(False)
        elif kind == "returns a copy":
            import copy

            return copy.deepcopy(model)
        return None

    return freeze


def freeze_never_unfreezes(model, stage):
    """Wrong: only sets requires_grad=False where needed; a bridge that came frozen stays frozen."""
    if model.encoder is not None:
        model.encoder.requires_grad_(False)
    for name, p in model.lm.named_parameters():
        if not (stage == "full" or (stage == "stage2" and "lora_" in name)):
            p.requires_grad_(False)


def freeze_zeroes_lm(model, stage):
    """Wrong: 'freezes' by zeroing the weights."""
    freeze_by_parts(model, stage)
    with torch.no_grad():
        for p in model.lm.parameters():
            if not p.requires_grad:
                p.zero_()


# ------------------------------------------------------------------------------------------- lora_parameter_count


def count_by_weights(lm, rank, targets):
    """Correct: sum(weight.shape) is d_in + d_out for nn.Linear and GPT-2's Conv1D alike."""
    total = 0
    for name, module in lm.named_modules():
        if name.split(".")[-1] in targets:
            total += rank * sum(module.weight.shape)
    return total


def count_with_peft(lm, rank, targets):
    """Correct: let peft build the adapters on a copy and count what trains."""
    from mmllm_course.training import add_lora, count_parameters

    return count_parameters(add_lora(lm, rank, targets), trainable_only=True)


def count_full_matrix(lm, rank, targets):
    return sum(m.weight.numel() for n, m in lm.named_modules() if n.split(".")[-1] in targets)


def count_square(lm, rank, targets):
    width = lm.get_input_embeddings().weight.shape[1]
    return sum(rank * 2 * width for n, m in lm.named_modules() if n.split(".")[-1] in targets)


def count_first_layer(lm, rank, targets):
    return sum(rank * sum(m.weight.shape) for n, m in lm.named_modules() if n.split(".")[-1] in targets and ".0." in n)


def count_a_only(lm, rank, targets):
    total = 0
    for n, m in lm.named_modules():
        if n.split(".")[-1] in targets:
            total += rank * (m.in_features if isinstance(m, nn.Linear) else m.weight.shape[0])
    return total


def count_with_bias(lm, rank, targets):
    return sum(rank * sum(m.weight.shape) + (m.weight.shape[0] if isinstance(m, nn.Linear) else m.weight.shape[1])
               for n, m in lm.named_modules() if n.split(".")[-1] in targets)


def count_in_place(lm, rank, targets):
    """Wrong: right number, but peft adds the adapters to the learner's LM itself."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(lm, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(targets)))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_float(lm, rank, targets):
    return float(lora_parameter_count_reference(lm, rank, targets))


# ------------------------------------------------------------------------------------------- chat_example


def chat_by_segments(messages, tokenizer, k):
    """Correct: tokenizes turn by turn, labelling the assistant's segments after their ' A:'."""
    image = tokenizer.convert_tokens_to_ids("<image>")
    ids, labels = [tokenizer.bos_token_id], [IGNORE]
    for i, m in enumerate(messages):
        if m["role"] == "user":
            n_img = 0 if isinstance(m["content"], str) else sum(p["type"] == "image" for p in m["content"])
            text = m["content"] if isinstance(m["content"], str) else "".join(p["text"] for p in m["content"] if p["type"] == "text")
            seg = ("" if i == 0 else " ") + "Q: " + text
            seg_ids = [image] * (k * n_img) + tokenizer(seg, add_special_tokens=False)["input_ids"]
            ids += seg_ids
            labels += [IGNORE] * len(seg_ids)
        else:
            prompt = tokenizer(" A:", add_special_tokens=False)["input_ids"]
            answer = tokenizer(" " + m["content"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            ids += prompt + answer
            labels += [IGNORE] * len(prompt) + answer
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels)}


def chat_by_offsets(messages, tokenizer, k):
    """Correct: renders the whole conversation once, finds each answer with the generation prompt; lists, not tensors."""
    image = tokenizer.convert_tokens_to_ids("<image>")
    whole = tokenizer(tokenizer.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"]
    keep = [False] * len(whole)
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            start = len(tokenizer(tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True),
                                  add_special_tokens=False)["input_ids"])
            end = len(tokenizer(tokenizer.apply_chat_template(messages[:i + 1], tokenize=False), add_special_tokens=False)["input_ids"])
            keep[start:end] = [True] * (end - start)
    ids, labels = [tokenizer.bos_token_id], [IGNORE]
    for t, kept in zip(whole, keep):
        reps = k if t == image else 1
        ids += [t] * reps
        labels += [t if kept else IGNORE] * reps
    return {"input_ids": ids, "labels": labels}


def _chat_variant(kind):
    def chat(messages, tokenizer, k):
        row = chat_example_reference(messages, tokenizer, k)
        ids, labels = row["input_ids"], row["labels"]
        if kind == "labels everywhere":
            labels = ids.clone()
        elif kind == "user turn labelled":
            labels = ids.masked_fill(ids == tokenizer.convert_tokens_to_ids("<image>"), IGNORE)
        elif kind == "eos masked":
            labels = labels.masked_fill(ids == tokenizer.eos_token_id, IGNORE)
        elif kind == "shifted":
            labels = torch.cat([labels[1:], torch.tensor([IGNORE])])
        elif kind == "last answer only":
            row2 = chat_example_reference(messages[-2:], tokenizer, k) if len(messages) > 2 else None
            if row2 is not None:
                n = len(row2["labels"]) - 1
                labels = torch.cat([torch.full((len(labels) - n,), IGNORE), row2["labels"][1:]])
        elif kind == "no bos":
            ids, labels = ids[1:], labels[1:]
        elif kind == "not expanded":
            return chat_example_reference(messages, tokenizer, 1)
        elif kind == "float":
            labels = labels.float()
        elif kind == "A: labelled":
            out = labels.clone()
            for i in range(3, len(labels)):
                if labels[i] != IGNORE and labels[i - 1] == IGNORE:
                    out[i - 3:i] = ids[i - 3:i]
            labels = out
        return {"input_ids": ids, "labels": labels}

    return chat


# ------------------------------------------------------------------------------------------- lora_linear


def lora_linear_functional(x, weight, bias, lora_A, lora_B, alpha):
    """Correct: F.linear twice, the scale applied to the low-rank path's middle."""
    r = lora_A.shape[0]
    return nn.functional.linear(x, weight, bias) + nn.functional.linear(nn.functional.linear(x, lora_A) * (alpha / r), lora_B)


def lora_linear_einsum(x, weight, bias, lora_A, lora_B, alpha):
    """Correct: the merged weight (W + s B A) in one einsum."""
    merged = weight + (alpha / lora_A.shape[0]) * lora_B @ lora_A
    out = torch.einsum("...i,oi->...o", x, merged)
    return out if bias is None else out + bias


def lora_no_scale(x, weight, bias, lora_A, lora_B, alpha):
    return nn.functional.linear(x, weight, bias) + x @ lora_A.T @ lora_B.T


def lora_alpha_only(x, weight, bias, lora_A, lora_B, alpha):
    return nn.functional.linear(x, weight, bias) + alpha * (x @ lora_A.T @ lora_B.T)


def lora_swapped(x, weight, bias, lora_A, lora_B, alpha):
    return nn.functional.linear(x, weight, bias) + (alpha / lora_A.shape[0]) * (x @ lora_B @ lora_A)


def lora_no_bias(x, weight, bias, lora_A, lora_B, alpha):
    return x @ weight.T + (alpha / lora_A.shape[0]) * (x @ lora_A.T @ lora_B.T)


def lora_scaled_all(x, weight, bias, lora_A, lora_B, alpha):
    return (alpha / lora_A.shape[0]) * (nn.functional.linear(x, weight, bias) + x @ lora_A.T @ lora_B.T)


def lora_detached(x, weight, bias, lora_A, lora_B, alpha):
    return lora_linear_reference(x, weight, bias, lora_A.detach(), lora_B.detach(), alpha)


# ------------------------------------------------------------------------------------------- MyLoRALinear


class LoRASolution(nn.Module):
    """Correct: nn.Linear adapters, peft's initialisation (kaiming-uniform A, zero B)."""

    def __init__(self, base, rank, alpha):
        super().__init__()
        self.base_layer = base.requires_grad_(False)
        self.lora_A = nn.Linear(base.in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.scaling = alpha / rank

    def forward(self, x):
        return self.base_layer(x) + self.lora_B(self.lora_A(x)) * self.scaling


class LoRAHandwritten(nn.Module):
    """Correct: the adapters as bare parameters inside nn.Module containers, a Gaussian A, the formula by hand."""

    def __init__(self, base, rank, alpha):
        super().__init__()
        self.base_layer = base
        for p in self.base_layer.parameters():
            p.requires_grad = False
        self.lora_A, self.lora_B = nn.Module(), nn.Module()
        self.lora_A.weight = nn.Parameter(torch.randn(rank, base.in_features) / rank)
        self.lora_B.weight = nn.Parameter(torch.zeros(base.out_features, rank))
        self.alpha, self.rank = alpha, rank

    def forward(self, x):
        return self.base_layer(x) + (self.alpha / self.rank) * (x @ self.lora_A.weight.T) @ self.lora_B.weight.T


def _lora_module_variant(kind):
    class Variant(LoRASolution):
        def __init__(self, base, rank, alpha):
            super().__init__(base, rank, alpha)
            if kind == "B random":
                nn.init.normal_(self.lora_B.weight, std=0.02)
            elif kind == "both zero":
                nn.init.zeros_(self.lora_A.weight)
            elif kind == "base trainable":
                self.base_layer.requires_grad_(True)
            elif kind == "no scale":
                self.scaling = 1.0
            elif kind == "alpha":
                self.scaling = alpha

        def forward(self, x):
            if kind == "swapped":
                return self.base_layer(x) + self.scaling * (x @ self.lora_B.weight) @ self.lora_A.weight
            return super().forward(x)

    Variant.__name__ = f"LoRA_{kind.replace(' ', '_')}"
    return Variant


class LoRARenamed(nn.Module):
    """Wrong names: the frozen layer stored as `base`, not `base_layer`."""

    def __init__(self, base, rank, alpha):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.lora_A = nn.Linear(base.in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False)
        nn.init.zeros_(self.lora_B.weight)
        self.scaling = alpha / rank

    def forward(self, x):
        return self.base(x) + self.scaling * self.lora_B(self.lora_A(x))


class LoRATransposedA(LoRASolution):
    """Wrong shape: A stored as (d_in, r)."""

    def __init__(self, base, rank, alpha):
        super().__init__(base, rank, alpha)
        self.lora_A = nn.Linear(rank, base.in_features, bias=False)

    def forward(self, x):
        return self.base_layer(x) + self.scaling * self.lora_B(x @ self.lora_A.weight)


# ------------------------------------------------------------------------------------------- train: a stage-2 model


class OracleBridge(nn.Module):
    """A stand-in for a trained bridge: it recognises the check's held-out features and writes the image's row number."""

    def __init__(self, k=8, out_dim=64, tuple_out=False):
        super().__init__()
        self.k, self.out_dim, self.tuple_out = k, out_dim, tuple_out
        self.scale = nn.Parameter(torch.ones(()))
        self.known = None

    def forward(self, features, mask=None):
        if self.known is None:
            eval_features, _ = train_stage2_eval_data()
            self.known = {f.numpy().tobytes(): i for i, f in enumerate(eval_features)}
        out = torch.zeros(len(features), self.k, self.out_dim)
        for i, f in enumerate(features):
            out[i, :, 0] = float(self.known.get(f.cpu().numpy().tobytes(), -1))
            out[i, :, 1] = 1000.0  # marks the image positions: no word embedding is that large
        out = out * self.scale
        return (out, None) if self.tuple_out else out


def _oracle_generate(lm, tokenizer, wrong_every):
    """An LM ``generate`` of known accuracy: it reads the image's row (from OracleBridge) and the question (from the
    token embeddings) in ``inputs_embeds`` and writes the check's own answer; every ``wrong_every``-th one is wrong."""
    _, qa = train_stage2_eval_data()
    answers = {(int(i), q): a for i, q, a in zip(qa.image_index, qa.questions, qa.answers)}
    table = lm.get_input_embeddings().weight.detach()
    counter = {"n": 0}

    def generate(inputs_embeds, attention_mask, max_new_tokens, eos_token_id, pad_token_id, **kwargs):
        rows = []
        for embeds, mask in zip(inputs_embeds, attention_mask):
            embeds = embeds[mask.bool()]
            image = embeds[:, 1] == 1000.0
            index = int(embeds[image][0, 0]) if image.any() else -1
            ids = torch.cdist(embeds[~image][None], table[None])[0].argmin(-1)  # each text position's token
            text = tokenizer.decode(ids, skip_special_tokens=True)
            question = text.split("Q:", 1)[-1].rsplit("A:", 1)[0].strip()
            answer = answers.get((index, question), "red")
            counter["n"] += 1
            if wrong_every and counter["n"] % wrong_every == 0:
                answer = "purple"
            new = tokenizer(" " + answer, add_special_tokens=False)["input_ids"] + [eos_token_id]
            rows.append((new + [pad_token_id] * max_new_tokens)[:max_new_tokens])
        return torch.tensor(rows)

    return generate


class OracleStage2(nn.Module):
    """Correct: a stage-2 model of known accuracy, on the shipped LM with (untrained) LoRA adapters."""

    def __init__(self, wrong_every=0, full_lm_trained=False, no_lora=False, **bridge_kwargs):
        super().__init__()
        from mmllm_course.language import chat_tokenizer
        from mmllm_course.pretrained import load_chapter5_lm
        from mmllm_course.training import add_lora

        lm, _ = load_chapter5_lm()
        if full_lm_trained:
            with torch.no_grad():
                lm.model.layers[0].self_attn.q_proj.weight.add_(0.01)
        self.bridge = OracleBridge(**bridge_kwargs)
        self.lm = lm if no_lora else add_lora(lm, 4)
        base = self.lm if no_lora else self.lm.base_model.model
        base.generate = _oracle_generate(base, chat_tokenizer(), wrong_every)
        if not no_lora:
            self.lm.generate = base.generate


def trained_model_function():
    """Correct: a function of no arguments that returns the trained model."""
    return OracleStage2()


def train_with_arguments(model, steps=200):
    """Wrong: the training function itself, not what it returned."""
    return model


def _untrained():
    """Wrong: the shipped LM with fresh adapters and a fresh bridge: it never saw a question."""
    from mmllm_course.bridges import make_bridge
    from mmllm_course.pretrained import load_chapter5_lm
    from mmllm_course.training import add_lora

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.bridge = make_bridge("qformer", in_dim=64, out_dim=64, num_queries=8)
            self.lm = add_lora(load_chapter5_lm()[0], 4)

    return Model()


# ------------------------------------------------------------------------------------------- stretch: merge


def merge_einsum(weight, lora_A, lora_B, alpha):
    """Correct: the low-rank product as an einsum."""
    return weight + torch.einsum("or,ri->oi", lora_B, lora_A) * (alpha / lora_A.shape[0])


def merge_through_linear(weight, lora_A, lora_B, alpha):
    """Correct: runs the identity through the adapter (B A I), then adds it."""
    eye = torch.eye(weight.shape[1], dtype=weight.dtype)
    return weight + (alpha / lora_A.shape[0]) * (eye @ lora_A.T @ lora_B.T).T


def merge_no_scale(weight, lora_A, lora_B, alpha):
    return weight + lora_B @ lora_A


def merge_alpha(weight, lora_A, lora_B, alpha):
    return weight + alpha * lora_B @ lora_A


def merge_replaces(weight, lora_A, lora_B, alpha):
    return (alpha / lora_A.shape[0]) * lora_B @ lora_A


def merge_in_place(weight, lora_A, lora_B, alpha):
    weight += (alpha / lora_A.shape[0]) * lora_B @ lora_A
    return weight


CASES = {
    "ch07.freeze_for_stage": {
        "correct": [freeze_for_stage, freeze_by_parts, freeze_by_names],
        "wrong": {
            "whole LM trainable in stage 2": _freeze_variant("whole LM"),
            "bridge frozen in stage 2": _freeze_variant("bridge frozen"),
            "never unfreezes": freeze_never_unfreezes,
            "encoder trainable": _freeze_variant("encoder trainable"),
            "only lora_B": _freeze_variant("only lora_B"),
            "LM trainable in stage 1": _freeze_variant("LM in stage 1"),
            "LM frozen in full": _freeze_variant("LM frozen in full"),
            "returns a copy": _freeze_variant("returns a copy"),
            "zeroes the weights": freeze_zeroes_lm,
        },
        "diagnoses": {
            "whole LM trainable in stage 2": (_freeze_variant("whole LM"), "the whole LM left trainable"),
            "bridge frozen in stage 2": (_freeze_variant("bridge frozen"), "the bridge frozen"),
            "never unfreezes": (freeze_never_unfreezes, "do not only freeze the rest"),
            "encoder trainable": (_freeze_variant("encoder trainable"), "the encoder trainable"),
            "only lora_B": (_freeze_variant("only lora_B"), "LoRA adapters frozen in stage 2 (lora_A"),
            "LM trainable in stage 1": (_freeze_variant("LM in stage 1"), "the LM left trainable in stage 1"),
            "LM frozen in full": (_freeze_variant("LM frozen in full"), "the LM frozen in full fine-tuning"),
            "returns a copy": (_freeze_variant("returns a copy"), "return the model you were given"),
            "zeroes the weights": (freeze_zeroes_lm, "changed parameter values"),
        },
    },
    "ch07.lora_parameter_count": {
        "correct": [lora_parameter_count_reference, count_by_weights, count_with_peft],
        "wrong": {
            "full matrix": count_full_matrix,
            "square": count_square,
            "first layer only": count_first_layer,
            "A only": count_a_only,
            "bias counted": count_with_bias,
            "adds adapters in place": count_in_place,
            "float": count_float,
        },
        "diagnoses": {
            "full matrix": (count_full_matrix, "the full matrix d_in * d_out"),
            "square": (count_square, "taken as D x D"),
            "first layer only": (count_first_layer, "first layer only"),
            "A only": (count_a_only, "only A counted"),
            "bias counted": (count_with_bias, "a bias counted"),
            "adds adapters in place": (count_in_place, "changed the LM"),
            "float": (count_float, "expected an int"),
        },
    },
    "ch07.chat_example": {
        "correct": [chat_example_reference, chat_by_segments, chat_by_offsets],
        "wrong": {
            "labels everywhere": _chat_variant("labels everywhere"),
            "user turn labelled": _chat_variant("user turn labelled"),
            "eos masked": _chat_variant("eos masked"),
            "shifted": _chat_variant("shifted"),
            "last answer only": _chat_variant("last answer only"),
            "no bos": _chat_variant("no bos"),
            "not expanded": _chat_variant("not expanded"),
            "float labels": _chat_variant("float"),
            "A: labelled": _chat_variant("A: labelled"),
        },
        "diagnoses": {
            "labels everywhere": (_chat_variant("labels everywhere"), "labels on every token"),
            "user turn labelled": (_chat_variant("user turn labelled"), "the user's question and the template's 'Q:' take loss"),
            "eos masked": (_chat_variant("eos masked"), "the eos after each answer masked"),
            "shifted": (_chat_variant("shifted"), "shifted by one position"),
            "last answer only": (_chat_variant("last answer only"), "only the last answer labelled"),
            "no bos": (_chat_variant("no bos"), "no bos at the start"),
            "not expanded": (_chat_variant("not expanded"), "not expanded"),
            "float labels": (_chat_variant("float"), "torch.long"),
            "A: labelled": (_chat_variant("A: labelled"), "' A:' labelled too"),
        },
    },
    "ch07.lora_linear": {
        "correct": [lora_linear_reference, lora_linear_functional, lora_linear_einsum],
        "wrong": {
            "alpha/r forgotten": lora_no_scale,
            "alpha only": lora_alpha_only,
            "A and B swapped": lora_swapped,
            "bias forgotten": lora_no_bias,
            "whole output scaled": lora_scaled_all,
            "detached adapters": lora_detached,
        },
        "diagnoses": {
            "alpha/r forgotten": (lora_no_scale, "the alpha / r scale forgotten"),
            "alpha only": (lora_alpha_only, "scaled by alpha, not alpha / r"),
            "A and B swapped": (lora_swapped, "A and B swapped"),
            "bias forgotten": (lora_no_bias, "the bias forgotten"),
            "whole output scaled": (lora_scaled_all, "the scale applied to the whole output"),
            "detached adapters": (lora_detached, "no gradient reaches lora_A"),
        },
    },
    "ch07.lora_module": {
        "correct": [LoRASolution, LoRAHandwritten],
        "wrong": {
            "B not zero-init": _lora_module_variant("B random"),
            "A and B zero": _lora_module_variant("both zero"),
            "base trainable": _lora_module_variant("base trainable"),
            "alpha/r forgotten": _lora_module_variant("no scale"),
            "scaled by alpha": _lora_module_variant("alpha"),
            "A and B swapped": _lora_module_variant("swapped"),
            "renamed": LoRARenamed,
            "A transposed": LoRATransposedA,
            "an instance": LoRASolution(nn.Linear(4, 4), 2, 4.0),
        },
        "diagnoses": {
            "B not zero-init": (_lora_module_variant("B random"), "lora_B starts non-zero"),
            "A and B zero": (_lora_module_variant("both zero"), "lora_A starts at zero too"),
            "base trainable": (_lora_module_variant("base trainable"), "the pretrained layer stays frozen"),
            "alpha/r forgotten": (_lora_module_variant("no scale"), "the alpha / r scale forgotten"),
            "scaled by alpha": (_lora_module_variant("alpha"), "scaled by alpha, not alpha / r"),
            "A and B swapped": (_lora_module_variant("swapped"), "A and B swapped"),
            "renamed": (LoRARenamed, "missing: base_layer.weight"),
            "A transposed": (LoRATransposedA, "lora_A.weight has shape"),
            "an instance": (LoRASolution(nn.Linear(4, 4), 2, 4.0), "pass the class itself"),
        },
    },
    "ch07.train_stage2": {
        "correct": [OracleStage2(), OracleStage2(wrong_every=14), trained_model_function],
        "wrong": {
            "85% right": OracleStage2(wrong_every=7),
            "untrained": _untrained(),
            "whole LM trained": OracleStage2(full_lm_trained=True),
            "no adapters": OracleStage2(no_lora=True),
            "the class": OracleStage2,
            "wrong width": OracleStage2(out_dim=32),
            "tuple": OracleStage2(tuple_out=True),
            "the training function": train_with_arguments,
        },
        "diagnoses": {
            "85% right": (OracleStage2(wrong_every=7), "below the 90% bar"),
            "untrained": (_untrained(), "below the 90% bar"),
            "whole LM trained": (OracleStage2(full_lm_trained=True), "the whole LM was left trainable"),
            "no adapters": (OracleStage2(no_lora=True), "no LoRA adapters"),
            "the class": (OracleStage2, "pass your TRAINED model"),
            "wrong width": (OracleStage2(out_dim=32), "out_dim must be the LM's width"),
            "the training function": (train_with_arguments, "pass your TRAINED model"),
        },
    },
    "ch07.merge_lora": {
        "correct": [merge_lora_reference, merge_einsum, merge_through_linear],
        "wrong": {
            "alpha/r forgotten": merge_no_scale,
            "scaled by alpha": merge_alpha,
            "replaces the weight": merge_replaces,
            "in place": merge_in_place,
        },
        "diagnoses": {
            "alpha/r forgotten": (merge_no_scale, "the alpha / r scale forgotten"),
            "scaled by alpha": (merge_alpha, "scaled by alpha, not alpha / r"),
            "replaces the weight": (merge_replaces, "the update replaces the weight"),
            "in place": (merge_in_place, "changed its inputs in place"),
        },
    },
    "ch07.q1": {"answer": "b", "wrong": ["a", "c", "d"]},
    "ch07.q2": {"answer": "c", "wrong": ["a", "b", "d"]},
    "ch07.q3": {"answer": "a", "wrong": ["b", "c", "d"]},
    "ch07.q4": {"answer": "d", "wrong": ["a", "b", "c"]},
}
