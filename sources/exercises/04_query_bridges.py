# %% [markdown]
# # 04 · Exercises: learned queries, the resampler and token merging
#
# Read chapter 4 (`notebooks/04_query_bridges.ipynb`) first. The exercises come in four parts:
#
# 1. **Core** (exercises 1-4): queries cross-attending to image features, one Perceiver Resampler
#    layer, pixel shuffle, and counting the image tokens each bridge gives the LLM.
# 2. **Build** (exercise 5): a whole `QFormerBridge` of your own. The check loads the library's weights
#    into it, so your parameters must carry the library's names, and compares outputs and gradients.
# 3. **Train** (exercise 6): train a query bridge on the frozen chapter-2 encoder's patch features with
#    your own loss and loop, until it places 90% of new images in the right caption class (about 20 s).
# 4. **Stretch** (exercise 7, optional): the resampler layer with grouped-query attention.
#
# Then four checked questions. Each exercise ends with `check(...)`: it runs your code next to the
# library's on several inputs and prints **pass**, **todo**, **fail** (with what was expected and what
# came back, and the usual mistake when it recognises it) or **error**.
#
# Dims: `B` batch, `K` queries (latents), `N` image features (patches), `D` width, `d` head width,
# `H` heads, `r` the merge ratio.

# %%
import math  # noqa: F401  (you may use it)

import torch
import torch.nn.functional as F
from torch import nn

from mmllm_course.grading import check

_ = torch.manual_seed(0)

# %% [markdown]
# ## Part 1: core functions
#
# ## Exercise 1: `cross_attention`
#
# `K` queries read `N` image features, with one head. Given `queries (B, K, D)`, `features (B, N, E)`,
# the projection matrices `w_q (D, d)`, `w_k (E, d)`, `w_v (E, d)` and an optional padding `mask (B, N)`
# (**True = a real feature**, False = padding), return
#
# $$\operatorname{softmax}\!\Big(\frac{(Q W_q)(X W_k)^\top}{\sqrt d}\ \text{with padded features set to } -\infty\Big)\,(X W_v)
# \quad (B, K, d).$$
#
# The queries ask; the **features** give the keys and the values. Every image keeps at least one
# real feature in the tests. The check runs float32 and float64 inputs; the output dtype must follow.

# %%
def cross_attention(queries: torch.Tensor, features: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor,
                    w_v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """queries (B, K, D), features (B, N, E), w_q (D, d), w_k and w_v (E, d), mask (B, N) True = real -> (B, K, d)."""
    # BEGIN SOLUTION
    q, k, v = queries @ w_q, features @ w_k, features @ w_v  # (B, K, d), (B, N, d), (B, N, d)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, K, N)
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))  # the same mask for every query
    return scores.softmax(dim=-1) @ v
    # END SOLUTION


# %%
check("ch04.cross_attention", cross_attention)

# %% [markdown]
# ## Exercise 2: one Perceiver Resampler layer
#
# Write the forward pass of one layer of the library's resampler (Flamingo's design, Idefics2's
# weights) from its parts. Given a `layer` (`mmllm_course.bridges.resampler.PerceiverLayer`), the
# `latents (B, K, D)`, the `media` features `(B, N, D)` and an optional padding `mask (B, N)` (True =
# real), return the new latents `(B, K, D)`:
#
# 1. `z = layer.norm_latents(latents)`, `x = layer.norm_media(media)` (two different norms);
# 2. attention with the queries from `z` and the keys and values from the **concatenation**
#    `torch.cat([x, z], dim=1)` `(B, N + K, D)`: `layer.attn.q_proj`, `k_proj`, `v_proj`, each split into
#    heads of `layer.attn.head_dim` channels (`layer.attn.num_heads` query heads; the key/value heads,
#    `layer.attn.num_kv_heads`, are as many here), scaled dot-product attention per head, heads merged,
#    then `layer.attn.out_proj`. The key mask is `[mask; ones]` `(B, N + K)`: a latent never reads a
#    padded media token but always sees the latents;
# 3. the residual: `latents = latents + attention output`;
# 4. the feed-forward, pre-norm with its residual: `latents = latents + layer.mlp(layer.norm_mlp(latents))`.
#
# You may use `F.scaled_dot_product_attention(q, k, v, attn_mask=...)` (a boolean mask, True = keep,
# broadcastable to `(B, H, K, N + K)`). Don't call `layer(...)` or `layer.attn(...)` themselves: that is
# what you write. The check uses layers with LayerNorm and GELU (Flamingo) and with RMSNorm and a gated
# SiLU feed-forward (Idefics2); you call the norms and `layer.mlp` as they are.

# %%
def resampler_layer(layer, latents: torch.Tensor, media: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """One pre-norm Perceiver Resampler layer: latents (B, K, D), media (B, N, D), mask (B, N) -> latents (B, K, D)."""
    # BEGIN SOLUTION
    a = layer.attn
    b, k, _ = latents.shape
    z = layer.norm_latents(latents)
    kv = torch.cat([layer.norm_media(media), z], dim=1)  # (B, N + K, D): media AND latents
    m = kv.shape[1]
    q = a.q_proj(z).view(b, k, a.num_heads, a.head_dim).transpose(1, 2)  # (B, H, K, Dh)
    keys = a.k_proj(kv).view(b, m, a.num_kv_heads, a.head_dim).transpose(1, 2)  # (B, H_kv, N + K, Dh)
    values = a.v_proj(kv).view(b, m, a.num_kv_heads, a.head_dim).transpose(1, 2)
    group = a.num_heads // a.num_kv_heads  # 1 here; > 1 with grouped-query attention (exercise 7)
    keys, values = keys.repeat_interleave(group, dim=1), values.repeat_interleave(group, dim=1)
    attn_mask = None
    if mask is not None:
        keep = torch.cat([mask, torch.ones(b, k, dtype=torch.bool, device=mask.device)], dim=1)  # (B, N + K)
        attn_mask = keep[:, None, None, :]
    out = F.scaled_dot_product_attention(q, keys, values, attn_mask=attn_mask)  # (B, H, K, Dh)
    latents = latents + a.out_proj(out.transpose(1, 2).reshape(b, k, -1))  # residual
    return latents + layer.mlp(layer.norm_mlp(latents))  # pre-norm feed-forward, residual
    # END SOLUTION


# %%
check("ch04.resampler_layer", resampler_layer)

# %% [markdown]
# ## Exercise 3: `pixel_shuffle`
#
# Token merging as Idefics3, SmolVLM and nanoVLM do it. `x (B, N, D)` holds the tokens of an `S x S`
# grid, row by row (`N = S * S`); `ratio = r` divides `S`. Return `(B, (S/r)^2, r * r * D)`: output
# token `(i, j)` (numbered row by row) holds the `r x r` block of input tokens `(r*i + a, r*j + b)`,
# side by side in the order **row offset `a` first, then column offset `b`, then the `D` channels**.
# For `r = 2` the first merged token is `[t(0,0), t(0,1), t(1,0), t(1,1)]` concatenated. This exact
# order is what a checkpoint's projection was trained on.

# %%
def pixel_shuffle(x: torch.Tensor, ratio: int) -> torch.Tensor:
    """(B, S*S, D) -> (B, (S/r)^2, r*r*D), merged channels in (row offset, column offset, channel) order."""
    # BEGIN SOLUTION
    b, n, d = x.shape
    s = math.isqrt(n)
    g = s // ratio
    x = x.reshape(b, g, ratio, g, ratio, d)  # (B, h, r1, w, r2, D): row = h*r + r1, column = w*r + r2
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, g * g, ratio * ratio * d)
    # END SOLUTION


# %%
check("ch04.pixel_shuffle", pixel_shuffle)

# %% [markdown]
# ## Exercise 4: how many tokens does the LLM read?
#
# `count_tokens(bridge, image_size, patch_size, num_queries=32, ratio=2)` returns `K`, the number of
# image tokens the LLM reads for one square image, for `bridge` one of `"linear"`, `"mlp"`,
# `"qformer"`, `"resampler"`, `"token_merge"`. The encoder cuts the image into
# `patch_size x patch_size` patches and the bridge sees only the patch tokens (no [CLS]). Return an `int`.

# %%
def count_tokens(bridge: str, image_size: int, patch_size: int, num_queries: int = 32, ratio: int = 2) -> int:
    """K for one image_size x image_size image through ``bridge``."""
    # BEGIN SOLUTION
    n = (image_size // patch_size) ** 2  # N patch tokens
    if bridge in ("linear", "mlp"):
        return n  # one token per patch
    if bridge in ("qformer", "resampler"):
        return num_queries  # one token per query, whatever N is
    return n // ratio**2  # token merging: every r x r block becomes one token
    # END SOLUTION


# %%
check("ch04.count_tokens", count_tokens)

# %% [markdown]
# ## Part 2: build a Q-Former bridge
#
# ## Exercise 5: `QFormerBridge`
#
# BLIP-2's bridge, post-norm (BERT's layout), with cross-attention in **every** layer. The check builds
# `QFormerBridge(in_dim, out_dim, dim, num_queries, depth, num_heads, mlp_dim)`, loads the weights of
# the library's `mmllm_course.bridges.QFormerBridge` (with `cross_attention_frequency=1`) into it with
# `load_state_dict(strict=True)`, and compares outputs and gradients on features of several `N`, with
# and without a padding mask. Your parameters must carry exactly these names:
#
# | name | shape | what |
# |---|---|---|
# | `queries` | `(1, K, dim)` | the learned queries (an `nn.Parameter`) |
# | `ln_queries` | LayerNorm(dim) | normalises the queries once, before the first layer |
# | `layers.i.self_attn` | attention, width `dim` | the queries look at each other |
# | `layers.i.ln_self` | LayerNorm(dim) | |
# | `layers.i.cross_attn` | attention, queries `dim`, keys/values from `in_dim` | the queries read the features |
# | `layers.i.ln_cross` | LayerNorm(dim) | |
# | `layers.i.mlp` | `fc1` Linear(dim, mlp_dim), GELU, `fc2` Linear(mlp_dim, dim) | each query on its own |
# | `layers.i.ln_mlp` | LayerNorm(dim) | |
# | `proj` | Linear(dim, out_dim) | to the LLM's width (BLIP-2's `language_projection`) |
#
# Every LayerNorm has `eps=1e-12` (BERT's). For the attentions use the library's
# `MultiHeadAttention(dim, num_heads, kv_dim=in_dim)` (names `q_proj`, `k_proj`, `v_proj`, `out_proj`;
# `forward(x, context, key_padding_mask=mask)` returns `(output, weights)`: take `[0]`), or write your
# own with those names; `mmllm_course.nn.transformer.MLP(dim, mlp_dim)` has the MLP's names.
#
# `forward(features (B, N, in_dim), mask=None)` returns the tokens `(B, K, out_dim)`:
#
# $$q = \mathrm{ln\_queries}(\text{queries}), \text{ for each layer: }
# q \leftarrow \mathrm{ln\_self}(q + \mathrm{self\_attn}(q)),\ 
# q \leftarrow \mathrm{ln\_cross}(q + \mathrm{cross\_attn}(q, \text{features}, \text{mask})),\ 
# q \leftarrow \mathrm{ln\_mlp}(q + \mathrm{mlp}(q)); \quad \text{tokens} = \mathrm{proj}(q).$$

# %%
from mmllm_course.nn.attention import MultiHeadAttention
from mmllm_course.nn.transformer import MLP


class QFormerBridge(nn.Module):
    """features (B, N, in_dim) [, mask (B, N)] -> (B, K, out_dim), K = num_queries whatever N is."""

    def __init__(self, in_dim: int, out_dim: int, dim: int, num_queries: int, depth: int, num_heads: int, mlp_dim: int):
        super().__init__()
        # BEGIN SOLUTION
        self.queries = nn.Parameter(torch.randn(1, num_queries, dim) * 0.02)  # (1, K, D)
        self.ln_queries = nn.LayerNorm(dim, eps=1e-12)
        self.layers = nn.ModuleList()
        for _ in range(depth):
            layer = nn.Module()
            layer.self_attn = MultiHeadAttention(dim, num_heads)
            layer.ln_self = nn.LayerNorm(dim, eps=1e-12)
            layer.cross_attn = MultiHeadAttention(dim, num_heads, kv_dim=in_dim)
            layer.ln_cross = nn.LayerNorm(dim, eps=1e-12)
            layer.mlp = MLP(dim, mlp_dim)
            layer.ln_mlp = nn.LayerNorm(dim, eps=1e-12)
            self.layers.append(layer)
        self.proj = nn.Linear(dim, out_dim)
        # END SOLUTION

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """features (B, N, in_dim), mask (B, N) True = real -> tokens (B, K, out_dim)."""
        # BEGIN SOLUTION
        q = self.ln_queries(self.queries).expand(features.shape[0], -1, -1)  # (B, K, D)
        for layer in self.layers:
            q = layer.ln_self(q + layer.self_attn(q)[0])  # post-norm: normalise after the residual sum
            q = layer.ln_cross(q + layer.cross_attn(q, features, key_padding_mask=mask)[0])  # read the image
            q = layer.ln_mlp(q + layer.mlp(q))
        return self.proj(q)  # (B, K, out_dim)
        # END SOLUTION


# %%
check("ch04.qformer_bridge", QFormerBridge)

# %% [markdown]
# ## Part 3: train a query bridge on the frozen encoder
#
# ## Exercise 6: 90% of new images in the right caption class
#
# The chapter's task: the frozen chapter-2 encoder turns each 32x32 image into 16 patch features
# `(16, 64)`; a bridge turns them into `K` tokens of width 64; the **mean of the K tokens** should
# point (cosine) towards the fixed target vector of the image's caption, one of 160 (size x colour x
# shape x position), `targets (160, 64)`: chapter 3's alignment task, here on the patch tokens
# (`pooled=False`). The features, labels and targets are loaded below.
#
# Write `train_my_bridge(bridge, steps, lr)`: an optimiser over the bridge's parameters, then `steps`
# times: a random batch of features, the bridge's tokens, **your** loss, `backward()`, a step. Return
# the trained bridge in eval mode. What works in about 20 s of CPU (the chapter's recipe):
#
# - the loss: mean the tokens over `K`, L2-normalise, take the cosines with every target `(B, 160)`,
#   multiply by a scale of 20 (cosines live in [-1, 1]; a softmax over such small numbers is too flat),
#   and a cross-entropy with the labels;
# - AdamW at `3e-3`, 500 steps of 128 images, a short warmup then a cosine decay.
#
# Use your `QFormerBridge` from exercise 5 (it is built below with the chapter's sizes) or
# `mmllm_course.bridges.make_bridge("qformer", ...)`. **What the check does:** it never trains. It
# draws 2,000 new images with its own seed, runs them through the same frozen encoder, and measures
# how often the mean of your bridge's tokens is nearest the right target. The bar is **90%** (chance:
# 0.6%).

# %%
from mmllm_course.bridges.alignment import make_alignment_task

task = make_alignment_task(pooled=False, labels="caption", seed=0)  # chapter 3's task, on the 16 patch tokens
train_features, train_labels, targets = task.train_features, task.train_labels, task.targets
print("features", tuple(train_features.shape), "| labels", tuple(train_labels.shape), "| targets", tuple(targets.shape))


# %%
def train_my_bridge(bridge: nn.Module, steps: int = 500, lr: float = 3e-3, batch_size: int = 128, seed: int = 0) -> nn.Module:
    """Train ``bridge`` so that the mean of its tokens points to each image's target; return it in eval mode."""
    # BEGIN SOLUTION
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(bridge.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / steps)))
    bridge.train()
    for _ in range(steps):
        idx = torch.randint(0, len(train_features), (batch_size,), generator=generator)
        pooled = F.normalize(bridge(train_features[idx]).mean(dim=1), dim=-1)  # (B, 64): mean over the K tokens
        loss = F.cross_entropy(20.0 * pooled @ targets.T, train_labels[idx])  # cosines with the 160 targets
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return bridge.eval()
    # END SOLUTION


# %% [markdown]
# The next cell trains (about 20 s) and hands the trained bridge to the check. Until `QFormerBridge`
# and `train_my_bridge` are written, it says `todo`.

# %%
import time

torch.manual_seed(0)
threads = torch.get_num_threads()
torch.set_num_threads(1)  # matrices this small train faster on one thread (and far faster on a busy machine)
start = time.perf_counter()
try:
    my_bridge = train_my_bridge(QFormerBridge(in_dim=64, out_dim=64, dim=64, num_queries=8, depth=2, num_heads=4, mlp_dim=128))
    print(f"trained in {time.perf_counter() - start:.0f} s")
except NotImplementedError:
    print("QFormerBridge or train_my_bridge is not written yet")
    my_bridge = ...  # the check says todo
finally:
    torch.set_num_threads(threads)
check("ch04.train_bridge", my_bridge)

# %% [markdown]
# ## Part 4 (stretch, optional): grouped-query attention
#
# ## Exercise 7: the resampler layer with fewer key/value heads
#
# Idefics2's resampler has `H` query heads but only `H_kv < H` key/value heads: key/value head `j` is
# shared by the `H / H_kv` **consecutive** query heads `j*H/H_kv .. (j+1)*H/H_kv - 1` (grouped-query
# attention, as in Llama 2 70B and Mistral: fewer keys and values to compute and store). The key and
# value projections then have `H_kv * head_dim` outputs. Make your `resampler_layer` from exercise 2
# handle `layer.attn.num_kv_heads < layer.attn.num_heads` (if it already does, it passes as is).

# %%
check("ch04.resampler_layer_gqa", resampler_layer)

# %% [markdown]
# ## Checked questions
#
# Answer with the letter, as a string (`"a"`).
#
# **Q1.** Why does a Q-Former give the LLM the same number of tokens `K` for any number `N` of image features?
#
# a) It pools the N patch features into K groups of N / K neighbouring patches and averages each group into a token.
#
# b) Each output token is one learned query; the N features only set how many keys and values the queries read.
#
# c) It crops or pads every image to the same size before the encoder, so N is always the same number anyway.
#
# d) Its self-attention among the features drops all but the K features with the highest attention weight.

# %%
q1 = "b"  # SOLUTION
check("ch04.q1", q1)

# %% [markdown]
# **Q2.** In a Q-Former layer, what do the learned queries attend to?
#
# a) In cross-attention the queries come from the image features and the keys and values from the learned query tokens.
#
# b) Only to each other: the image features enter by being added to the learned query tokens before the first layer.
#
# c) To each other in self-attention, and to the image features in cross-attention, whose keys and values come from the features.
#
# d) To the text tokens of the LLM's prompt, which is how the bridge knows which part of the image to describe.

# %%
q2 = "c"  # SOLUTION
check("ch04.q2", q2)

# %% [markdown]
# **Q3.** A 224x224 image in 8-pixel patches gives 784 features. Token merging with `r = 2` versus a
# Q-Former with 32 queries: which is right?
#
# a) Pixel shuffle keeps every feature (r*r neighbours side by side) but K still grows with N; queries fix K and must learn what to keep.
#
# b) Pixel shuffle averages each r x r block of features, so it loses detail, while learned queries keep every feature exactly.
#
# c) Both give a fixed K whatever the image size; pixel shuffle is only cheaper because it has no parameters at all.
#
# d) Learned queries keep the 2-D layout of the patches, while pixel shuffle turns the grid into an unordered set of tokens.

# %%
q3 = "a"  # SOLUTION
check("ch04.q3", q3)

# %% [markdown]
# **Q4.** Why do the keys and values of the Perceiver Resampler's attention include the latents themselves?
#
# a) So that the latents are masked out: a latent must never read another latent, only the media.
#
# b) Because the media features are too few to attend to: without the latents there would be fewer keys than queries.
#
# c) So that the output has N + K tokens, the media and the latents, which the LLM reads together.
#
# d) So that one attention both reads the media and lets the latents exchange information, with no separate self-attention.

# %%
q4 = "d"  # SOLUTION
check("ch04.q4", q4)

# %% [markdown]
# ## Done?
#
# From a shell, `python -m mmllm_course.grade exercises/04_query_bridges.ipynb` grades this whole
# notebook at once (with your training done, that includes the 20 s of training). Chapter 5 splices
# a bridge's tokens into a language model and trains a captioner: there the bridges are compared on
# quality.
