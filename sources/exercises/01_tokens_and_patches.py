# %% [markdown]
# # 01 · Exercises: tokens and patches
#
# Four tiers, each checked:
#
# - **core** (exercises 1-3): the three functions that turn an image into tokens;
# - **build** (exercise 4): a whole `PatchEmbedding` module; the check loads the library's weights
#   into it and compares its outputs and gradients;
# - **train** (exercise 5): a small classifier on your patch tokens, trained by your own loop; the
#   check measures it on images it has never seen;
# - **text** (exercise 6): byte-pair encoding by hand, compared with the `tokenizers` library;
# - an **optional stretch** (exercise 7), then five checked questions.
#
# Each exercise ends with `check(...)`: it runs your code next to the library's on several random
# inputs and prints **pass**, **todo**, **fail** (with what was expected and what came back) or
# **error**. Read chapter 1 (`notebooks/01_tokens_and_patches.ipynb`) first.
#
# Dims: `B` batch, `C` channels, `H x W` image size, `p` patch size, `N = (H/p)(W/p)` patches,
# `D` embedding width.

# %%
import torch
import torch.nn.functional as F  # noqa: F401  (you may use it)
from einops import rearrange  # noqa: F401  (you may use it)
from torch import nn

from mmllm_course.grading import check

_ = torch.manual_seed(0)

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
# ## Exercise 4 (build): a `PatchEmbedding` module
#
# Now the whole module, as the library has it. Write `PatchEmbedding(nn.Module)` with the
# constructor `PatchEmbedding(image_size, patch_size, in_channels, dim)` (the check passes them by
# these names) and a forward `images (B, C, image_size, image_size) -> tokens (B, N, D)`:
# your `patchify` followed by one `nn.Linear(p*p*C, D)`.
#
# The check builds your class for a few sizes, **loads the library's weights into it**, and compares
# your tokens with the library's on a batch of 1 and a batch of 3, then the gradients (of a fixed
# random combination of the tokens) with respect to the images and to every parameter. So the
# parameters must have the library's names and shapes:
#
# | name | shape |
# |---|---|
# | `proj.weight` | `(D, p*p*C)`, columns in `(p1 p2 c)` order |
# | `proj.bias` | `(D,)` |
#
# `self.proj = nn.Linear(...)` gives exactly these names. (A `Conv2d` computes the same tokens, but
# stores its kernel as `(D, C, p, p)`: the check would tell you the names and shapes it expected.)

# %%
class PatchEmbedding(nn.Module):
    """images (B, C, image_size, image_size) -> tokens (B, N, D); parameters proj.weight (D, p*p*C), proj.bias (D,)."""

    def __init__(self, image_size: int, patch_size: int, in_channels: int, dim: int):
        super().__init__()
        # BEGIN SOLUTION
        self.image_size, self.patch_size = image_size, patch_size
        self.proj = nn.Linear(patch_size * patch_size * in_channels, dim)
        # END SOLUTION

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION
        return self.proj(patchify(images, self.patch_size))  # (B, N, D)
        # END SOLUTION


# %%
check("ch01.patch_embedding_module", PatchEmbedding)

# %% [markdown]
# ## Exercise 5 (train): where is the shape?
#
# Train a classifier on **your** `PatchEmbedding` to read the colour *and* the quadrant of the shape
# in a shapes-world image (32x32, one shape): 4 colours x 4 positions = 16 classes, and the class of
# an image is `4 * colour + position` (`labels = data.color * 4 + data.position`).
#
# The model has no attention yet (that is chapter 2): it looks at each token on its own, then
# averages. With `dim = 64`, `hidden = 128` and patches of 8 (a 4x4 grid, `N = 16`):
#
# 1. tokens = `PatchEmbedding(32, 8, 3, dim)(images)` → `(B, 16, dim)`;
# 2. add a **learned position embedding**, an `nn.Parameter` of shape `(1, 16, dim)` initialised
#    with `torch.randn` (std 1; ViT's usual std of 0.02 starts the positions almost equal, so they
#    take more steps to tell the quadrants apart: try both and compare);
# 3. the same small MLP on every token, `nn.Linear(dim, hidden)` then `nn.GELU()` → `(B, 16, hidden)`;
# 4. the mean over the 16 tokens → `(B, hidden)`, and `nn.Linear(hidden, 16)` → logits `(B, 16)`.
#
# Why step 3 sits between the positions and the mean: the mean of `token + position` is the mean
# of the tokens plus a constant, the same for every image, so a position vector added right before
# a mean carries nothing. Passed through a nonlinearity first, it changes *which* features each patch
# produces, and the average then depends on where the shape is.
#
# Training: `generate_shapes(2000, seed=...)` for the data, `F.cross_entropy`, `torch.optim.AdamW`
# with a learning rate around `3e-3` (a one-cycle schedule helps), batches of 64, about 15 passes over
# the data (450 steps). That takes a few seconds on a laptop CPU. Use your own loop and your own
# choices: the check only measures the result.
#
# **The check** calls `position_model(images)` on 1000 new images (its own seed), in eval mode,
# expects logits `(B, 16)`, and needs at least **90%** accuracy. It also reports how often the colour
# and the quadrant alone are right. Once `train_position_classifier` works, replace the `...` below
# by `train_position_classifier()`. (Curious? Train with `use_position=False` and check that model
# too: question 5 asks what happens.)

# %%
from mmllm_course.data import generate_shapes


class PositionClassifier(nn.Module):
    """images (B, 3, 32, 32) -> logits (B, 16) over the classes 4 * colour + position."""

    def __init__(self, dim: int = 64, hidden: int = 128, use_position: bool = True):
        super().__init__()
        # BEGIN SOLUTION
        self.patch_embedding = PatchEmbedding(image_size=32, patch_size=8, in_channels=3, dim=dim)
        self.position = nn.Parameter(torch.randn(1, 16, dim)) if use_position else None  # (1, N, D)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU())
        self.head = nn.Linear(hidden, 16)
        # END SOLUTION

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION
        x = self.patch_embedding(images)  # (B, N, D)
        if self.position is not None:
            x = x + self.position
        x = self.mlp(x)  # (B, N, hidden), every token on its own
        return self.head(x.mean(dim=1))  # (B, 16)
        # END SOLUTION


def train_position_classifier(seed: int = 0, use_position: bool = True) -> PositionClassifier:
    """Train a PositionClassifier on 2000 shapes-world images drawn with `seed`; return it."""
    # BEGIN SOLUTION
    torch.manual_seed(seed)
    data = generate_shapes(2000, seed=seed)
    labels = data.color * 4 + data.position  # (n,) in 0..15
    model = PositionClassifier(use_position=use_position)
    epochs, batch_size, lr = 15, 64, 3e-3
    steps_per_epoch = len(data) // batch_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * steps_per_epoch)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(data))
        for step in range(steps_per_epoch):
            idx = order[step * batch_size : (step + 1) * batch_size]
            loss = F.cross_entropy(model(data.images[idx]), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    print(f"trained {epochs * steps_per_epoch} steps, last batch loss {loss.item():.3f}")
    return model.eval()
    # END SOLUTION


# %%
position_model = train_position_classifier()  # SOLUTION
check("ch01.train_position", position_model)

# %% [markdown]
# ## Exercise 6 (text): byte-pair encoding by hand
#
# The chapter's tokenizer learned its merges with the `tokenizers` library. Here you write that
# training loop yourself, on characters (no bytes, no `Ġ`), and the check runs the library's
# `BpeTrainer` on the same corpus and compares the two lists merge for merge.
#
# `bpe_merges(corpus, num_merges)` takes a list of texts and returns the merges in the order they are
# learned, as pairs `(left, right)` of strings:
#
# 1. **Words**: split every text on whitespace (`text.split()`) and count each distinct word. Each word
#    starts as the list of its characters. Pairs never cross from one word to the next.
# 2. **Repeat** `num_merges` times: count every adjacent pair of symbols inside each word, times that
#    word's count. If there is no pair left, stop early. Take the most frequent pair, append it to
#    the list, and replace it by the joined symbol in every word, left to right (with the pair
#    `("a", "a")`, `a a a` becomes `aa a`). Then count again: merging creates new pairs.
# 3. **Ties** (several pairs share the top count): give every symbol a number: the corpus's
#    characters in sorted order get 0, 1, 2, ... (Python's `sorted`), and each merge's new symbol gets
#    the next number, the first time it appears. Take the pair with the smallest
#    `(number of left, number of right)`. This is the library's own rule (its queue orders equal counts
#    by these ids), and it makes the answer unique.
#
# Example: `bpe_merges(["low low lower"], 3)`. The words are `low` x2 and `lower` x1. First `("l","o")`
# and `("o","w")` both occur 3 times; with `e, l, o, r, w` numbered 0-4, `(1, 2)` beats `(2, 4)`, so
# `("l","o")`. Then `("lo","w")` (3 times), then `("low","e")` and `("e","r")` tie at 1, and `lo` = 5,
# `low` = 6, so `(0, 3)` wins over `(6, 0)`: `[("l","o"), ("lo","w"), ("e","r")]`.
#
# ([Sennrich et al. 2016](https://arxiv.org/abs/1508.07909), who brought BPE to machine translation,
# break ties with `max`, so by dict order: the check would name that.)

# %%
from collections import Counter  # noqa: F401  (you may use it)


def bpe_merges(corpus: list[str], num_merges: int) -> list[tuple[str, str]]:
    """The BPE merges learned from `corpus` (texts split on whitespace), in order, at most `num_merges`."""
    # BEGIN SOLUTION
    words = Counter(word for text in corpus for word in text.split())
    ids = {ch: i for i, ch in enumerate(sorted({ch for word in words for ch in word}))}
    symbols = {word: list(word) for word in words}
    merges = []
    for _ in range(num_merges):
        pairs = Counter()
        for word, count in words.items():
            s = symbols[word]
            for a, b in zip(s, s[1:]):
                pairs[a, b] += count
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], ids[pair[0]], ids[pair[1]]))
        merges.append(best)
        ids.setdefault(best[0] + best[1], len(ids))
        for word, s in symbols.items():
            merged, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    merged.append(s[i] + s[i + 1])
                    i += 2
                else:
                    merged.append(s[i])
                    i += 1
            symbols[word] = merged
    return merges
    # END SOLUTION


# %%
check("ch01.bpe_merges", bpe_merges)

# %% [markdown]
# ## Exercise 7 (optional stretch): position embeddings for a new image size
#
# A ViT pre-trained at 224x224 with 16x16 patches has learned one position vector per cell of a
# 14x14 grid (plus one for [CLS]). Fine-tuned at 384x384 it sees a 24x24 grid: 576 patches, with no
# vector for most of them. ViT ([Dosovitskiy et al. 2021](https://arxiv.org/abs/2010.11929),
# section 3.2) resizes the learned grid of vectors **as if it were an image with `D` channels**;
# `transformers` does it in `ViTEmbeddings.interpolate_pos_encoding` (what
# `model(pixel_values, interpolate_pos_encoding=True)` calls), and the check compares with that
# computation (the grader's tests run `transformers`' own function through it).
#
# `interpolate_positions(pos_embed, grid_h, grid_w)`: `pos_embed (1, 1 + g*g, D)` with the [CLS] row
# first and a square `g x g` grid after it (row-major) → `(1, 1 + grid_h*grid_w, D)`:
#
# - keep row 0, the [CLS] vector, unchanged;
# - reshape the other `g*g` rows to `(1, g, g, D)` and move the channels first: `(1, D, g, g)`;
# - `F.interpolate(..., size=(grid_h, grid_w), mode="bicubic", align_corners=False)`;
# - back to `(1, grid_h*grid_w, D)`, row-major, and put [CLS] in front.
#
# The new grid may be smaller, larger or non-square; the dtype follows the input; don't change
# `pos_embed` in place.

# %%
def interpolate_positions(pos_embed: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """(1, 1 + g*g, D) -> (1, 1 + grid_h*grid_w, D): [CLS] kept, the g x g grid resized bicubically."""
    # BEGIN SOLUTION
    d = pos_embed.shape[-1]
    g = int(round((pos_embed.shape[1] - 1) ** 0.5))
    cls_pos, grid = pos_embed[:, :1], pos_embed[:, 1:]  # (1, 1, D), (1, g*g, D)
    grid = rearrange(grid, "1 (h w) d -> 1 d h w", h=g, w=g)
    grid = F.interpolate(grid, size=(grid_h, grid_w), mode="bicubic", align_corners=False)
    return torch.cat([cls_pos, rearrange(grid, "1 d h w -> 1 (h w) d")], dim=1)
    # END SOLUTION


# %%
check("ch01.interpolate_positions", interpolate_positions)

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
# **Q5.** Exercise 5's classifier, trained the same way but **without** position embeddings
# (`train_position_classifier(use_position=False)`). What does it reach on new images?
#
# a) About 100%: each patch token already says where its patch was, since the patches are numbered
# row-major.
#
# b) About 25%: the colour is right, the quadrant is a guess, because the mean over the patch tokens
# comes out the same whichever patch the shape is in.
#
# c) About 6% (chance over 16 classes): without position embeddings the model cannot learn anything.
#
# d) About 50%: left and right are told apart by the row-major order of the patches, top and bottom
# are not.

# %%
q5 = "b"  # SOLUTION
check("ch01.q5", q5)

# %% [markdown]
# ## Done?
#
# From a shell, `python -m mmllm_course.grade exercises/01_tokens_and_patches.ipynb` grades this
# whole notebook at once. Chapter 2 builds attention and the Vision Transformer on top of these tokens.
