# %% [markdown]
# # 02 · Exercises: attention, the ViT and CLIP
#
# Write attention, the head split and merge, CLIP's loss and zero-shot prediction, then answer three
# checked questions. Each exercise ends with `check(...)`: it runs your code next to the library's
# on several random inputs (float32 and float64: the output dtype must follow the input) and
# prints **pass**, **todo**, **fail** (with what was expected and what came back) or **error**.
# Read chapter 2 (`notebooks/02_attention_vit_clip.ipynb`) first.
#
# Dims: `B` batch, `H` heads, `N` queries, `M` keys, `d` head width, `D = H * d` model width,
# `E` embedding width, `K` classes.

# %%
import math  # noqa: F401  (you may use it)

import torch
import torch.nn.functional as F  # noqa: F401  (you may use it)

from mmllm_course.grading import check

torch.manual_seed(0)

# %% [markdown]
# ## Exercise 1: `scaled_dot_product_attention`
#
# Given `q (B, H, N, d)`, `k (B, H, M, d)`, `v (B, H, M, d)` and an optional boolean `mask` that
# broadcasts to `(B, H, N, M)` (**True = keep** this key for this query), return
#
# $$\operatorname{softmax}\!\left(\frac{q k^\top}{\sqrt d} \text{ with masked scores set to } -\infty\right) v \quad (B, H, N, d).$$
#
# The softmax runs over the keys (each query's weights sum to 1). Every query keeps at least one
# key in the tests. Return only the output, not the weights.

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
# `i` is text `i`. Return CLIP's symmetric InfoNCE, a 0-d tensor (so `.backward()` works):
#
# $$\mathcal{L} = \tfrac12\Big[\operatorname{CE}(\text{logits}, [0..B-1]) + \operatorname{CE}(\text{logits}^\top, [0..B-1])\Big].$$

# %%
def clip_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """(B, B) logits -> scalar loss, the mean of the image->text and text->image cross-entropies."""
    # BEGIN SOLUTION
    targets = torch.arange(logits_per_image.shape[0])
    return (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_image.T, targets)) / 2
    # END SOLUTION


# %%
check("ch02.clip_loss", clip_loss)

# %% [markdown]
# ## Exercise 5: `zero_shot_predict`
#
# Given image embeddings `(B, E)` and one embedding per class `(K, E)`, return the predicted class
# of each image `(B,)`: the class with the highest **cosine** similarity. The check's embeddings
# are *not* unit length, so think about what a plain dot product would prefer.

# %%
def zero_shot_predict(image_embeds: torch.Tensor, class_embeds: torch.Tensor) -> torch.Tensor:
    """(B, E), (K, E) -> (B,) class indices by cosine similarity."""
    # BEGIN SOLUTION
    return (F.normalize(image_embeds, dim=-1) @ F.normalize(class_embeds, dim=-1).T).argmax(dim=-1)
    # END SOLUTION


# %%
check("ch02.zero_shot", zero_shot_predict)

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
# whole notebook at once. Chapter 3 connects these image features to a language model.
