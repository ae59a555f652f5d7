"""Grader cases for chapter 5: correct versions written several ways, and the mistakes learners make.

``diagnoses``: ``{label: (answer, words)}``, a wrong answer whose ``fail`` message must contain ``words``
(the check names that mistake, not another).
"""

import torch
import torch.nn.functional as F
from torch import nn

from mmllm_course.grading.checks.ch05 import (
    IGNORE,
    expand_placeholder_reference,
    greedy_decode_reference,
    make_batch_reference,
    splice_reference,
    top_k_probs_reference,
    train_captioner_eval_data,
)

# ------------------------------------------------------------------------------------------- expand_placeholder


def expand_comprehension(ids, image_token_id, k):
    """Correct: a nested comprehension."""
    return [t for i in ids for t in ([i] * k if i == image_token_id else [i])]


def expand_tensor(ids, image_token_id, k):
    """Correct: repeat_interleave with per-token counts, returned as a 1-d tensor."""
    x = torch.tensor(ids)
    counts = torch.where(x == image_token_id, k, 1)
    return x.repeat_interleave(counts)


def expand_keeps_placeholder(ids, image_token_id, k):
    """Wrong: the placeholder stays and K copies are inserted after it."""
    out = []
    for t in ids:
        out.append(t)
        if t == image_token_id:
            out += [image_token_id] * k
    return out


def expand_first_only(ids, image_token_id, k):
    i = ids.index(image_token_id)
    return ids[:i] + [image_token_id] * k + ids[i + 1:]


def expand_prepended(ids, image_token_id, k):
    n = ids.count(image_token_id)
    return [image_token_id] * (n * k) + [t for t in ids if t != image_token_id]


def expand_in_place(ids, image_token_id, k):
    """Wrong: right values, but the learner's input list is changed."""
    i = 0
    while i < len(ids):
        if ids[i] == image_token_id:
            ids[i:i + 1] = [image_token_id] * k
            i += k
        else:
            i += 1
    return ids


def expand_strings(ids, image_token_id, k):
    """Wrong: returns the ids as strings."""
    return [str(t) for t in expand_placeholder_reference(ids, image_token_id, k)]


# ------------------------------------------------------------------------------------------- make_batch


def make_batch_loops(prompts, targets, pad_id, padding_side="right"):
    """Correct: pads built as lists first, the mask as booleans."""
    rows, labels = [], []
    for i, p in enumerate(prompts):
        t = targets[i] if targets is not None else []
        rows.append(p + t)
        labels.append([-100] * len(p) + t)
    length = max(map(len, rows))
    ids, mask, lab = [], [], []
    for r, lr in zip(rows, labels):
        pad = length - len(r)
        if padding_side == "left":
            ids.append([pad_id] * pad + r)
            mask.append([False] * pad + [True] * len(r))
            lab.append([-100] * pad + lr)
        else:
            ids.append(r + [pad_id] * pad)
            mask.append([True] * len(r) + [False] * pad)
            lab.append(lr + [-100] * pad)
    out = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
    if targets is not None:
        out["labels"] = torch.tensor(lab)
    return out


def make_batch_pad_sequence(prompts, targets, pad_id, padding_side="right"):
    """Correct: torch's pad_sequence, flipped for left padding."""
    from torch.nn.utils.rnn import pad_sequence

    def pad(seqs, value):
        if padding_side == "left":
            return pad_sequence([torch.tensor(s[::-1]) for s in seqs], batch_first=True, padding_value=value).flip(1)
        return pad_sequence([torch.tensor(s) for s in seqs], batch_first=True, padding_value=value)

    ids = [p + (targets[i] if targets else []) for i, p in enumerate(prompts)]
    out = {"input_ids": pad(ids, pad_id), "attention_mask": pad([[1] * len(s) for s in ids], 0)}
    if targets is not None:
        out["labels"] = pad([[-100] * len(p) + t for p, t in zip(prompts, targets)], -100)
    return out


def _batch(prompts, targets, pad_id, padding_side, **change):
    out = make_batch_reference(prompts, targets, pad_id, padding_side)
    kind = change.get("kind")
    if kind == "unmasked" and targets is not None:
        out["labels"] = out["input_ids"].masked_fill(out["attention_mask"] == 0, -100)
    elif kind == "pad_label" and targets is not None:
        out["labels"] = out["labels"].masked_fill(out["attention_mask"] == 0, pad_id)
    elif kind == "ones":
        out["attention_mask"] = torch.ones_like(out["attention_mask"])
    elif kind == "always_right":
        out = make_batch_reference(prompts, targets, pad_id, "right")
    elif kind == "shifted" and targets is not None:
        labels = torch.full_like(out["labels"], -100)
        labels[:, :-1] = out["labels"][:, 1:]
        out["labels"] = labels
    elif kind == "first_target_masked" and targets is not None:
        out["labels"] = make_batch_reference([p + t[:1] for p, t in zip(prompts, targets)], [t[1:] for t in targets], pad_id,
                                             padding_side)["labels"]
    elif kind == "pad_zero":
        out = make_batch_reference(prompts, targets, 0, padding_side)
    return out


def batch_labels_not_masked(prompts, targets, pad_id, padding_side="right"):
    return _batch(prompts, targets, pad_id, padding_side, kind="unmasked")


def batch_pad_labelled(prompts, targets, pad_id, padding_side="right"):
    return _batch(prompts, targets, pad_id, padding_side, kind="pad_label")


def batch_mask_forgotten(prompts, targets, pad_id, padding_side="right"):
    """Wrong: the mask forgotten for padding (ones everywhere)."""
    return _batch(prompts, targets, pad_id, padding_side, kind="ones")


def batch_always_right(prompts, targets, pad_id, padding_side="right"):
    """Wrong: right padding used for generation too."""
    return _batch(prompts, targets, pad_id, padding_side, kind="always_right")


def batch_labels_shifted(prompts, targets, pad_id, padding_side="right"):
    return _batch(prompts, targets, pad_id, padding_side, kind="shifted")


def batch_first_target_masked(prompts, targets, pad_id, padding_side="right"):
    return _batch(prompts, targets, pad_id, padding_side, kind="first_target_masked")


def batch_pad_zero(prompts, targets, pad_id, padding_side="right"):
    return _batch(prompts, targets, pad_id, padding_side, kind="pad_zero")


def batch_float_mask(prompts, targets, pad_id, padding_side="right"):
    out = make_batch_reference(prompts, targets, pad_id, padding_side)
    out["attention_mask"] = out["attention_mask"].float()
    return out


def batch_no_labels(prompts, targets, pad_id, padding_side="right"):
    return make_batch_reference(prompts, None, pad_id, padding_side)


# ------------------------------------------------------------------------------------------- splice


def splice_index_assign(input_ids, image_embeds, embed_tokens, image_token_id):
    """Correct: index assignment on a (non-leaf) clone, rows found with nonzero."""
    embeds = embed_tokens(input_ids).clone()
    b, t = (input_ids == image_token_id).nonzero(as_tuple=True)  # row-major order
    embeds[b, t] = image_embeds.reshape(-1, image_embeds.shape[-1]).to(embeds.dtype)
    return embeds


def splice_where_loop(input_ids, image_embeds, embed_tokens, image_token_id):
    """Correct: row by row, runs of K found by hand, torch.cat of pieces."""
    k = image_embeds.shape[1]
    rows, image = [], 0
    for row in input_ids:
        pieces, t = [], 0
        while t < len(row):
            if int(row[t]) == image_token_id:
                pieces.append(image_embeds[image])
                image += 1
                t += k
            else:
                pieces.append(embed_tokens(row[t:t + 1]))
                t += 1
        rows.append(torch.cat(pieces))
    return torch.stack(rows)


def _splice_shift(input_ids, image_embeds, embed_tokens, image_token_id, shift):
    is_image = input_ids == image_token_id
    where = torch.zeros_like(is_image)
    if shift > 0:
        where[:, 1:] = is_image[:, :-1]
    else:
        where[:, :-1] = is_image[:, 1:]
    plain = embed_tokens(input_ids)
    return plain.masked_scatter(where.unsqueeze(-1).expand_as(plain), image_embeds.reshape(-1, plain.shape[-1]))


def splice_off_by_one(input_ids, image_embeds, embed_tokens, image_token_id):
    """Wrong: image tokens written one position late."""
    return _splice_shift(input_ids, image_embeds, embed_tokens, image_token_id, +1)


def splice_off_by_one_early(input_ids, image_embeds, embed_tokens, image_token_id):
    return _splice_shift(input_ids, image_embeds, embed_tokens, image_token_id, -1)


def splice_added(input_ids, image_embeds, embed_tokens, image_token_id):
    plain = embed_tokens(input_ids)
    extra = torch.zeros_like(plain).masked_scatter((input_ids == image_token_id).unsqueeze(-1).expand_as(plain),
                                                   image_embeds.reshape(-1, plain.shape[-1]))
    return plain + extra


def splice_ignored(input_ids, image_embeds, embed_tokens, image_token_id):
    return embed_tokens(input_ids)


def splice_token_major(input_ids, image_embeds, embed_tokens, image_token_id):
    """Wrong: image vectors taken token by token across images."""
    embeds = embed_tokens(input_ids)
    mask = (input_ids == image_token_id).unsqueeze(-1).expand_as(embeds)
    return embeds.masked_scatter(mask, image_embeds.transpose(0, 1).reshape(-1, embeds.shape[-1]))


def splice_detached(input_ids, image_embeds, embed_tokens, image_token_id):
    """Wrong: right values, the image vectors detached (the bridge would never learn)."""
    return splice_reference(input_ids, image_embeds.detach(), embed_tokens, image_token_id)


def splice_no_grad(input_ids, image_embeds, embed_tokens, image_token_id):
    with torch.no_grad():
        return splice_reference(input_ids, image_embeds, embed_tokens, image_token_id)


# ------------------------------------------------------------------------------------------- greedy_decode


def _positions(mask):
    return (mask.cumsum(-1) - 1).clamp(min=0)


@torch.no_grad()
def greedy_decode_preallocated(lm, inputs_embeds, attention_mask, max_new_tokens):
    """Correct: a preallocated buffer, positions clamped at 0 on the pads, the ids as int32."""
    b, t, d = inputs_embeds.shape
    embeds = torch.zeros(b, t + max_new_tokens, d, dtype=inputs_embeds.dtype)
    mask = torch.zeros(b, t + max_new_tokens, dtype=torch.long)
    embeds[:, :t], mask[:, :t] = inputs_embeds, attention_mask
    out = torch.zeros(b, max_new_tokens, dtype=torch.int32)
    for step in range(max_new_tokens):
        n = t + step
        logits = lm(inputs_embeds=embeds[:, :n], attention_mask=mask[:, :n], position_ids=_positions(mask[:, :n])).logits
        token = logits[:, -1].argmax(-1)
        out[:, step] = token
        embeds[:, n] = lm.get_input_embeddings()(token)
        mask[:, n] = 1
    return out


def greedy_decode_softmax(lm, inputs_embeds, attention_mask, max_new_tokens):
    """Correct: argmax of the softmax (the same token), tokens collected in a list."""
    embeds, mask, tokens = inputs_embeds, attention_mask, []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            pos = mask.long().cumsum(-1) - 1
            probs = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos.masked_fill(mask == 0, 0)).logits[:, -1].softmax(-1)
            nxt = torch.argmax(probs, dim=-1, keepdim=True)  # (B, 1)
            tokens.append(nxt)
            embeds = torch.cat([embeds, lm.get_input_embeddings()(nxt)], dim=1)
            mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
    return torch.cat(tokens, dim=1)


@torch.no_grad()
def greedy_decode_cached(lm, inputs_embeds, attention_mask, max_new_tokens):
    """Correct: a key/value cache, as generate() runs it: the prompt once, then one new column per step."""
    mask = attention_mask.long()
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    out = lm(inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=pos, use_cache=True)
    tokens = []
    for step in range(max_new_tokens):
        token = out.logits[:, -1].argmax(-1)
        tokens.append(token)
        if step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = lm(inputs_embeds=lm.get_input_embeddings()(token)[:, None], attention_mask=mask,
                 position_ids=(mask.sum(-1, keepdim=True) - 1), cache=out.cache, use_cache=True)
    return torch.stack(tokens, dim=1)


def decode_first_position(lm, inputs_embeds, attention_mask, max_new_tokens):
    return greedy_decode_reference(lm, inputs_embeds, attention_mask, max_new_tokens, column=0)


def decode_no_feedback(lm, inputs_embeds, attention_mask, max_new_tokens):
    return greedy_decode_reference(lm, inputs_embeds, attention_mask, max_new_tokens, feed_back=False)


def decode_no_positions(lm, inputs_embeds, attention_mask, max_new_tokens):
    """Wrong: no position_ids (the LM numbers the left pads too)."""
    return greedy_decode_reference(lm, inputs_embeds, attention_mask, max_new_tokens, positions=False)


def decode_no_mask(lm, inputs_embeds, attention_mask, max_new_tokens):
    return greedy_decode_reference(lm, inputs_embeds, attention_mask, max_new_tokens, use_mask=False)


def decode_with_prompt(lm, inputs_embeds, attention_mask, max_new_tokens):
    """Wrong: returns the prompt's columns too (a placeholder id for them)."""
    new = greedy_decode_reference(lm, inputs_embeds, attention_mask, max_new_tokens)
    return torch.cat([torch.zeros(inputs_embeds.shape[:2], dtype=torch.long), new], dim=1)


def decode_logits(lm, inputs_embeds, attention_mask, max_new_tokens):
    """Wrong: returns the last logits' values, not token ids."""
    return greedy_decode_reference(lm, inputs_embeds, attention_mask, max_new_tokens).float()


# ------------------------------------------------------------------------------------------- build: the unified model


class UnifiedSolution(nn.Module):
    """Correct: masked_scatter splice, positions from the mask. ``variant`` switches in one mistake."""

    variant = "right"

    def __init__(self, bridge, lm, image_token_id):
        super().__init__()
        self.bridge, self.lm, self.image_token_id = bridge, lm, image_token_id

    def forward(self, input_ids, attention_mask, image_features, labels=None):
        v = self.variant
        image_embeds = self.bridge(image_features)
        if v == "detached":
            image_embeds = image_embeds.detach()
        table = self.lm.get_input_embeddings()
        if v == "off_by_one":
            embeds = _splice_shift(input_ids, image_embeds, table, self.image_token_id, +1)
        else:
            embeds = splice_reference(input_ids, image_embeds, table, self.image_token_id)
        pos = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        kwargs = dict(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=pos)
        if v == "no_positions":
            del kwargs["position_ids"]
        if v == "no_mask":
            del kwargs["attention_mask"]
        if v == "input_ids":
            kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos)
        if labels is not None and v == "shifted_labels":
            shifted = torch.full_like(labels, -100)
            shifted[:, :-1] = labels[:, 1:]
            labels = shifted
        if v == "logits_only":
            return self.lm(**kwargs).logits
        return self.lm(**kwargs, labels=labels)


def _unified_variant(name):
    return type(f"Unified_{name}", (UnifiedSolution,), {"variant": name})


class UnifiedHandwritten(nn.Module):
    """Correct, written differently: torch.where splice, its own loss over the shifted logits."""

    def __init__(self, bridge, lm, image_token_id):
        super().__init__()
        self.bridge = bridge
        self.lm = lm
        self.image_token_id = image_token_id

    def forward(self, input_ids, attention_mask, image_features, labels=None):
        is_image = input_ids == self.image_token_id
        tokens = self.bridge(image_features).flatten(0, 1)  # (B_img * K, D)
        embeds = self.lm.get_input_embeddings()(input_ids)
        index = is_image.flatten().cumsum(0).sub(1).clamp(min=0).view_as(input_ids)  # which image row fills each slot
        embeds = torch.where(is_image[..., None], tokens[index], embeds)
        mask = attention_mask.long()
        out = self.lm(inputs_embeds=embeds, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).masked_fill(mask == 0, 1))
        if labels is not None:
            out.loss = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
        return out


class UnifiedExtraModule(UnifiedSolution):
    """Wrong names: keeps the embedding table as a third submodule (an extra state_dict entry)."""

    def __init__(self, bridge, lm, image_token_id):
        super().__init__(bridge, lm, image_token_id)
        self.embed = nn.Embedding(3, 2)


class UnifiedRenamed(nn.Module):
    """Wrong names: the LM stored as `language_model`."""

    def __init__(self, bridge, lm, image_token_id):
        super().__init__()
        self.bridge, self.language_model, self.image_token_id = bridge, lm, image_token_id

    def forward(self, input_ids, attention_mask, image_features, labels=None):
        embeds = splice_reference(input_ids, self.bridge(image_features), self.language_model.get_input_embeddings(), self.image_token_id)
        return self.language_model(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels)


# ------------------------------------------------------------------------------------------- train: a trained bridge


class OracleBridge(nn.Module):
    """A stand-in for a trained bridge of known accuracy: it recognises the check's held-out features and writes the
    LM's own embeddings of the caption's key words, which the shipped LM learned to read in pretraining.

    Training a real one takes ~15 s (the solution notebook does it and must pass); here the test needs bridges of a
    chosen accuracy in milliseconds. ``wrong_every``: every n-th image gets the wrong colour.
    """

    def __init__(self, wrong_every=0, out_dim=None, tuple_out=False):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.wrong_every, self.out_dim, self.tuple_out = wrong_every, out_dim, tuple_out
        self.known = None

    def _lookup(self):
        if self.known is None:
            from mmllm_course.data import COLORS, POSITIONS, SHAPES, SIZES
            from mmllm_course.pretrained import load_chapter5_lm

            lm, tok = load_chapter5_lm()
            features, objects = train_captioner_eval_data()
            table = lm.get_input_embeddings().weight.detach()
            words = (SHAPES, COLORS, SIZES, POSITIONS)
            rows = {}
            for i, (f, obj) in enumerate(zip(features, objects)):
                obj = [int(v) for v in obj]
                if self.wrong_every and i % self.wrong_every == 0:
                    obj[1] = (obj[1] + 1) % len(COLORS)
                text = " ".join(words[a][obj[a]] for a in (2, 1, 0, 3))  # size colour shape position
                ids = tok(" " + text, add_special_tokens=False)["input_ids"]
                filler = tok(" the", add_special_tokens=False)["input_ids"]
                ids = (ids + filler * 8)[:8]
                rows[f.numpy().tobytes()] = table[ids]
            self.known = rows
        return self.known

    def forward(self, features, mask=None):
        known = self._lookup()
        out = torch.stack([known.get(f.cpu().numpy().tobytes(), torch.zeros(8, 64)) for f in features]) * self.scale
        if self.out_dim is not None:
            out = out[..., : self.out_dim]
        return (out, None) if self.tuple_out else out


class OracleModel(nn.Module):
    """Correct: the learner's whole model (with .bridge and .lm); the check uses its bridge."""

    def __init__(self):
        super().__init__()
        self.bridge = OracleBridge()
        self.lm = nn.Linear(1, 1)


def trained_bridge_function():
    """Correct: a function of no arguments that returns the trained bridge."""
    return OracleBridge()


def train_with_arguments(bridge, steps=300):
    """Wrong: the training function itself, not what it returned."""
    return bridge


def _untrained_bridge():
    from mmllm_course.bridges import make_bridge

    torch.manual_seed(0)
    return make_bridge("qformer", in_dim=64, out_dim=64, num_queries=8)


# ------------------------------------------------------------------------------------------- stretch: top-k


def top_k_probs_transformers(logits, temperature=1.0, top_k=None):
    """Correct: transformers' own logits warpers, then a softmax."""
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper

    scores = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_k is not None:
        scores = TopKLogitsWarper(top_k)(None, scores)
    return scores.softmax(-1)


def top_k_probs_sort(logits, temperature=1.0, top_k=None):
    """Correct: sort, keep the first k, scatter back, renormalise the probabilities."""
    p = (logits / temperature).softmax(-1)
    if top_k is None or top_k >= logits.shape[-1]:
        return p
    values, index = p.sort(dim=-1, descending=True)
    kept = torch.zeros_like(p).scatter(-1, index[..., :top_k], values[..., :top_k])
    return kept / kept.sum(-1, keepdim=True)


def top_k_multiplied(logits, temperature=1.0, top_k=None):
    return top_k_probs_reference(logits * temperature ** 2, temperature, top_k)


def top_k_no_temperature(logits, temperature=1.0, top_k=None):
    return top_k_probs_reference(logits, 1.0, top_k)


def top_k_not_renormalised(logits, temperature=1.0, top_k=None):
    p = (logits / temperature).softmax(-1)
    if top_k is None or top_k >= logits.shape[-1]:
        return p
    kth = p.topk(top_k, dim=-1).values[..., -1:]
    return p.masked_fill(p < kth, 0.0)


def top_k_zero_fill(logits, temperature=1.0, top_k=None):
    s = logits / temperature
    if top_k is not None and top_k < s.shape[-1]:
        s = s.masked_fill(s < s.topk(top_k, dim=-1).values[..., -1:], 0.0)
    return s.softmax(-1)


def top_k_minus_one(logits, temperature=1.0, top_k=None):
    """Wrong: `<=` removes the k-th largest too."""
    s = logits / temperature
    if top_k is not None and top_k < s.shape[-1]:
        s = s.masked_fill(s <= s.topk(top_k, dim=-1).values[..., -1:], float("-inf")) if top_k > 1 else s
    return s.softmax(-1)


CASES = {
    "ch05.expand_placeholder": {
        "correct": [expand_placeholder_reference, expand_comprehension, expand_tensor],
        "wrong": {
            "placeholder kept": expand_keeps_placeholder,
            "first only": expand_first_only,
            "prepended": expand_prepended,
            "in place": expand_in_place,
            "strings": expand_strings,
        },
        "diagnoses": {
            "placeholder kept": (expand_keeps_placeholder, "K + 1 ids per placeholder"),
            "first only": (expand_first_only, "only the first placeholder"),
            "prepended": (expand_prepended, "at the start of the prompt"),
            "in place": (expand_in_place, "changed its input list in place"),
            "strings": (expand_strings, "list of int token ids"),
        },
    },
    "ch05.make_batch": {
        "correct": [make_batch_reference, make_batch_loops, make_batch_pad_sequence],
        "wrong": {
            "labels not masked": batch_labels_not_masked,
            "pad labelled": batch_pad_labelled,
            "mask forgotten for padding": batch_mask_forgotten,
            "right padding for generation": batch_always_right,
            "labels shifted": batch_labels_shifted,
            "first target masked": batch_first_target_masked,
            "padded with 0": batch_pad_zero,
            "float mask": batch_float_mask,
            "no labels": batch_no_labels,
        },
        "diagnoses": {
            "labels not masked": (batch_labels_not_masked, "labels not masked"),
            "pad labelled": (batch_pad_labelled, "padding labelled with the pad id"),
            "mask forgotten for padding": (batch_mask_forgotten, "mask forgotten for the padding"),
            "right padding for generation": (batch_always_right, "right padding where padding_side='left'"),
            "labels shifted": (batch_labels_shifted, "shifted by one position"),
            "first target masked": (batch_first_target_masked, "first target token masked"),
            "padded with 0": (batch_pad_zero, "padded with 0 instead of pad_id"),
            "float mask": (batch_float_mask, "integer tensors"),
            "no labels": (batch_no_labels, "without ['labels']"),
        },
    },
    "ch05.splice": {
        "correct": [splice_reference, splice_index_assign, splice_where_loop],
        "wrong": {
            "off by one": splice_off_by_one,
            "off by one, early": splice_off_by_one_early,
            "added": splice_added,
            "images ignored": splice_ignored,
            "token-major order": splice_token_major,
            "detached": splice_detached,
            "no_grad": splice_no_grad,
        },
        "diagnoses": {
            "off by one": (splice_off_by_one, "one position off (written from one position AFTER"),
            "off by one, early": (splice_off_by_one_early, "one position BEFORE"),
            "added": (splice_added, "ADDED to the placeholder"),
            "images ignored": (splice_ignored, "never written in"),
            "token-major order": (splice_token_major, "wrong order"),
            "detached": (splice_detached, "no gradient reaches image_embeds"),
            "no_grad": (splice_no_grad, "cut off from the computation graph"),
        },
    },
    "ch05.greedy_decode": {
        "correct": [greedy_decode_reference, greedy_decode_preallocated, greedy_decode_softmax, greedy_decode_cached],
        "wrong": {
            "first position": decode_first_position,
            "no feedback": decode_no_feedback,
            "no position ids": decode_no_positions,
            "no mask": decode_no_mask,
            "prompt returned too": decode_with_prompt,
            "float ids": decode_logits,
        },
        "diagnoses": {
            "first position": (decode_first_position, "FIRST position"),
            "no feedback": (decode_no_feedback, "never fed back"),
            "no position ids": (decode_no_positions, "no position_ids passed"),
            "no mask": (decode_no_mask, "no attention_mask passed"),
            "prompt returned too": (decode_with_prompt, "only the"),
            "float ids": (decode_logits, "expected token ids"),
        },
    },
    "ch05.unified_model": {
        "correct": [UnifiedSolution, UnifiedHandwritten],
        "wrong": {
            "no position ids": _unified_variant("no_positions"),
            "no attention mask": _unified_variant("no_mask"),
            "image tokens off by one": _unified_variant("off_by_one"),
            "detached image tokens": _unified_variant("detached"),
            "input_ids to the LM": _unified_variant("input_ids"),
            "labels shifted": _unified_variant("shifted_labels"),
            "logits only": _unified_variant("logits_only"),
            "extra module": UnifiedExtraModule,
            "renamed": UnifiedRenamed,
        },
        "diagnoses": {
            "no position ids": (_unified_variant("no_positions"), "without position_ids"),
            "no attention mask": (_unified_variant("no_mask"), "without the attention_mask"),
            "image tokens off by one": (_unified_variant("off_by_one"), "one position off"),
            "detached image tokens": (_unified_variant("detached"), "no gradient reaches image_features (through the bridge)"),
            "input_ids to the LM": (_unified_variant("input_ids"), "never spliced in"),
            "labels shifted": (_unified_variant("shifted_labels"), "You shifted the labels"),
            "logits only": (_unified_variant("logits_only"), "return the LM's own output object"),
            "extra module": (UnifiedExtraModule, "unexpected: embed.weight"),
            "renamed": (UnifiedRenamed, "missing: lm."),
        },
    },
    "ch05.train_captioner": {
        "correct": [OracleBridge(), OracleBridge(wrong_every=14), OracleModel(), trained_bridge_function],
        "wrong": {
            "85% right": OracleBridge(wrong_every=7),
            "untrained": _untrained_bridge(),
            "the class": OracleBridge,
            "wrong width": OracleBridge(out_dim=32),
            "tuple": OracleBridge(tuple_out=True),
            "the training function": train_with_arguments,
        },
        "diagnoses": {
            "85% right": (OracleBridge(wrong_every=7), "below the 90% bar"),
            "untrained": (_untrained_bridge(), "below the 90% bar"),
            "the class": (OracleBridge, "pass your TRAINED bridge"),
            "wrong width": (OracleBridge(out_dim=32), "out_dim must be the LM's width"),
            "the training function": (train_with_arguments, "pass your TRAINED bridge"),
        },
    },
    "ch05.top_k_probs": {
        "correct": [top_k_probs_reference, top_k_probs_transformers, top_k_probs_sort],
        "wrong": {
            "temperature multiplied": top_k_multiplied,
            "temperature ignored": top_k_no_temperature,
            "not renormalised": top_k_not_renormalised,
            "zero fill": top_k_zero_fill,
            "k - 1 kept": top_k_minus_one,
        },
        "diagnoses": {
            "temperature multiplied": (top_k_multiplied, "MULTIPLIED by the temperature"),
            "temperature ignored": (top_k_no_temperature, "temperature ignored"),
            "not renormalised": (top_k_not_renormalised, "without renormalising"),
            "zero fill": (top_k_zero_fill, "set to 0 instead of -inf"),
            "k - 1 kept": (top_k_minus_one, "only k - 1 tokens kept"),
        },
    },
    "ch05.q1": {"answer": "c", "wrong": ["a", "b", "d"]},
    "ch05.q2": {"answer": "a", "wrong": ["b", "c", "d"]},
    "ch05.q3": {"answer": "d", "wrong": ["a", "b", "c"]},
    "ch05.q4": {"answer": "b", "wrong": ["a", "c", "d"]},
}

assert IGNORE == -100
