# %% [markdown]
# # 01 · Tokens and patches: text and images become vectors
#
# **By the end of this notebook you will be able to**
#
# - turn text into tokens, ids and embedding vectors with a byte-level BPE tokenizer you train
#   yourself, offline, and save and reload it like any Hugging Face tokenizer;
# - cut an image into patches, flatten them, and project them to tokens, and explain why that
#   projection *is* a strided convolution;
# - add a [CLS] token and position embeddings (learned or 2-D sine-cosine) and say what each is for;
# - predict how many tokens an image becomes, and what that costs in attention.
#
# This is part 1 of the five-part map (the modality encoder's input layer). After this chapter,
# text and images are the same kind of thing: a sequence of vectors `(B, L, D)`.
#
# **Papers this chapter teaches from**: byte-pair encoding for words,
# [Sennrich et al. 2016](https://arxiv.org/abs/1508.07909); its byte-level variant,
# [GPT-2 (Radford et al. 2019)](https://cdn.openai.com/better-language-models/language_models_are_unsupervised_multitask_learners.pdf);
# the Vision Transformer's patches, [CLS] token and learned positions,
# [Dosovitskiy et al. 2020](https://arxiv.org/abs/2010.11929); sine-cosine positions,
# [Vaswani et al. 2017](https://arxiv.org/abs/1706.03762), and their 2-D form in MAE,
# [He et al. 2021](https://arxiv.org/abs/2111.06377). Words in **bold** are in the course
# [glossary](../GLOSSARY.md).

# %%
import matplotlib.pyplot as plt
import torch

from mmllm_course import seed_everything

seed_everything(0)
torch.set_printoptions(precision=3, sci_mode=False)

# %% [markdown]
# ## Part 1: text
#
# A language model reads numbers, not letters. Text goes through three steps:
#
# `"a red circle"` → tokens `["a", "Ġred", "Ġcircle"]` → ids (integers, one per token) → vectors `(L, D)`.
#
# The `Ġ` is not a typo: it is how a byte-level tokenizer *prints* a space. It works on bytes, and
# to show every byte as a visible character it maps the unprintable ones to other characters; the
# space byte becomes `Ġ`. So `"Ġred"` means "space, then red": the space before a word belongs to
# that word's token.
#
# The **tokenizer** does the first two steps. Ours is a *byte-level BPE* (byte-pair encoding,
# [Sennrich et al. 2016](https://arxiv.org/abs/1508.07909), on bytes as in GPT-2): it starts from
# the 256 possible bytes, so any string can be encoded (no "unknown" token), and learns merges of
# frequent neighbours ("Ġc" + "ircle" → "Ġcircle") from a corpus until it reaches its vocabulary
# size. We train one in a second, on the course's small built-in corpus.

# %%
from mmllm_course.data.tokenizer import default_corpus, train_bpe_tokenizer

corpus = default_corpus()
print(f"{len(corpus)} training sentences, e.g. {corpus[0]!r}")
tokenizer = train_bpe_tokenizer(corpus, vocab_size=400)
print(type(tokenizer).__name__, "| vocabulary size:", len(tokenizer))

# %% [markdown]
# How a sentence splits: frequent words are one token; rare words break into pieces. Because the
# spaces are kept (as `Ġ`), decoding gives back the exact text.

# %%
sentence = "a big blue square in the top left"
tokens = tokenizer.tokenize(sentence)
ids = tokenizer(sentence)["input_ids"]
print("tokens:", tokens)
print("ids:   ", ids)
print("decoded back:", repr(tokenizer.decode(ids)))
print("an unseen word still encodes, in pieces:", tokenizer.tokenize("a chartreuse dodecahedron"))

# %% [markdown]
# The tokenizer is a standard `transformers` tokenizer: `save_pretrained` writes it to a folder and
# `AutoTokenizer.from_pretrained` reads it back, exactly as with any model on the Hub, but here
# nothing is downloaded.

# %%
import tempfile

from transformers import AutoTokenizer

with tempfile.TemporaryDirectory() as folder:
    tokenizer.save_pretrained(folder)
    reloaded = AutoTokenizer.from_pretrained(folder)
assert reloaded(sentence)["input_ids"] == ids
print("reloaded:", type(reloaded).__name__, "| same ids:", reloaded(sentence)["input_ids"] == ids)

# %% [markdown]
# ### Special and signal tokens
#
# Some tokens must never be split: padding, end of text, and the **signal tokens** that later chapters
# use to mark images in the text (`[IMG0]`, `[IMG1]`, ...; NExT-GPT,
# [Wu et al. 2023](https://arxiv.org/abs/2309.05519), uses such tokens to tell a generator "draw
# here"). They are added to the vocabulary as whole tokens, and the tokenizer matches them before
# BPE runs.
#
# Look for a lone `Ġ` just before `[IMG0]` below: the special token is matched as it is, so it cannot
# take the space in front of it; that space is left over and becomes a token of its own (a space and
# nothing else). Without the brackets, `IMG0` is ordinary text and splits into pieces.

# %%
from mmllm_course.data.tokenizer import shapes_tokenizer

tok = shapes_tokenizer(extra_special_tokens=["[IMG0]", "[IMG1]"])  # signal tokens added whole
text = "draw [IMG0] a red circle [IMG1]"
print("with signal tokens:", tok.tokenize(text))
print("the same letters, not a special token:", tok.tokenize("draw IMG0 a red circle"))
print("special tokens:", tok.all_special_tokens)
img0 = tok.convert_tokens_to_ids("[IMG0]")
assert tok.tokenize(text).count("[IMG0]") == 1
print("[IMG0] has the single id", img0, "| the lone space token 'Ġ' has the id", tok.convert_tokens_to_ids("Ġ"))

# %% [markdown]
# ### From ids to vectors
#
# The last step is a lookup table: `nn.Embedding(V, D)` holds one learned row of width `D` per id.
# A batch of `B` sequences of length `L` becomes `(B, L, D)`. (Padding makes the sequences the same
# length; the attention mask says which positions are real.)

# %%
from torch import nn

batch = tok(["a red circle", "a big blue square below a small green triangle"], padding=True, return_tensors="pt")
ids = batch["input_ids"]  # (B, L)
embedding = nn.Embedding(len(tok), 32)  # V rows of width D = 32
vectors = embedding(ids)  # (B, L, D)
print("ids", tuple(ids.shape), "-> vectors", tuple(vectors.shape))
print("attention mask:\n", batch["attention_mask"])
assert torch.equal(vectors[0, 1], embedding.weight[ids[0, 1]])  # row lookup, nothing more

# %% [markdown]
# ## Part 2: images
#
# An image has no words, so a Vision Transformer (ViT) makes its own "words": it cuts the image into
# `p x p` **patches**, and each patch becomes one token. Here is a real photo that ships with
# scikit-image, resized to 128x128, cut into 16x16 patches and numbered in the order the model reads
# them (row by row).

# %%
from mmllm_course.data.images import load_sample_image
from mmllm_course.viz.patches import show_patch_grid, show_patch_sequence

image = load_sample_image("astronaut", size=128)  # (3, H, W) float in [0, 1]
print("image", tuple(image.shape), image.dtype, f"values in [{image.min():.2f}, {image.max():.2f}]")
fig, ax = plt.subplots(figsize=(5.5, 5.5))
show_patch_grid(image, 16, ax=ax)
plt.show()

# %% [markdown]
# ### `patchify`: `(B, C, H, W) → (B, N, p·p·C)`
#
# With `N = (H/p)(W/p)` patches, each flattened to `p·p·C` numbers. The order is fixed: patches
# row-major, and inside a patch `(p1 p2 c)`, pixel rows, then pixels, with the colour channels of one
# pixel side by side. In einops notation the whole thing is one line:
#
# `rearrange(images, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)")`

# %%
from mmllm_course.encoders.patches import patchify, unpatchify

images = image[None]  # (B=1, C=3, H=128, W=128)
patches = patchify(images, 16)
print("images", tuple(images.shape), "-> patches", tuple(patches.shape), " (N = 8*8 = 64, 16*16*3 = 768)")
fig = plt.figure(figsize=(13, 4))
show_patch_sequence(image, 16, ax=fig.gca())
plt.show()

# %% [markdown]
# The same thing without einops, to see there is no magic: split each side into (grid, p), move the
# two grid axes to the front and the channels to the back, then flatten.

# %%
b, c, h, w, p = *images.shape, 16
by_hand = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(b, -1, p * p * c)
assert torch.equal(by_hand, patches)
print("reshape/permute version equals the library's patchify:", torch.equal(by_hand, patches))

# %% [markdown]
# `unpatchify` is the exact inverse: patchify only moves numbers around, so the round trip returns
# the very same image (maximum error 0, not "small").

# %%
restored = unpatchify(patches, 16, grid_h=8, grid_w=8)
max_error = (restored - images).abs().max().item()
print("round trip", tuple(restored.shape), "max error:", max_error)
assert max_error == 0.0

# %% [markdown]
# ### Patch embedding: one linear map per patch
#
# Each flattened patch $x_k \in \mathbb{R}^{p^2 C}$ becomes a token with one shared linear map:
#
# $$z_k = W x_k + b, \qquad W \in \mathbb{R}^{D \times p^2 C},\; b \in \mathbb{R}^D .$$
#
# `PatchEmbedding` does exactly that: `patchify`, then `nn.Linear(p*p*C, D)`.

# %%
from mmllm_course.encoders.patches import PatchEmbedding

patch_embed = PatchEmbedding(image_size=128, patch_size=16, in_channels=3, dim=64)
tokens = patch_embed(images)  # (B, N, D)
print("images", tuple(images.shape), "-> tokens", tuple(tokens.shape))
print("weight", tuple(patch_embed.proj.weight.shape), "= (D, p*p*C)")

# %% [markdown]
# ### ...which is a strided convolution
#
# A `Conv2d` with `kernel_size = stride = p` slides a `p x p` window that jumps a whole patch at a
# time: the windows tile the image without overlap, and at each one, output channel `d` is the dot
# product of its kernel `(C, p, p)` with the window's pixels, plus a bias. That is row `d` of `W`
# applied to the flattened patch. Same weights, same pixels, same sums; only the weight's layout
# differs (`(D, C, p, p)` for the conv, `(D, p·p·C)` for the linear map). That is why ViT
# checkpoints store the patch embedding as a conv. `to_conv2d` builds the twin; let's compare.

# %%
conv = patch_embed.to_conv2d()
print(conv)
feature_maps = conv(images)  # (B, D, H/p, W/p)
conv_tokens = feature_maps.flatten(2).transpose(1, 2)  # (B, N, D), same row-major order
diff = (conv_tokens - tokens).abs().max().item()
print("feature maps", tuple(feature_maps.shape), "-> tokens", tuple(conv_tokens.shape), f"| max difference {diff:.1e}")
assert torch.allclose(conv_tokens, tokens, atol=1e-5)

# %% [markdown]
# ### The [CLS] token and position embeddings
#
# A ViT prepends one extra learned vector, the **[CLS] token**, to the patch tokens: it holds no
# pixels, and after the transformer its output serves as a summary of the whole image (for
# classification, or as CLIP's image embedding).
#
# Then it adds a **position embedding** to every token. Why it needs one: the transformer block
# that reads these tokens (chapter 2 builds it) compares tokens by their content only; nothing in it
# says which token came first. Shuffle its input tokens and its outputs come out shuffled the same
# way, each one unchanged. The next cell checks that with the library's block on our 64 patch tokens.

# %%
from mmllm_course.nn.transformer import TransformerBlock

block = TransformerBlock(dim=64, num_heads=4).eval()  # chapter 2 explains what is inside
patch_tokens = patch_embed(images)  # (1, 64, 64): patch tokens, no positions yet
order = torch.randperm(patch_tokens.shape[1])  # a random shuffle of the 64 patches
with torch.no_grad():
    out, _ = block(patch_tokens)
    out_of_shuffled, _ = block(patch_tokens[:, order])
print("shuffle the input tokens -> the same outputs, shuffled:", torch.allclose(out_of_shuffled, out[:, order], atol=1e-5))
assert torch.allclose(out_of_shuffled, out[:, order], atol=1e-5)

# %% [markdown]
# So layout has to be written into the tokens themselves: add to each token a vector that depends
# on where its patch sits. `VisionEmbeddings` puts the three pieces together:
# `(B, C, H, W) → (B, 1 + N, D)`.

# %%
from mmllm_course.encoders.patches import VisionEmbeddings

vit_in = VisionEmbeddings(image_size=128, patch_size=16, dim=64, cls_token=True, position="learned")
x = vit_in(images)
print("images", tuple(images.shape), "-> tokens with [CLS]", tuple(x.shape), "=", vit_in.num_tokens, "tokens of width 64")
print("position embedding", tuple(vit_in.position_embedding.shape), "(one row per token, [CLS] included)")

# %% [markdown]
# Two kinds of position embedding:
#
# - **learned** (ViT, CLIP): one free vector per position, trained with the model. At initialisation
#   it is noise (the first heatmap below). After training, the ViT paper finds that nearby patches
#   have similar position vectors, and patches in the same row or column too: see the centre panel
#   of Figure 7 in [Dosovitskiy et al. 2020](https://arxiv.org/abs/2010.11929) (ViT-L/32). We do not
#   train a ViT in this chapter, so we cannot show it here.
# - **2-D sine-cosine** (MAE, [He et al. 2021](https://arxiv.org/abs/2111.06377), and others):
#   fixed, no parameters. The 1-D version comes from the original transformer
#   ([Vaswani et al. 2017](https://arxiv.org/abs/1706.03762)). Half of the channels encode the
#   patch's row `r`, half its column `c`, each with sines and cosines at `D/4` geometrically spaced
#   frequencies
#
# $$\omega_i = \frac{1}{10000^{\,i/(D/4)}}, \qquad i = 0, 1, \dots, D/4 - 1,$$
#
# $$\text{PE}(r, c) = [\sin(r\omega_i)_i,\ \cos(r\omega_i)_i,\ \sin(c\omega_i)_i,\ \cos(c\omega_i)_i] \in \mathbb{R}^D ,$$
#
# four blocks of `D/4` channels each. The order of the blocks is a convention, and codebases differ:
# the course (and its exercise) puts the **row first**, while MAE's reference code
# ([`util/pos_embed.py`](https://github.com/facebookresearch/mae/blob/main/util/pos_embed.py)) builds
# its grid with `np.meshgrid(grid_w, grid_h)`, so its first half encodes the **column**. Both work;
# they are not interchangeable. If you copy MAE's function into the exercise, the check tells you that
# your rows and columns are swapped.
#
# The heatmaps colour every patch of the 8x8 grid by the cosine similarity between its position
# vector and that of the starred patch.

# %%
from mmllm_course.nn.position import sincos_2d_position_embedding
from mmllm_course.viz.patches import plot_position_similarity, position_similarity

sincos = sincos_2d_position_embedding(8, 8, 64)  # (N, D), no [CLS] row
learned = vit_in.position_embedding[0, 1:].detach()  # (N, D): drop [CLS]
plot_position_similarity(learned, 8, 8, name="learned, at initialisation")
plt.show()
plot_position_similarity(sincos, 8, 8, name="2-D sine-cosine")
plt.show()

# %% [markdown]
# By construction, the sin-cos table has the structure the ViT paper reports for learned positions:
# similarity falls off with distance, along rows and columns. A number to confirm it, for the centre
# patch (row 4, column 4):

# %%
sim = position_similarity(sincos, 4 * 8 + 4, 8, 8)  # (8, 8)
print(f"neighbour (4, 5): {sim[4, 5]:.3f} | two away (4, 6): {sim[4, 6]:.3f} | far corner (0, 0): {sim[0, 0]:.3f}")
assert sim[4, 5] > sim[4, 6] > sim[0, 0]

# %% [markdown]
# ## How many tokens is an image?
#
# A square image of side `S` with patch size `p` gives $N = (S/p)^2$ tokens. Self-attention
# compares every token with every other, so its score matrix has $N^2$ entries (per head and per
# layer). Halving `p` gives 4x the tokens and a **16x larger score matrix**; the other parts of a
# transformer layer (the projections and the MLP, chapter 2) work on each token separately, so their
# cost grows 4x, with `N`. This is the image-token budget every multimodal model negotiates.

# %%
from mmllm_course.viz.patches import plot_token_count

print(f"{'patch p':>8} {'grid':>7} {'tokens N':>9} {'N^2 scores':>11}")
for p in (8, 14, 16, 32):
    n = (224 // p) ** 2
    print(f"{p:>8} {224 // p:>4}x{224 // p:<2} {n:>9} {n * n:>11,}")
plot_token_count(224, (8, 14, 16, 28, 32))
plt.show()

# %% [markdown]
# ### Explore it yourself
#
# Pick a patch size with the slider and watch the grid, the token count and the number of attention
# scores change. (In a static view of this notebook you see the first setting only; run it to use
# the slider.)

# %%
from mmllm_course.viz.patches import patch_size_explorer

explorer = patch_size_explorer(image)
explorer

# %% [markdown]
# ## Bad input gets a clear error
#
# The library checks its inputs and says what it expected and what it got, rather than failing deep
# inside a reshape. For example, 100 pixels cannot be cut into 16-pixel patches:

# %%
try:
    patchify(torch.rand(1, 3, 100, 100), 16)
except ValueError as err:
    print("ValueError:", err)
try:
    patch_embed(torch.rand(1, 1, 128, 128))  # a grey image for a 3-channel embedding
except ValueError as err:
    print("ValueError:", err)

# %% [markdown]
# ## Where this shows up in real models
#
# | model | input | patch | tokens into the model |
# |---|---|---|---|
# | ViT-B/16 | 224x224 | 16 | 224/16 = 14, 14² = 196 patches + [CLS] = **197** |
# | CLIP ViT-L/14 | 224x224 | 14 | 16² = 256 patches + [CLS] = **257** |
# | LLaVA-1.5 (CLIP ViT-L/14 at 336) | 336x336 | 14 | 24² = **576** image tokens in the LLM (the [CLS] output is dropped) |
# | Fuyu-8B | any size | 30 | no image encoder: each flattened patch goes through one linear map **straight into the LLM** |
#
# ViT-B/16 ([Dosovitskiy et al. 2020](https://arxiv.org/abs/2010.11929)) uses this chapter's input
# layer as it is: a strided-conv patch embedding with a bias, [CLS], learned positions. CLIP's image
# tower ([Radford et al. 2021](https://arxiv.org/abs/2103.00020)), and so LLaVA-1.5's
# ([Liu et al. 2023](https://arxiv.org/abs/2310.03744)), uses it with two differences: its patch
# convolution has **no bias**, and a **LayerNorm** is applied to the tokens before the first
# transformer block (`pre_layrnorm` in `transformers`); chapter 2 builds that encoder and loads CLIP
# weights into it. Fuyu ([Adept's announcement](https://www.adept.ai/blog/fuyu-8b)) keeps only the
# patch embedding: its patch tokens join the text tokens in the decoder, one "image newline" token
# ending each row of patches, so the LLM itself learns to see. The numbers in the table, computed:

# %%
for name, size, p, cls in [("ViT-B/16", 224, 16, 1), ("CLIP ViT-L/14", 224, 14, 1), ("LLaVA-1.5", 336, 14, 0)]:
    n = (size // p) ** 2
    print(f"{name:<14} {size}/{p} = {size // p:>2} per side -> {n} patches + {cls} [CLS] = {n + cls} tokens")

# %% [markdown]
# ## Our input layer equals the reference, on the same weights
#
# The README promises that every module of the course matches the reference implementation in
# `transformers`. Here is the check for this chapter: build a tiny **random** `transformers`
# `ViTModel` (nothing is downloaded: a config with small numbers), copy the weights of its input
# layer, `ViTEmbeddings`, into our `VisionEmbeddings` with the library's converter, and feed both
# the same images. The converter has to turn the conv kernel `(D, C, p, p)` into our linear weight
# `(D, p·p·C)` in the `(p1 p2 c)` order `patchify` uses; a wrong order would show up as a large
# difference.

# %%
from transformers import ViTConfig as HFViTConfig
from transformers import ViTModel

from mmllm_course.encoders.patches import vision_embeddings_from_vit

torch.manual_seed(0)
hf_config = HFViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32, patch_size=8)
hf_vit = ViTModel(hf_config).eval()
with torch.no_grad():  # random values everywhere: a zero-initialised bias or [CLS] could hide a mapping mistake
    for param in hf_vit.embeddings.parameters():
        param.normal_()
ours = vision_embeddings_from_vit(hf_vit.embeddings).eval()
pixels = torch.rand(4, 3, 32, 32)
with torch.no_grad():
    theirs_out, ours_out = hf_vit.embeddings(pixels), ours(pixels)  # (B, 1 + N, D) each
max_diff = (ours_out - theirs_out).abs().max().item()
scale = theirs_out.abs().max().item()  # outputs reach ~20 with these weights
print(f"transformers ViTEmbeddings {tuple(theirs_out.shape)} vs ours {tuple(ours_out.shape)} | max |difference| = {max_diff:.1e}"
      f" on outputs up to {scale:.0f} (relative {max_diff / scale:.0e})")
# Float32 keeps about 7 significant digits, and a convolution and a matrix product add the same 192
# products in different orders (which order depends on the CPU: AVX-512 and AVX2 kernels differ),
# so "equal" means equal to a few float32 roundings of the output's size.
assert max_diff < 1e-5 * scale

# The check can fail: the same kernel flattened in its stored (c p1 p2) order instead of (p1 p2 c).
wrong = vision_embeddings_from_vit(hf_vit.embeddings).eval()
with torch.no_grad():
    wrong.patch_embedding.proj.weight.copy_(hf_vit.embeddings.patch_embeddings.projection.weight.reshape(32, -1))
    wrong_diff = (wrong(pixels) - theirs_out).abs().max().item()
print(f"the same weights flattened in the wrong order: max |difference| = {wrong_diff:.1f}")
assert wrong_diff > 1e-2

# %% [markdown]
# ## Recap
#
# - Text → **tokens** (a byte-level BPE: 256 bytes plus learned merges; `Ġ` is a space) → ids →
#   rows of an embedding table: `(B, L, D)`. Special and signal tokens are never split.
# - An image → `N = (H/p)(W/p)` **patches** → one shared linear map, which is a conv with
#   `kernel_size = stride = p` → `(B, N, D)`.
# - A learned **[CLS]** token in front, and a **position embedding** added to every token, because
#   the transformer block itself cannot tell the order of its tokens (shown above). Learned or
#   sine-cosine; the order of the sin-cos blocks is a convention (rows first here, columns first in
#   MAE's code).
# - Halving the patch size gives 4x the tokens and a 16x larger attention score matrix.
# - Our `VisionEmbeddings` gives the same numbers as `transformers`' `ViTEmbeddings` on the same
#   weights.
#
# ## What comes next
#
# Now write these pieces yourself in `exercises/01_tokens_and_patches.ipynb`: the core functions
# (`patchify`, the patch embedding, the 2-D sine-cosine table), a whole `PatchEmbedding` module
# checked by loading the library's weights into it, a small classifier you train on your own patch
# tokens, byte-pair merges by hand compared with the `tokenizers` library, an optional stretch, and
# checked questions. Chapter 2 feeds these tokens to attention and builds the Vision Transformer
# and CLIP.
