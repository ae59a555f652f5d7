# %% [markdown]
# # 05 · Exercises: the unified embedding decoder
#
# Read chapter 5 (`notebooks/05_unified_embedding.ipynb`) first. The exercises come in four parts:
#
# 1. **Core** (exercises 1-4): expanding the `<image>` placeholder, a padded batch with its attention
#    mask and labels, the splice of image vectors into the token embeddings, and greedy decoding by
#    hand from `inputs_embeds`.
# 2. **Build** (exercise 5): the whole splicing forward as a module of your own. The check loads the
#    library's weights (a `UnifiedEmbeddingMLLM`'s bridge and LM) into it, so your submodules must
#    carry the library's names, and compares logits, gradients and the loss.
# 3. **Train** (exercise 6): stage 1 with your own model and loop: a bridge between the frozen
#    chapter-2 encoder and the frozen chapter-5 LM, until the LM captions 90% of new images exactly.
# 4. **Stretch** (exercise 7, optional): the next-token distribution of sampling with a temperature
#    and top-k.
#
# Then four checked questions. Each exercise ends with `check(...)`: it runs your code next to the
# library's on several inputs and prints **pass**, **todo**, **fail** (with what was expected and what
# came back, and the usual mistake when it recognises it) or **error**.
#
# Dims: `B` prompts, `T` tokens per (expanded, padded) prompt, `B_img` images, `N` image features,
# `K` image tokens per image, `D` the LM's width, `V` its vocabulary.

# %%
import math  # noqa: F401  (you may use it)

import torch
import torch.nn.functional as F  # noqa: F401  (you may use it)
from torch import nn

from mmllm_course.grading import check
from mmllm_course.language import course_lm_tokenizer

_ = torch.manual_seed(0)
tok = course_lm_tokenizer()
IMAGE_ID = tok.convert_tokens_to_ids("<image>")
print("pad", tok.pad_token_id, "| eos", tok.eos_token_id, "| bos", tok.bos_token_id, "| <image>", IMAGE_ID)

# %% [markdown]
# ## Part 1: core functions
#
# ## Exercise 1: `expand_placeholder`
#
# A prompt says where the image goes with one `<image>` token; the bridge gives `K` vectors per
# image. So before the splice, each `<image>` id becomes **K** copies of itself, at the same place,
# and every other id stays as it is. A prompt may hold several images. Given a list of token ids,
# return a **new** list (leave the input list unchanged):
#
# `expand_placeholder([2, 3, 40, 41], image_token_id=3, k=3)` is `[2, 3, 3, 3, 40, 41]`.

# %%
def expand_placeholder(ids: list[int], image_token_id: int, k: int) -> list[int]:
    """ids with every image_token_id replaced by k copies of it, in place of the placeholder."""
    # BEGIN SOLUTION
    out: list[int] = []
    for t in ids:
        out += [t] * k if t == image_token_id else [t]
    return out
    # END SOLUTION


# %%
check("ch05.expand_placeholder", expand_placeholder)

# %% [markdown]
# ## Exercise 2: `make_batch`, the attention mask and the labels
#
# A batch is rows of different lengths. Given `prompts`, a list of B token-id lists (each already
# starting with bos, its placeholders expanded), and `targets`, a list of B token-id lists (the
# caption or answer, ending with eos) or `None` (for generation), return a dict of `(B, T)` tensors
# of `torch.long`, `T` the longest row:
#
# - `input_ids`: row `i` is `prompts[i] + targets[i]` (or just `prompts[i]`), padded with `pad_id`;
# - `attention_mask`: 1 on a real token, 0 on padding;
# - `labels` (only when `targets` is given): the target's ids where the target is, **-100** everywhere
#   else: on bos, the image tokens, the prompt text and the padding. -100 is PyTorch's
#   `ignore_index`, so those positions take no loss. Do not shift the labels: a `transformers` causal
#   LM does that inside its loss (the logits at `t - 1` predict the label at `t`).
#
# `padding_side="right"` puts the pads after each row (training); `"left"` puts them before it
# (generation, so that every row **ends** with a real token: the next token is appended right after
# the last column).

# %%
def make_batch(prompts: list[list[int]], targets: list[list[int]] | None, pad_id: int,
               padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Padded input_ids, attention_mask (and labels when targets are given), each (B, T) torch.long."""
    # BEGIN SOLUTION
    rows = [p + (targets[i] if targets is not None else []) for i, p in enumerate(prompts)]
    length = max(len(r) for r in rows)
    out = {"input_ids": torch.full((len(rows), length), pad_id, dtype=torch.long),
           "attention_mask": torch.zeros(len(rows), length, dtype=torch.long)}
    if targets is not None:
        out["labels"] = torch.full((len(rows), length), -100, dtype=torch.long)
    for i, r in enumerate(rows):
        span = slice(length - len(r), length) if padding_side == "left" else slice(0, len(r))
        out["input_ids"][i, span] = torch.tensor(r)
        out["attention_mask"][i, span] = 1
        if targets is not None:
            out["labels"][i, span] = torch.tensor([-100] * len(prompts[i]) + targets[i])  # loss on the target only
    return out
    # END SOLUTION


# %%
check("ch05.make_batch", make_batch)

# %% [markdown]
# ## Exercise 3: `splice`
#
# The heart of backbone A. Given `input_ids (B, T)` holding runs of K image-token ids, the bridge's
# `image_embeds (B_img, K, D)`, the LM's embedding table `embed_tokens` (an `nn.Embedding`,
# `lm.get_input_embeddings()`) and the `image_token_id`, return `inputs_embeds (B, T, D)`:
#
# - every position holds `embed_tokens` of its id,
# - except the image-token positions, which hold the image vectors **instead**: reading the rows in
#   order (row 0 left to right, then row 1, ...), the first K image positions get image 0's K
#   vectors, the next K image 1's, and so on (a row may hold two images, or none).
#
# The bridge learns through this function, so the output must stay in the autograd graph: no
# `.detach()`, no `torch.no_grad()`. `embeds[mask] = values` on a fresh tensor, `torch.where` or
# `masked_scatter` all work. The output has `embed_tokens`' dtype (the check runs float32 and float64).

# %%
def splice(input_ids: torch.Tensor, image_embeds: torch.Tensor, embed_tokens: nn.Embedding,
           image_token_id: int) -> torch.Tensor:
    """input_ids (B, T), image_embeds (B_img, K, D) -> inputs_embeds (B, T, D), image vectors on the placeholders."""
    # BEGIN SOLUTION
    is_image = input_ids == image_token_id  # (B, T)
    embeds = embed_tokens(input_ids)  # (B, T, D); the image positions are overwritten next
    d = embeds.shape[-1]
    # masked_scatter fills the True positions in row-major order: image 0's K vectors, then image 1's...
    return embeds.masked_scatter(is_image.unsqueeze(-1).expand_as(embeds), image_embeds.to(embeds.dtype).reshape(-1, d))
    # END SOLUTION


# %%
check("ch05.splice", splice)

# %% [markdown]
# ## Exercise 4: `greedy_decode`, generation by hand
#
# The LM's `generate` is a loop you can write. Given a causal `lm` (a `transformers` model),
# `inputs_embeds (B, T, D)` (a spliced prompt, **left-padded**) and its `attention_mask (B, T)`,
# return the `max_new_tokens` ids it writes greedily, `(B, max_new_tokens)` `torch.long`:
#
# 1. `position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)`: each row's first real token is at
#    position 0, whatever its padding (the pads get 0: any valid position will do, nothing reads them;
#    -1 would crash a GPT-2, whose positions index an embedding table);
# 2. `logits = lm(inputs_embeds=..., attention_mask=..., position_ids=...).logits[:, -1]` `(B, V)`, the
#    prediction after the last column;
# 3. the next token is its argmax; append its embedding (`lm.get_input_embeddings()`) as a new column
#    of the inputs, and a 1 as a new column of the mask; repeat.
#
# Run it under `torch.no_grad()`. No key/value cache is needed (it recomputes the whole sequence each
# step: slower, same tokens). Do not stop at eos: always write `max_new_tokens` tokens. The check
# compares your tokens with the library's loop, which gives the LM's own `generate`.

# %%
def greedy_decode(lm: nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                  max_new_tokens: int) -> torch.Tensor:
    """inputs_embeds (B, T, D), attention_mask (B, T) left-padded -> new token ids (B, max_new_tokens)."""
    # BEGIN SOLUTION
    embeds, mask = inputs_embeds, attention_mask.long()
    table = lm.get_input_embeddings()
    new = []
    with torch.no_grad():  # decoding trains nothing: no graph
        for _ in range(max_new_tokens):
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # counts real tokens only
            logits = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids).logits[:, -1]  # (B, V)
            token = logits.argmax(dim=-1)  # (B,)
            new.append(token)
            embeds = torch.cat([embeds, table(token)[:, None].to(embeds.dtype)], dim=1)  # (B, T + 1, D)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return torch.stack(new, dim=1)
    # END SOLUTION


# %%
check("ch05.greedy_decode", greedy_decode)

# %% [markdown]
# Your parts together, on text only: the chapter's LM was pretrained to find a caption's key words in
# its context and write the caption. Give it a context of key words (in the place the image tokens
# take later), the prompt, and let your `greedy_decode` write.

# %%
from mmllm_course.pretrained import load_chapter5_lm

lm, _ = load_chapter5_lm()  # frozen, eval mode
context = tok(" top large circle red left the of", add_special_tokens=False)["input_ids"]
prompt = [tok.bos_token_id] + context + tok("Describe the image.", add_special_tokens=False)["input_ids"]
try:
    batch = make_batch([prompt], None, tok.pad_token_id, padding_side="left")
    embeds = lm.get_input_embeddings()(batch["input_ids"])
    print(repr(tok.decode(greedy_decode(lm, embeds, batch["attention_mask"], 10)[0], skip_special_tokens=True)))
except NotImplementedError:
    print("make_batch or greedy_decode is not written yet")

# %% [markdown]
# ## Part 2: build the model
#
# ## Exercise 5: `MyUnifiedEmbeddingMLLM`
#
# The check builds `MyUnifiedEmbeddingMLLM(bridge, lm, image_token_id)`, with a bridge
# (features `(B_img, N, D_in)` -> `(B_img, K, D)`) and a `transformers` causal LM, then loads the weights
# of the library's `UnifiedEmbeddingMLLM` into it with `load_state_dict(strict=True)`. So store
# exactly two submodules, under the library's names:
#
# | name | what |
# |---|---|
# | `bridge` | the bridge you are given (its parameters become `bridge.*`) |
# | `lm` | the LM you are given (`lm.*`); reach its embedding table with `self.lm.get_input_embeddings()` |
#
# and keep `image_token_id` as a plain attribute. `forward(input_ids, attention_mask, image_features,
# labels=None)` takes `input_ids (B, T)` with K image ids per image, the `attention_mask (B, T)`, the
# encoder's `image_features (B_img, N, D_in)` and optional `labels (B, T)`, and returns **what the LM
# returns** (an output with `.logits (B, T, V)`, and `.loss` when labels are given):
#
# 1. `image_embeds = self.bridge(image_features)`, `(B_img, K, D)`;
# 2. `inputs_embeds =` your `splice` over the LM's embedding table;
# 3. `position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)` (left padding must not move the text);
# 4. `self.lm(inputs_embeds=..., attention_mask=..., position_ids=..., labels=labels)`.
#
# The check compares the logits on every real token (a LLaMA and a GPT-2 LM, a Q-Former and an MLP
# bridge, left- and right-padded batches, two images in one prompt), the gradients with respect to
# the image features and every parameter, and the loss.

# %%
class MyUnifiedEmbeddingMLLM(nn.Module):
    """bridge + causal LM: input_ids (B, T), attention_mask (B, T), image_features (B_img, N, D_in) [, labels] -> LM output."""

    def __init__(self, bridge: nn.Module, lm: nn.Module, image_token_id: int):
        super().__init__()
        # BEGIN SOLUTION
        self.bridge, self.lm = bridge, lm
        self.image_token_id = image_token_id
        # END SOLUTION

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_features: torch.Tensor,
                labels: torch.Tensor | None = None):
        # BEGIN SOLUTION
        image_embeds = self.bridge(image_features)  # (B_img, K, D)
        inputs_embeds = splice(input_ids, image_embeds, self.lm.get_input_embeddings(), self.image_token_id)
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return self.lm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, labels=labels)
        # END SOLUTION


# %%
check("ch05.unified_model", MyUnifiedEmbeddingMLLM)

# %% [markdown]
# ## Part 3: stage 1 with your own model
#
# ## Exercise 6: a bridge that makes the frozen LM caption new images
#
# The chapter's stage 1, with your parts: chapter 2's mini-CLIP (frozen) turns each image into
# `N = 17` features of width 64 (its class token and 16 patches); a Q-Former bridge (`K = 8` queries,
# the chapter's choice) turns them into 8 vectors of the LM's width 64; the frozen chapter-5 LM reads
# them after bos and before the prompt `Describe the image.`, and must write the caption. Only the
# bridge learns. The encoder is frozen, so its features are computed once, below, for 4,000 training
# images; the batch is built once with your `expand_placeholder` and `make_batch`.
#
# Write `train_stage1(model, features, batch, steps, ...)`: an optimiser over the parameters that
# have `requires_grad` (the bridge's: the LM is frozen), then `steps` times: random rows of the
# batch and of the features, `model(...).loss`, `backward()`, a step. Return the list of losses, and
# leave the model in eval mode. What works in well under a minute of CPU (the chapter's recipe, shortened):
#
# - AdamW at `3e-3`, batches of 64, a linear warmup over the first 30 steps then a cosine decay;
# - gradient clipping at norm 1.0 (`torch.nn.utils.clip_grad_norm_`) keeps the first steps stable;
# - 150 steps.
#
# **What the check does:** it never trains. It draws 200 new images with its own seed, runs them
# through the same frozen encoder and your trained bridge, lets the frozen LM caption each (greedy,
# through the library's `generate`), and counts exact captions. The bar is **90%** (a caption is one
# of 160: chance is 0.6%).

# %%
from mmllm_course.bridges import make_bridge
from mmllm_course.data import generate_shapes
from mmllm_course.pretrained import load_chapter2_clip

clip, _ = load_chapter2_clip()
train_set = generate_shapes(4000, seed=0)
with torch.no_grad():
    train_features = clip.vision(train_set.images).last_hidden_state  # (4000, 17, 64): the frozen encoder, once
K = 8
print("features", tuple(train_features.shape), "| e.g.", repr(train_set.captions[0]))

# %%
def build_stage1_batch(captions: list[str], k: int) -> dict[str, torch.Tensor]:
    """The training rows: bos, K image ids, 'Describe the image.', then ' ' + caption + eos, right-padded."""
    prompt = expand_placeholder([tok.bos_token_id] + tok("<image>Describe the image.", add_special_tokens=False)["input_ids"],
                                IMAGE_ID, k)
    targets = [tok(" " + c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in captions]
    return make_batch([prompt] * len(captions), targets, tok.pad_token_id, padding_side="right")


def train_stage1(model: nn.Module, features: torch.Tensor, batch: dict[str, torch.Tensor], steps: int = 150,
                 batch_size: int = 64, lr: float = 3e-3, warmup: int = 30, seed: int = 0) -> list[float]:
    """Train the parameters of ``model`` that have requires_grad on (features, batch) rows; return the losses."""
    # BEGIN SOLUTION
    params = [p for p in model.parameters() if p.requires_grad]  # the bridge's: the LM is frozen
    optimizer = torch.optim.AdamW(params, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps)))
    generator = torch.Generator().manual_seed(seed)  # the batch order
    model.train()
    model.lm.eval()  # a frozen part stays in eval mode (no dropout)
    losses = []
    for _ in range(steps):
        idx = torch.randperm(len(features), generator=generator)[:batch_size]
        out = model(batch["input_ids"][idx], batch["attention_mask"][idx], features[idx], labels=batch["labels"][idx])
        optimizer.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        losses.append(out.loss.item())
    model.eval()
    return losses
    # END SOLUTION


# %% [markdown]
# The next cell builds your model on a fresh Q-Former bridge and the frozen LM, trains it (it prints
# how long that took) and hands the trained bridge to the check. Until your functions are written, it says `todo`.
# You may use your chapter-4 `QFormerBridge` instead of the library's.

# %%
import time

from mmllm_course.utils import one_thread

torch.manual_seed(0)
start = time.perf_counter()
try:
    stage1_batch = build_stage1_batch(train_set.captions, K)
    my_model = MyUnifiedEmbeddingMLLM(make_bridge("qformer", in_dim=64, out_dim=64, num_queries=K), lm, IMAGE_ID)
    with one_thread():  # matrices this small train faster on one thread (and far faster on a busy machine)
        losses = train_stage1(my_model, train_features, stage1_batch)
    print(f"trained in {time.perf_counter() - start:.0f} s; loss {losses[0]:.2f} -> {losses[-1]:.3f}")
    my_bridge = my_model.bridge
except NotImplementedError:
    print("one of your functions is not written yet")
    my_bridge = ...  # the check says todo
check("ch05.train_captioner", my_bridge)

# %% [markdown]
# All your parts at once: new images, your bridge, your splice, your greedy decoding.

# %%
held_out = generate_shapes(4, seed=1)
try:
    with torch.no_grad():
        tokens = my_model.bridge(clip.vision(held_out.images).last_hidden_state)  # (4, K, 64)
        prompt = expand_placeholder([tok.bos_token_id] + tok("<image>Describe the image.", add_special_tokens=False)["input_ids"],
                                    IMAGE_ID, K)
        rows = make_batch([prompt] * 4, None, tok.pad_token_id, padding_side="left")
        embeds = splice(rows["input_ids"], tokens, lm.get_input_embeddings(), IMAGE_ID)
        said = tok.batch_decode(greedy_decode(lm, embeds, rows["attention_mask"], 10), skip_special_tokens=True)
    for text, truth in zip(said, held_out.captions):
        print(f"said {text.strip()!r:45} truth {truth!r}")
except (NotImplementedError, NameError):
    print("train your model first")

# %% [markdown]
# ## Part 4 (stretch, optional): sampling
#
# ## Exercise 7: `top_k_probs`
#
# Greedy decoding always takes the most likely token. Sampling draws the next token from a
# distribution instead, usually reshaped two ways: a **temperature** `τ` divides the logits (`τ < 1`
# sharpens the distribution towards greedy, `τ > 1` flattens it), and **top-k** keeps only the `k`
# most likely tokens, renormalised (the long tail of unlikely tokens can never be drawn). Given
# `logits (B, V)`, return the probabilities `(B, V)` to sample from:
#
# $$p = \operatorname{softmax}\big(\text{logits} / \tau \text{, every entry below the row's k-th largest set to } -\infty\big).$$
#
# `top_k=None` (or `k >= V`) keeps every token. This is what `transformers`' `TemperatureLogitsWarper`
# and `TopKLogitsWarper` do before `torch.multinomial`.

# %%
def top_k_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None) -> torch.Tensor:
    """logits (B, V) -> sampling probabilities (B, V): softmax of logits / temperature over the top_k tokens."""
    # BEGIN SOLUTION
    scores = logits / temperature
    if top_k is not None and top_k < scores.shape[-1]:
        kth = scores.topk(top_k, dim=-1).values[..., -1:]  # (B, 1) the k-th largest score of each row
        scores = scores.masked_fill(scores < kth, float("-inf"))
    return scores.softmax(dim=-1)
    # END SOLUTION


# %%
check("ch05.top_k_probs", top_k_probs)

# %% [markdown]
# Sampling with your distribution: the first held-out image above, four draws at each setting (the
# loop is `greedy_decode` with `torch.multinomial(top_k_probs(...), 1)` in place of the argmax). A low
# temperature gives back the greedy caption; a high one lets less likely words through.

# %%
def sample_decode(lm, inputs_embeds, attention_mask, max_new_tokens, temperature, top_k, generator):
    """Like greedy_decode, drawing each token from top_k_probs instead of taking the argmax."""
    x, m, drawn = inputs_embeds, attention_mask.long(), []
    with torch.no_grad():
        for _step in range(max_new_tokens):
            last = lm(inputs_embeds=x, attention_mask=m, position_ids=(m.cumsum(-1) - 1).clamp(min=0)).logits[:, -1]
            drawn.append(torch.multinomial(top_k_probs(last, temperature, top_k), 1, generator=generator))  # (B, 1)
            x = torch.cat([x, lm.get_input_embeddings()(drawn[-1])], dim=1)
            m = torch.cat([m, torch.ones_like(drawn[-1])], dim=1)
    return torch.cat(drawn, dim=1)


try:
    draws = torch.Generator().manual_seed(0)
    for temperature, top_k in ((0.3, 5), (3.0, 20)):
        ids = sample_decode(lm, embeds[:1].repeat(4, 1, 1), rows["attention_mask"][:1].repeat(4, 1), 10, temperature, top_k, draws)
        texts = [t.strip() for t in tok.batch_decode(ids, skip_special_tokens=True)]
        print(f"temperature {temperature}, top-k {top_k}:", texts)
except (NotImplementedError, NameError):
    print("write top_k_probs (and train your model above) first")

# %% [markdown]
# ## Checked questions
#
# Answer with the letter, as a string (`"a"`).
#
# **Q1.** In stage 1 (alignment pre-training), what is trained, and why?
#
# a) Encoder, bridge and LM all together, since a frozen part could never adapt to the new image tokens it is given.
#
# b) Only the LM, so that it learns to read the encoder's raw features; the bridge stays at its random initial weights.
#
# c) Only the bridge: the encoder already sees shapes and the LM already writes from what it reads; the bridge learns to link them.
#
# d) Only the encoder, so that its features move towards the LM's word embeddings while the bridge and the LM stay fixed.

# %%
q1 = "c"  # SOLUTION
check("ch05.q1", q1)

# %% [markdown]
# **Q2.** Why do the K image-token positions get the label -100 (no loss)?
#
# a) They are inputs, not text: no token id is right at those positions, and the LM never has to output an image vector.
#
# b) Their loss would be too large at first and would swamp the caption's loss, so it is switched off for stability.
#
# c) Their labels are the image-token id, which the LM already predicts perfectly, so the loss there would be zero.
#
# d) The attention mask hides them from the LM, so the logits at those positions are undefined and cannot be scored.

# %%
q2 = "a"  # SOLUTION
check("ch05.q2", q2)

# %% [markdown]
# **Q3.** Where do the bridge's K image tokens go?
#
# a) They are added to the embeddings of the prompt's first K text tokens, so that the sequence length does not change.
#
# b) Into a separate cross-attention block in every LM layer, while the LM's input sequence holds only the text tokens.
#
# c) After the caption: the LM writes its text first and reads the image last, which is why the labels mask them out.
#
# d) Into the input sequence: they replace the embeddings at the K positions of the expanded placeholder, read by self-attention.

# %%
q3 = "d"  # SOLUTION
check("ch05.q3", q3)

# %% [markdown]
# **Q4.** Why does batched generation pad the prompts on the left?
#
# a) Because causal attention only looks to the left, so padding on the right would be attended to by every token.
#
# b) Each row must end with a real token: the next token comes from the last column and is appended after it.
#
# c) Left padding makes every row's position ids start at the same number, so the LM needs no position_ids at all.
#
# d) The tokenizer of a causal LM can only pad on the left; right padding exists for encoder models such as BERT.

# %%
q4 = "b"  # SOLUTION
check("ch05.q4", q4)

# %% [markdown]
# ## Done?
#
# From a shell, `python -m mmllm_course.grade exercises/05_unified_embedding.ipynb` grades this whole
# notebook at once (with your training done, that includes its training). Chapter 6 builds
# backbone B: the image enters the LM through gated cross-attention instead of its input sequence.
