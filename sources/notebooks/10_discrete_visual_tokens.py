# %% [markdown]
# # 10 · The output side with discrete tokens: a VQ tokenizer, an LM that writes images, and a trade-off measured
#
# **By the end of this notebook you will be able to**
#
# - quantise vectors to a **codebook**: the nearest-code lookup, the **straight-through estimator**
#   that lets a gradient pass the argmin, the **codebook** and **commitment losses**, and say where
#   `diffusers`' `VectorQuantizer` differs from the paper (`legacy=True`);
# - turn a 32x32 image into 64 integers and back with a **VQ-VAE tokenizer**, read its
#   reconstruction error and its **codebook usage**, and revive **dead codes**;
# - make an LLM *write* an image: the codebook becomes extra vocabulary, and next-token prediction
#   over one interleaved sequence "request + image tokens" (Chameleon, Emu3) is all the training;
#   sample it with temperature and top-k;
# - measure why a visual tokenizer cannot be **compact, lossless and discrete** at once, and compare
#   the discrete route with chapter 9's continuous one.
#
# Chapter 9 made the LLM emit a few signal tokens whose hidden states steer a frozen diffusion
# model (NExT-GPT): **continuous embeddings**. This chapter takes the other road of the output side:
# **discrete tokens**, where the image itself is a sequence of words from a learned codebook, and the
# same softmax that picks the next word picks the next patch of the image (VideoPoet, Chameleon, Emu3).
#
# **Papers this chapter teaches from**: VQ-VAE, [van den Oord et al. 2017](https://arxiv.org/abs/1711.00937);
# VQGAN, [Esser et al. 2021](https://arxiv.org/abs/2012.09841); Emu,
# [Sun et al. 2023](https://arxiv.org/abs/2307.05222); VideoPoet,
# [Kondratyuk et al. 2023](https://arxiv.org/abs/2312.14125); Chameleon,
# [Chameleon Team 2024](https://arxiv.org/abs/2405.09818); Emu3,
# [Wang et al. 2024](https://arxiv.org/abs/2409.18869). Terms in **bold** are in the course
# [glossary](../GLOSSARY.md).

# %%
import time

import matplotlib.pyplot as plt
import torch

from mmllm_course import seed_everything

seed_everything(0)
torch.set_printoptions(precision=3, sci_mode=False)
START = time.perf_counter()

# %% [markdown]
# ## Part 1: the quantiser, three lines of VQ-VAE
#
# An encoder turns an image into a grid of vectors $z$ (here 8x8 vectors of width $D = 16$). A
# **codebook** holds $K$ vectors $e_1..e_K$. Quantising replaces each $z$ by its nearest code:
#
# $$k^* = \arg\min_k \lVert z - e_k \rVert^2, \qquad z_q = e_{k^*}.$$
#
# The integer $k^*$ *is* the token. Two problems follow, and VQ-VAE's eq. 3 solves both:
#
# 1. $\arg\min$ has no gradient, so the decoder's loss cannot reach the encoder. The
#    **straight-through estimator** uses $z_q$ in the forward pass and copies the gradient to $z$
#    unchanged: `z + (z_q - z).detach()`.
# 2. The codes get no gradient from the reconstruction at all. Two extra terms move them:
#    $\mathcal{L} = \lVert x - \hat x\rVert^2 + \underbrace{\lVert \mathrm{sg}[z] - e\rVert^2}_{\text{codebook}} + \beta\,\underbrace{\lVert z - \mathrm{sg}[e]\rVert^2}_{\text{commitment}}$,
#    with sg the stop-gradient (`detach`): the codebook term pulls codes to the encoder's outputs,
#    the commitment term ($\beta = 0.25$) keeps the encoder from drifting away from its codes.

# %%
from mmllm_course.visual_tokens import CodebookQuantizer, nearest_code, straight_through, vq_losses

codebook = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
z = torch.tensor([[0.9, 0.2], [0.1, 0.7], [0.2, -0.1]], requires_grad=True)
k = nearest_code(z, codebook)
z_q = codebook[k]
print("nearest codes", k.tolist())
out = straight_through(z, z_q)
(out * torch.tensor([1.0, 2.0])).sum().backward()
print("forward value = the codes:", out.tolist())
print("gradient reached z unchanged:", z.grad.tolist())
codebook_loss, commitment_loss = vq_losses(z.detach(), z_q)
print(f"codebook loss {codebook_loss:.4f}, commitment loss (beta 0.25) {commitment_loss:.4f}")

# %% [markdown]
# ### Parity with `diffusers`
#
# `diffusers.models.autoencoders.vae.VectorQuantizer` is the quantiser of its `VQModel` (from
# taming-transformers' VQGAN). Our `CodebookQuantizer` names its table `embedding` as diffusers does,
# so one `state_dict` loads into both. Same codebook, same input: the indices, the straight-through
# output and (with `legacy=False`) the loss agree. Its default `legacy=True` keeps an old bug for old
# checkpoints: $\beta$ multiplies the *codebook* term and the commitment term gets weight 1. The value
# is the same (both terms are the same mean squared distance in the forward pass); the gradients are
# not: the codes move 4x slower and the encoder is held 4x harder.

# %%
from diffusers.models.autoencoders.vae import VectorQuantizer

torch.manual_seed(0)
ours = CodebookQuantizer(64, 16)
ours.embedding.weight.data.normal_()
grid = torch.randn(2, 16, 8, 8, requires_grad=True)
mine = ours(grid)
for legacy in (False, True):
    ref = VectorQuantizer(64, 16, beta=0.25, legacy=legacy)
    ref.load_state_dict(ours.state_dict())
    ref_zq, ref_loss, (_, _, ref_idx) = ref(grid)
    g_ref = torch.autograd.grad(ref_loss, grid)[0]
    g_ours = torch.autograd.grad(mine.loss, grid, retain_graph=True)[0]
    print(f"legacy={legacy!s:5}: indices differ at {(mine.indices.flatten() != ref_idx).sum().item()} of {ref_idx.numel()}, "
          f"max |z_q diff| {(mine.z_q - ref_zq).abs().max():.1e}, loss diff {abs(mine.loss - ref_loss).item():.1e}, "
          f"encoder-gradient ratio {(g_ref.norm() / g_ours.norm()).item():.2f}")
assert torch.equal(mine.indices.flatten(), ref_idx) and torch.allclose(mine.z_q, ref_zq, atol=1e-6)

# %% [markdown]
# ## Part 2: the image tokenizer
#
# The tokenizer is a small **VQ-VAE**: a convolutional encoder (two stride-2 stages, 32x32 → 8x8), the
# codebook ($K = 128$ codes of width 16), and a mirrored decoder. VQGAN adds a perceptual and an
# adversarial loss and attention to the same skeleton; Chameleon's and Emu3's image tokenizers are
# of that family, with 8,192 and 32,768 codes. Ours was trained once by
# `python -m mmllm_course.visual_tokens.pretrain` (1,500 steps, far beyond this notebook's
# minute) on images of the shapes world drawn without pixel noise, and ships with the package.
#
# One image becomes $8 \times 8 = 64$ tokens of $\log_2 128 = 7$ bits: 448 bits, against
# $32 \cdot 32 \cdot 3 \cdot 8 = 24{,}576$ bits of pixels.

# %%
from mmllm_course.generators import judge_images, load_judge
from mmllm_course.visual_tokens import load_chapter10, tokenizer_metrics
from mmllm_course.visual_tokens.pretrain import CHAPTER10, HELD_OUT_IMAGES_SEED, training_data

tokenizer, image_lm = load_chapter10()
judge = load_judge()
held = training_data(256, HELD_OUT_IMAGES_SEED)  # held-out images, a seed no training used
codes = tokenizer.encode(held.images[:4])
print("images", tuple(held.images[:4].shape), "-> tokens", tuple(codes.shape), codes.dtype)
print("the first image as 64 integers:\n", codes[0])
recon = tokenizer.reconstruct(held.images)
metrics = tokenizer_metrics(tokenizer, held.images)
read = judge_images(judge, recon, held)
print(f"held-out reconstruction: MSE {metrics['mse']:.4f}, PSNR {metrics['psnr']:.1f} dB; codes used {metrics['codes_used']:.0f} "
      f"of {tokenizer.config.num_codes} (perplexity {metrics['perplexity']:.0f})")
print(f"the judge reads on reconstructions: colour {read['color']:.1%}, shape {read['shape']:.1%}, size {read['size']:.1%}, "
      f"position {read['position']:.1%} (on the real images: 100%)")
assert metrics["psnr"] > 25 and metrics["codes_used"] > 100 and read["color"] > 0.95

# %%
fig, axes = plt.subplots(2, 8, figsize=(12, 3.3))
for i in range(8):
    axes[0, i].imshow(held.images[i].permute(1, 2, 0).clamp(0, 1))
    axes[1, i].imshow(recon[i].permute(1, 2, 0).clamp(0, 1))
    axes[0, i].set_title(held.captions[i].replace("a ", "").replace(" in the ", "\n"), fontsize=7)
for ax in axes.flat:
    ax.axis("off")
axes[0, 0].text(-12, 16, "real", rotation=90, va="center")
axes[1, 0].text(-12, 16, "64 tokens", rotation=90, va="center")
fig.suptitle("Held-out images and their reconstructions from 64 tokens")
plt.tight_layout()
plt.show()

# %% [markdown]
# Colour, size and position survive the 448 bits; **shape** is where the tokenizer loses most: a small
# star and a small cross differ in a few pixels of a 4x4 patch, and 128 codes cannot spell every
# such patch at every offset. Remember this number: nothing the LM writes can be read better than the
# tokenizer's own reconstructions.
#
# ## Part 3: dead codes, and the compact / lossless / discrete trade-off
#
# A code that no encoder output is nearest to gets no gradient (the codebook loss only moves the
# chosen codes), so it stays where it started, unused, for ever: a **dead code**. The fix used here
# (Jukebox, SoundStream): every few steps, move each code that nobody picked onto a random recent
# encoder output (`restart_dead_codes`). EMA codebook updates are the other common fix.
#
# Emu's authors put the trade-off of a visual tokenizer in one line: it cannot be **compact**, **lossless**
# and **discrete** all at once. The cell below measures it. Seven small tokenizers, the same
# network and the same budget (80 steps each, about the time a learner waits for a cell), differ only
# in the grid (16 or 64 tokens), the codebook (16 or 256 codes) or in having no codebook at all
# (a continuous autoencoder whose latents are float32 numbers: 32 bits each). Bits per image:
# $N \log_2 K$ with a codebook, $N \cdot D \cdot 32$ without.

# %%
from mmllm_course.visual_tokens.chapter import run_tradeoff, tradeoff_claims

rows = run_tradeoff(seed=0, progress=True)
for r in rows:
    used = f"codes used {r['codes_used']:4.0f} of {r['num_codes']:3d}" if r["quantize"] else "(no codebook)"
    print(f"{r['label']:30} {r['bits_per_image']:7.0f} bits/image  MSE {r['mse']:.4f}  {used}")
claims = tradeoff_claims(rows)
print({k: round(v, 4) for k, v in claims.items()})

# %%
fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4))
for r in rows:
    marker = "o" if r["quantize"] else "s"
    color = "tab:red" if "no restarts" in r["label"] else ("tab:blue" if r["quantize"] else "tab:green")
    ax.scatter(r["bits_per_image"], r["mse"], marker=marker, color=color, s=50)
    ax.annotate(r["label"], (r["bits_per_image"], r["mse"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
ax.set_xscale("log")
ax.set_xlabel("bits per image (log scale; float32 latents counted as 32 bits)")
ax.set_ylabel("held-out reconstruction MSE")
ax.set_title("Compact, lossless, discrete: pick two")
labels = [r["label"].replace(" grid", "") for r in rows if r["quantize"]]
ax2.bar(labels, [r["codes_used"] / r["num_codes"] for r in rows if r["quantize"]], color="tab:blue")
ax2.set_ylabel("fraction of the codebook used")
ax2.set_title("Codebook usage on held-out images")
ax2.tick_params(axis="x", rotation=30, labelsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# What the figure says, point by point (each is asserted below):
#
# - **Discrete and compact, not lossless**: every codebook point costs 64 to 512 bits, and every one
#   reconstructs worse than the continuous latents (2,048 and 8,192 bits) at the same grid.
# - **Lossless (nearly) and discrete, not compact**: the error falls as the grid grows (16 → 64
#   tokens), i.e. a discrete tokenizer buys fidelity with more tokens per image, which an LLM pays for
#   in sequence length (Emu3 spends thousands of tokens on one image).
# - **Compact and lossless, not discrete**: the continuous autoencoder is the most faithful at each
#   grid, but its latents are real numbers: no vocabulary, no softmax, nothing an LM can sample as a
#   word. This is chapter 9's road.
# - Without restarts the large codebook is mostly dead: the extra codes cost bits and buy nothing
#   (a bigger codebook is not free). With restarts the same budget uses far more of it.

# %%
assert claims["continuous_vs_best_discrete_8x8"] > 0 and claims["continuous_vs_best_discrete_4x4"] > 0
assert claims["grid_8x8_vs_4x4"] > 0
assert claims["restart_codes_gained"] > 0

# %% [markdown]
# ## Part 4: an LM that writes image tokens
#
# The codebook becomes vocabulary: `<img_0> .. <img_127>` plus `<boi>` / `<eoi>` (begin and end of
# image) are added to the course tokenizer as special tokens, and the LM's embedding table grows by
# 130 rows (`add_special_tokens_to_lm`, the step chapter 5 used for `<image>`). The LM is chapter 5's
# architecture (a `transformers` `LlamaForCausalLM`), 2 layers of width 96. One training sequence:

# %%
from mmllm_course.visual_tokens import request_for

caption = held.captions[0]
batch = image_lm.sequences([request_for(caption)], tokenizer.encode(held.images[:1]))
pieces = image_lm.tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
print(" ".join(p.replace("Ġ", "") for p in pieces[:20]), "...", " ".join(pieces[-3:]))
print("sequence length", batch["input_ids"].shape[1], "; the loss counts", int((batch["labels"] != -100).sum()), "positions (64 image tokens + <eoi>)")
print("vocabulary:", image_lm.text_vocab_size, "text tokens +", len(image_lm.tokenizer) - image_lm.text_vocab_size, "new ones")

# %% [markdown]
# Training was plain next-token prediction (cross-entropy) on 8,000 (request, image) pairs: no
# diffusion, no second model. To draw, we give the request and `<boi>`, and `transformers`'
# `generate` samples 64 tokens one by one with **temperature** (divide the logits before the softmax:
# below 1 sharpens, above 1 flattens) and **top-k** (sample among the k most likely only). A logits
# processor allows only image tokens after `<boi>`, so every sample is a full 8x8 grid; the tokenizer's
# decoder turns it into pixels. The judge is chapter 9's, a CNN trained on real images only.

# %%
from mmllm_course.visual_tokens import evaluate_image_lm
from mmllm_course.visual_tokens.pretrain import held_out_requests

requests, captions = held_out_requests(256)
gen = evaluate_image_lm(tokenizer, image_lm, judge, n=256, temperature=CHAPTER10.temperature, top_k=CHAPTER10.top_k, seed=0)
print(f"256 held-out requests, temperature {CHAPTER10.temperature}, top-k {CHAPTER10.top_k}:")
print(f"  colour {gen['generated_color']:.1%}, shape {gen['generated_shape']:.1%}, size {gen['generated_size']:.1%}, "
      f"position {gen['generated_position']:.1%}, colour and shape {gen['generated_color_shape']:.1%}")
print(f"  chance (the same images against shuffled requests): colour and shape {gen['chance_color_shape']:.1%}")
print(f"  {gen['distinct_grids']:.0%} of the token grids are distinct; {1000 * gen['seconds_per_image']:.1f} ms per image")
assert gen["generated_color"] > 0.9
assert gen["generated_color_shape"] > 0.5 and gen["generated_color_shape"] - gen["chance_color_shape"] > 0.3

# %%
show = ["draw a small red circle in the top left", "draw a large blue star in the bottom right",
        "draw a large green triangle in the top right", "draw a small yellow square in the bottom left"]
fig, axes = plt.subplots(4, 6, figsize=(9, 6.5))
for row, request in enumerate(show):
    images = tokenizer.decode(image_lm.generate([request] * 6, temperature=CHAPTER10.temperature, top_k=CHAPTER10.top_k, seed=row))
    for col in range(6):
        axes[row, col].imshow(images[col].permute(1, 2, 0).clamp(0, 1))
        axes[row, col].axis("off")
    axes[row, 0].set_title(request.replace("draw a ", ""), fontsize=8, loc="left")
fig.suptitle("Images written token by token (6 samples per request)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Part 5: continuous (chapter 9) and discrete (chapter 10), side by side
#
# Chapter 9's generator is a latent diffusion model driven by continuous conditioning; here we run it
# from the true captions' conditioning (its own metric), on the same kind of held-out requests.

# %%
from mmllm_course.generators import evaluate_generator, load_chapter9_generator, sampling_seconds_per_image

generator = load_chapter9_generator()
continuous = evaluate_generator(generator, judge, n=64)
seconds_continuous = sampling_seconds_per_image(generator, n=32)
print(f"{'':34}{'continuous (ch. 9)':>20}{'discrete (ch. 10)':>20}")
print(f"{'colour and shape correct':34}{continuous['color_shape']:>20.1%}{gen['generated_color_shape']:>20.1%}")
print(f"{'numbers per image':34}{'8x8x4 = 256 floats':>20}{'64 tokens of 7 bits':>20}")
print(f"{'network passes per image':34}{'10 DDIM x 2 (CFG)':>20}{'64 LM steps':>20}")
print(f"{'generation time per image (ms)':34}{1000 * seconds_continuous:>20.1f}{1000 * gen['seconds_per_image']:>20.1f}")

# %% [markdown]
# The discrete route needs nothing but the LM: one model, one loss, one sampler, and the same
# machinery writes text and images into one sequence (the point of Chameleon and Emu3). It pays in
# fidelity: everything passes through 448 bits, and here shape is lost first, while the continuous
# route's diffusion decoder keeps it. (Times are wall clock on this machine and are inflated
# when other work shares the CPU.)
#
# ## Bad input
#
# Images the tokenizer was not built for and token ids outside the codebook are refused with the sizes:

# %%
for bad in (lambda: tokenizer.encode(torch.rand(2, 3, 64, 64)), lambda: tokenizer.encode(torch.rand(2, 1, 32, 32)),
            lambda: tokenizer.decode(torch.full((1, 8, 8), 128))):
    try:
        bad()
    except ValueError as err:
        print("ValueError:", err)

# %%
print(f"notebook ran in {time.perf_counter() - START:.0f} s")

# %% [markdown]
# ## Where this shows up in real models
#
# - **VQ-VAE** ([van den Oord et al. 2017](https://arxiv.org/abs/1711.00937)) introduced the codebook,
#   the straight-through estimator and the two losses used here, with a PixelCNN over the codes as
#   the generator; **VQGAN** ([Esser et al. 2021](https://arxiv.org/abs/2012.09841)) made the codes
#   sharp with perceptual and adversarial losses and put a transformer over them.
# - **Chameleon** ([2024](https://arxiv.org/abs/2405.09818)) tokenizes a 512x512 image into 1,024
#   tokens of an 8,192-code VQ tokenizer and trains one transformer on interleaved text and image
#   tokens from the start ("early fusion"); **Emu3** ([2024](https://arxiv.org/abs/2409.18869)) does
#   next-token prediction only, for images and video, with a 32,768-code tokenizer.
# - **VideoPoet** ([Kondratyuk et al. 2023](https://arxiv.org/abs/2312.14125)) writes video and audio
#   as discrete tokens (MAGVIT-v2 and SoundStream) with one LLM. **Emu**
#   ([Sun et al. 2023](https://arxiv.org/abs/2307.05222)) predicts the next element of an interleaved
#   sequence but regresses *continuous* visual embeddings: the trade-off above, chosen the other way.
#
# ## Recap
#
# - Quantise: nearest code by squared distance; the token is the index. Straight-through:
#   `z + (z_q - z).detach()`. Losses: codebook $\lVert\mathrm{sg}[z]-e\rVert^2$ + commitment
#   $\beta\lVert z-\mathrm{sg}[e]\rVert^2$; diffusers' `legacy=True` swaps the weights. Ours matches
#   `VectorQuantizer(legacy=False)`.
# - A VQ-VAE tokenizer turns an image into a grid of integers (here 64 of 7 bits); codes nobody picks
#   die, restarts bring them back.
# - An LM writes images by next-token prediction once the codebook is in its vocabulary; sampling is
#   temperature and top-k as for text; the judge read colour on nearly every image, shape less often,
#   bounded by the tokenizer's own reconstructions.
# - Compact, lossless, discrete: pick two. Measured: codebooks are compact and discrete but lossy,
#   fidelity costs tokens, continuous latents are faithful but not words.
#
# **Exercises:** `exercises/10_discrete_visual_tokens.ipynb`: nearest-code lookup, the straight-through
# estimator, the VQ losses, images to tokens and back, a quantiser of your own loaded with the
# library's weights, a tokenizer of your own trained and measured, and checked questions.
