# %% [markdown]
# # 03 · Exercises: linear and MLP bridges
#
# Read chapter 3 (`notebooks/03_linear_and_mlp_bridges.ipynb`) first. The exercises come in four parts:
#
# 1. **Core** (exercises 1-2): the MLP bridge's forward pass from its weights, and a bridge's budget
#    (its trainable parameters and the tokens it gives the LLM).
# 2. **Build** (exercise 3): a whole MLP bridge module. The check loads the library's `MLPBridge`
#    weights into yours, so your parameters must carry the library's names, and compares outputs and
#    gradients.
# 3. **Train** (exercise 4): train a bridge of your choice into the chapter's target space with your
#    own loop, until it places 85% of new images on their caption's target (a few seconds of training).
# 4. **Stretch** (exercise 5, optional): an MLP bridge of any depth.
#
# Then four checked questions. Each exercise ends with `check(...)`: it runs your code next to the
# library's and prints **pass**, **todo**, **fail** (with what was expected and what came back, and
# the usual mistake when it recognises it) or **error**.
#
# Dims: `B` batch, `N` feature tokens, `D_in` the encoder's width, `F` the MLP's hidden width,
# `D_llm` the LLM's width, `K` the tokens the bridge gives the LLM.

# %%
import torch
import torch.nn.functional as F  # noqa: F401  (you may use it)
from torch import nn

from mmllm_course.grading import check

_ = torch.manual_seed(0)

# %% [markdown]
# ## Part 1: core functions
#
# ## Exercise 1: `mlp_bridge_forward`
#
# LLaVA-1.5's bridge, written with the weights handed to you: two linear layers with the **exact**
# GELU between them and nothing after the second, applied to every feature token on its own:
#
# $$h = \operatorname{GELU}(X W_1^\top + b_1)\quad (B, N, F), \qquad Y = h W_2^\top + b_2\quad (B, N, D_\text{llm}).$$
#
# The weights are stored as `nn.Linear` stores them, `(out, in)`: `w1 (F, D_in)`, `b1 (F,)`,
# `w2 (D_llm, F)`, `b2 (D_llm,)`. The check uses float32 and float64 inputs (the output follows the
# input's dtype), and some cases where `D_in = F = D_llm`, so a mix-up of the layers does not simply
# raise a shape error.

# %%
def mlp_bridge_forward(features: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
                       b2: torch.Tensor) -> torch.Tensor:
    """features (B, N, D_in), w1 (F, D_in), b1 (F,), w2 (D_llm, F), b2 (D_llm,) -> LLM tokens (B, N, D_llm)."""
    # BEGIN SOLUTION
    h = F.gelu(features @ w1.T + b1)  # (B, N, F)
    return h @ w2.T + b2  # (B, N, D_llm)
    # END SOLUTION


# %%
check("ch03.mlp_forward", mlp_bridge_forward)

# %% [markdown]
# ## Exercise 2: `bridge_budget`
#
# Before you train a bridge, know what it costs. Write `bridge_budget(kind, image_size, patch_size,
# in_dim, llm_dim, hidden_dim=None)` returning the pair `(parameters, K)`:
#
# - `kind` is `"linear"` (one `nn.Linear(in_dim, llm_dim)` with a bias) or `"mlp"` (LLaVA-1.5's two
#   layers with biases, `in_dim -> F -> llm_dim`, where `F = hidden_dim`, or `llm_dim` when
#   `hidden_dim` is None);
# - `parameters`: the number of trainable parameters (weights and biases) as an `int`;
# - `K`: the number of tokens the LLM reads per image when the bridge sits on a ViT with square
#   images of `image_size` pixels cut into `patch_size` patches. Like LLaVA, drop the [CLS] token:
#   only the patch tokens go through the bridge, and both bridges keep one token per feature token.
#
# The check compares with the library's bridges at small and at real sizes (LLaVA-1.5:
# CLIP-L/14 at 336 px into a 4096-wide LLM).

# %%
def bridge_budget(kind: str, image_size: int, patch_size: int, in_dim: int, llm_dim: int,
                  hidden_dim: int | None = None) -> tuple[int, int]:
    """(trainable parameters, K) of a "linear" or "mlp" bridge on a ViT's patch tokens."""
    # BEGIN SOLUTION
    k = (image_size // patch_size) ** 2  # patch tokens; [CLS] dropped; K = N
    if kind == "linear":
        return in_dim * llm_dim + llm_dim, k
    hidden = llm_dim if hidden_dim is None else hidden_dim
    return in_dim * hidden + hidden + hidden * llm_dim + llm_dim, k
    # END SOLUTION


# %%
check("ch03.bridge_budget", bridge_budget)

# %% [markdown]
# ## Part 2: build the module
#
# ## Exercise 3: `MyMLPBridge`
#
# Now the whole module, with the interface every bridge of the library shares. The check **builds
# your class** as `MyMLPBridge(64, 96, 48)`, `MyMLPBridge(32, 48, None)` and `MyMLPBridge(24, 40, 16)`,
# **loads the weights of the library's** `mmllm_course.bridges.MLPBridge` (same sizes) into it with
# `load_state_dict(..., strict=True)`, and compares outputs and gradients on three inputs. So:
#
# - `__init__(in_dim, out_dim, hidden_dim=None)`: `self.layers = nn.ModuleList([nn.Linear(in_dim, F),
#   nn.Linear(F, out_dim)])` with `F = hidden_dim`, or `out_dim` when None (the parameter names are
#   then `layers.0.weight`, `layers.0.bias`, `layers.1.weight`, `layers.1.bias`, the library's);
# - `forward(features, mask=None)`: features `(B, N, in_dim)` -> `(B, N, out_dim)`: first layer,
#   exact GELU, second layer. (A padding mask, when given, changes nothing for a token-wise bridge;
#   you may ignore it.) A feature width other than `in_dim` must raise a **`ValueError`** whose
#   message names the expected width and the one that came, before any arithmetic: the error a
#   learner can act on, not torch's "mat1 and mat2 shapes cannot be multiplied";
# - `num_output_tokens(n)`: `K` for `n` feature tokens.

# %%
class MyMLPBridge(nn.Module):
    """LLaVA-1.5's projector: features (B, N, in_dim) -> Linear -> GELU -> Linear -> (B, N, out_dim)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int | None = None):
        super().__init__()
        # BEGIN SOLUTION
        self.in_dim, self.out_dim = in_dim, out_dim
        hidden = out_dim if hidden_dim is None else hidden_dim
        self.layers = nn.ModuleList([nn.Linear(in_dim, hidden), nn.Linear(hidden, out_dim)])
        # END SOLUTION

    def num_output_tokens(self, n: int) -> int:
        """K for n feature tokens."""
        # BEGIN SOLUTION
        return n
        # END SOLUTION

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """features (B, N, in_dim) -> (B, N, out_dim)."""
        # BEGIN SOLUTION
        if features.shape[-1] != self.in_dim:
            raise ValueError(f"features must be (B, N, {self.in_dim}), got shape {tuple(features.shape)}")
        return self.layers[1](F.gelu(self.layers[0](features)))
        # END SOLUTION


# %%
check("ch03.mlp_bridge", MyMLPBridge)

# %% [markdown]
# ## Part 3: train a bridge
#
# ## Exercise 4: 85% in the chapter's target space, with your own loop
#
# The chapter's experiment, now yours. The task below holds the **frozen** chapter-2 features of
# 8,000 training images (pooled: `(n, 1, 64)`, one token per image), the caption class of each
# image (`task.train_labels`, 160 classes) and the 160 fixed random targets (`task.targets (160, 64)`,
# "the LLM's embedding of each caption"). Train a bridge that maps a feature to its caption's target.
#
# Write `train_my_bridge()`: build a bridge of **your choice** (your `MyMLPBridge`, the library's
# `make_bridge(...)`, or your own module) mapping `(B, 1, 64)` to `(B, K, 64)`, and train it with
# **your own loop**: draw a batch of training features and labels, run the bridge, score it as the
# chapter does and take a step. The chapter's score and loss:
#
# $$\text{logits} = 20 \cdot \cos\!\Big(\tfrac{1}{K}\textstyle\sum_k \text{out}_k,\ \text{target}_c\Big)
# \ \ (B, 160), \qquad \mathcal{L} = \operatorname{CE}(\text{logits}, \text{label}),$$
#
# i.e. average the output tokens, L2-normalise the mean and the targets (`F.normalize`), multiply
# the cosines by 20 and take the cross-entropy against the labels. What the chapter found: AdamW at
# learning rate `3e-3`, batches of 256, a few hundred steps (about two seconds on a laptop CPU).
# Return the trained bridge.
#
# **What the check does:** it never trains. It draws 2,000 new images with its own seed, takes the same
# frozen pooled features, runs your bridge and counts the images whose output is nearest (by
# cosine) their own caption's target among the 160 (`task.targets`, the targets of
# `make_alignment_task(seed=0)`). The bar is **85%** (chance: 0.6%). Choose your bridge with the
# chapter's results in mind.

# %%
from mmllm_course.bridges import make_bridge  # noqa: F401  (you may use it)
from mmllm_course.bridges.alignment import alignment_accuracy, make_alignment_task

torch.set_num_threads(1)  # matrices this small train faster on one thread (and far faster on a busy machine)
task = make_alignment_task(train_size=8000, held_out_size=1000, out_dim=64, seed=0)
print("features", tuple(task.train_features.shape), "| labels", tuple(task.train_labels.shape),
      "| targets", tuple(task.targets.shape), "| e.g.", repr(task.classes[task.train_labels[0]]))

# %%
def train_my_bridge(steps: int = 600, lr: float = 3e-3, batch_size: int = 256, seed: int = 0) -> nn.Module:
    """Build a bridge (B, 1, 64) -> (B, K, 64), train it on task's training features with your loop, return it."""
    # BEGIN SOLUTION
    torch.manual_seed(seed)
    bridge = MyMLPBridge(64, 64, hidden_dim=128)
    optimizer = torch.optim.AdamW(bridge.parameters(), lr=lr, weight_decay=0.0)
    targets = F.normalize(task.targets, dim=-1)  # (160, 64)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(task.train_features), (batch_size,), generator=generator)
        out = bridge(task.train_features[idx]).mean(dim=1)  # (B, 64): the mean of the K tokens
        logits = 20 * F.normalize(out, dim=-1) @ targets.T  # (B, 160)
        loss = F.cross_entropy(logits, task.train_labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return bridge.eval()
    # END SOLUTION


# %% [markdown]
# The next cell trains, prints the accuracy on the task's own held-out images (`alignment_accuracy`,
# the chapter's measure) and hands the bridge to the check.

# %%
try:
    my_bridge = train_my_bridge()
    print(f"held-out accuracy on the task's own held-out images: {alignment_accuracy(my_bridge, task):.1%}")
except NotImplementedError:
    print("train_my_bridge is not written yet")
    my_bridge = ...  # the check says todo
check("ch03.train_bridge", my_bridge)

# %% [markdown]
# ## Part 4 (stretch, optional): any depth
#
# ## Exercise 5: `DeepMLPBridge`
#
# The library's `MLPBridge` takes a `depth`: the number of linear layers, with a GELU between every
# two consecutive ones and none after the last. Depth 1 is the linear bridge, depth 2 LLaVA-1.5's.
# Write `DeepMLPBridge(in_dim, out_dim, hidden_dim, depth)`: `self.layers` an `nn.ModuleList` of
# `depth` `nn.Linear`s with widths `[in_dim, hidden_dim, ..., hidden_dim, out_dim]`, the same
# `forward` (with its `ValueError`) and `num_output_tokens` as exercise 3. The check loads the
# library's `MLPBridge(MLPBridgeConfig(in_dim, out_dim, hidden_dim, depth))` weights for depths 1 to 4.

# %%
class DeepMLPBridge(nn.Module):
    """depth linear layers with a GELU between consecutive ones: (B, N, in_dim) -> (B, N, out_dim)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int, depth: int):
        super().__init__()
        # BEGIN SOLUTION
        self.in_dim = in_dim
        widths = [in_dim] + [hidden_dim] * (depth - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        # END SOLUTION

    def num_output_tokens(self, n: int) -> int:
        # BEGIN SOLUTION
        return n
        # END SOLUTION

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # BEGIN SOLUTION
        if features.shape[-1] != self.in_dim:
            raise ValueError(f"features must be (B, N, {self.in_dim}), got shape {tuple(features.shape)}")
        x = self.layers[0](features)
        for layer in self.layers[1:]:
            x = layer(F.gelu(x))
        return x
        # END SOLUTION


# %%
check("ch03.deep_mlp_bridge", DeepMLPBridge)

# %% [markdown]
# ## Checked questions
#
# Answer with the letter, as a string (`"a"`).
#
# **Q1.** Which projection technique is generally considered better than a single linear layer for
# aligning a complex modality with an LLM?
#
# a) A single linear layer with a larger output width, so that more of the LLM's dimensions are used.
#
# b) A multi-layer MLP with a non-linearity between the layers, as LLaVA-1.5's two layers with a GELU.
#
# c) Two linear layers stacked without an activation, so that the projection has twice the parameters.
#
# d) The same linear layer, with the encoder's features L2-normalised before they go into it.

# %%
q1 = "b"  # SOLUTION
check("ch03.q1", q1)

# %% [markdown]
# **Q2.** You stack two `nn.Linear` layers with no activation between them. Which maps can the stack
# represent?
#
# a) Exactly the maps one linear layer can give: W2 (W1 x + b1) + b2 is one matrix W2 W1 and one bias.
#
# b) Every continuous map, given a wide enough hidden layer between the two linear layers.
#
# c) Only the maps that keep the width, because the hidden layer forces D_in = D_llm.
#
# d) Strictly more than one layer, but less than an MLP with a GELU of the same width.

# %%
q2 = "a"  # SOLUTION
check("ch03.q2", q2)

# %% [markdown]
# **Q3.** In the chapter, a linear bridge matched the MLP on 20 random targets but reached less than
# half of the images on 160. Why?
#
# a) With 160 targets the linear bridge overfits its training images; on those it is nearly perfect.
#
# b) The linear bridge was given fewer training steps than the MLP for the larger target set.
#
# c) A linear map can place at most D_in + 1 class means anywhere; 160 means in 64 dimensions are
# affinely dependent, and random targets do not respect those dependencies.
#
# d) Random unit vectors in 64 dimensions are too close to each other to be told apart beyond 20 classes.

# %%
q3 = "c"  # SOLUTION
check("ch03.q3", q3)

# %% [markdown]
# **Q4.** How many tokens does LLaVA-1.5's bridge give the LLM per image (CLIP ViT-L/14 at 336 x 336 px)?
#
# a) 1: the bridge pools the image into one vector of the LLM's width.
#
# b) 24: one token per row of patches of the 336 x 336 image.
#
# c) 576: one token per 14 x 14 patch of the 336 x 336 image, the [CLS] token dropped (K = N).
#
# d) 577: the 576 patch tokens and the [CLS] token, each mapped to the LLM's width.

# %%
q4 = "c"  # SOLUTION
check("ch03.q4", q4)

# %% [markdown]
# ## Done?
#
# From a shell, `python -m mmllm_course.grade exercises/03_linear_and_mlp_bridges.ipynb` grades this
# whole notebook at once. Chapter 4 keeps the bridge's output length `K` fixed whatever `N` is, with
# learned queries.
