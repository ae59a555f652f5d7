# %% [markdown]
# # 10 · Exercises: discrete visual tokens, a VQ tokenizer and its codebook
#
# Read chapter 10 first. The exercises come in four parts:
#
# 1. **Core** (exercises 1-5): the nearest-code lookup, the straight-through estimator, the two VQ-VAE
#    losses, and an image turned into a sequence of tokens and back, each a function.
# 2. **Build** (exercise 6): the whole quantiser as an `nn.Module`. The check loads the library's
#    weights into yours (the same `state_dict` as `diffusers`' `VectorQuantizer`), so your parameter
#    must carry the library's name, and compares indices, outputs, loss and gradients.
# 3. **Train** (exercise 7): train a small VQ tokenizer with your quantiser and your loop; the check
#    measures, on images it draws itself, how well the images come back from the tokens alone and how
#    many codes you use.
# 4. **Stretch** (exercise 8, optional): the EMA codebook update.
#
# Then three checked questions. Each exercise ends with `check(...)`: it runs your code next to the
# library's on several inputs and prints **pass**, **todo**, **fail** (with what was expected and what
# came back, and the usual mistake when it recognises it) or **error**.
#
# Dims: `B` batch, `N` vectors, `K` codes (`num_codes`), `D` code width (`code_dim`), `H, W` an image's
# size, `h, w` the encoder's grid (one token per cell).

# %%
import math  # noqa: F401  (you may use it)
import time

import torch
import torch.nn.functional as F
from torch import nn

from mmllm_course.grading import check

_ = torch.manual_seed(0)

# %% [markdown]
# ## Part 1: core functions
#
# ## Exercise 1: `nearest_code`
#
# A VQ-VAE (van den Oord et al. 2017, [arXiv:1711.00937](https://arxiv.org/abs/1711.00937)) makes an
# encoder's output discrete by replacing each vector with the nearest entry of a learned codebook:
#
# $$k(n) = \arg\min_k \lVert z_n - e_k \rVert^2 .$$
#
# Given `z (N, D)` and `codebook (K, D)`, return the indices `(N,)` (`torch.long`) of the nearest code
# of every vector. `torch.cdist` gives the `(N, K)` distances; so does the expansion
# $\lVert z\rVert^2 - 2\, z \cdot e + \lVert e\rVert^2$, one matrix product, which is what the library
# uses for big codebooks. Take the smallest over the **codes** axis.

# %%
def nearest_code(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """z (N, D), codebook (K, D) -> indices (N,) of the nearest code in squared Euclidean distance."""
    # BEGIN SOLUTION
    d2 = z.pow(2).sum(1, keepdim=True) - 2 * z @ codebook.T + codebook.pow(2).sum(1)[None]  # (N, K)
    return d2.argmin(dim=1)
    # END SOLUTION


# %%
check("ch10.nearest_code", nearest_code)

# %% [markdown]
# ## Exercise 2: `straight_through`
#
# `argmin` returns an integer: its gradient is zero almost everywhere, so nothing from the
# reconstruction loss would reach the encoder. The **straight-through estimator** passes the code
# `z_q` forward and copies the gradient back to `z` as if the quantiser were the identity:
#
# $$\text{out} = z + \operatorname{sg}[z_q - z], \qquad \text{value: } z_q, \qquad
# \frac{\partial \text{out}}{\partial z} = I, \qquad \frac{\partial \text{out}}{\partial z_q} = 0,$$
#
# where `sg` is the stop-gradient, `.detach()` in PyTorch. Return a tensor of `z`'s shape. The check
# reads the value **and** where the gradient goes.

# %%
def straight_through(z: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """Value of z_q, gradient copied to z (none to z_q): any shape, the same for both."""
    # BEGIN SOLUTION
    return z + (z_q - z).detach()
    # END SOLUTION


# %%
check("ch10.straight_through", straight_through)

# %% [markdown]
# ## Exercise 3: `vq_losses`
#
# The straight-through gradient skips the codebook, so two extra terms move what it cannot reach
# (VQ-VAE, eq. 3):
#
# $$\mathcal{L}_\text{codebook} = \lVert \operatorname{sg}[z] - z_q \rVert^2, \qquad
# \mathcal{L}_\text{commit} = \beta\, \lVert z - \operatorname{sg}[z_q] \rVert^2 .$$
#
# The first pulls the chosen codes towards the encoder's outputs (it moves **only** `z_q`); the second
# keeps the encoder close to its codes (it moves **only** `z`), weighted by `beta` (0.25 in the paper).
# Both are means over every element (`F.mse_loss`). Return the tuple `(codebook_loss, commitment_loss)`,
# two 0-d tensors. `diffusers`' `VectorQuantizer` has `beta` on the *other* term by default
# (`legacy=True`, a bug kept for old checkpoints); the library and this exercise follow the paper.

# %%
def vq_losses(z: torch.Tensor, z_q: torch.Tensor, beta: float = 0.25) -> tuple[torch.Tensor, torch.Tensor]:
    """(codebook_loss, commitment_loss) = (mse(z_q, sg[z]), beta * mse(z, sg[z_q])), two 0-d tensors."""
    # BEGIN SOLUTION
    return F.mse_loss(z_q, z.detach()), beta * F.mse_loss(z, z_q.detach())
    # END SOLUTION


# %%
check("ch10.vq_losses", vq_losses)

# %% [markdown]
# ## Exercise 4: an image as a sequence of tokens
#
# An encoder turns images `(B, 3, H, W)` into a grid `(B, D, h, w)`: one vector per cell. Each cell's
# nearest code is a token; a language model reads them as a **sequence**, in **raster order**: row by
# row, left to right, as text is read. Cell `(r, c)` becomes position `r * w + c`.
#
# Write `image_to_tokens(images, encoder, codebook)` -> `(B, h*w)` long. Mind the layout: the grid has
# the channels **first**; a vector is the `D` numbers of one cell, so move `D` last
# (`permute(0, 2, 3, 1)`) before flattening. Use your `nearest_code`. The check builds its own encoder
# (a strided convolution) and codebook.

# %%
def image_to_tokens(images: torch.Tensor, encoder: nn.Module, codebook: torch.Tensor) -> torch.Tensor:
    """images (B, 3, H, W) -> tokens (B, h*w): the nearest code of every grid cell, in raster order."""
    # BEGIN SOLUTION
    z = encoder(images)  # (B, D, h, w)
    b, d, h, w = z.shape
    return nearest_code(z.permute(0, 2, 3, 1).reshape(-1, d), codebook).view(b, h * w)
    # END SOLUTION


# %%
check("ch10.image_to_tokens", image_to_tokens)

# %% [markdown]
# ## Exercise 5: tokens back to an image
#
# The way back, what runs after an LM has written `h*w` tokens: look the codes up (`codebook[tokens]`,
# `(B, h*w, D)`), put them back on their grid **row by row** (`(B, h, w, D)`), channels first again
# (`(B, D, h, w)`), and run the decoder. `grid = (h, w)`.

# %%
def tokens_to_image(tokens: torch.Tensor, decoder: nn.Module, codebook: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """tokens (B, h*w) in raster order -> images: decoder(the codes on their (h, w) grid, (B, D, h, w))."""
    # BEGIN SOLUTION
    h, w = grid
    vectors = codebook[tokens]  # (B, h*w, D)
    return decoder(vectors.view(tokens.shape[0], h, w, -1).permute(0, 3, 1, 2))
    # END SOLUTION


# %%
check("ch10.tokens_to_image", tokens_to_image)

# %% [markdown]
# ## Part 2: build the quantiser
#
# ## Exercise 6: `VectorQuantizer`
#
# `VectorQuantizer(num_codes, code_dim, beta)` holds the codebook as **`self.embedding`**, an
# `nn.Embedding(num_codes, code_dim)`: the name `diffusers` uses, so its weights (and the library's
# `CodebookQuantizer`'s) load into yours. `forward(z)` takes a grid `z (B, D, H, W)` and returns the
# tuple `(z_q, loss, indices)`:
#
# 1. every cell's vector, `(B*H*W, D)` (channels last first), gets its nearest code (your exercise 1);
# 2. `z_q`: the codes `self.embedding(indices)`, through your straight-through estimator, back to
#    `(B, D, H, W)`;
# 3. `loss = codebook_loss + commitment_loss` (your exercise 3, a 0-d tensor);
# 4. `indices`: `(B, H, W)`, long.
#
# The check builds `VectorQuantizer(16, 4, beta=0.25)`, `(64, 8, 0.25)` and `(10, 6, 0.5)`, loads the
# library's weights with `load_state_dict(strict=True)` and compares indices, `z_q`, the loss, and
# where the gradients of `z_q` and of the loss go (to the input and to `embedding.weight`).

# %%
class VectorQuantizer(nn.Module):
    """z (B, D, H, W) -> (z_q (B, D, H, W) straight-through, loss (), indices (B, H, W))."""

    def __init__(self, num_codes: int, code_dim: int, beta: float = 0.25):
        super().__init__()
        # BEGIN SOLUTION
        self.beta = beta
        self.embedding = nn.Embedding(num_codes, code_dim)
        self.embedding.weight.data.uniform_(-1.0 / num_codes, 1.0 / num_codes)  # as diffusers initialises it
        # END SOLUTION

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # BEGIN SOLUTION
        b, d, h, w = z.shape
        z_last = z.permute(0, 2, 3, 1).reshape(-1, d)  # (B*H*W, D): one vector per cell
        indices = nearest_code(z_last, self.embedding.weight)
        z_q = self.embedding(indices)  # (B*H*W, D)
        codebook_loss, commitment_loss = vq_losses(z_last, z_q, self.beta)
        z_q = straight_through(z_last, z_q).view(b, h, w, d).permute(0, 3, 1, 2)  # (B, D, H, W)
        return z_q, codebook_loss + commitment_loss, indices.view(b, h, w)
        # END SOLUTION


# %%
check("ch10.quantizer", VectorQuantizer)

# %% [markdown]
# Your module next to the real thing: `diffusers`' `VectorQuantizer` (the quantiser of its `VQModel`)
# with your weights, on the same input. `legacy=False` is the paper's loss; `legacy=True`, diffusers'
# default, moves `beta` to the codebook term: the total is the same number here, the gradients are not.

# %%
try:
    from diffusers.models.autoencoders.vae import VectorQuantizer as DiffusersVectorQuantizer

    mine = VectorQuantizer(32, 8, beta=0.25)
    theirs = DiffusersVectorQuantizer(32, 8, beta=0.25, legacy=False, sane_index_shape=True)
    theirs.load_state_dict(mine.state_dict())
    z = torch.randn(2, 8, 4, 4) * 0.05
    my_zq, my_loss, my_idx = mine(z)
    their_zq, their_loss, (_, _, their_idx) = theirs(z)
    print(f"same indices: {torch.equal(my_idx, their_idx)}, max |z_q difference| {(my_zq - their_zq).abs().max():.2e}, "
          f"loss {my_loss.item():.6f} vs {their_loss.item():.6f}")
except NotImplementedError:
    print("VectorQuantizer is not written yet")

# %% [markdown]
# ## Part 3: train a VQ tokenizer
#
# ## Exercise 7: a tokenizer of your own, with your quantiser
#
# `VQTokenizer` below puts your `VectorQuantizer` between a small convolutional encoder (32x32 images
# -> an 8x8 grid of 16-dimensional vectors: **64 tokens per image**) and a decoder (back to 32x32). Its
# `encode(images)` returns the token grid `(B, 8, 8)` and `decode(tokens)` the images, from the tokens
# alone: exactly what a language model would write and read. Change the sizes if you like (at most 64
# tokens per image and 1,024 codes).
#
# Write `train_tokenizer(model, images, steps, ...)`: Adam, then `steps` times a random batch,
# `recon, vq_loss, indices = model(batch)`, the loss `(shape_weights(batch) * (recon - batch) ** 2).mean()
# + vq_loss`, a step. `shape_weights` (given below) counts the shape's pixels 5 times: the grey background
# is most of every image, and with a plain mean squared error some runs never learn the colours (one of
# five seeds the course tried reconstructed the right colour on only 47% of the images).
# Two tricks the chapter showed against **dead codes** (codes no vector picks: they get no gradient and
# never move):
#
# - at the first step, set the codebook to `K` random encoder outputs of the batch (codes start where
#   the data is, not in a tiny ball around 0);
# - every 100 steps, move every code that the last batch did not use onto a random encoder output
#   (a *dead-code restart*, as Jukebox and the library's `restart_dead_codes` do), but not in the last
#   20% of the steps: the decoder must learn the codes' new places before the check reads them.
#
# What the course found to work: batches of 64, Adam at a constant `2e-3`, 1,000 steps (a minute or
# so on a laptop CPU; the cell prints how long yours took).
#
# **What the check does:** it never trains. It draws 256 new images with its own seed, runs
# `decode(encode(images))` and measures the reconstruction's PSNR, what the chapter-9 judge (a CNN
# trained on real images) reads on the reconstructions, colour and shape, and how many distinct codes
# the held-out images use. The bars are in the check's message.

# %%
from mmllm_course.data import generate_shapes


class VQTokenizer(nn.Module):
    """images (B, 3, 32, 32) -> tokens (B, 8, 8) -> images: encoder, your quantiser, decoder."""

    def __init__(self, num_codes: int = 128, code_dim: int = 16):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
                                     nn.Conv2d(64, code_dim, 1))  # (B, D, 8, 8)
        self.quantizer = VectorQuantizer(num_codes, code_dim, beta=0.25)
        self.decoder = nn.Sequential(nn.Conv2d(code_dim, 64, 3, 1, 1), nn.ReLU(), nn.ConvTranspose2d(64, 32, 4, 2, 1),
                                     nn.ReLU(), nn.ConvTranspose2d(32, 3, 4, 2, 1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """images -> (reconstruction, vq loss, indices (B, 8, 8))."""
        z_q, vq_loss, indices = self.quantizer(self.encoder(images))
        return self.decoder(z_q), vq_loss, indices

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.quantizer(self.encoder(images))[2]  # (B, 8, 8) long

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.quantizer.embedding(tokens).permute(0, 3, 1, 2))  # from the tokens alone


def shape_weights(images: torch.Tensor, weight: float = 5.0) -> torch.Tensor:
    """Per-pixel weights (B, 1, H, W): ``weight`` where a pixel differs from its image's grey background, 1 elsewhere."""
    background = images.flatten(2).median(dim=2).values[..., None, None]  # (B, 3, 1, 1): the shape covers under a quarter
    return 1.0 + (weight - 1.0) * ((images - background).abs().amax(1, keepdim=True) > 0.1)


train_images = generate_shapes(4000, seed=0).images  # (4000, 3, 32, 32)
print("training images", tuple(train_images.shape))

# %%
def train_tokenizer(model: VQTokenizer, images: torch.Tensor, steps: int = 1000, batch_size: int = 64, lr: float = 2e-3,
                    seed: int = 0) -> VQTokenizer:
    """Train ``model`` to reconstruct ``images`` through its codebook; return it in eval mode."""
    # BEGIN SOLUTION
    generator = torch.Generator().manual_seed(seed)  # the batch order
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    codes = model.quantizer.embedding.weight
    k, d = codes.shape
    model.train()
    for step in range(steps):
        x = images[torch.randint(len(images), (batch_size,), generator=generator)]
        if step == 0:  # start the codebook where the data is
            with torch.no_grad():
                z = model.encoder(x).permute(0, 2, 3, 1).reshape(-1, d)
                codes.copy_(z[torch.randperm(len(z), generator=generator)[:k]])
        recon, vq_loss, indices = model(x)
        loss = (shape_weights(x) * (recon - x) ** 2).mean() + vq_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 99 and step < 0.8 * steps:  # dead-code restart: unused codes jump onto encoder outputs
            with torch.no_grad():
                dead = (torch.bincount(indices.flatten(), minlength=k) == 0).nonzero().flatten()
                z = model.encoder(x).permute(0, 2, 3, 1).reshape(-1, d)
                codes[dead] = z[torch.randint(len(z), (len(dead),), generator=generator)]
    return model.eval()
    # END SOLUTION


# %% [markdown]
# The next cell trains your tokenizer and hands it to the check. Until `train_tokenizer` (and your
# `VectorQuantizer`) is written, it says `todo`.

# %%
torch.manual_seed(0)
start = time.perf_counter()
try:
    my_tokenizer = train_tokenizer(VQTokenizer(), train_images)
    print(f"trained in {time.perf_counter() - start:.0f} s")
except NotImplementedError:
    print("train_tokenizer or VectorQuantizer is not written yet")
    my_tokenizer = ...  # the check says todo
check("ch10.train_tokenizer", my_tokenizer)

# %% [markdown]
# ## Part 4 (stretch, optional): the EMA codebook
#
# ## Exercise 8: `ema_update`
#
# VQ-VAE's appendix (and Sonnet's `VectorQuantizerEMA`, VQ-VAE-2, Jukebox) replaces the codebook loss
# by moving averages: each code keeps a running count `N_k` of the vectors assigned to it and a running
# sum `m_k` of them, and **is** their ratio. For a batch `z (N, D)` with `indices (N,)`:
#
# $$N_k \leftarrow \gamma N_k + (1-\gamma)\, n_k, \qquad m_k \leftarrow \gamma m_k + (1-\gamma) \sum_{i: k(i) = k} z_i,$$
#
# with `n_k` the batch's count of code `k` and decay `γ` (0.99). A code nobody picks has `N_k → 0`:
# **Laplace smoothing** keeps the division finite, $\tilde N_k = \frac{N_k + \epsilon}{n + K\epsilon}\, n$
# with $n = \sum_k N_k$, and the code is $e_k = m_k / \tilde N_k$.
#
# `ema_update(z, indices, counts (K,), sums (K, D), decay, eps)` returns `(codebook (K, D), counts, sums)`,
# the new values (do not change the inputs in place).

# %%
def ema_update(z: torch.Tensor, indices: torch.Tensor, counts: torch.Tensor, sums: torch.Tensor, decay: float = 0.99,
               eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One EMA codebook step: (codebook (K, D), counts (K,), sums (K, D))."""
    # BEGIN SOLUTION
    k = counts.shape[0]
    onehot = F.one_hot(indices, k).to(z.dtype)  # (N, K)
    counts = decay * counts + (1 - decay) * onehot.sum(0)
    sums = decay * sums + (1 - decay) * onehot.T @ z
    n = counts.sum()
    smoothed = (counts + eps) / (n + k * eps) * n
    return sums / smoothed[:, None], counts, sums
    # END SOLUTION


# %%
check("ch10.ema_update", ema_update)

# %% [markdown]
# ## Checked questions
#
# Answer with the letter, as a string (`"a"`).
#
# **Q1.** What breaks if the quantiser returns `z_q` itself, without the straight-through estimator?
#
# a) Nothing: autograd differentiates through argmin like any other operation, only more slowly.
#
# b) The codebook stops learning, since the codebook loss needs the straight-through gradient.
#
# c) The encoder gets no gradient from the reconstruction loss, since argmin is piecewise constant
# (its gradient is zero or undefined): only the commitment loss moves it, and it never learns what
# the decoder needs.
#
# d) The decoder gets no gradient, so the reconstructions stay random.

# %%
q1 = "c"  # SOLUTION
check("ch10.q1", q1)

# %% [markdown]
# **Q2.** Why is a bigger codebook not free?
#
# a) It is free: more codes always reconstruct better and cost nothing else.
#
# b) More codes mean more bits per token (log2 K) and a bigger softmax for the LM that writes the
# tokens, each code sees fewer vectors so more codes die (never picked, never trained), and the LM
# must learn a sparser, harder distribution.
#
# c) A bigger codebook makes the encoder's output grid larger, so there are more tokens per image.
#
# d) The codebook loss grows with K, so training diverges beyond a few hundred codes.

# %%
q2 = "b"  # SOLUTION
check("ch10.q2", q2)

# %% [markdown]
# **Q3.** Seed 004's claim: a visual tokenizer cannot be compact, lossless and discrete at once.
# Which two does each method pick?
#
# a) Raw pixels as tokens (iGPT): compact and discrete; continuous latents (chapter 9's autoencoder):
# lossless and discrete; a VQ tokenizer: compact and lossless.
#
# b) Raw pixels as tokens (iGPT): lossless and discrete, but not compact (3,072 tokens for 32x32x3);
# continuous latents (chapter 9's autoencoder): compact and nearly lossless, but not discrete; a VQ
# tokenizer: compact and discrete, but lossy.
#
# c) A VQ tokenizer has all three once its codebook is large enough, which is why Chameleon uses one.
#
# d) All three methods are discrete; they differ only in how compact they are.

# %%
q3 = "b"  # SOLUTION
check("ch10.q3", q3)

# %% [markdown]
# ## Done?
#
# From a shell, `python -m mmllm_course.grade exercises/10_discrete_visual_tokens.ipynb` grades this
# whole notebook at once (with your training done, that includes its training). Chapter 11 puts the
# course together: audio in, a 3-D object out.
