# %% [markdown]
# # 04 · Bridges II: learned queries (Q-Former, Perceiver Resampler) and token merging
#
# **By the end of this notebook you will be able to**
#
# - explain how **learned queries** and **cross-attention** turn any number `N` of image features into
#   a fixed number `K` of LLM tokens, with the shapes of every step;
# - build BLIP-2's **Q-Former**, Flamingo's **Perceiver Resampler** and the **token merging** (pixel
#   shuffle) of Idefics3 and SmolVLM from the library, and show that each one computes exactly what
#   `transformers`' implementation computes on the same weights;
# - train a Q-Former on the frozen chapter-2 encoder and look at where its queries read the image;
# - weigh the **token budget**: what each of the five bridges costs the language model, measured.
#
# This is part 2 of the five-part map, the **input projector** ("bridge"), continued from chapter 3
# (linear and MLP bridges, which keep one LLM token per patch).
#
# **Papers this chapter teaches from**: BLIP-2 and its Q-Former,
# [Li et al. 2023](https://arxiv.org/abs/2301.12597); Flamingo and its Perceiver Resampler,
# [Alayrac et al. 2022](https://arxiv.org/abs/2204.14198), built on the Perceiver,
# [Jaegle et al. 2021](https://arxiv.org/abs/2103.03206); Idefics2's resampler,
# [Laurençon et al. 2024](https://arxiv.org/abs/2405.02246); Idefics3's pixel shuffle,
# [Laurençon et al. 2024b](https://arxiv.org/abs/2408.12637), also used by SmolVLM,
# [Marafioti et al. 2025](https://arxiv.org/abs/2504.05299), and by
# [nanoVLM](https://github.com/huggingface/nanoVLM). Terms in **bold** are in the course
# [glossary](../GLOSSARY.md).

# %%
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from mmllm_course import seed_everything

seed_everything(0)
torch.set_printoptions(precision=3, sci_mode=False)

# %% [markdown]
# ## Part 1: why a bridge would want fewer tokens
#
# A linear or MLP bridge (chapter 3) hands the LLM one token per patch: `K = N`. The number of
# patches grows with the square of the resolution, `N = (image_size / patch_size)^2`:
#
# | image | patch | N |
# |---|---|---|
# | 32 x 32 (the shapes world, chapter 2's encoder) | 8 | 16 |
# | 224 x 224 (ViT-B/16) | 16 | 196 |
# | 336 x 336 (LLaVA-1.5's CLIP ViT-L/14) | 14 | 576 |
# | 224 x 224 in 8-pixel patches | 8 | 784 |
#
# Every one of those tokens passes through every layer of the LLM, and self-attention compares every
# token with every other, so an LLM layer costs roughly `a·L + b·L²` for a sequence of `L` tokens.
# Several images, or video frames, multiply `N` again. Two answers from the literature:
#
# - **read the image with a fixed number of learned queries** (BLIP-2's Q-Former, Flamingo's
#   Perceiver Resampler): `K` is a hyper-parameter, independent of `N`;
# - **merge neighbouring tokens** (Idefics3, SmolVLM, nanoVLM): `K = N / r²`, still proportional to
#   `N`, but `r²` times smaller, with nothing thrown away.
#
# ## Part 2: learned queries and cross-attention
#
# Chapter 2's attention had queries, keys and values from the same tokens. In **cross-attention**
# the queries come from one sequence and the keys and values from another. Here the queries are `K`
# **learned queries** $Z \in \mathbb{R}^{K\times D}$ (parameters, the same for every image), and the
# keys and values come from the image features $X \in \mathbb{R}^{N\times D_{in}}$:
#
# $$Q = Z W_Q \in \mathbb{R}^{K\times d},\quad K_X = X W_K \in \mathbb{R}^{N\times d},\quad V_X = X W_V \in \mathbb{R}^{N\times d},
# \qquad \text{out} = \operatorname{softmax}\!\Big(\frac{Q K_X^\top}{\sqrt d}\Big) V_X \in \mathbb{R}^{K\times d}.$$
#
# The weights are `(K, N)`: each query spreads one unit of attention over the `N` features. The
# product with `(N, d)` sums over `N`, so the output has **one row per query**, whatever `N` is.
# A padding mask (images of different sizes in one batch) sets the scores of padded features to
# `-inf`, exactly as in chapter 2. Below, 8 queries read 16 features, then 784.

# %%
g = torch.Generator().manual_seed(0)
K, D_in, d = 8, 64, 32
queries = torch.randn(K, d, generator=g)  # Z W_Q, already projected: (K, d)
w_k, w_v = torch.randn(D_in, d, generator=g) / 8, torch.randn(D_in, d, generator=g) / 8

for n in (16, 784):
    features = torch.randn(n, D_in, generator=g)  # X: (N, D_in)
    weights = (queries @ (features @ w_k).T / math.sqrt(d)).softmax(dim=-1)  # (K, N)
    out = weights @ (features @ w_v)  # (K, N) @ (N, d) -> (K, d)
    print(f"N = {n:3d} features -> weights {tuple(weights.shape)} -> output {tuple(out.shape)}; rows of the weights sum to "
          f"{weights.sum(-1).min():.3f}..{weights.sum(-1).max():.3f}")
    assert out.shape == (K, d)

# %% [markdown]
# ## Part 3: the Q-Former (BLIP-2)
#
# BLIP-2 ([Li et al. 2023](https://arxiv.org/abs/2301.12597)) keeps the image encoder and the LLM
# frozen and trains only a **Q-Former** between them: a small BERT-shaped transformer whose input is
# `K` learned query tokens (32 in BLIP-2). Each layer lets the queries talk to each other
# (self-attention), read the image (cross-attention, in BLIP-2 every second layer), then transforms
# each query on its own (feed-forward). A linear layer (`language_projection`) maps the result to the
# LLM's width. BERT is **post-norm**: the LayerNorm comes after each residual sum.
#
# $$q_0 = \mathrm{LN}(Z), \qquad
# \begin{aligned} q &\leftarrow \mathrm{LN}\big(q + \mathrm{SelfAttn}(q)\big) &&(B, K, D)\\
# q &\leftarrow \mathrm{LN}\big(q + \mathrm{CrossAttn}(q, X)\big) &&(B, K, D) \times (B, N, D_{in})\\
# q &\leftarrow \mathrm{LN}\big(q + \mathrm{MLP}(q)\big) &&(B, K, D)\end{aligned}
# \qquad \text{tokens} = q W_{proj} + b \in \mathbb{R}^{B\times K\times D_{llm}}.$$
#
# (BLIP-2 trains the Q-Former first with image-text losses in which text tokens also enter it; as a
# bridge only the queries do, and that is the part the library implements.) The library's
# `QFormerBridge`, with the chapter-2 encoder's width in (64) and an LLM width of 128 out:

# %%
from mmllm_course.bridges import QFormerBridge, QFormerBridgeConfig

qformer = QFormerBridge(QFormerBridgeConfig(in_dim=64, out_dim=128, dim=64, num_queries=8, depth=2, num_heads=4))
for name, param in list(qformer.named_parameters())[:4] + list(qformer.named_parameters())[-2:]:
    print(f"{name:<34} {tuple(param.shape)}")
print(f"... {len(list(qformer.parameters()))} tensors, {sum(p.numel() for p in qformer.parameters()):,} parameters")
x = torch.randn(2, 16, 64)  # (B, N, D_in): 2 images of 16 patch features
print("features", tuple(x.shape), "-> tokens", tuple(qformer(x).shape), "| cross-attention maps",
      [tuple(m.shape) for m in qformer.cross_attention_maps(x)], "(B, H, K, N) per layer")

# %% [markdown]
# **Parity with BLIP-2.** A tiny random `Blip2ForConditionalGeneration` (nothing downloaded), every
# parameter perturbed so that a weight mapped to the wrong place cannot hide behind an init of 0 or 1.
# `qformer_bridge_from_transformers` copies its `query_tokens`, `qformer` and `language_projection`
# into our modules; we compare the tokens on the same features, without and with a padding mask.

# %%
import transformers

from mmllm_course.bridges import qformer_bridge_from_transformers


def perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Add noise to every parameter (LayerNorm scales and biases included), then eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=gen))
    return model.eval()


tiny = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
torch.manual_seed(0)
hf_blip2 = perturb(transformers.Blip2ForConditionalGeneration(transformers.Blip2Config(
    vision_config=dict(tiny, image_size=32, patch_size=8),
    qformer_config=dict(tiny, vocab_size=100, cross_attention_frequency=2, encoder_hidden_size=32),
    text_config=dict(model_type="opt", vocab_size=100, hidden_size=48, num_hidden_layers=1, ffn_dim=64,
                     num_attention_heads=4, word_embed_proj_dim=48),
    num_query_tokens=8)))
ours_qformer = qformer_bridge_from_transformers(hf_blip2).eval()

features = torch.randn(3, 16, 32, generator=g)
mask = torch.ones(3, 16, dtype=torch.long)
mask[1, 9:], mask[2, 4:] = 0, 0  # images 1 and 2 padded to 9 and 4 real features
with torch.no_grad():
    for m in (None, mask):
        hf_q = hf_blip2.qformer(query_embeds=hf_blip2.query_tokens.expand(3, -1, -1), encoder_hidden_states=features,
                                encoder_attention_mask=m).last_hidden_state
        ref_tokens = hf_blip2.language_projection(hf_q)
        diff = (ours_qformer(features, m) - ref_tokens).abs().max().item()
        print(f"Blip2QFormerModel + language_projection vs ours ({'with' if m is not None else 'no'} padding mask): "
              f"tokens {tuple(ref_tokens.shape)}, max |difference| = {diff:.1e}")
        assert diff < 1e-5

# %% [markdown]
# ## Part 4: the Perceiver Resampler (Flamingo, Idefics2)
#
# Flamingo ([Alayrac et al. 2022](https://arxiv.org/abs/2204.14198)) reads the image with `K = 64`
# learned **latents**, in a stack of layers with one difference from the Q-Former: a single
# attention whose keys and values are the **concatenation** of the media features and the latents.
# The same softmax spreads each latent's weight over the image *and* over the other latents, so one
# attention does both jobs of the Q-Former's two. It is **pre-norm** (the norm inside each branch, as
# in chapter 2's ViT), with a final norm:
#
# $$x = X W_{in} \in \mathbb{R}^{N\times D}, \qquad
# \begin{aligned} z &\leftarrow z + \mathrm{Attn}\big(q = \mathrm{N}(z),\ kv = [\mathrm{N}'(x); \mathrm{N}(z)]\big) &&(K, D) \times (N + K, D)\\
# z &\leftarrow z + \mathrm{MLP}(\mathrm{N}''(z)) \end{aligned}
# \qquad \text{tokens} = \mathrm{N}_{final}(z) \in \mathbb{R}^{K\times D}.$$
#
# Idefics2 ([Laurençon et al. 2024](https://arxiv.org/abs/2405.02246)) uses the same design with
# RMSNorm, a gated SiLU feed-forward and **grouped-query attention** (fewer key/value heads than
# query heads). The library's `PerceiverResamplerBridge` does both (`norm`, `mlp`, `num_kv_heads`);
# parity with `transformers`' `Idefics2PerceiverResampler`, with a padding mask:

# %%
from transformers.models.idefics2.modeling_idefics2 import Idefics2PerceiverResampler

from mmllm_course.bridges import perceiver_resampler_bridge_from_transformers

torch.manual_seed(0)
hf_resampler = perturb(Idefics2PerceiverResampler(transformers.Idefics2PerceiverConfig(
    hidden_size=32, resampler_n_latents=8, resampler_depth=2, resampler_n_heads=4, resampler_head_dim=8,
    num_key_value_heads=2)))
ours_resampler = perceiver_resampler_bridge_from_transformers(hf_resampler).eval()
print(f"ours: norm={ours_resampler.config.norm!r}, mlp={ours_resampler.config.mlp!r}, "
      f"{ours_resampler.config.num_heads} query heads sharing {ours_resampler.config.num_kv_heads} key/value heads")
with torch.no_grad():
    ref_latents = hf_resampler(context=features, attention_mask=mask)
    diff = (ours_resampler(features, mask) - ref_latents).abs().max().item()
print(f"Idefics2PerceiverResampler vs ours (padding mask): latents {tuple(ref_latents.shape)}, max |difference| = {diff:.1e}")
assert diff < 1e-5

# %% [markdown]
# ## Part 5: token merging, or pixel shuffle (Idefics3, SmolVLM, nanoVLM)
#
# The newest small VLMs use no queries at all. **Pixel shuffle** (space-to-depth) puts every
# `r x r` block of neighbouring patch tokens side by side into one token of width `r² · D`, then a
# linear layer maps it to the LLM's width:
#
# $$(B,\ S\cdot S,\ D) \xrightarrow{\text{grid}} (B, S, S, D) \xrightarrow{r\times r \text{ blocks}} (B,\ (S/r)^2,\ r^2 D) \xrightarrow{W} (B,\ K = N/r^2,\ D_{llm}).$$
#
# Nothing is averaged or dropped: the information of the `r²` tokens is all there, in the channels.
# Idefics3 uses `r = 2` on top of SigLIP; SmolVLM merges more aggressively (a larger `r`). The channel order inside a
# merged token matters (a checkpoint's projection expects its own): it is (row offset, column
# offset, channel), the einops pattern `b (h r1 w r2) d -> b (h w) (r1 r2 d)`. On a 4x4 grid of
# tokens numbered 0..15 with one channel each, `r = 2`:

# %%
from mmllm_course.bridges import pixel_shuffle

grid = torch.arange(16.0).view(1, 16, 1)  # (B=1, N=16, D=1): token i holds the number i
print("tokens on the 4x4 grid:\n", grid.view(4, 4).int())
merged = pixel_shuffle(grid, 2)  # (1, 4, 4): 4 tokens, each the 4 numbers of a 2x2 block
print("after pixel shuffle (one row per merged token):\n", merged[0].int())
assert merged[0, 0].tolist() == [0, 1, 4, 5]  # the top-left 2x2 block: row offset first, then column

# %% [markdown]
# **Parity with Idefics3.** `transformers`' `Idefics3Connector` (its own pixel shuffle with views
# and permutes, then a bias-free linear layer) against the library's `TokenMergeBridge` on the same
# weights:

# %%
from transformers.models.idefics3.modeling_idefics3 import Idefics3Connector

from mmllm_course.bridges import token_merge_bridge_from_transformers

torch.manual_seed(0)
connector = perturb(Idefics3Connector(transformers.Idefics3Config(
    vision_config=dict(tiny, image_size=32, patch_size=8), scale_factor=2,
    text_config=dict(model_type="llama", vocab_size=100, hidden_size=48, intermediate_size=64, num_hidden_layers=1,
                     num_attention_heads=4, num_key_value_heads=2))))
ours_merge = token_merge_bridge_from_transformers(connector).eval()
with torch.no_grad():
    ref_merged = connector(features)
    diff = (ours_merge(features) - ref_merged).abs().max().item()
    shuffle_equal = torch.equal(pixel_shuffle(features, 2), connector.pixel_shuffle(features, 2))
print(f"Idefics3Connector vs ours: tokens {tuple(ref_merged.shape)} from 16 features, max |difference| = {diff:.1e}; "
      f"pixel shuffles identical: {shuffle_equal}")
assert diff < 1e-5 and shuffle_equal

# %% [markdown]
# ## Part 6: K whatever N
#
# The five bridges behind one interface (`make_bridge(name, ...)`, chapter 3): each maps features
# `(B, N, 64)` to tokens `(B, K, 128)` and says its `K` for a given `N` (`num_output_tokens`). The
# 16 features are the real output of the chapter-2 encoder on 32x32 images; the other sizes are
# random features of the same width (that encoder's learned positions exist for 16 patches only):
# 196 = 224x224 in 16-pixel patches, 576 = LLaVA-1.5's 336x336 in 14-pixel patches, 784 = 224x224
# in 8-pixel patches. The query bridges must give the LLM `K = 8` tokens every time.

# %%
from mmllm_course.bench_bridges import TABLE_BRIDGES
from mmllm_course.bridges import make_bridge
from mmllm_course.data import generate_shapes
from mmllm_course.pretrained import load_chapter2_clip

clip, tokenizer = load_chapter2_clip()  # frozen, eval mode
images = generate_shapes(4, seed=0).images
with torch.no_grad():
    patch_features = clip.vision(images).last_hidden_state[:, 1:]  # (4, 16, 64): the patch tokens, [CLS] dropped

bridges = {name: make_bridge(name, in_dim=64, out_dim=128, **extra).eval() for name, extra in TABLE_BRIDGES.items()}
print(f"{'N':>5} " + " ".join(f"{name:>12}" for name in bridges))
for n in (16, 196, 576, 784):
    x = patch_features if n == 16 else torch.randn(4, n, 64, generator=g)
    with torch.no_grad():
        ks = {name: bridge(x).shape[1] for name, bridge in bridges.items()}
    print(f"{n:>5} " + " ".join(f"{k:>12}" for k in ks.values()))
    assert all(ks[name] == bridges[name].num_output_tokens(n) for name in bridges)
    assert ks["qformer"] == ks["resampler"] == 8, f"the query bridges gave {ks['qformer']} and {ks['resampler']} tokens for N={n}"
    assert ks["linear"] == ks["mlp"] == n and ks["token_merge"] == n // 4

# %% [markdown]
# ## Part 7: train a Q-Former on the frozen encoder, and look where its queries read
#
# A random Q-Former's attention says nothing. We train one on a task that needs the whole picture:
# from the 16 patch features of the **frozen** chapter-2 encoder (`pooled=False`: no pooled vector,
# the bridge must read the patches itself), produce tokens whose mean lands nearest the fixed target
# vector of the image's caption (160 captions: size x colour x shape x position), the alignment task
# of chapter 3. Only the Q-Former trains. The quality comparison between bridges on a real task
# (captioning with a frozen LM) is chapter 5's, where the LM exists; here the training only gives the
# queries something to look for.

# %% [markdown]
# The run, written once in `mmllm_course.bench_bridges` so that the benchmark can repeat it on other
# seeds (`python -m mmllm_course.bench --seeds 5`): `train_chapter4_qformer(seed)` builds the task
# with `make_alignment_task(pooled=False, seed=seed)` (8,000 training and 2,000 held-out images,
# never trained on), seeds the Q-Former's initial weights, and trains it with chapter 3's
# `train_bridge` (AdamW, batches of 128, cross-entropy of 20 x the cosine between the mean token and
# each target), on one CPU thread (matrices this small gain nothing from two, and lose a lot when the
# machine is busy). The cell asserts 90% held-out accuracy over the 160 captions; on 5 seeds (other
# images, targets, initial weights and batch order) this recipe measured 94.8% to 96.5%.

# %%
from mmllm_course.bench_bridges import (
    CHAPTER4_ACCURACY_BAR,
    CHAPTER4_PEAK_RATIO,
    CHAPTER4_QUERY_CORRELATION,
    CHAPTER4_QFORMER,
    CHAPTER4_TRAIN,
    evaluate_chapter4_qformer,
    train_chapter4_qformer,
)

print("Q-Former:", CHAPTER4_QFORMER, "| training:", CHAPTER4_TRAIN)
run = train_chapter4_qformer(seed=0, progress=True)
metrics = evaluate_chapter4_qformer(run)
print(f"features {tuple(run.task.train_features.shape)} -> tokens (n, {CHAPTER4_QFORMER['num_queries']}, "
      f"{CHAPTER4_QFORMER['out_dim']}) | {len(run.losses)} steps in {run.seconds:.0f} s | "
      f"held-out accuracy {metrics['accuracy']:.1%} over {run.task.num_classes} captions (chance {1 / run.task.num_classes:.1%})")

fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(run.losses, alpha=0.4, label="loss per step")
ax.plot(range(19, len(run.losses)), torch.tensor(run.losses).unfold(0, 20, 1).mean(1), label="running mean of 20")
ax.set_xlabel("step")
ax.set_ylabel("cross-entropy")
ax.set_title("Training the Q-Former on frozen patch features")
ax.legend()
plt.show()
assert metrics["accuracy"] >= CHAPTER4_ACCURACY_BAR, f"held-out accuracy {metrics['accuracy']:.1%} < {CHAPTER4_ACCURACY_BAR:.0%}"

# %% [markdown]
# ### Where the queries look
#
# The cross-attention weights of the last layer, averaged over the 4 heads: for each query, a 4x4 map
# over the patches (brighter = more weight), laid over the image.

# %%
from mmllm_course.viz.bridges import plot_query_attention, query_attention_grids

show = torch.arange(4)
grids = query_attention_grids(run.bridge, run.task.held_out_features[show])  # (4, K, 4, 4)
plot_query_attention(run.held_out.images[show], grids, captions=[run.held_out.captions[i] for i in show])
plt.show()

# %% [markdown]
# Two things to read in these maps, each measured below on 500 held-out images rather than four (with
# the caveat of chapter 2: attention weights say where a layer reads, not what the model uses):
#
# - **where** the queries look: not sharp masks around the shape, and they need not be: the encoder's
#   two attention layers already mixed information from the whole image into every patch token, so
#   the colour or the shape can be read in more than one place. The cell measures the share of a
#   query's weight on the patches the shape touches, and how often its most-attended patch is one of
#   them, against the share those patches would get from evenly spread attention;
# - **how alike** the queries are: the task scores the *mean* of the `K` tokens, so nothing asks the
#   queries to divide the work between them. The cell measures the correlation between two queries'
#   maps of the same image (1 = the same map). In BLIP-2 the LLM reads each of the 32 tokens as a
#   token of its own, so different queries can carry different information; here they have no reason to.

# %%
print(f"attention on the shape's patches: {metrics['attention_on_shape']:.1%} | most-attended patch on the shape: "
      f"{metrics['peak_on_shape']:.1%} | if spread evenly: {metrics['attention_uniform']:.1%}")
print(f"correlation between two queries' maps of the same image: {metrics['query_map_correlation']:.2f}")
assert metrics["peak_on_shape"] > CHAPTER4_PEAK_RATIO * metrics["attention_uniform"]
assert metrics["query_map_correlation"] > CHAPTER4_QUERY_CORRELATION

# %% [markdown]
# ## Part 8: the token budget, measured
#
# The same five bridges on the same frozen encoder's features (width 64), each followed by the same
# small `transformers` causal LM (a random `LlamaForCausalLM`, width 128, 2 layers: only its cost
# matters here, not what it says) that reads the bridge's `K` image tokens plus 16 text tokens. For a
# 32x32 image (`N = 16`, the chapter-2 encoder's) and a 224x224 image in the same 8-pixel patches
# (`N = 784`), `bridge_comparison_table` reports the bridge's trainable parameters, `K`, the FLOPs of
# the bridge and of the LM (counted by `torch.utils.flop_counter.FlopCounterMode`: the matrix
# products, 2 per multiply-add) and the LM's measured forward time on a batch of 8. Times are
# medians on this machine and move with its load; the FLOPs do not.

# %%
from mmllm_course.bench_bridges import bridge_comparison_table, format_bridge_table, lm_time_by_tokens
from mmllm_course.viz.bridges import plot_token_budget

table = bridge_comparison_table(patch_counts=(16, 784), min_run_time=0.1)
print(format_bridge_table(table))
row = {(r["bridge"], r["N"]): r for r in table}

# %%
curve = lm_time_by_tokens(image_tokens=(32, 64, 392), min_run_time=0.1, known=table)  # more K, the table's reused
plot_token_budget(table, curve)
plt.show()

# %% [markdown]
# What the table and the curve show, checked:
#
# - at `N = 784`, a linear or MLP bridge hands the LM 784 image tokens: the LM's FLOPs per sequence
#   are more than 30 times those it spends behind a query bridge (8 tokens), and its measured time is
#   several times longer;
# - a query bridge's own FLOPs grow with `N` (its cross-attention reads every feature), but what the
#   LM pays does not change at all between `N = 16` and `N = 784`;
# - token merging divides the LM's tokens by `r² = 4`, not more: 196 at `N = 784`;
# - the query bridges are the largest in parameters (a whole small transformer), the linear bridge
#   the smallest.

# %%
for name in ("qformer", "resampler"):
    assert row[(name, 784)]["K"] == row[(name, 16)]["K"] == 8
    assert row[(name, 784)]["lm_mflops"] == row[(name, 16)]["lm_mflops"]
    assert row[(name, 784)]["bridge_mflops"] > 5 * row[(name, 16)]["bridge_mflops"]
assert row[("linear", 784)]["lm_mflops"] > 30 * row[("qformer", 784)]["lm_mflops"]
assert row[("linear", 784)]["lm_ms"] > 3 * row[("qformer", 784)]["lm_ms"], "timing: the LM on 800 tokens was not slower than on 24"
assert row[("token_merge", 784)]["K"] == 196
params = {name: row[(name, 16)]["params"] for name in TABLE_BRIDGES}
assert min(params, key=params.get) == "linear" and max(params, key=params.get) in ("qformer", "resampler")
print("parameters:", params)

# %% [markdown]
# ## Where this shows up in real models
#
# - **BLIP-2** ([Li et al. 2023](https://arxiv.org/abs/2301.12597)): a Q-Former of 12 BERT-base layers
#   (188M parameters), 32 queries of width 768, cross-attention every second layer, between a frozen
#   ViT (a ViT-L/14 gives 257 features per image) and a frozen OPT or Flan-T5. InstructBLIP feeds the
#   instruction's text into the Q-Former too, so the queries look for what the question asks.
# - **Flamingo** ([Alayrac et al. 2022](https://arxiv.org/abs/2204.14198)): a Perceiver Resampler
#   with 64 latents per image or video, whose tokens the frozen LM reads through gated
#   cross-attention layers (chapter 6), not in its input sequence. **Idefics2**
#   ([Laurençon et al. 2024](https://arxiv.org/abs/2405.02246)) puts a resampler's 64 tokens per
#   image into the LM's input sequence instead (chapter 5's way).
# - **Idefics3** ([Laurençon et al. 2024b](https://arxiv.org/abs/2408.12637)), **SmolVLM**
#   ([Marafioti et al. 2025](https://arxiv.org/abs/2504.05299)) and **nanoVLM**: pixel shuffle then
#   a linear layer (Idefics3: `r = 2`, 676 SigLIP tokens of a 364x364 image become 169); LLaVA-1.5
#   keeps all 576 tokens with an MLP (chapter 3).
#   Qwen2-VL merges 2x2 neighbours with an MLP, the same idea.
#
# ## Recap
#
# - Cross-attention with `K` learned queries: weights `(K, N)`, output `(K, d)`: the number of tokens
#   is the number of queries, whatever `N` is (asserted for N = 16 to 784).
# - The Q-Former (BLIP-2): post-norm, self-attention among the queries, cross-attention to the image,
#   feed-forward, then a linear map to the LLM's width. The Perceiver Resampler (Flamingo, Idefics2):
#   pre-norm, one attention over `[media; latents]`, final norm. Pixel shuffle (Idefics3, SmolVLM):
#   `r x r` neighbours side by side, `K = N / r²`, channel order `(r1 r2 d)`. All three equal
#   `transformers`' implementations on the same weights.
# - A Q-Former trained on the frozen chapter-2 encoder's patches reaches the accuracy printed above
#   on held-out images. Its queries' most-attended patch falls on the shape more often than chance,
#   and the queries look alike, since this task scores only the mean of their tokens; attention maps
#   stay a heuristic view of what the queries read.
# - The token budget: the LLM pays for `K`, not `N`. Query bridges fix `K` at the price of the most
#   parameters and a bridge cost that grows with `N`; token merging divides `K` by `r²` and keeps
#   every feature. Which one gives the better model is a question for a real task: captioning
#   through a frozen LM, chapter 5's.
#
# **Exercises:** `exercises/04_query_bridges.ipynb`: cross-attention of queries over features, one
# resampler layer, pixel shuffle, counting tokens; a Q-Former of your own that takes the library's
# weights; a query bridge you train yourself on the frozen encoder; grouped-query attention as a stretch.
