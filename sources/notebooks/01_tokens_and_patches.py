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
# The **tokenizer** does the first two. Ours is a *byte-level BPE* (byte-pair encoding, as in GPT-2):
# it starts from the 256 possible bytes, so any string can be encoded (no "unknown" token), and
# learns merges of frequent neighbours ("Ġc" + "ircle" → "Ġcircle") from a corpus until it reaches
# its vocabulary size. We train one in a second, on the course's small built-in corpus.

# %%
from mmllm_course.data.tokenizer import default_corpus, train_bpe_tokenizer

corpus = default_corpus()
print(f"{len(corpus)} training sentences, e.g. {corpus[0]!r}")
tokenizer = train_bpe_tokenizer(corpus, vocab_size=400)
print(type(tokenizer).__name__, "| vocabulary size:", len(tokenizer))

# %% [markdown]
# How a sentence splits: frequent words are one token; rare words break into pieces. `Ġ` marks a
# token that starts with a space (byte-level BPE keeps the spaces, so decoding is exact).

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
# use to mark images in the text (`[IMG0]`, `[IMG1]`, ...; NExT-GPT uses such tokens to tell a
# generator "draw here"). They are added to the vocabulary as whole tokens, and the tokenizer matches
# them before BPE runs.

# %%
from mmllm_course.data.tokenizer import shapes_tokenizer

tok = shapes_tokenizer(extra_special_tokens=["[IMG0]", "[IMG1]"])  # signal tokens added whole
text = "draw [IMG0] a red circle [IMG1]"
print("with signal tokens:", tok.tokenize(text))
print("the same letters, not a special token:", tok.tokenize("draw IMG0 a red circle"))
print("special tokens:", tok.all_special_tokens)
img0 = tok.convert_tokens_to_ids("[IMG0]")
assert tok.tokenize(text).count("[IMG0]") == 1
print("[IMG0] has the single id", img0)

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
# Then it adds a **position embedding** to every token. Self-attention treats its input as a *set*:
# shuffle the patches and the outputs shuffle the same way. Adding a vector that depends on where
# the patch sits is what tells the model about layout. `VisionEmbeddings` puts the three together:
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
#   it is noise; a trained ViT ends up with neighbours that look alike.
# - **2-D sine-cosine** (MAE and others): fixed, no parameters. Half of the channels encode the
#   patch's row, half its column, each with sines and cosines at geometrically spaced frequencies
#   $\omega_i = 1/10000^{i/(D/4)}$:
#
# $$\text{PE}(r, c) = [\sin(r\omega),\ \cos(r\omega),\ \sin(c\omega),\ \cos(c\omega)] \in \mathbb{R}^D .$$
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
# The sin-cos table already has the structure a trained ViT learns: similarity falls off with
# distance, along rows and columns. A number to confirm it, for the centre patch (row 4, column 4):

# %%
sim = position_similarity(sincos, 4 * 8 + 4, 8, 8)  # (8, 8)
print(f"neighbour (4, 5): {sim[4, 5]:.3f} | two away (4, 6): {sim[4, 6]:.3f} | far corner (0, 0): {sim[0, 0]:.3f}")
assert sim[4, 5] > sim[4, 6] > sim[0, 0]

# %% [markdown]
# ## How many tokens is an image?
#
# A square image of side `S` with patch size `p` gives $N = (S/p)^2$ tokens. Self-attention
# compares every token with every other, so its score matrix has $N^2$ entries: halving `p` gives
# 4x the tokens and about **16x** the attention cost. This is the image-token budget every
# multimodal model negotiates.

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
# Pick a patch size and watch the grid, the token count and the attention cost change. (In a
# static view of this notebook you see the first setting only; run it to use the dropdown.)

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
# The first three use exactly this chapter's input layer (a strided-conv patch embedding, [CLS],
# learned positions) before a transformer encoder; chapter 2 builds that encoder. Fuyu keeps only the
# patch embedding: its patch tokens join the text tokens in the decoder, one "image newline" token
# ending each row of patches, so the LLM itself learns to see. The numbers in the table, computed:

# %%
for name, size, p, cls in [("ViT-B/16", 224, 16, 1), ("CLIP ViT-L/14", 224, 14, 1), ("LLaVA-1.5", 336, 14, 0)]:
    n = (size // p) ** 2
    print(f"{name:<14} {size}/{p} = {size // p:>2} per side -> {n} patches + {cls} [CLS] = {n + cls} tokens")

# %% [markdown]
# ## What comes next
#
# Now write these pieces yourself: `exercises/01_tokens_and_patches.ipynb` asks for `patchify`,
# the patch embedding and the 2-D sine-cosine table, each checked against the library, plus four
# checked questions. Chapter 2 feeds these tokens to attention and builds the Vision Transformer
# and CLIP.
