# %% [markdown]
# # 01 · Exercises: tokens and patches
#
# Write the three functions that turn an image into tokens, then answer four checked questions.
# Each exercise ends with `check(...)`: it runs your code next to the library's on several random
# inputs and prints **pass**, **todo**, **fail** (with what was expected and what came back) or
# **error**. Read chapter 1 (`notebooks/01_tokens_and_patches.ipynb`) first.
#
# Dims: `B` batch, `C` channels, `H x W` image size, `p` patch size, `N = (H/p)(W/p)` patches,
# `D` embedding width.

# %%
import torch
from einops import rearrange  # noqa: F401  (you may use it)

from mmllm_course.grading import check

torch.manual_seed(0)

# %% [markdown]
# ## Exercise 1: `patchify`
#
# Cut a batch of images `(B, C, H, W)` into non-overlapping `p x p` patches and flatten each one:
# the result is `(B, N, p*p*C)` with `N = (H/p) * (W/p)`. Two orders matter:
#
# - **which patch comes first**: row-major over the grid, left to right, then top to bottom. Patch
#   `k` is at grid row `k // (W/p)` and grid column `k % (W/p)`;
# - **inside a patch, `(p1 p2 c)`**: pixel rows of the patch first, then pixels along a row, and the
#   `C` channel values of one pixel side by side. So a patch starts
#   `[pixel(0,0) ch0, pixel(0,0) ch1, pixel(0,0) ch2, pixel(0,1) ch0, ...]`.
#
# Images need not be square (`H != W` is allowed; both are multiples of `p`), and the output dtype
# must be the input's (float32 in, float32 out; float64 in, float64 out). Don't modify the input.

# %%
def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """images (B, C, H, W) -> patches (B, N, p*p*C), row-major grid, (p1 p2 c) inside each patch."""
    # BEGIN SOLUTION
    return rearrange(images, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=patch_size, p2=patch_size)
    # END SOLUTION


# %%
check("ch01.patchify", patchify)

# %% [markdown]
# ## Exercise 2: `patch_embedding`
#
# The forward pass of a linear patch embedding, without `nn.Module`: given a weight `(D, p*p*C)`
# and a bias `(D,)`, return the tokens `(B, N, D)`:
#
# $$\text{token}_k = W\,x_k + b, \qquad x_k \in \mathbb{R}^{p\cdot p\cdot C} \text{ the flattened patch } k.$$
#
# The weight's columns follow the **same `(p1 p2 c)` order** as your `patchify` (that is the layout
# of `nn.Linear(p*p*C, D).weight`, which stores `(out_features, in_features)`). Every patch goes
# through the same `W` and `b`. Output dtype follows the input. You may call your `patchify`.

# %%
def patch_embedding(images: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, patch_size: int) -> torch.Tensor:
    """images (B, C, H, W), weight (D, p*p*C), bias (D,) -> tokens (B, N, D)."""
    # BEGIN SOLUTION
    patches = patchify(images, patch_size)  # (B, N, p*p*C)
    return patches @ weight.T + bias  # (B, N, D)
    # END SOLUTION


# %%
check("ch01.patch_embedding", patch_embedding)

# %% [markdown]
# ## Exercise 3: `sincos_2d_position_embedding`
#
# Build the fixed 2-D sine-cosine position table for a `grid_h x grid_w` grid of patches:
# a float32 tensor `(grid_h * grid_w, dim)` with `dim` divisible by 4. Row `k` is for patch `k`,
# which sits at `row = k // grid_w`, `col = k % grid_w` (the `patchify` order).
#
# With `q = dim // 4` frequencies $\omega_i = 1 / 10000^{\,i/q}$ for $i = 0, \dots, q-1$, the
# channels of row `k` are four blocks of `q`, in this order:
#
# | channels | `0 : q` | `q : 2q` | `2q : 3q` | `3q : 4q` |
# |---|---|---|---|---|
# | value | $\sin(\text{row}\cdot\omega_i)$ | $\cos(\text{row}\cdot\omega_i)$ | $\sin(\text{col}\cdot\omega_i)$ | $\cos(\text{col}\cdot\omega_i)$ |
#
# So the first half encodes the row, the second half the column, and each half is all its sines
# followed by all its cosines (not interleaved).

# %%
def sincos_2d_position_embedding(grid_h: int, grid_w: int, dim: int) -> torch.Tensor:
    """(grid_h * grid_w, dim) float32: [sin(row w), cos(row w), sin(col w), cos(col w)] per patch."""
    # BEGIN SOLUTION
    q = dim // 4
    omega = 1.0 / 10000.0 ** (torch.arange(q, dtype=torch.float64) / q)  # (q,)
    k = torch.arange(grid_h * grid_w)
    rows, cols = (k // grid_w).double(), (k % grid_w).double()  # (N,)
    a_row, a_col = rows[:, None] * omega, cols[:, None] * omega  # (N, q)
    return torch.cat([a_row.sin(), a_row.cos(), a_col.sin(), a_col.cos()], dim=1).float()
    # END SOLUTION


# %%
check("ch01.sincos_2d", sincos_2d_position_embedding)

# %% [markdown]
# ## Checked questions
#
# Answer with the letter, as a string (`"a"`).
#
# **Q1.** A ViT-B/16 reads a 224x224 image with 16x16 patches and puts a [CLS] token first. How many
# tokens enter its first transformer block?
#
# a) 196 b) 197 c) 224 d) 257

# %%
q1 = "b"  # SOLUTION
check("ch01.q1", q1)

# %% [markdown]
# **Q2.** Why does a linear map applied to every flattened `p x p` patch give exactly the same numbers
# as a `Conv2d` with `kernel_size = stride = p` holding the same weights?
#
# a) Because a convolution is approximately linear, so the two agree up to rounding.
#
# b) They are not equal: the convolution mixes neighbouring patches, the linear map does not.
#
# c) Because Conv2d pads the image so that every pixel is seen p times, which averages out the same.
#
# d) The windows tile the image without overlap, and each output is one kernel's dot product with
# one window: a row of the linear weight applied to one flattened patch.

# %%
q2 = "d"  # SOLUTION
check("ch01.q2", q2)

# %% [markdown]
# **Q3.** You halve the patch size of a ViT (16 -> 8) on the same 224x224 images. Roughly how does the
# cost of self-attention's score matrix change?
#
# a) about 2x: the sequence is twice as long
#
# b) about 4x: there are 4x as many tokens
#
# c) about 16x: 4x as many tokens, and attention compares every pair of tokens (N^2)
#
# d) unchanged: the image has the same number of pixels

# %%
q3 = "c"  # SOLUTION
check("ch01.q3", q3)

# %% [markdown]
# **Q4.** Suppose a ViT had no position embeddings at all. What would it see?
#
# a) A set: shuffling the patches would only shuffle its outputs the same way, so it could not tell
# where in the image a patch came from.
#
# b) Nothing changes: patches are flattened row-major, so their order is stored in the pixel values.
#
# c) A model that can no longer be trained: the patch embedding needs them to compute gradients.
#
# d) The same image without its [CLS] token, which is stored in the position table.

# %%
q4 = "a"  # SOLUTION
check("ch01.q4", q4)

# %% [markdown]
# ## Done?
#
# From a shell, `python -m mmllm_course.grade exercises/01_tokens_and_patches.ipynb` grades this
# whole notebook at once. Chapter 2 builds attention and the Vision Transformer on top of these tokens.
