# %% [markdown]
# # 02 · Attention, the Vision Transformer and CLIP
#
# **By the end of this notebook you will be able to**
#
# - compute attention by hand, softmax(QK^T / sqrt(d)) V, explain why the 1/sqrt(d) is there, and
#   split a width into heads and merge them back;
# - use padding and causal masks, and read an attention heatmap;
# - say what a pre-norm ViT block and its [CLS] token do;
# - train a small CLIP (an image tower and a text tower) on CPU in about a minute, and use it for
#   zero-shot classification and text-to-image retrieval with no extra training;
# - look at where the image vector's attention goes (and say why that is a heuristic), and load
#   `transformers`' CLIP weights into the same code.
#
# This is part 1 of the five-part map, the **modality encoder**: the image becomes a few vectors
# that mean something, which later chapters hand to a language model.
#
# **Papers this chapter teaches from**: attention and the transformer,
# [Vaswani et al. 2017](https://arxiv.org/abs/1706.03762); the Vision Transformer,
# [Dosovitskiy et al. 2020](https://arxiv.org/abs/2010.11929); where the LayerNorm goes,
# [Xiong et al. 2020](https://arxiv.org/abs/2002.04745); CLIP,
# [Radford et al. 2021](https://arxiv.org/abs/2103.00020), and its InfoNCE loss,
# [van den Oord et al. 2018](https://arxiv.org/abs/1807.03748); SigLIP,
# [Zhai et al. 2023](https://arxiv.org/abs/2303.15343). Terms in **bold** are in the course
# [glossary](../GLOSSARY.md).

# %%
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from mmllm_course import get_device, seed_everything

seed_everything(0)
device = get_device()  # a GPU when there is one; the numbers below were measured on a 2-core CPU
torch.set_printoptions(precision=3, sci_mode=False)

# %% [markdown]
# ## Part 1: attention, step by step
#
# Attention lets every token build its new value as a **weighted average of the values of the
# tokens it looks at**. The tokens are the rows of a matrix $X \in \mathbb{R}^{N\times D}$ (`N`
# tokens of width `D`). Three learned matrices project every token to a **query**, a **key** and a
# **value**:
#
# $$Q = X W_Q,\quad K = X W_K,\quad V = X W_V, \qquad W_Q, W_K \in \mathbb{R}^{D\times d},\ W_V \in \mathbb{R}^{D\times d_v}.$$
#
# The query of token `i` says what it is looking for, the key of token `j` what it offers, and the
# weights come from how well a query matches each key:
#
# $$\text{Attention}(Q, K, V) = \operatorname{softmax}\!\left(\frac{Q K^\top}{\sqrt{d}}\right) V,
# \qquad Q \in \mathbb{R}^{N\times d},\ K \in \mathbb{R}^{M\times d},\ V \in \mathbb{R}^{M\times d_v}.$$
#
# (In self-attention the keys come from the same tokens, `M = N`; in cross-attention, used by the
# bridges of chapter 4, they come from another sequence.) A fourth matrix, the **output projection**
# $W_O$, maps the result back to width `D`; we meet it with the heads below. Here we take 4 tokens,
# use random stand-ins for $Q$, $K$, $V$ with `d = 8`, and go through the formula one operation at
# a time.

# %%
tokens = ["[CLS]", "red", "circle", "left"]
n, d = len(tokens), 8
q, k, v = torch.randn(n, d), torch.randn(n, d), torch.randn(n, d)

scores = q @ k.T  # (N, M): one score per (query, key) pair
print("1. scores = q @ k.T, shape", tuple(scores.shape))
print(scores)

# %% [markdown]
# **Scale.** A score is a sum of `d` products. With unit-variance entries its variance is `d`, so
# the scores grow with the width. Dividing by `sqrt(d)` brings them back to variance 1.

# %%
scaled = scores / math.sqrt(d)
weights = scaled.softmax(dim=-1)  # softmax over the KEYS: each row sums to 1
out = weights @ v  # (N, d): each output is a weighted average of the values
print("2. scaled scores\n", scaled)
print("3. weights = softmax(scaled, dim=-1); row sums:", weights.sum(-1))
print("4. output = weights @ v, shape", tuple(out.shape))

# %%
from mmllm_course.viz.attention import plot_attention_weights

fig, ax = plt.subplots(figsize=(4.6, 3.6))
plot_attention_weights(weights, tokens, tokens, ax=ax, title="Attention weights of 4 tokens (one head)")
plt.show()

# %% [markdown]
# ### Why 1/sqrt(d) matters: a quick variance demo
#
# Draw random queries and keys of width `d` and look at the spread of `q·k` and at the largest
# softmax weight over 16 keys. Without the scale the softmax saturates as `d` grows: one key takes
# (almost) all the weight and the gradient through the others vanishes.

# %%
widths = [4, 16, 64, 256, 1024]
g = torch.Generator().manual_seed(0)
rows = []
for dim in widths:
    qq, kk = torch.randn(2000, dim, generator=g), torch.randn(2000, 16, dim, generator=g)
    s = torch.einsum("bd,bmd->bm", qq, kk)  # (2000, 16) raw scores
    rows.append((dim, s.var().item(), s.softmax(-1).amax(-1).mean().item(), (s / math.sqrt(dim)).softmax(-1).amax(-1).mean().item()))
print(f"{'d':>5} {'var(q.k)':>9} {'max weight, raw':>16} {'max weight, /sqrt(d)':>21}")
for dim, var, raw, sc in rows:
    print(f"{dim:>5} {var:9.1f} {raw:16.3f} {sc:21.3f}")

fig, ax = plt.subplots(figsize=(5.5, 3.2))
ax.plot(widths, [r[2] for r in rows], "o-", label="without scale: q.k")
ax.plot(widths, [r[3] for r in rows], "s-", label="with scale: q.k / sqrt(d)")
ax.set_xscale("log", base=2)
ax.set_xlabel("head width d")
ax.set_ylabel("mean of the largest weight (16 keys)")
ax.set_title("Without 1/sqrt(d) the softmax turns one-hot as d grows")
ax.axhline(1 / 16, color="grey", ls=":", label="uniform (1/16)")
ax.legend()
plt.show()

# %% [markdown]
# ### The library's attention equals torch's
#
# `mmllm_course.nn.attention.scaled_dot_product_attention` works on `(B, H, N, d)` and returns
# `(output, weights)`. By default it calls torch's fused kernel; with `return_weights=True` it runs
# the maths above step by step so we can plot the weights. Both agree with
# `torch.nn.functional.scaled_dot_product_attention`.

# %%
from mmllm_course.nn.attention import causal_mask, merge_heads, scaled_dot_product_attention, split_heads

qb, kb, vb = torch.randn(2, 4, 6, 8), torch.randn(2, 4, 6, 8), torch.randn(2, 4, 6, 8)  # (B, H, N, d)
ours, w = scaled_dot_product_attention(qb, kb, vb, return_weights=True)
torch_out = F.scaled_dot_product_attention(qb, kb, vb)
print("output", tuple(ours.shape), "weights", tuple(w.shape), "| max |ours - torch| =", (ours - torch_out).abs().max().item())
assert torch.allclose(ours, torch_out, atol=1e-6)

# %% [markdown]
# ### Heads: split, attend, merge
#
# Multi-head attention cuts the width `D` into `H` heads of `d = D/H` channels. Each head attends on
# its own, with its own slice of the projections, then the heads are concatenated back and mixed by
# the output projection:
#
# `(B, N, D)` → $W_Q, W_K, W_V$ → split → `(B, H, N, D/H)` → attention per head → `(B, H, N, D/H)` →
# merge → `(B, N, D)` → $W_O$ → `(B, N, D)`.
#
# So for the whole layer $W_Q, W_K, W_V, W_O \in \mathbb{R}^{D\times D}$: $W_Q$ holds the `H` heads'
# `D x d` query matrices side by side, and $W_O$ lets every output channel read every head. The
# library's `MultiHeadAttention` stores them as `nn.Linear(D, D)` layers named `q_proj`, `k_proj`,
# `v_proj` and `out_proj` (the names CLIP uses; an `nn.Linear` stores its weight as (out, in), the
# transpose of $W$ above, and adds a bias):
# %%
from mmllm_course.nn.attention import MultiHeadAttention

mha = MultiHeadAttention(dim=64, num_heads=4)  # D = 64, H = 4 heads of d = 16
for name, param in mha.named_parameters():
    print(f"{name:<16} {tuple(param.shape)}")
attn_out, attn_weights = mha(torch.randn(2, 5, 64), return_weights=True)  # (B, N, D) -> (B, N, D), weights (B, H, N, N)
print("x (2, 5, 64) -> output", tuple(attn_out.shape), "| weights", tuple(attn_weights.shape))

# %% [markdown]
# Head `h` gets the contiguous channels `h*D/H .. (h+1)*D/H - 1`: a `view` to `(B, N, H, D/H)`
# then a transpose. A plain `reshape` to `(B, H, N, D/H)` would cut the *sequence* instead.

# %%
x = torch.arange(2 * 3 * 8.0).view(2, 3, 8)  # (B=2, N=3, D=8)
heads = split_heads(x, num_heads=2)  # (2, 2, 3, 4)
print("x[0] =\n", x[0])
print("head 0 of batch 0 (channels 0-3 of every token):\n", heads[0, 0])
print("head 1 of batch 0 (channels 4-7):\n", heads[0, 1])
assert torch.equal(merge_heads(heads), x)  # merge is the exact inverse

# %% [markdown]
# ### Masks: padding and causal
#
# A mask says which keys each query may look at (**True = keep**). Masked scores become `-inf`
# before the softmax, so they get exactly zero weight.
#
# - **padding**: a batch of texts is padded to one length; no query should read the padding;
# - **causal**: token `i` sees only tokens `0..i` (CLIP's text encoder, and every LLM that
#   generates text one token at a time).

# %%
words = ["a", "red", "star", "<eos>", "<pad>", "<pad>"]
qm, km, vm = torch.randn(1, 1, 6, 8), torch.randn(1, 1, 6, 8), torch.randn(1, 1, 6, 8)
padding = torch.tensor([True, True, True, True, False, False])[None, None, None, :]  # (1, 1, 1, M)
_, w_pad = scaled_dot_product_attention(qm, km, vm, attn_mask=padding, return_weights=True)
_, w_causal = scaled_dot_product_attention(qm, km, vm, attn_mask=padding & causal_mask(6), return_weights=True)

fig, axes = plt.subplots(1, 2, figsize=(10, 4))
plot_attention_weights(w_pad[0, 0], words, words, ax=axes[0], title="padding mask: no query reads <pad>")
plot_attention_weights(w_causal[0, 0], words, words, ax=axes[1], title="padding + causal: token i sees 0..i")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Part 2: the Vision Transformer
#
# A ViT ([Dosovitskiy et al. 2020](https://arxiv.org/abs/2010.11929)) is the patch tokens of
# chapter 1, with a learned **[CLS]** token in front, through a stack of identical blocks. Each
# block has two parts, each added to its input (a **residual** connection):
#
# $$x \leftarrow x + \text{MHA}(\text{LN}(x)), \qquad x \leftarrow x + \text{MLP}(\text{LN}(x)).$$
#
# - **MHA** is the multi-head attention above: the only place where tokens exchange information.
# - **MLP** is two linear layers with a GELU between them, `D → 4D → D` in ViT (`mlp_dim` in our
#   config), applied to every token on its own: it transforms what attention gathered.
# - **LN** is a **LayerNorm**: for each token separately it subtracts the mean of its `D` channels,
#   divides by their standard deviation, then applies a learned scale and shift per channel. It
#   keeps the numbers entering each sub-layer at a steady scale, whatever the layer before did.
# - **Pre-norm** means the LayerNorm sits *inside* the branch, before MHA and before the MLP, as in
#   the ViT paper; the original transformer put it after the addition ("post-norm"). With pre-norm,
#   the residual path carries every token from the first block to the last untouched, and each
#   block only adds a correction. [Xiong et al. 2020](https://arxiv.org/abs/2002.04745) show that
#   this placement keeps the gradients well-behaved at initialisation, so the model trains without
#   the learning-rate warm-up that post-norm needs.
#
# After the last block, one more LayerNorm. The [CLS] token has no pixels of its own: through
# attention it gathers a summary of the image, and its final state is the **pooled** image vector
# (`pooling="cls"`); the alternative is the mean of the patch tokens (`pooling="mean"`).

# %%
from mmllm_course.encoders.vit import ViT, ViTConfig

vit_config = ViTConfig(image_size=32, patch_size=8, dim=64, depth=2, num_heads=4)
vit = ViT(vit_config)
vit_out = vit(torch.rand(2, 3, 32, 32), output_attentions=True)
print("tokens in: 1 [CLS] +", vit_config.num_patches, "patches")
print("last_hidden_state", tuple(vit_out.last_hidden_state.shape), "| pooled", tuple(vit_out.pooled.shape))
print("attention weights per layer", [tuple(a.shape) for a in vit_out.attentions], "(B, H, 1+N, 1+N)")
print(f"parameters: {sum(p.numel() for p in vit.parameters()):,}")

# %% [markdown]
# ## Part 3: CLIP, two towers and a contrastive loss
#
# CLIP ([Radford et al. 2021](https://arxiv.org/abs/2103.00020)) trains an **image tower** (a ViT)
# and a **text tower** so that an image and its caption land close together in a shared space of
# width `E`. Each tower's pooled vector goes through a linear projection to width `E`.
#
# The text tower is a transformer over the caption's tokens with a **causal** mask, read out at the
# **end-of-text token** (`eos`). Under a causal mask token `t` sees only tokens `0..t`, so the
# end-of-text token, placed after the caption, is the one position that has seen every word: its
# output is the caption's vector. (The CLIP paper, section 2.4, says it kept the mask causal so that
# the text tower could be initialised from a pretrained language model or trained with a
# language-modelling loss as well; as a side effect, padding after `eos` cannot change its vector.)
#
# Both embeddings are L2-normalised; the logits are their cosine similarities divided by a learned
# **temperature** `T`:
#
# $$\text{logits}_{ij} = \frac{\cos(\text{img}_i, \text{txt}_j)}{T}, \qquad i, j = 1..B.$$
#
# In a batch of `B` pairs, row `i` has one right answer (column `i`) and `B - 1` wrong ones. The
# **InfoNCE** loss ([van den Oord et al. 2018](https://arxiv.org/abs/1807.03748)) is a cross-entropy
# over each row (image→text) and each column (text→image), averaged:
#
# $$\mathcal{L} = \tfrac12\Big[\operatorname{CE}(\text{logits}, \text{diag}) + \operatorname{CE}(\text{logits}^\top, \text{diag})\Big].$$
#
# A lower temperature sharpens the softmax: the same cosines give a lower loss when they are right
# and a higher one when they are wrong. CLIP starts at `T = 0.07` and learns `log(1/T)`, the
# **logit scale** (`model.logit_scale`; `model.scale()` is `1/T`).

# %%
from mmllm_course.encoders.clip import clip_loss

cos = torch.eye(4) * 0.6 + 0.2  # 4 pairs: right pairs at cosine 0.8, wrong ones at 0.2
for temperature in (1.0, 0.3, 0.07):
    print(f"T = {temperature:<5} loss = {clip_loss(cos / temperature).item():.3f}")

# %% [markdown]
# ## Part 4: train a mini-CLIP on the shapes world
#
# The data: 32x32 images of one shape (5 kinds x 4 colours x 2 sizes x 4 quadrants) with captions
# such as "a small red circle in the top left", tokenized with the course's BPE tokenizer. We
# generate a training set and a held-out set once, with different seeds.
#
# `context_length=16` below is the longest caption the text tower accepts (it has 16 learned
# position embeddings). `tokenize_captions` pads only to the longest caption it is given, so the ids
# come out 9 wide: the longest caption is 8 tokens, plus the end-of-text token.

# %%
from mmllm_course.data import all_caption_classes, color_shape_classes, generate_shapes, shapes_tokenizer
from mmllm_course.encoders.clip_training import tokenize_captions
from mmllm_course.viz.attention import plot_captioned_images

tokenizer = shapes_tokenizer()
train = generate_shapes(20_000, seed=0)
held_out = generate_shapes(2_000, seed=1)
input_ids, attention_mask = tokenize_captions(tokenizer, train.captions, context_length=16)
print("train", tuple(train.images.shape), "| held-out", tuple(held_out.images.shape), "| ids", tuple(input_ids.shape))
print("caption:", repr(train.captions[0]), "->", input_ids[0].tolist())

assert input_ids.shape[1] <= 16 and bool((input_ids == tokenizer.eos_token_id).any(dim=1).all())  # every row holds its eos

plot_captioned_images(train.images, train.captions, title="Training pairs from the shapes world")
plt.show()

# %% [markdown]
# The model: a ViT with width 64, 2 layers, 4 heads and 8x8 patches (16 patches + [CLS]), a text
# transformer of the same size, a shared space of width 64. The config spells out each choice:
#
# - **Pooling**: the image vector is the **mean of the patch tokens** (`pooling="mean"`), one of the
#   two options of Part 2. ([CLS] is still in the sequence; it is just not read out.) With
#   `pooling="cls"` the same recipe trains too; compare the two yourself if you are curious: this
#   notebook measures only the recipe it uses.
# - **Where the LayerNorms sit**, as in CLIP: `pre_norm=True` adds one LayerNorm on the embeddings
#   before the first block (CLIP's `pre_layrnorm`; the blocks themselves are pre-norm in every ViT
#   here), and `final_norm="pooled"` applies the last LayerNorm only to the pooled vector (CLIP's
#   `post_layernorm`), not to every output token as a classification ViT does.
# - **Pixel normalisation**: `(x - mean) / std` per channel (`pixel_mean`, `pixel_std`). Real image
#   processors use their training set's statistics (CLIP: mean about 0.48, 0.46, 0.41); we use 0.5 and
#   0.25, which centres the grey background at zero.
# - **No duplicate captions in a batch**: the loss treats every other caption of the batch as wrong, so
#   two images sharing a caption would be pushed away from their own (identical) text. The shapes world
#   has exactly 160 distinct captions, so with `BATCH = 160` every batch holds each caption once, each
#   with a random image of it, in a new order.
#
# A fixed number of steps (not a time budget) with AdamW, warmup and a cosine decay, so a rerun on
# the same machine gives the same model. A seed makes the run repeatable, not the result robust, so
# the accuracy this recipe reaches is measured on 5 seeds (other weights, data and batch order) by
# `python -m mmllm_course.bench --seeds 5`, and the bars this notebook asserts hold on the worst of them.

# %%
from mmllm_course.encoders.clip import CLIP, CLIPConfig
from mmllm_course.encoders.clip_training import train_clip
from mmllm_course.encoders.text import TextTransformerConfig
from mmllm_course.recipes import CHAPTER2_CLIP

torch.manual_seed(0)
config = CLIPConfig(
    vision=ViTConfig(image_size=32, patch_size=8, dim=64, depth=2, num_heads=4, pre_norm=True, final_norm="pooled",
                     pooling="mean", pixel_mean=(0.5, 0.5, 0.5), pixel_std=(0.25, 0.25, 0.25)),
    text=TextTransformerConfig(vocab_size=len(tokenizer), context_length=16, dim=64, depth=2, num_heads=4,
                               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
    embed_dim=64,
)
model = CLIP(config).to(device)
print(f"mini-CLIP: {sum(p.numel() for p in model.parameters()):,} parameters")

STEPS, LR, WARMUP, BATCH = 800, 2e-3, 50, 160
CHAPTER2_CLIP.check(config, tokenizer, steps=STEPS, batch_size=BATCH, lr=LR, warmup_steps=WARMUP)  # the run `bench --seeds 5` measures
history = train_clip(model, train.images, input_ids, attention_mask, steps=STEPS, batch_size=BATCH, lr=LR, warmup_steps=WARMUP, seed=0)
print(f"{len(history.loss)} steps in {history.seconds:.1f} s | final loss {history.loss[-1]:.3f} | temperature {1 / model.scale().item():.3f}")

# %%
from mmllm_course.viz.attention import plot_learning_curve

plot_learning_curve(history.loss, history.lr, title="Mini-CLIP: contrastive loss while training")
plt.show()

# %% [markdown]
# ## Part 5: zero-shot classification
#
# No classifier was trained. To classify an image into the 20 colour x shape classes, write a
# prompt per class, embed it with the text tower, and pick the class whose embedding has the
# highest cosine with the image's. A single prompt ("a red circle") is not how captions looked in
# training; **prompt ensembling** uses several prompts per class, here every size and position
# ("a small {} in the top left", ...), in one of two ways:
#
# - **mean embedding** (the CLIP paper's way): average the 8 prompt embeddings of a class into one
#   class vector, then take the nearest class;
# - **best prompt**: score a class by its best-matching prompt, $\max_p \cos(\text{image}, \text{prompt}_p)$.
#   This is a simple variant we use here, not the CLIP paper's method.
#
# Our classes are not one look but eight (each size in each position), and the average of eight
# directions blurs the very size and position each prompt names. Measured on 5 seeds
# (`python -m mmllm_course.bench --seeds 5`): mean embedding 92.7-96.1%, best prompt 97.0-97.8%,
# about the accuracy over all 160 captions. The cell below prints both for this run.

# %%
from mmllm_course.data import POSITIONS, SIZES
from mmllm_course.encoders.clip_training import zero_shot_accuracy

ensemble = [f"a {size} {{}} in the {pos}" for size in SIZES for pos in POSITIONS]
color_shape_labels = held_out.color_shape_labels()
acc_single = zero_shot_accuracy(model, held_out.images, color_shape_labels, tokenizer, color_shape_classes(), templates=("a {}",))
acc_ensemble = zero_shot_accuracy(model, held_out.images, color_shape_labels, tokenizer, color_shape_classes(), templates=ensemble)
acc_best = zero_shot_accuracy(model, held_out.images, color_shape_labels, tokenizer, color_shape_classes(), templates=ensemble, ensemble="max")
acc_all = zero_shot_accuracy(model, held_out.images, held_out.caption_class_labels(), tokenizer, all_caption_classes(), templates=("{}",))
print(f"colour x shape (20 classes), one prompt 'a {{}}':        {acc_single:.1%}")
print(f"colour x shape (20 classes), ensemble of {len(ensemble)} prompts, mean embedding: {acc_ensemble:.1%}")
print(f"colour x shape (20 classes), ensemble of {len(ensemble)} prompts, best prompt:    {acc_best:.1%}")
print(f"every caption (160 classes: size x colour x shape x position): {acc_all:.1%}")

# %% [markdown]
# ### The similarity matrix
#
# Eight held-out images with different captions against those captions: the right pairs should be
# the brightest cell of each row (bold), on the diagonal.

# %%
from mmllm_course.encoders.clip_training import encode_images, encode_texts, unique_caption_indices
from mmllm_course.viz.attention import plot_similarity_matrix

pick = unique_caption_indices(held_out.captions)[:8]
sample_captions = [held_out.captions[i] for i in pick]
similarity = encode_images(model, held_out.images[pick]) @ encode_texts(model, tokenizer, sample_captions).T  # (8, 8)
plot_similarity_matrix(similarity, sample_captions, held_out.images[pick], title="Held-out images x captions (cosine)")
plt.show()

# %% [markdown]
# ## Part 6: where does the image vector look?
#
# In a [CLS]-pooled ViT, the [CLS] row of each layer's attention weights says how much the summary
# token takes from each patch in that layer. Our mini-CLIP pools the mean of the patch tokens, so
# the matching picture is the attention that the patches pay to each patch, averaged over them
# (`pooled_attention_maps` picks the right one from the config), reshaped to the 4x4 patch grid and
# laid over the image.
#
# Read these maps as a **heuristic**, not as a measurement of what the model uses: a layer's
# attention says where that layer copies information from, but after the first layer every token
# already mixes information from others, and the MLPs and residual path are not in the picture
# ([Abnar and Zuidema 2020](https://arxiv.org/abs/2005.00928) discuss why raw attention weights are
# unreliable as explanations, and better estimates).

# %%
from mmllm_course.viz.attention import attention_map_explorer, pooled_attention_maps, plot_cls_attention_grid

show = pick[:6]
maps = pooled_attention_maps(model, held_out.images[show])  # (L, B, H, 4, 4)
print("attention maps", tuple(maps.shape), "(layers, images, heads, grid, grid)")
plot_cls_attention_grid(held_out.images[show], maps, layer=-1, captions=[held_out.captions[i] for i in show])
plt.show()

# %% [markdown]
# What the maps suggest, measured beyond six pictures: for 500 held-out images, the share of the last
# layer's attention (mean over heads) that lands on the patches the shape's bounding box touches,
# against the share those patches would get if attention were spread evenly. (This measures where
# the attention goes, with the same caveat.)

# %%
probe = torch.arange(500)
att = pooled_attention_maps(model, held_out.images[probe])[-1].mean(dim=1)  # (500, 4, 4)
x0, y0, x1, y1 = held_out.boxes[probe, 0].unbind(-1)  # (500,) each, pixels
edges = torch.arange(4) * 8  # left / top pixel of each patch column / row
cols = (edges[None] < x1[:, None]) & (edges[None] + 8 > x0[:, None])  # (500, 4)
rows = (edges[None] < y1[:, None]) & (edges[None] + 8 > y0[:, None])  # (500, 4)
on_shape = rows[:, :, None] & cols[:, None, :]  # (500, 4, 4)
attention_on_shape = ((att * on_shape).sum((1, 2)) / att.sum((1, 2))).mean().item()
uniform_share = on_shape.float().mean().item()
print(f"attention on the shape's patches: {attention_on_shape:.1%} | if spread evenly: {uniform_share:.1%}")

# %% [markdown]
# Explore every layer and head (pick "mean" to average the heads):

# %%
attention_map_explorer(model, held_out.images[pick], [held_out.captions[i] for i in pick])

# %% [markdown]
# ## Part 7: text → image retrieval
#
# Each distinct held-out caption queries the held-out images (one per caption, so each query has
# exactly one right image). Recall@k is the fraction of queries whose image is among the top k.

# %%
from mmllm_course.encoders.clip import retrieval_recall_at_k
from mmllm_course.viz.attention import plot_retrieval_examples

gallery = unique_caption_indices(held_out.captions)
gallery_captions = [held_out.captions[i] for i in gallery]
text_to_image = encode_texts(model, tokenizer, gallery_captions) @ encode_images(model, held_out.images[gallery]).T  # (T, I)
recall_1, recall_5 = retrieval_recall_at_k(text_to_image, 1), retrieval_recall_at_k(text_to_image, 5)
print(f"{len(gallery)} captions x {len(gallery)} images | recall@1 = {recall_1:.1%} | recall@5 = {recall_5:.1%} "
      f"(chance: {1 / len(gallery):.1%} and {5 / len(gallery):.1%})")

# %%
queries = [0, 1, 2, 3]
plot_retrieval_examples([gallery_captions[i] for i in queries], held_out.images[gallery], text_to_image[queries], targets=queries, k=5)
plt.show()

# %% [markdown]
# ## Bad input
#
# The model checks what it is given. An image of the wrong size for the config raises a
# `ValueError` that says what was expected:

# %%
try:
    model.encode_image(torch.rand(1, 3, 64, 64, device=device))
except ValueError as err:
    print("ValueError:", err)

# %% [markdown]
# ## Our CLIP equals the reference, on the same weights
#
# The same `CLIP` class holds the weights of `transformers`' `CLIPModel`. Offline, we prove it on a
# tiny **random** `CLIPModel` (a config with small numbers, nothing downloaded): the library's
# converter `clip_from_transformers` copies both towers, the two projections and the logit scale
# into our modules, and we compare the image and text embeddings and the logits on the same inputs.
# Their text tower pools at the first `eos_token_id` (99 here), so every row of ids ends with it.

# %%
from transformers import CLIPConfig as HFCLIPConfig
from transformers import CLIPModel

from mmllm_course.encoders.clip import clip_from_transformers

torch.manual_seed(0)
tiny = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
hf_clip = CLIPModel(HFCLIPConfig(vision_config=dict(tiny, image_size=32, patch_size=8),
                                 text_config=dict(tiny, vocab_size=100, max_position_embeddings=16, bos_token_id=98, eos_token_id=99),
                                 projection_dim=16)).eval()
with torch.no_grad():  # perturb every bias and LayerNorm, so that a mapping mistake cannot hide behind zeros and ones
    for param in hf_clip.parameters():
        if param.dim() == 1:
            param.add_(0.3 * torch.randn_like(param))
ours_clip = clip_from_transformers(hf_clip).eval()
pixels = torch.rand(3, 3, 32, 32)
ids = torch.randint(0, 99, (4, 10))
ids[:, -1] = 99  # the end-of-text token closes every caption
with torch.no_grad():
    ref = hf_clip(input_ids=ids, pixel_values=pixels)
    diffs = {
        "image embeddings": (ours_clip.encode_image(pixels) - ref.image_embeds).abs().max().item(),
        "text embeddings": (ours_clip.encode_text(ids) - ref.text_embeds).abs().max().item(),
        "logits": (ours_clip(pixels, ids) - ref.logits_per_image).abs().max().item(),
    }
print("transformers CLIPModel vs ours, max |difference|:", {k: f"{v:.1e}" for k, v in diffs.items()})
assert max(diffs.values()) < 1e-5

# %% [markdown]
# ## Real checkpoints
#
# With real weights it is the same code. **The next cell needs internet** (about 600 MB the first
# time), so it only runs when you set `DOWNLOAD_REAL_CLIP = True`; offline it prints a message and
# moves on. It classifies photos bundled with scikit-image zero-shot, with our modules and OpenAI's
# weights.

# %%
# NBVAL_SKIP
DOWNLOAD_REAL_CLIP = False  # set True when you are online
try:
    if not DOWNLOAD_REAL_CLIP:
        raise RuntimeError("DOWNLOAD_REAL_CLIP is False")
    from transformers import CLIPImageProcessor, CLIPTokenizer

    from mmllm_course.data import load_sample_image
    from mmllm_course.encoders.clip import load_pretrained_clip, zero_shot_classifier

    name = "openai/clip-vit-base-patch32"
    real = load_pretrained_clip(name)
    processor, real_tokenizer = CLIPImageProcessor.from_pretrained(name), CLIPTokenizer.from_pretrained(name)
    labels = ["an astronaut", "a cup of coffee", "a cat", "a rocket", "a horse", "a clock"]
    prompts = real_tokenizer([f"a photo of {c}" for c in labels], padding=True, return_tensors="pt")
    with torch.no_grad():
        classes = zero_shot_classifier(real, prompts["input_ids"], prompts["attention_mask"])
        for photo in ("astronaut", "coffee", "chelsea", "rocket"):
            pixels = processor(images=load_sample_image(photo).permute(1, 2, 0).numpy(), return_tensors="pt", do_rescale=False)
            probs = (real.scale() * real.encode_image(pixels["pixel_values"]) @ classes.T).softmax(-1)[0]
            print(f"{photo:>10}: {labels[probs.argmax()]} ({probs.max():.0%})")
except (OSError, RuntimeError) as err:  # offline (OSError), or not asked to download (RuntimeError)
    print(f"Skipped: this cell needs internet to download 'openai/clip-vit-base-patch32' once. ({type(err).__name__}: {str(err)[:160]})")

# %% [markdown]
# ## Results (checked)
#
# The notebook fails if the mini-CLIP falls below these bars: 95% zero-shot over the 20 colour x
# shape classes (best-prompt ensemble) and over all 160 caption classes, and 95% / 99%
# text->image recall@1 / @5. The numbers printed above are this run's (seed 0); on a GPU or another
# torch build they differ a little, as floating-point sums do. That is why every bar has headroom on
# the worst of 5 seeds (other weights, data and batch order): `python -m mmllm_course.bench --seeds 5`
# measured worst-seed 97.0% best-prompt zero-shot, 96.9% over 160 captions, recall@1 98.1% and
# recall@5 100%. The attention share on the shape's patches varies more between seeds (60-82%),
# so the notebook only asserts it is well above uniform.

# %%
print(f"zero-shot colour x shape: {acc_best:.1%} (best prompt), {acc_ensemble:.1%} (mean embedding) | all 160 captions: {acc_all:.1%} | "
      f"recall@1 {recall_1:.1%}, recall@5 {recall_5:.1%} | training {history.seconds:.0f} s")
assert acc_best >= 0.95, f"zero-shot accuracy over colour x shape (best prompt) is {acc_best:.1%}, below 95%"
assert acc_all >= 0.95, f"zero-shot accuracy over all caption combinations is {acc_all:.1%}, below 95%"
assert recall_1 >= 0.95, f"text->image recall@1 is {recall_1:.1%}, below 95%"
assert recall_5 >= 0.99, f"text->image recall@5 is {recall_5:.1%}, below 99%"
assert attention_on_shape > 1.5 * uniform_share, "the pooled attention does not concentrate on the shape's patches"

# %% [markdown]
# ## Where this shows up in real models
#
# - **LLaVA** ([Liu et al. 2023](https://arxiv.org/abs/2304.08485); LLaVA-1.5,
#   [Liu et al. 2023b](https://arxiv.org/abs/2310.03744)) feeds the patch tokens of a **frozen**
#   OpenAI **CLIP ViT-L/14** (LLaVA-1.5: at 336 px, 576 patches) through a small projector into the
#   LLM. It is the same kind of image tower as yours, much bigger and with two differences: that CLIP
#   pools with its [CLS] token, and LLaVA takes the patch tokens from the **second-to-last** block,
#   not the last (the LLaVA paper compares the two and finds the earlier features slightly better).
# - **SigLIP** ([Zhai et al. 2023](https://arxiv.org/abs/2303.15343)) replaces InfoNCE's softmax over
#   the batch with an independent sigmoid per pair: every image-text pair of the batch is still
#   scored, but no pair's loss is normalised against the others (and no softmax over the whole batch
#   is needed across devices). The exercise notebook's stretch asks you to write it.
# - **BLIP-2** ([Li et al. 2023](https://arxiv.org/abs/2301.12597)) keeps a frozen ViT (EVA-CLIP) and
#   reads it with a Q-Former's learned queries through cross-attention (chapter 4's bridges);
#   **Flamingo** ([Alayrac et al. 2022](https://arxiv.org/abs/2204.14198)) and **Llama 3.2 Vision**
#   cross-attend to such features from inside the language model (chapter 6).
# - Zero-shot classification with prompt ensembles is how CLIP was evaluated on ImageNet (CLIP
#   paper, section 3.1.4).
#
# ## Recap
#
# - Attention: $Q = XW_Q$, $K = XW_K$, $V = XW_V$; weights $\operatorname{softmax}(QK^\top/\sqrt{d})$,
#   each row summing to 1; output = weights x $V$, then $W_O$. The $1/\sqrt{d}$ keeps the softmax
#   from saturating as `d` grows. Heads split the width, attend separately, and are merged.
# - Masks set scores to $-\infty$: padding (never read `<pad>`) and causal (token `i` sees `0..i`).
# - A ViT block: $x + \text{MHA}(\text{LN}(x))$, then $x + \text{MLP}(\text{LN}(x))$ (pre-norm);
#   the pooled vector is the [CLS] token's output or the mean of the patch tokens.
# - CLIP: two towers, L2-normalised embeddings, cosines / temperature, the InfoNCE loss over rows
#   and columns. The text tower is causal and reads out at the end-of-text token.
# - Zero-shot classification = embed one prompt (or an ensemble) per class and pick the nearest.
#   The mini-CLIP you trained here passes the checked bars above. Later chapters start from this
#   very run (seed 0 of the same recipe), shipped with the package so they need not retrain it:
#   `mmllm_course.pretrained.load_chapter2_clip()`.
# - Attention maps are a heuristic view of where the model reads, not an explanation.
# - Our `CLIP` matches `transformers`' `CLIPModel` on the same weights.
#
# **Exercises:** `exercises/02_attention_vit_clip.ipynb`: the core functions (attention, split and
# merge heads, the InfoNCE loss, zero-shot prediction), then `MultiHeadAttention`, a pre-norm
# block and the ViT forward pass as modules of your own, your own mini-CLIP trained to 90%
# zero-shot, and SigLIP's loss as an optional stretch, all checked against the library.
