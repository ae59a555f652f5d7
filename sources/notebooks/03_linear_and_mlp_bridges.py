# %% [markdown]
# # 03 · Bridges I: linear and MLP projectors
#
# **By the end of this notebook you will be able to**
#
# - say where the **bridge** (input projector) sits in a multimodal LLM and what it must produce:
#   `K` vectors of the LLM's width `D_llm` from `N` encoder features of width `D_in`;
# - write the two simplest bridges, MiniGPT-4's single linear layer and LLaVA-1.5's two-layer MLP
#   with a GELU, and load `transformers`' LLaVA projector weights into ours;
# - count a bridge's trainable parameters and the tokens it hands the LLM, for the mini models here
#   and for LLaVA-1.5's real sizes;
# - measure, on the frozen chapter-2 image encoder, what a single linear map can and cannot align,
#   and say when an MLP is worth it.
#
# This is part 2 of the five-part map, the **input projector**. Chapter 2 gave us a frozen image
# encoder; chapter 5 brings the language model. In between, the bridge is usually the only part
# that is trained at first.
#
# **Papers this chapter teaches from**: MiniGPT-4, [Zhu et al. 2023](https://arxiv.org/abs/2304.10592)
# (one linear layer); LLaVA, [Liu et al. 2023](https://arxiv.org/abs/2304.08485) (one linear layer)
# and LLaVA-1.5, [Liu et al. 2023b](https://arxiv.org/abs/2310.03744) (a two-layer MLP); the survey
# whose five-part map the course follows, [Zhang et al. 2024](https://arxiv.org/abs/2401.13601); the
# GELU, [Hendrycks & Gimpel 2016](https://arxiv.org/abs/1606.08415). Terms in **bold** are in the
# course [glossary](../GLOSSARY.md).

# %%
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from mmllm_course import seed_everything

seed_everything(0)
torch.set_printoptions(precision=3, sci_mode=False)

# %% [markdown]
# ## Where the bridge sits
#
# The encoder speaks its own language: chapter 2's ViT turns a 32x32 image into 16 patch vectors of
# width 64, arranged so that a contrastive loss was happy. The LLM reads token embeddings of *its*
# width, learned from text. The **bridge** (the survey's "input projector", box 2 below) translates:
#
# $$\underbrace{(B, N, D_\text{in})}_{\text{encoder features}} \xrightarrow{\ \text{bridge}\ } \underbrace{(B, K, D_\text{llm})}_{\text{LLM tokens}}$$
#
# Two things have to match. The **width** `D_llm`, or the LLM cannot take the vectors at all; and the
# **meaning**: the vectors must land where the LLM expects the words that describe the image. The
# first is a shape; the second is what training the bridge is for.

# %%
from mmllm_course.viz.course_map import draw_course_map

fig, ax = plt.subplots(figsize=(13, 3.6))
draw_course_map(ax, highlight=2)
ax.set_title("Part 2 of the map: the input projector (bridge)")
plt.show()

# %% [markdown]
# ## Dimension matching, with real shapes
#
# We load the frozen mini-CLIP that chapter 2 trained (shipped with the package) and look at what its
# image tower gives for 4 images: a [CLS] token and 16 patch tokens of width `D_in = 64`. LLaVA drops
# the [CLS] token and hands all `N = 16` patch tokens on. Suppose our LLM has width `D_llm = 128`.

# %%
from mmllm_course.data import generate_shapes
from mmllm_course.pretrained import load_chapter2_clip

clip, tokenizer = load_chapter2_clip()  # frozen, eval mode
encoder = clip.vision
images = generate_shapes(4, seed=123).images  # (4, 3, 32, 32)
with torch.no_grad():
    hidden = encoder(images).last_hidden_state  # (B, 1+N, D_in)
features = hidden[:, 1:]  # (B, N, D_in): the patch tokens, [CLS] dropped
print("encoder output", tuple(hidden.shape), "-> patch features", tuple(features.shape))
print("frozen:", not any(p.requires_grad for p in encoder.parameters()))

# %% [markdown]
# ## The linear bridge (MiniGPT-4)
#
# The smallest possible bridge is one matrix and a bias, applied to every feature token on its own:
#
# $$X_\text{llm} = X W^\top + b, \qquad W \in \mathbb{R}^{D_\text{llm}\times D_\text{in}},\ b \in \mathbb{R}^{D_\text{llm}}, \qquad (B, N, D_\text{in}) \to (B, N, D_\text{llm}),\ K = N.$$
#
# MiniGPT-4 connects a frozen BLIP-2 vision side (ViT + Q-Former, 32 output tokens of width 768) to
# a frozen Vicuna with exactly this, and trains nothing else; the first LLaVA put the same single
# linear layer on CLIP's patch tokens. The library's `LinearBridge` is an `nn.Linear` behind the
# interface every bridge shares: `forward(features, mask=None)` and `num_output_tokens(N)`.

# %%
from mmllm_course.bridges import LinearBridge, LinearBridgeConfig

torch.manual_seed(0)
linear = LinearBridge(LinearBridgeConfig(in_dim=64, out_dim=128))
tokens = linear(features)  # (B, K, D_llm)
by_hand = features @ linear.proj.weight.T + linear.proj.bias  # X W^T + b
print("W", tuple(linear.proj.weight.shape), "b", tuple(linear.proj.bias.shape), "| features", tuple(features.shape),
      "-> LLM tokens", tuple(tokens.shape), "| K =", linear.num_output_tokens(16))
print("max |bridge - X W^T - b| =", (tokens - by_hand).abs().max().item())
assert torch.allclose(tokens, by_hand, atol=1e-6) and tokens.shape == (4, 16, 128)

# %% [markdown]
# The LLM then reads these `K = 16` vectors exactly as it reads word embeddings: they are placed in
# the sequence next to the embedded text tokens (chapter 5 does it with a real LM). With a stand-in
# embedding table of width 128 and a 6-token prompt, the sequence the LLM sees is `(B, K + L, D_llm)`:

# %%
embedding_table = torch.nn.Embedding(len(tokenizer), 128)  # a stand-in for the LLM's own table
prompt = torch.randint(0, len(tokenizer), (4, 6))  # (B, L) token ids
sequence = torch.cat([tokens, embedding_table(prompt)], dim=1)  # (B, K + L, D_llm)
print("image tokens", tuple(tokens.shape), "+ text tokens", tuple(embedding_table(prompt).shape), "->", tuple(sequence.shape))

# %% [markdown]
# A linear map can rotate, stretch, project and shift the encoder's space, nothing more: parallel
# lines stay parallel, and the midpoint of two features maps to the midpoint of their outputs.
# Whatever the encoder and the LLM disagree on in a **non-linear** way, it cannot fix. That is the
# claim we test below.
#
# ## The MLP bridge (LLaVA-1.5)
#
# LLaVA-1.5 replaced LLaVA's linear layer with two layers and a GELU between them, and reported that
# this stronger connector improved the model's multimodal abilities:
#
# $$h = \operatorname{GELU}(X W_1^\top + b_1)\ \ (B, N, F), \qquad X_\text{llm} = h W_2^\top + b_2\ \ (B, N, D_\text{llm}), \qquad K = N,$$
#
# with the hidden width `F = D_llm` in LLaVA-1.5 (`mlp2x_gelu` in its code). The order matters:
# linear, GELU, linear; the output has no activation, so it can take any value an embedding can.
# The GELU ([Hendrycks & Gimpel 2016](https://arxiv.org/abs/1606.08415)) is
# $\operatorname{GELU}(x) = x\,\Phi(x)$, with $\Phi$ the standard normal CDF: a smooth ReLU.
# `MLPBridge` takes `depth` (the number of linear layers; 2 is LLaVA-1.5's) and `hidden_dim`.

# %%
from mmllm_course.bridges import MLPBridge, MLPBridgeConfig

torch.manual_seed(0)
mlp = MLPBridge(MLPBridgeConfig(in_dim=64, out_dim=128))  # hidden_dim None -> F = D_llm = 128
first, second = mlp.layers  # nn.Linear(64, 128), nn.Linear(128, 128)
h = F.gelu(features @ first.weight.T + first.bias)  # (B, N, F)
by_hand = h @ second.weight.T + second.bias  # (B, N, D_llm)
print(mlp.layers, "| activation:", mlp.act)
print("features", tuple(features.shape), "-> hidden", tuple(h.shape), "-> LLM tokens", tuple(mlp(features).shape))
print("max |bridge - by hand| =", (mlp(features) - by_hand).abs().max().item())
assert torch.allclose(mlp(features), by_hand, atol=1e-6)

# %% [markdown]
# ## Our MLP bridge equals LLaVA's projector, on the same weights
#
# `transformers`' `LlavaMultiModalProjector` is LLaVA-1.5's bridge (`linear_1`, `act`, `linear_2`).
# Offline, we build one from a small config (widths 64 and 128, random weights, nothing downloaded),
# copy its weights into our `MLPBridge` with `mlp_bridge_from_transformers` (it also accepts a whole
# `LlavaForConditionalGeneration` or a saved folder) and compare outputs on the same features.

# %%
from transformers import LlavaConfig
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from mmllm_course.bridges import mlp_bridge_from_transformers

torch.manual_seed(0)
llava_config = LlavaConfig(vision_config=dict(model_type="clip_vision_model", hidden_size=64, num_attention_heads=4),
                           text_config=dict(model_type="llama", hidden_size=128, num_attention_heads=4))
hf_projector = LlavaMultiModalProjector(llava_config).eval()
with torch.no_grad():  # perturb the biases, so that a mapping mistake cannot hide behind small values
    for param in hf_projector.parameters():
        if param.dim() == 1:
            param.add_(0.3 * torch.randn_like(param))
ours = mlp_bridge_from_transformers(hf_projector).eval()
x = torch.randn(3, 16, 64)
with torch.no_grad():
    difference = (ours(x) - hf_projector(x)).abs().max().item()
print(hf_projector)
print("converted:", ours.config)
print(f"transformers LlavaMultiModalProjector vs ours, max |difference|: {difference:.1e}")
assert difference < 1e-5

# %% [markdown]
# ## Counting parameters and tokens
#
# Both bridges keep `K = N`: every feature token becomes one LLM token, so the bridge decides the
# LLM's *width* but not its *sequence length* (chapter 4's bridges change that). Their trainable
# parameters:
#
# $$\text{linear: } D_\text{in} D_\text{llm} + D_\text{llm}, \qquad \text{MLP: } D_\text{in} F + F + F D_\text{llm} + D_\text{llm}.$$
#
# The cell below checks the formulas against the modules and then applies them at real sizes. It
# builds the large bridges on PyTorch's `meta` device: shapes only, no memory, no arithmetic.
# LLaVA-1.5 reads CLIP ViT-L/14 at 336 px: `(336/14)^2 = 576` patch tokens of width 1024, into
# Vicuna-7B's width 4096. MiniGPT-4 reads the Q-Former's 32 tokens of width 768; with Vicuna-7B
# that is again width 4096.

# %%
from mmllm_course.bridges import make_bridge


def bridge_parameters(in_dim: int, out_dim: int, hidden_dim: int | None = None) -> int:
    """Trainable parameters of a linear bridge (hidden_dim None) or a two-layer MLP bridge."""
    if hidden_dim is None:
        return in_dim * out_dim + out_dim
    return in_dim * hidden_dim + hidden_dim + hidden_dim * out_dim + out_dim


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


assert count(linear) == bridge_parameters(64, 128) and count(mlp) == bridge_parameters(64, 128, 128)
rows = [  # name, N, D_in, D_llm, F (None = linear)
    ("ours: linear", 16, 64, 128, None),
    ("ours: MLP", 16, 64, 128, 128),
    ("MiniGPT-4 (Q-Former -> Vicuna-7B): linear", 32, 768, 4096, None),
    ("LLaVA (CLIP-L/14-224 -> 7B): linear", 256, 1024, 4096, None),
    ("LLaVA-1.5 (CLIP-L/14-336 -> 7B): MLP", 576, 1024, 4096, 4096),
]
print(f"{'bridge':<44} {'N -> K':>11} {'D_in -> D_llm':>14} {'parameters':>12}")
for name, n, d_in, d_llm, hidden in rows:
    with torch.device("meta"):
        bridge = make_bridge("linear", in_dim=d_in, out_dim=d_llm) if hidden is None else \
            make_bridge("mlp", in_dim=d_in, out_dim=d_llm, hidden_dim=hidden)
    assert count(bridge) == bridge_parameters(d_in, d_llm, hidden)
    print(f"{name:<44} {f'{n} -> {bridge.num_output_tokens(n)}':>11} {f'{d_in} -> {d_llm}':>14} {count(bridge):>12,}")

# %% [markdown]
# Twenty-one million parameters sounds like a lot until you set it beside the 7 billion of the LLM
# it feeds: a bridge is cheap to train. What costs is `K`: LLaVA-1.5 spends 576 of the LLM's
# context positions on every image, and the LLM's attention grows with the square of the sequence.
#
# ## What can a linear bridge align? An experiment
#
# We have no LLM yet (chapter 5), so we build a stand-in for its embedding space that makes the
# question sharp. Each of the shapes world's **160 captions** ("a small red circle in the top left",
# ...) gets one fixed **random unit vector** of width `D_out = 64`: "the LLM's embedding of that
# caption". The bridge reads the frozen chapter-2 features of an image and must land nearest the
# target of the image's caption:
#
# - features: the encoder's pooled vector per image, `(n, 1, 64)` (`N = 1`), for 8,000 training
#   images and 2,000 **held-out** images drawn with another seed. (LLaVA feeds every patch token;
#   one pooled token per image keeps the experiment small and fast, and the question is the same:
#   which maps from the encoder's space to the target space can the bridge represent?)
# - score: mean over the bridge's `K` outputs, L2-normalise, cosine with every target; the loss is
#   the cross-entropy of `20 x cosine` against the right caption, the accuracy the share of images
#   whose nearest target is their own (chance: 1/160).
#
# Random targets are harder than a real LLM's embeddings, which have structure. They are chosen to
# show the difference between the two bridges clearly, not to imitate an LLM. The library's
# `mmllm_course.bridges.alignment` builds the task and trains a bridge on it
# (`make_alignment_task`, `train_bridge`, `alignment_accuracy`); chapter 4 and the exercises use it too.

# %%
from mmllm_course.bridges.alignment import alignment_accuracy, make_alignment_task, train_bridge  # noqa: F401

task = make_alignment_task(encoder, train_size=8000, held_out_size=2000, out_dim=64, seed=0)
print("train features", tuple(task.train_features.shape), "| held-out features", tuple(task.held_out_features.shape),
      "| targets", tuple(task.targets.shape))
print("e.g. image 0:", repr(task.classes[task.train_labels[0]]))

# %% [markdown]
# Two bridges of the **same size**: the linear one (`64 x 64 + 64 = 4,160` parameters) and an MLP
# with a hidden width of 32 (`64 x 32 + 32 + 32 x 64 + 64 = 4,192`), plus a wide MLP (hidden width
# 256, 33,088 parameters). Same data, same optimiser (AdamW, learning rate 3e-3, 1,000 steps of
# 256 images), same seed. To see *when* the difference appears, the same images are also scored
# against coarser target sets: one random target per colour x shape (20 targets), per
# size x colour x shape (40), per colour x shape x position (80), and the 160 captions.
#
# `compare_bridges` runs all of it (9 trainings of a few seconds each); the benchmark calls the same
# function with other seeds.

# %%
from mmllm_course.bridges.alignment import bridge_comparison_failures, compare_bridges

result = compare_bridges(seed=0, task=task, progress=True)
print(f"{'targets':<22} {'classes':>7} {'linear':>8} {'MLP (same size)':>16}")
for group, classes in result.num_classes.items():
    print(f"{group:<22} {classes:>7} {result.accuracy[group + '/linear']:>8.1%} {result.accuracy[group + '/mlp']:>16.1%}")
print(f"wide MLP on the 160 captions: {result.accuracy['caption/mlp_wide']:.1%} | parameters: {result.parameters}")
print("training seconds per bridge:", {k: round(v, 1) for k, v in result.seconds.items()})

# %%
acc = result.accuracy
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
for key, label in [("caption/linear", "linear (4,160 params)"), ("caption/mlp", "MLP, hidden 32 (4,192)"),
                   ("caption/mlp_wide", "MLP, hidden 256 (33,088)")]:
    losses = torch.tensor(result.losses[key])
    smooth = losses.unfold(0, 25, 25).mean(1)  # mean of every 25 steps
    ax1.plot(torch.arange(len(smooth)) * 25 + 12, smooth, label=f"{label}: {acc[key]:.0%} held-out")
ax1.set_xlabel("training step")
ax1.set_ylabel("cross-entropy (mean of 25 steps)")
ax1.set_title("Training on 160 caption targets")
ax1.legend()
classes = list(result.num_classes.values())
ax2.plot(classes, [acc[g + "/linear"] for g in result.num_classes], "o-", label="linear bridge")
ax2.plot(classes, [acc[g + "/mlp"] for g in result.num_classes], "s-", label="MLP bridge, same size")
ax2.axvline(task.in_dim + 1, color="grey", ls=":", label="D_in + 1 = 65")
ax2.set_xscale("log", base=2)
ax2.set_xticks(classes, [str(c) for c in classes])
ax2.set_ylim(0, 1.02)
ax2.set_xlabel("number of random targets (classes)")
ax2.set_ylabel("held-out accuracy")
ax2.set_title("Where a linear bridge stops keeping up")
ax2.legend(loc="lower left")
plt.tight_layout()
plt.show()

# %% [markdown]
# Read the two panels together. On 160 caption targets the linear bridge stays far below the MLP of
# the same size; on 20 or 40 targets the two are within a few points; between 40 and 80 the gap
# opens. Is the linear bridge **underfitting** or **overfitting**? Its accuracy on its own training
# images answers that:

# %%
for key in ("caption/linear", "caption/mlp", "color_shape/linear"):
    print(f"{key:<20} train {result.train_accuracy[key]:.1%} | held-out {result.accuracy[key]:.1%}")
assert result.train_accuracy["caption/linear"] < 0.6 < result.train_accuracy["caption/mlp"]

# %% [markdown]
# The linear bridge does not even fit the images it was trained on: its training accuracy is low
# too, far below the MLP's. It is not overfitting (regularisation would not help); the map itself
# falls short. Why 160 targets fail and 20 work comes down to counting.
#
# A linear bridge sends the mean feature $\mu_c$ of class `c` to $W\mu_c + b$. An affine map of
# $\mathbb{R}^{64}$ can send up to $D_\text{in} + 1 = 65$ points in general position anywhere we
# like; with more points than that, the points are affinely dependent (one is a weighted combination
# of others) and their images must obey the same combination: $W(\sum_j a_j\mu_j) + b = \sum_j a_j (W\mu_j + b)$
# when $\sum_j a_j = 1$. Random targets obey no such relation. With 20 or 40 classes the class means
# are independent and a linear map can place each one on its target; with 80 or 160 they cannot be.
# The cell checks the independence (the rank of the centred class means) for each target set:

# %%
from mmllm_course.bridges.alignment import TARGET_GROUPS, regroup_task

pooled = task.train_features[:, 0]  # (n, D_in)
for group, attributes in TARGET_GROUPS.items():
    t = regroup_task(task, attributes)
    means = torch.stack([pooled[t.train_labels == c].mean(0) for c in range(t.num_classes)])  # (C, D_in)
    rank = torch.linalg.matrix_rank(means - means.mean(0), rtol=1e-4).item()
    independent = rank == t.num_classes - 1
    print(f"{group:<22} C = {t.num_classes:>3}: affine rank of the class means {rank:>2} of {t.num_classes - 1} "
          f"({'independent: a linear map can place every class mean on its target' if independent else 'dependent'})")
    assert independent == (t.num_classes <= task.in_dim + 1)

# %% [markdown]
# The class means span 63 directions, not 64: the encoder's final LayerNorm leaves every pooled
# feature on a 63-dimensional plane (before its learned scale and shift, the normalised channels of
# a vector sum to zero), so a linear bridge on these features can place at most 64 class means freely. Either way, 20 and 40 fit and 80 and 160
# do not, which is where the accuracy curves part.
#
# The MLP is not bound by this: the GELU bends the space, so points that are combinations of one
# another need not map to combinations of their targets. With the **same number of parameters** it
# reaches the 160 targets. The counting argument says when a linear bridge *must* fail (more
# classes than `D_in + 1`); how far it falls in practice is what the run measured.
#
# What this means for real models, carefully: an LLM's embedding space is not random, and a real
# encoder's features are much wider (1024 for CLIP-L), so a linear bridge goes a long way, which is
# why MiniGPT-4 and the first LLaVA worked at all. LLaVA-1.5 found the MLP better on its benchmarks;
# this experiment shows one mechanism that can produce such a gap, in a setting small enough to see.
#
# ## Results (checked)
#
# The notebook fails if these measured facts do not hold. Each bar holds on the worst of 5 seeds
# (other images, targets, initial weights and batch order): seeds 0-4 measured the linear bridge at
# 41.2-45.1% and the same-size MLP at 93.9-95.3% on 160 targets (a gap of 49-53 points), a gap of
# 21-26 points on 80 targets, 2.0-2.6 points on 40, and at most 1.1 points on 20 targets, where the
# linear bridge reached 95.4-96.7%. `python -m mmllm_course.bench --seeds 5` re-measures them.

# %%
print({k: f"{v:.1%}" for k, v in acc.items()})
assert acc["caption/mlp"] - acc["caption/linear"] >= 0.40, "the MLP should beat the linear bridge by 40 points on 160 targets"
assert acc["caption/mlp"] >= 0.90 and acc["caption/linear"] <= 0.55
assert acc["color_shape_position/mlp"] - acc["color_shape_position/linear"] >= 0.15
assert abs(acc["size_color_shape/mlp"] - acc["size_color_shape/linear"]) <= 0.05
assert abs(acc["color_shape/mlp"] - acc["color_shape/linear"]) <= 0.03 and acc["color_shape/linear"] >= 0.90
assert bridge_comparison_failures(acc) == []  # the same bars, as the benchmark checks them

# %% [markdown]
# ## Where this shows up in real models
#
# - **MiniGPT-4** ([Zhu et al. 2023](https://arxiv.org/abs/2304.10592)): a frozen EVA-CLIP ViT and
#   BLIP-2's frozen Q-Former give 32 tokens; one trained linear layer maps them into a frozen
#   Vicuna. **LLaVA** ([Liu et al. 2023](https://arxiv.org/abs/2304.08485)): one linear layer on
#   CLIP ViT-L/14's patch tokens.
# - **LLaVA-1.5** ([Liu et al. 2023b](https://arxiv.org/abs/2310.03744)): the two-layer MLP with a
#   GELU, hidden width = the LLM's width, on 576 patch tokens; `transformers` calls it
#   `LlavaMultiModalProjector`, and our `MLPBridge` holds its weights exactly.
# - Newer small VLMs (Idefics3, SmolVLM, nanoVLM) first merge neighbouring patch tokens
#   (pixel shuffle) to cut `K`, then project: chapter 4, with the query-based bridges (BLIP-2's
#   Q-Former, Flamingo's Perceiver Resampler) that produce a fixed `K` whatever `N` is.
#
# ## Recap
#
# - A bridge maps encoder features `(B, N, D_in)` to LLM tokens `(B, K, D_llm)`; linear and MLP
#   bridges act on each token on its own, so `K = N`.
# - Linear (MiniGPT-4, LLaVA): $XW^\top + b$, `D_in D_llm + D_llm` parameters. MLP (LLaVA-1.5):
#   linear, GELU, linear, `D_in F + F + F D_llm + D_llm` parameters. Our `MLPBridge` equals
#   `transformers`' LLaVA projector on the same weights.
# - Measured on the frozen chapter-2 encoder with random targets: at equal size, the MLP beat the
#   linear bridge by about 50 points on 160 targets and matched it (within about a point) on 20;
#   the gap opened between 40 and 80 targets, around `D_in + 1 = 65`, where a linear map runs out of
#   independent directions. The linear bridge underfits: it cannot fit its own training images.
# - A bridge is cheap in parameters next to an LLM; its cost is the `K` tokens it adds to every
#   sequence.
#
# **Exercises:** `exercises/03_linear_and_mlp_bridges.ipynb`: the MLP bridge's forward, counting
# parameters and tokens, an MLP bridge module that takes the library's weights, a bridge you train
# into this chapter's target space with your own loop, and a deeper MLP as a stretch, all checked.
