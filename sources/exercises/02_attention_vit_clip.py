# %% [markdown]
# # 02 · Exercises: attention, the ViT and CLIP
#
# Read chapter 2 (`notebooks/02_attention_vit_clip.ipynb`) first. The exercises come in four parts:
#
# 1. **Core** (exercises 1-5): attention, the head split and merge, CLIP's loss and zero-shot prediction,
#    each a function.
# 2. **Build** (exercises 6-8): a whole `MultiHeadAttention` module, a pre-norm `TransformerBlock` made
#    of it, and the ViT's forward pass. The check loads the library's weights into your module, so your
#    parameters must carry the library's names, and compares outputs and gradients.
# 3. **Train** (exercise 9): train your own mini-CLIP with your loss and your loop until it classifies
#    90% of new images right, zero-shot. The training cell takes about a minute on a laptop CPU.
# 4. **Stretch** (exercise 10, optional): SigLIP's sigmoid loss.
#
# Then three checked questions. Each exercise ends with `check(...)`: it runs your code next to the
# library's on several inputs and prints **pass**, **todo**, **fail** (with what was expected and what
# came back, and the usual mistake when it recognises it) or **error**.
#
# Dims: `B` batch, `H` heads, `N` queries, `M` keys, `d` head width, `D = H * d` model width,
# `E` embedding width, `K` classes.

# %%
import math  # noqa: F401  (you may use it)

import torch
import torch.nn.functional as F  # noqa: F401  (you may use it)
from torch import nn

from mmllm_course.grading import check

_ = torch.manual_seed(0)

# %% [markdown]
# ## Part 1: core functions
#
# Five functions. Each check runs yours next to the library's on several random inputs, in float32
# and float64: the output dtype must follow the input.

# %% [markdown]
# ## Exercise 1: `scaled_dot_product_attention`
#
# Given `q (B, H, N, d)`, `k (B, H, M, d)`, `v (B, H, M, d)` and an optional boolean `mask` that
# broadcasts to `(B, H, N, M)` (**True = keep** this key for this query), return
#
# $$\operatorname{softmax}\!\left(\frac{q k^\top}{\sqrt d} \text{ with masked scores set to } -\infty\right) v \quad (B, H, N, d).$$
#
# The softmax runs over the keys (each query's weights sum to 1). Every query keeps at least one
# key in the tests. Return only the output, not the weights. Mind the mask's convention: True = keep,
# as in `F.scaled_dot_product_attention`; `nn.MultiheadAttention`'s masks use the opposite one
# (True = ignore).

# %%
def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """q (B, H, N, d), k and v (B, H, M, d), mask broadcastable to (B, H, N, M), True = keep -> (B, H, N, d)."""
    # BEGIN SOLUTION
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, N, M)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v
    # END SOLUTION


# %%
check("ch02.attention", scaled_dot_product_attention)

# %% [markdown]
# ## Exercise 2: `split_heads`
#
# Cut the width `D` of `x (B, N, D)` into `H` heads: return `(B, H, N, D/H)` where head `h` holds
# the contiguous channels `h*D/H .. (h+1)*D/H - 1` of every token (the library's layout, and the
# one pretrained checkpoints use).

# %%
def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, D) -> (B, H, N, D/H)."""
    # BEGIN SOLUTION
    b, n, d = x.shape
    return x.view(b, n, num_heads, d // num_heads).transpose(1, 2)
    # END SOLUTION


# %%
check("ch02.split_heads", split_heads)

# %% [markdown]
# ## Exercise 3: `merge_heads`
#
# The inverse: `(B, H, N, d)` → `(B, N, H*d)`, head 0's channels first, then head 1's, and so on,
# so that `merge_heads(split_heads(x, H))` gives `x` back.

# %%
def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, N, d) -> (B, N, H*d)."""
    # BEGIN SOLUTION
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)
    # END SOLUTION


# %%
check("ch02.merge_heads", merge_heads)

# %% [markdown]
# ## Exercise 4: `clip_loss`
#
# `logits_per_image (B, B)`: row `i` scores image `i` against every text; the right text of image
# `i` is text `i`. Return CLIP's symmetric InfoNCE, a 0-d tensor (shape `()`, so `.backward()` works):
#
# $$\mathcal{L} = \tfrac12\Big[\operatorname{CE}(\text{logits}, [0..B-1]) + \operatorname{CE}(\text{logits}^\top, [0..B-1])\Big].$$
#
# Each CE is the mean over the `B` rows. The check compares the value and the gradient with respect
# to the logits, so every step must stay in torch (no `.item()`, no `.detach()`). You train with this
# function in exercise 9.

# %%
def clip_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """(B, B) logits -> scalar loss, the mean of the image->text and text->image cross-entropies."""
    # BEGIN SOLUTION
    targets = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    return (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_image.T, targets)) / 2
    # END SOLUTION


# %%
check("ch02.clip_loss", clip_loss)

# %% [markdown]
# ## Exercise 5: `zero_shot_predict`
#
# Given image embeddings `(B, E)` and one embedding per class `(K, E)`, return the predicted class
# of each image `(B,)`: the class with the highest **cosine** similarity. The check's embeddings
# are *not* unit length, so think about what a plain dot product would prefer. `K` goes up to 64.

# %%
def zero_shot_predict(image_embeds: torch.Tensor, class_embeds: torch.Tensor) -> torch.Tensor:
    """(B, E), (K, E) -> (B,) class indices by cosine similarity."""
    # BEGIN SOLUTION
    return (F.normalize(image_embeds, dim=-1) @ F.normalize(class_embeds, dim=-1).T).argmax(dim=-1)
    # END SOLUTION


# %%
check("ch02.zero_shot", zero_shot_predict)

# %% [markdown]
# ## Part 2: build the modules
#
# Now whole `nn.Module`s. Each check **builds your class** with the arguments given below, **loads
# the library's weights into it** with `load_state_dict(..., strict=True)`, and runs your module and
# the library's on several inputs: the outputs must match, and so must the gradients with respect to
# the input and to every parameter. So the parameter names and shapes must be exactly the library's;
# if they are not, the message lists the names it expected.
#
# ## Exercise 6: `MultiHeadAttention`
#
# Self-attention with `H` heads over tokens `x (B, N, D)`. Four learned projections, each an
# `nn.Linear(D, D)` with a bias:
#
# | name | the paper's | does |
# |---|---|---|
# | `q_proj` | $W_Q$ | tokens → queries `(B, N, D)` |
# | `k_proj` | $W_K$ | tokens → keys `(B, N, D)` |
# | `v_proj` | $W_V$ | tokens → values `(B, N, D)` |
# | `out_proj` | $W_O$ | merged heads → output `(B, N, D)` |
#
# In the notation of "Attention Is All You Need" (Vaswani et al. 2017), head `h` attends with the
# `h`-th slice of `D/H` channels of the queries, keys and values, and the output is
# $\text{concat}(\text{head}_1, \dots, \text{head}_H)\, W_O$. (An `nn.Linear` computes `x @ weight.T + bias`.)
#
# `forward(x, causal=False)`: project, split each of q, k, v into `H` heads `(B, H, N, D/H)` (your
# `split_heads`), attend with scale `1/sqrt(D/H)` (one head's width), with the causal mask when
# `causal=True` (query `i` sees keys `0..i`), merge the heads back to `(B, N, D)`, then `out_proj`.
# Return only the output tensor `(B, N, D)`, not the weights. You may use your exercise-1 function or
# `F.scaled_dot_product_attention(q, k, v, is_causal=causal)`.
#
# The check builds `MultiHeadAttention(16, 4)` and `MultiHeadAttention(24, 3)`, loads the library's
# `mmllm_course.nn.attention.MultiHeadAttention` weights (names `q_proj.weight (D, D)`,
# `q_proj.bias (D,)`, ...), and compares on four inputs, two of them causal.

# %%
class MultiHeadAttention(nn.Module):
    """Multi-head self-attention: (B, N, D) -> (B, N, D), with q_proj, k_proj, v_proj, out_proj."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        # BEGIN SOLUTION
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim)  # W_Q
        self.k_proj = nn.Linear(dim, dim)  # W_K
        self.v_proj = nn.Linear(dim, dim)  # W_V
        self.out_proj = nn.Linear(dim, dim)  # W_O
        # END SOLUTION

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """x (B, N, D) -> (B, N, D); causal=True: token i attends to tokens 0..i only."""
        # BEGIN SOLUTION
        q = split_heads(self.q_proj(x), self.num_heads)  # (B, H, N, D/H)
        k = split_heads(self.k_proj(x), self.num_heads)
        v = split_heads(self.v_proj(x), self.num_heads)
        mask = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool, device=x.device).tril() if causal else None
        return self.out_proj(merge_heads(scaled_dot_product_attention(q, k, v, mask)))  # (B, N, D)
        # END SOLUTION


# %%
check("ch02.multi_head_attention", MultiHeadAttention)

# %% [markdown]
# ## Exercise 7: a pre-norm `TransformerBlock`
#
# A block lets the tokens exchange information (attention), then transforms each token on its own
# (an MLP), and **adds** each result to its input: the residual stream `x` runs through the block
# unchanged and each sub-layer writes a correction into it. A LayerNorm normalises each token (mean
# 0, variance 1 over its `D` channels, then a learned scale and shift) before it enters a sub-layer:
#
# $$x \leftarrow x + \text{attn}(\text{ln1}(x)), \qquad x \leftarrow x + \text{mlp}(\text{ln2}(x)), \qquad
# \text{mlp}(h) = \text{fc2}(\text{GELU}(\text{fc1}(h))).$$
#
# This is **pre-norm**, the layout of ViT, CLIP, GPT-2 and Llama: the LayerNorm sits *inside* each
# branch, so the residual stream itself is never normalised. (The original 2017 transformer was
# post-norm, `x = LayerNorm(x + sublayer(x))`.)
#
# `TransformerBlock(dim, num_heads, mlp_dim)` with exactly these parameters:
# `ln1 = nn.LayerNorm(D)`, `attn =` your `MultiHeadAttention(D, H)`, `ln2 = nn.LayerNorm(D)`, and
# `mlp` a module with `fc1 = nn.Linear(D, mlp_dim)` and `fc2 = nn.Linear(mlp_dim, D)` (so the names
# are `mlp.fc1.weight`, ...; a small `nn.Module` or an `nn.Sequential(OrderedDict(...))` both work).
# The activation is the exact GELU, `nn.GELU()` / `F.gelu`. `forward(x, causal=False)` passes
# `causal` on to the attention and returns `(B, N, D)`.
#
# The check builds `TransformerBlock(16, 4, 32)` and `TransformerBlock(24, 3, 40)`, loads the weights
# of the library's `mmllm_course.nn.transformer.TransformerBlock` and compares on three inputs.

# %%
class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(ln1(x)), then x + mlp(ln2(x)). (B, N, D) -> (B, N, D)."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int):
        super().__init__()
        # BEGIN SOLUTION
        self.ln1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, mlp_dim)
        self.mlp.fc2 = nn.Linear(mlp_dim, dim)
        # END SOLUTION

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """x (B, N, D) -> (B, N, D)."""
        # BEGIN SOLUTION
        x = x + self.attn(self.ln1(x), causal=causal)  # tokens exchange information
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.ln2(x))))  # each token on its own
        # END SOLUTION


# %%
check("ch02.transformer_block", TransformerBlock)

# %% [markdown]
# ## Exercise 8: the ViT forward pass
#
# Write the forward pass of the library's `ViT` yourself, calling its parts. Given a
# `model = mmllm_course.encoders.vit.ViT(config)` and `images (B, C, H, W)`, return the pair
# `(last_hidden_state (B, 1+N, D), pooled (B, D))`, exactly what `model(images)` returns as
# `.last_hidden_state` and `.pooled`. The parts, in order:
#
# 1. **pixels**: if `model.pixel_mean` is not `None`, `images = (images - model.pixel_mean) / model.pixel_std`
#    (buffers of shape `(C, 1, 1)`; the mini-CLIP of chapter 2 has them, most ViTs don't);
# 2. `model.embeddings(images)`: patches, the [CLS] token in front and the position embeddings, `(B, 1+N, D)`;
# 3. `model.pre_norm`: CLIP's LayerNorm on the embeddings (an `nn.Identity` when `config.pre_norm` is False);
# 4. every block of `model.blocks` in turn; each returns a pair `(x, attention weights or None)`;
# 5. the final LayerNorm `model.norm` and the pooling, in one of two layouts (`model.config.final_norm`):
#    - `"tokens"` (ViT): normalise every token, `x = model.norm(x)`, then pool: `last_hidden_state` is normalised;
#    - `"pooled"` (CLIP): pool the raw tokens and normalise only the pooled vector: `last_hidden_state` is the
#      raw output of the last block;
#
#    and the pooling `model.config.pooling`: `"cls"` reads the [CLS] token `x[:, 0]`, `"mean"`
#    averages the patch tokens `x[:, 1:]` ([CLS] left out).
#
# The check runs your function on four layouts (ViT, CLIP, this chapter's mean-pooled mini-CLIP with
# pixel normalisation, mean pooling with `"tokens"`), compares both outputs and the gradients with
# respect to the images and every parameter. Don't call `model(images)` itself: that is what you write.

# %%
def vit_forward(model, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A library ViT's forward from its parts: images (B, C, H, W) -> (last_hidden_state (B, 1+N, D), pooled (B, D))."""
    # BEGIN SOLUTION
    config = model.config
    if model.pixel_mean is not None:
        images = (images - model.pixel_mean) / model.pixel_std
    x = model.pre_norm(model.embeddings(images))  # (B, 1+N, D)
    for block in model.blocks:
        x, _ = block(x)

    def pool(t: torch.Tensor) -> torch.Tensor:
        return t[:, 0] if config.pooling == "cls" else t[:, 1:].mean(dim=1)  # (B, D)

    if config.final_norm == "tokens":
        x = model.norm(x)
        return x, pool(x)
    return x, model.norm(pool(x))
    # END SOLUTION


# %%
check("ch02.vit_forward", vit_forward)

# %% [markdown]
# ## Part 3: train your own mini-CLIP
#
# ## Exercise 9: 90% zero-shot accuracy with your loss and your loop
#
# Train a CLIP on the shapes world, as chapter 2 did, but with **your** `clip_loss` and **your**
# training loop. The data, the tokenizer and the model are set up below (the chapter's choices:
# 20,000 pairs, the course's BPE tokenizer, a ViT and a text transformer of width 64, 2 layers,
# 4 heads, mean pooling and pixel normalisation); change the model's config if you like.
#
# Write `train_my_clip(model, steps, lr)`: an optimiser, then `steps` times: draw a batch of pairs,
# compute the logits `model(images, input_ids, paired=True)` `(B, B)`, your `clip_loss`,
# `backward()`, a step. Return the trained model in eval mode (`model.eval()`). What the course
# found to work in about a minute of CPU:
#
# - **AdamW**, learning rate `2e-3`, weight decay `0.05`, with a **schedule**: a linear warmup over the
#   first 50 steps (Adam's first updates are noisy), then a cosine decay towards 0
#   (`torch.optim.lr_scheduler.LambdaLR` takes a function of the step);
# - **800 steps of 160 pairs**, and **no caption twice in a batch**: the loss treats every other text
#   of the batch as a wrong match, so two images with the same caption would be pushed away from
#   their own (identical) text. The shapes world has exactly 160 distinct captions;
#   `one_image_per_caption()` below draws one random image of each, in a random order.
#
# **What the check does:** it never trains. It draws 2,000 new images with its own seed, embeds the
# 20 colour x shape classes with 8 prompts each ("a small red circle in the top left", ... for
# every size and position, averaged: prompt ensembling), and measures your model's zero-shot
# accuracy with `model.encode_image` and `model.encode_text`. The bar is **90%** (chance: 5%). It
# reports colour and shape accuracy apart, so you see what your model still confuses.

# %%
from mmllm_course.data import generate_shapes, shapes_tokenizer
from mmllm_course.encoders.clip import CLIP, CLIPConfig
from mmllm_course.encoders.clip_training import tokenize_captions
from mmllm_course.encoders.text import TextTransformerConfig
from mmllm_course.encoders.vit import ViTConfig

tokenizer = shapes_tokenizer()
train = generate_shapes(20_000, seed=0)
input_ids, _ = tokenize_captions(tokenizer, train.captions, context_length=16)  # (20000, L), eos then padding
caption_class = train.caption_class_labels()  # (20000,) which of the 160 distinct captions each pair has
by_caption = torch.argsort(caption_class, stable=True)  # pair indices grouped by caption
counts = torch.bincount(caption_class, minlength=160)  # (160,) pairs per caption
starts = torch.cumsum(counts, 0) - counts  # (160,) where each caption's pairs begin in `by_caption`


def one_image_per_caption(generator: torch.Generator) -> torch.Tensor:
    """Indices (160,) of one random pair per distinct caption, in a random order: a batch with no caption twice."""
    captions = torch.randperm(160, generator=generator)  # every caption once
    offsets = (torch.rand(160, generator=generator) * counts[captions]).long()  # a random pair of each
    return by_caption[starts[captions] + offsets]


config = CLIPConfig(
    vision=ViTConfig(image_size=32, patch_size=8, dim=64, depth=2, num_heads=4, pre_norm=True, final_norm="pooled",
                     pooling="mean", pixel_mean=(0.5, 0.5, 0.5), pixel_std=(0.25, 0.25, 0.25)),
    text=TextTransformerConfig(vocab_size=len(tokenizer), context_length=16, dim=64, depth=2, num_heads=4,
                               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
    embed_dim=64,
)
print("pairs", tuple(train.images.shape), "| ids", tuple(input_ids.shape), "| e.g.", repr(train.captions[0]))

# %%
def train_my_clip(model: CLIP, steps: int = 800, lr: float = 2e-3, warmup: int = 50, seed: int = 0) -> CLIP:
    """Train ``model`` with your clip_loss on the pairs above; return it in eval mode."""
    # BEGIN SOLUTION
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
    )
    model.train()
    for _ in range(steps):
        idx = one_image_per_caption(generator)  # (160,)
        logits = model(train.images[idx], input_ids[idx], paired=True)  # (160, 160)
        loss = clip_loss(logits)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()
    # END SOLUTION


# %% [markdown]
# The next cell trains (about a minute; this whole notebook, solved, runs in under two minutes) and
# hands the trained model to the check. Until `train_my_clip` is written, it says `todo`.

# %%
import time

torch.manual_seed(0)
start = time.perf_counter()
try:
    my_clip = train_my_clip(CLIP(config))
    print(f"trained in {time.perf_counter() - start:.0f} s")
except NotImplementedError:
    print("train_my_clip is not written yet")
    my_clip = ...  # the check says todo
check("ch02.train_clip", my_clip)

# %% [markdown]
# ## Part 4 (stretch, optional): SigLIP's sigmoid loss
#
# ## Exercise 10: `siglip_loss`
#
# SigLIP (Zhai et al. 2023, [arXiv:2303.15343](https://arxiv.org/abs/2303.15343)), the image tower of
# PaliGemma and many recent VLMs, replaces CLIP's softmax over the batch with an independent
# **binary** decision per pair: does image `i` go with text `j`? With unit-length embeddings, a learned
# scale `t = exp(logit_scale)` and a learned bias `b` (the paper starts at `t = 10`, `b = -10`):
#
# $$z_{ij} = t\,\cos(\text{img}_i, \text{txt}_j) + b, \qquad \ell_{ij} = \begin{cases} +1 & i = j \\ -1 & i \ne j \end{cases}, \qquad
# \mathcal{L} = -\frac{1}{B} \sum_{i=1}^{B} \sum_{j=1}^{B} \log \sigma(\ell_{ij}\, z_{ij}).$$
#
# Note the normalisation: the sum over all `B²` pairs is divided by `B`, not `B²`. The bias matters
# because most pairs are negatives: `b = -10` starts every logit low, so the many negatives do not
# dominate the first steps.
#
# `siglip_loss(image_embeds (B, E), text_embeds (B, E), logit_scale (), logit_bias ())` returns a 0-d
# tensor. The embeddings come **not** normalised. The check compares the value and the gradients with
# respect to all four inputs on four batches (B = 3 to 8, float32 and float64) with a reference that
# follows the paper's pseudo-code. Hint: `F.logsigmoid` is stable where `torch.log(torch.sigmoid(z))`
# is not.

# %%
def siglip_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor) -> torch.Tensor:
    """(B, E), (B, E), 0-d log t, 0-d b -> SigLIP's loss (0-d): -sum(log sigmoid(labels * logits)) / B."""
    # BEGIN SOLUTION
    img, txt = F.normalize(image_embeds, dim=-1), F.normalize(text_embeds, dim=-1)
    logits = logit_scale.exp() * img @ txt.T + logit_bias  # (B, B)
    labels = 2 * torch.eye(logits.shape[0], dtype=logits.dtype, device=logits.device) - 1  # +1 diagonal, -1 elsewhere
    return -F.logsigmoid(labels * logits).sum() / logits.shape[0]
    # END SOLUTION


# %%
check("ch02.siglip_loss", siglip_loss)

# %% [markdown]
# ## Checked questions
#
# Answer with the letter, as a string (`"a"`).
#
# **Q1.** You drop the `1/sqrt(d)` from softmax attention and make the heads wider and wider. What happens?
#
# a) The scores spread out like sqrt(d), the softmax saturates towards one-hot weights, and its
# gradients vanish.
#
# b) The scores shrink like 1/sqrt(d), the softmax flattens towards uniform weights, and every token
# averages all the others.
#
# c) Nothing changes: a softmax only depends on the order of its inputs, and scaling all scores
# keeps that order.
#
# d) The output grows like d, the residual stream overflows, and the next LayerNorm returns NaN for
# every token.

# %%
q1 = "a"  # SOLUTION
check("ch02.q1", q1)

# %% [markdown]
# **Q2.** CLIP's logits are cosine similarities divided by a temperature `T`. What does a lower `T` do?
#
# a) It divides the cosine similarities by a larger number, so the softmax over the batch gets
# flatter and softer.
#
# b) It changes which caption has the highest similarity to an image, so the zero-shot predictions
# change too.
#
# c) It has no effect on training at all, because both embeddings are normalised to unit length
# before the product.
#
# d) It multiplies the cosine similarities by a larger 1/T, so the softmax gets sharper and
# near-misses cost more.

# %%
q2 = "d"  # SOLUTION
check("ch02.q2", q2)

# %% [markdown]
# **Q3.** Why can CLIP classify images into classes it was never trained to classify?
#
# a) Its image tower was pre-trained with a classification head over those classes, which zero-shot
# reuses as is.
#
# b) It memorises every training image with its caption and, at test time, looks up the nearest
# training image.
#
# c) The text tower maps any class prompt into the images' space, so the prompts act as a classifier
# built from text.
#
# d) It cannot: zero-shot accuracy stays at chance level unless the model is fine-tuned on the new
# classes first.

# %%
q3 = "c"  # SOLUTION
check("ch02.q3", q3)

# %% [markdown]
# ## Done?
#
# From a shell, `python -m mmllm_course.grade exercises/02_attention_vit_clip.ipynb` grades this
# whole notebook at once (with your training done, that includes the minute of training). Chapter 3
# connects these image features to a language model.
