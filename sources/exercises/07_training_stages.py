# %% [markdown]
# # 07 · Exercises: training stages, LoRA and instruction tuning
#
# Read chapter 7 (`notebooks/07_training_stages.ipynb`) first. The exercises come in four parts:
#
# 1. **Core** (exercises 1-4): freezing exactly the right parameters for each stage; counting the
#    numbers LoRA trains for a rank and target modules; one training row of a conversation in the chat
#    template, the loss on the assistant's answers only; the LoRA linear forward `W x + b + (alpha/r) B A x`.
# 2. **Build** (exercise 5): a LoRA linear layer as a module of your own. The check loads the weights
#    of `peft`'s own LoRA layer into it, so your parameters must carry `peft`'s names.
# 3. **Train** (exercise 6): stage 2 with your parts: LoRA adapters on the frozen chapter-5 LM plus a
#    bridge, trained on questions about images until the model answers 90% of questions about new
#    images exactly.
# 4. **Stretch** (exercise 7, optional): merging an adapter into its weight.
#
# Then four checked questions. Each exercise ends with `check(...)`: it runs your code next to the
# library's (or `peft`'s) on several inputs and prints **pass**, **todo**, **fail** (with what was
# expected and what came back, and the usual mistake when it recognises it) or **error**.
#
# Dims: `T` tokens in a row, `B` rows, `N` image features, `K` image tokens per image, `D` the LM's
# width, `r` LoRA's rank, `d_in`/`d_out` a linear layer's input and output widths.

# %%
import math  # noqa: F401  (you may use it)

import torch
from torch import nn

from mmllm_course.grading import check
from mmllm_course.language import chat_tokenizer

_ = torch.manual_seed(0)
torch.set_num_threads(1)  # tiny matrices: one thread is faster than two fighting over a busy CPU
tok = chat_tokenizer()  # the course tokenizer with the chapter's chat template
print("pad", tok.pad_token_id, "| eos", tok.eos_token_id, "| bos", tok.bos_token_id, "| <image>",
      tok.convert_tokens_to_ids("<image>"))

# %% [markdown]
# ## Part 1: core functions
#
# ## Exercise 1: `freeze_for_stage`
#
# A multimodal model has three parts: `model.encoder` (it may be `None` when its features are
# computed once beforehand), `model.bridge` and `model.lm` (a `transformers` LM, possibly with LoRA
# adapters from `peft`: their parameters have `lora_A` or `lora_B` in their names). Set
# `requires_grad` on **every** parameter for the stage:
#
# | stage | encoder | bridge | LM's own weights | LoRA adapters (names with `lora_`) |
# |---|---|---|---|---|
# | `"stage1"` (alignment) | frozen | trained | frozen | frozen (if any) |
# | `"stage2"` (instruction tuning with LoRA) | frozen | trained | frozen | trained |
# | `"full"` (full fine-tuning) | frozen | trained | trained | (none) |
#
# The model may arrive with any flags (everything frozen, everything trainable), so set each one
# explicitly, both ways. Change nothing else: no values, no new or replaced parameters. Return the
# model (or nothing). The check calls it on LLaMA and GPT-2 LMs, with and without adapters, and
# inspects every parameter afterwards.

# %%
def freeze_for_stage(model: nn.Module, stage: str) -> nn.Module:
    """Set requires_grad on model.encoder (or None), model.bridge and model.lm for stage 'stage1', 'stage2' or 'full'."""
    # BEGIN SOLUTION
    if model.encoder is not None:
        model.encoder.requires_grad_(False)  # never trained here
    model.bridge.requires_grad_(True)  # trained in every stage
    for name, p in model.lm.named_parameters():
        p.requires_grad_(stage == "full" or (stage == "stage2" and "lora_" in name))
    return model
    # END SOLUTION


# %%
check("ch07.freeze_for_stage", freeze_for_stage)

# %% [markdown]
# ## Exercise 2: `lora_parameter_count`
#
# LoRA puts an adapter beside every linear layer whose **last name** is one of `targets`
# (`"q_proj"` adapts `model.layers.0.self_attn.q_proj`, `model.layers.1.self_attn.q_proj`, ...). A
# layer with weight `W (d_out, d_in)` gets `A (r, d_in)` and `B (d_out, r)`, no bias: `r * (d_in +
# d_out)` trainable numbers. Return the total for `lm`, an `int`, without changing `lm`.
#
# Look at the layers' own shapes: with grouped-query attention `k_proj` and `v_proj` are narrower
# than `q_proj`, the MLP is wider than the attention, and GPT-2 stores its linear layers as `Conv1D`
# with the weight transposed, `(d_in, d_out)` (so `sum(weight.shape)` is `d_in + d_out` either way).
# The check compares your count with what `peft` actually creates.

# %%
def lora_parameter_count(lm: nn.Module, rank: int, targets: tuple[str, ...]) -> int:
    """Trainable numbers of LoRA adapters of rank `rank` on every layer of lm named one of targets."""
    # BEGIN SOLUTION
    total = 0
    for name, module in lm.named_modules():
        if name.rsplit(".", 1)[-1] in targets:
            total += rank * sum(module.weight.shape)  # r * (d_in + d_out): A (r, d_in) and B (d_out, r)
    return total
    # END SOLUTION


# %%
check("ch07.lora_parameter_count", lora_parameter_count)

# %% [markdown]
# Your count on the chapter's LM, next to `peft`'s, and what that is next to the LM itself:

# %%
from mmllm_course.pretrained import load_chapter5_lm
from mmllm_course.training import LLAMA_ATTENTION, add_lora, count_parameters

lm, _ = load_chapter5_lm()  # frozen, eval mode
try:
    mine = lora_parameter_count(lm, 8, LLAMA_ATTENTION)
    peft_count = count_parameters(add_lora(lm, 8, LLAMA_ATTENTION), trainable_only=True)
    print(f"rank 8 on {LLAMA_ATTENTION}: yours {mine:,}, peft {peft_count:,}, "
          f"the LM {count_parameters(lm):,} ({mine / count_parameters(lm):.1%})")
except NotImplementedError:
    print("lora_parameter_count is not written yet")

# %% [markdown]
# ## Exercise 3: `chat_example`, one training row of a conversation
#
# Stage 2 trains on conversations. `messages` is a list in `transformers`' format: user turns
# (`{"role": "user", "content": ...}`, the first one holding the image: content `[{"type": "image"},
# {"type": "text", "text": "What colour is the circle?"}]`, later ones a plain string) and assistant
# turns (`{"role": "assistant", "content": "red"}`). The chat template renders them as one string:
#
# `tokenizer.apply_chat_template(messages, tokenize=False)` is
# `"<image>Q: What colour is the circle? A: red<|eos|>"` (a second turn adds `" Q: ... A: ...<|eos|>"`).
#
# Return a dict of two `(T,)` `torch.long` tensors:
#
# - `input_ids`: the bos id, then the tokens of the rendered string
#   (`tokenizer(text, add_special_tokens=False)`), each `<image>` id repeated **K** times (as in
#   chapter 5: the bridge gives K vectors per image);
# - `labels`: **-100** everywhere except on each assistant answer's tokens (the answer, with its
#   leading space, **and the eos after it**). The `" A:"` before an answer takes no loss: it is part of
#   the prompt the model is given at inference (`add_generation_prompt=True` ends the prompt with it).
#   Every answer of a multi-turn conversation takes loss. Do not shift the labels (the LM does).
#
# One way to find where answer `i` starts: render `messages[:i]` with `add_generation_prompt=True`
# and count its tokens. Leave `messages` unchanged.

# %%
def chat_example(messages: list[dict], tokenizer, k: int) -> dict[str, torch.Tensor]:
    """A conversation -> input_ids (T,) (bos, the chat template's tokens, K ids per image) and labels (T,) on the answers."""
    # BEGIN SOLUTION
    image_id = tokenizer.convert_tokens_to_ids("<image>")

    def ids_of(text: str) -> list[int]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return [t for i in ids for t in ([i] * k if i == image_id else [i])]

    whole = ids_of(tokenizer.apply_chat_template(messages, tokenize=False))
    labels = [-100] * len(whole)
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            start = len(ids_of(tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)))
            upto = tokenizer.apply_chat_template(messages[:i + 1], tokenize=False) if i < len(messages) - 1 else None
            end = len(ids_of(upto)) if upto is not None else len(whole)
            labels[start:end] = whole[start:end]  # " answer" and its eos
    return {"input_ids": torch.tensor([tokenizer.bos_token_id] + whole), "labels": torch.tensor([-100] + labels)}
    # END SOLUTION


# %%
check("ch07.chat_example", chat_example)

# %% [markdown]
# A two-turn conversation, token by token, with what takes loss:

# %%
conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where is the star?"}]},
                {"role": "assistant", "content": "top left"},
                {"role": "user", "content": "How big is the red shape?"},
                {"role": "assistant", "content": "small"}]
try:
    row = chat_example(conversation, tok, 2)
    for t, label in zip(tok.convert_ids_to_tokens(row["input_ids"].tolist()), row["labels"].tolist()):
        print(f"{t!r:12}", "loss" if label != -100 else "")
except NotImplementedError:
    print("chat_example is not written yet")

# %% [markdown]
# ## Exercise 4: `lora_linear`, the LoRA forward
#
# LoRA ([Hu et al. 2021](https://arxiv.org/abs/2106.09685)) keeps a pretrained layer's `weight`
# `(d_out, d_in)` and `bias` `(d_out,)` (or `None`) frozen and adds a low-rank path beside it:
#
# $$ y = x W^\top + b + \frac{\alpha}{r}\, (x A^\top) B^\top, \qquad A: (r, d_\text{in}),\; B: (d_\text{out}, r), $$
#
# with `r = lora_A.shape[0]`. `x` is `(..., d_in)`, the output `(..., d_out)`. Gradients must reach
# `lora_A` and `lora_B` (they are what trains).

# %%
def lora_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, lora_A: torch.Tensor,
                lora_B: torch.Tensor, alpha: float) -> torch.Tensor:
    """x (..., d_in) -> (..., d_out): x W^T + b + (alpha / r) (x A^T) B^T."""
    # BEGIN SOLUTION
    r = lora_A.shape[0]
    out = x @ weight.T
    if bias is not None:
        out = out + bias
    return out + (alpha / r) * ((x @ lora_A.T) @ lora_B.T)  # down to r, back up to d_out
    # END SOLUTION


# %%
check("ch07.lora_linear", lora_linear)

# %% [markdown]
# ## Part 2: build the module
#
# ## Exercise 5: `MyLoRALinear`
#
# The check builds `MyLoRALinear(base, rank, alpha)` around a pretrained `nn.Linear` `base`, first
# checks how it starts, then loads the weights of `peft`'s own LoRA layer (`peft.tuners.lora.Linear`,
# with a trained, non-zero B) into it with `load_state_dict(strict=True)` and compares outputs and
# gradients. So store exactly these, under `peft`'s names:
#
# | name | what | starts as |
# |---|---|---|
# | `base_layer` | the `base` you are given, **frozen** (`requires_grad=False`) | the pretrained layer |
# | `lora_A` | `nn.Linear(d_in, rank, bias=False)`, trainable | random (its default init, or `peft`'s kaiming-uniform) |
# | `lora_B` | `nn.Linear(rank, d_out, bias=False)`, trainable | **zero** |
#
# `forward(x)` is `base_layer(x) + (alpha / rank) * lora_B(lora_A(x))`. Because B starts at zero,
# the new layer's output at the start equals the pretrained layer's exactly (the check tests
# `torch.equal`).

# %%
class MyLoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank adapter: x (..., d_in) -> (..., d_out)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        # BEGIN SOLUTION
        self.base_layer = base.requires_grad_(False)
        self.lora_A = nn.Linear(base.in_features, rank, bias=False)  # random: its default (kaiming-uniform) init
        self.lora_B = nn.Linear(rank, base.out_features, bias=False)
        nn.init.zeros_(self.lora_B.weight)  # B A = 0: the adapted layer starts as the pretrained one
        self.scaling = alpha / rank
        # END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION
        return self.base_layer(x) + self.scaling * self.lora_B(self.lora_A(x))
        # END SOLUTION


# %%
check("ch07.lora_module", MyLoRALinear)

# %% [markdown]
# ## Part 3: stage 2 with your parts
#
# ## Exercise 6: instruction tuning with LoRA
#
# The chapter's two stages, the second with your parts. Chapter 2's mini-CLIP (frozen) turns each
# image into `N = 17` features of width 64; a Q-Former bridge (`K = 8`) turns them into 8 vectors of
# the LM's width; the chapter-5 LM stays frozen.
#
# - **Stage 1**, with the library (chapter 5's recipe, 150 steps on 4,000 captioned images): only
#   the bridge learns, to write vectors the LM reads like the caption's words.
# - **Stage 2**, yours: LoRA adapters on the LM (rank 8 on its four attention projections, through
#   `peft`'s `add_lora`), your `freeze_for_stage(model, "stage2")` so that the bridge and the adapters
#   are the only trainable parts, rows made by your `chat_example`, and your training loop.
#
# The data: the same 4,000 training images, each asked one of the chapter's five question types
# (colour of a shape, shape at a place, size of a colour, position of a shape, colour at a place) as
# a one-turn conversation. The encoder is frozen, so its features are computed once, below.

# %%
import copy
import dataclasses

from mmllm_course.data import make_instructions
from mmllm_course.training.recipes import CHAPTER5, build_captioner, encode_all, evaluate_captioner, train_chapter5_captioner
from mmllm_course.training.recipes_ch07 import WHAT_WHERE_TYPES

K = 8
stage1_recipe = dataclasses.replace(CHAPTER5, steps=150, train_size=4000, held_out_size=100)
train_set, held_out = stage1_recipe.data(seed=0)  # generate_shapes(4000, seed=0) and (100, seed=1)
encoder_only = build_captioner(seed=0)  # the frozen mini-CLIP, to compute the features once
features = encode_all(encoder_only, train_set.images), encode_all(encoder_only, held_out.images)  # (n, 17, 64)
stage1 = train_chapter5_captioner(0, stage1_recipe, features=features)  # a fresh Q-Former (K = 8), the bridge alone trains
print(f"stage 1: {stage1.history.seconds:.0f} s; held-out exact captions {evaluate_captioner(stage1)['exact']:.0%}")
model, train_features = stage1.model, features[0]
stage1_bridge, stage1_lm = copy.deepcopy(model.bridge), model.lm  # kept, so that the stage-2 cell can run again
questions = make_instructions(train_set, seed=0, types=WHAT_WHERE_TYPES)  # one question per image
conversations = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]},
                  {"role": "assistant", "content": a}] for q, a in zip(questions.questions, questions.answers)]
print("e.g.", repr(tok.apply_chat_template(conversations[0], tokenize=False)))

# %% [markdown]
# Write `train_stage2(model, features, batch, steps, ...)`: an optimiser over the parameters that
# have `requires_grad` (the bridge's and the adapters'), then `steps` times: random rows of the batch
# and of the features, `model(input_ids=..., attention_mask=..., labels=..., image_features=...).loss`,
# `backward()`, a step. Return the list of losses, and leave the model in eval mode. What works here
# (the chapter's stage-2 settings):
#
# - AdamW at `3e-3`, batches of 64, a linear warmup over the first 20 steps then a cosine decay;
# - gradient clipping at norm 1.0 (`torch.nn.utils.clip_grad_norm_`);
# - 400 steps. (Stage 1 matters here: without it, the same 400 steps from a fresh bridge reached 86%
#   in our runs, the size questions at chance, 53%.)
#
# **What the check does:** it never trains. It first checks that the LM's own weights are still the
# shipped ones (only the adapters may change). Then it draws 100 new images with its own seed, runs
# them through the same frozen encoder and your trained bridge, asks each one the five question types
# in the chat template (`"<image>Q: ... A:"`, one question per prompt) and lets your LM answer
# (greedy, through the library's `generate`). The bar is **90%** exact answers over the 500 questions.

# %%
def pad_rows(rows: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Rows of (T_i,) input_ids and labels -> (B, T) input_ids, attention_mask and labels, right-padded."""
    length = max(len(r["input_ids"]) for r in rows)
    out = {"input_ids": torch.full((len(rows), length), pad_id), "attention_mask": torch.zeros(len(rows), length, dtype=torch.long),
           "labels": torch.full((len(rows), length), -100)}
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        out["input_ids"][i, :n], out["labels"][i, :n], out["attention_mask"][i, :n] = r["input_ids"], r["labels"], 1
    return out


def train_stage2(model: nn.Module, features: torch.Tensor, batch: dict[str, torch.Tensor], steps: int = 400,
                 batch_size: int = 64, lr: float = 3e-3, warmup: int = 20, seed: int = 0) -> list[float]:
    """Train the parameters of ``model`` that have requires_grad on (features, batch) rows; return the losses."""
    # BEGIN SOLUTION
    params = [p for p in model.parameters() if p.requires_grad]  # the bridge's and the adapters'
    optimizer = torch.optim.AdamW(params, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps)))
    generator = torch.Generator().manual_seed(seed)  # the batch order
    model.train()
    losses = []
    for _ in range(steps):
        idx = torch.randperm(len(features), generator=generator)[:batch_size]
        out = model(input_ids=batch["input_ids"][idx], attention_mask=batch["attention_mask"][idx],
                    labels=batch["labels"][idx], image_features=features[idx])
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
# The next cell adds the adapters to the stage-1 model, freezes with your function, builds the rows with your
# `chat_example`, trains (it prints how long that took) and hands the trained model to the check.
# Until your functions are written, it says `todo`.

# %%
import time

torch.manual_seed(0)
start = time.perf_counter()
try:
    model.bridge = copy.deepcopy(stage1_bridge)  # start from stage 1 (again, if you run this cell twice)
    model.lm = add_lora(stage1_lm, rank=8, targets=LLAMA_ATTENTION, seed=0)  # a copy with adapters: B = 0, the LM unchanged
    freeze_for_stage(model, "stage2")
    print(f"trainable: {sum(p.numel() for p in model.parameters() if p.requires_grad):,} of "
          f"{sum(p.numel() for p in model.parameters()):,}")
    stage2_batch = pad_rows([chat_example(c, tok, K) for c in conversations], tok.pad_token_id)
    losses = train_stage2(model, train_features, stage2_batch)
    print(f"trained in {time.perf_counter() - start:.0f} s; loss {losses[0]:.2f} -> {losses[-1]:.3f}")
    my_model = model
except NotImplementedError:
    print("one of your functions is not written yet")
    my_model = ...  # the check says todo
check("ch07.train_stage2", my_model)

# %% [markdown]
# Your model on new images, one question each (the chapter's chat prompt, greedy):

# %%
from mmllm_course.language import chat_prompts

probe = make_instructions(held_out[:4], seed=3, types=WHAT_WHERE_TYPES)
if my_model is ...:
    print("train your model first")
else:
    said = my_model.generate(chat_prompts(probe.questions, tok), image_features=features[1][probe.image_index], max_new_tokens=4)
    for q, s, a in zip(probe.questions, said, probe.answers):
        print(f"{q:45} said {s!r:14} truth {a!r}")

# %% [markdown]
# ## Part 4 (stretch, optional): merging
#
# ## Exercise 7: `merge_lora`
#
# After training, the adapter can be folded into the weight: a plain layer with
# $W' = W + \frac{\alpha}{r} B A$ gives the adapted layer's outputs, and inference runs no extra
# matmuls (this is `peft`'s `merge_and_unload`). Given `weight (d_out, d_in)`, `lora_A (r, d_in)`,
# `lora_B (d_out, r)` and `alpha`, return the merged weight, a new tensor (leave the inputs unchanged).

# %%
def merge_lora(weight: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, alpha: float) -> torch.Tensor:
    """W + (alpha / r) B A: (d_out, d_in)."""
    # BEGIN SOLUTION
    return weight + (alpha / lora_A.shape[0]) * (lora_B @ lora_A)
    # END SOLUTION


# %%
check("ch07.merge_lora", merge_lora)

# %% [markdown]
# ## Checked questions
#
# Answer with the letter, as a string (`"a"`).
#
# **Q1.** What does LoRA train?
#
# a) A copy of every weight matrix of the LM, trained at a lower learning rate and averaged with the original at the end.
#
# b) Two small matrices beside each adapted weight, A (r, d_in) and B (d_out, r); W itself stays frozen and B A is its change.
#
# c) Only the LM's biases and layer norms, which are small enough to train while the weight matrices stay frozen.
#
# d) The rank-r singular vectors of each weight W, found by an SVD of W at the start and then fine-tuned in place of W.

# %%
q1 = "b"  # SOLUTION
check("ch07.q1", q1)

# %% [markdown]
# **Q2.** What does stage 2 teach that stage 1 does not?
#
# a) To see the image: stage 1 only trained the LM, so the bridge first learns to read the encoder's features in stage 2.
#
# b) The vocabulary of the shapes world, which the frozen LM never saw in its pretraining on text.
#
# c) To follow an instruction: read the question in the chat template and answer it, not describe the whole image.
#
# d) To write longer outputs: stage-1 captions are short, and stage 2 trains the LM to continue for more tokens.

# %%
q2 = "c"  # SOLUTION
check("ch07.q2", q2)

# %% [markdown]
# **Q3.** Why is the LM frozen in stage 1?
#
# a) The LM already writes well; the bridge must learn to speak its language, and a trainable LM would drift on captions alone and forget.
#
# b) A transformers LM cannot compute gradients with respect to its weights once inputs_embeds are passed instead of input_ids.
#
# c) Frozen weights make every stage-1 step exactly as expensive as an unfrozen one, so freezing only keeps the runs comparable.
#
# d) The image tokens would otherwise overwrite the LM's embedding table, since they share its rows for the image positions.

# %%
q3 = "a"  # SOLUTION
check("ch07.q3", q3)

# %% [markdown]
# **Q4.** Why does LoRA's B start at zero?
#
# a) Zero is the only value for which A's gradient is defined; a non-zero B would make the loss non-differentiable.
#
# b) It keeps the adapter's numbers small so that the adapters can be saved in 4 bits, as QLoRA does.
#
# c) So that B A has rank zero forever: LoRA only rescales W and never changes the directions it maps to.
#
# d) B A is then zero, so the adapted LM starts exactly as the pretrained one; A is random, so B still gets a gradient.

# %%
q4 = "d"  # SOLUTION
check("ch07.q4", q4)

# %% [markdown]
# ## Done?
#
# From a shell, `python -m mmllm_course.grade exercises/07_training_stages.ipynb` grades this whole
# notebook at once (with your training done, that includes its training). The chapter's notebook goes
# further: stage 1 first, the whole LM trained instead of LoRA, forgetting, saving and merging the
# adapters with `peft`, and the same loop on several processes with `accelerate`.
