"""Grader cases for chapter 1: correct versions written several ways, and the mistakes learners make."""

import functools
import math
import re
from collections import Counter, defaultdict

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from transformers import ViTConfig
from transformers.models.vit.modeling_vit import ViTEmbeddings

from mmllm_course.data.shapes import COLOR_RGB, COLORS, generate_shapes
from mmllm_course.encoders.patches import PatchEmbedding as RefPatchEmbedding
from mmllm_course.encoders.patches import patchify as ref_patchify
from mmllm_course.grading.checks.ch01 import reference_bpe_merges as ref_bpe_merges
from mmllm_course.grading.checks.ch01 import reference_interpolate_positions as ref_interpolate_positions
from mmllm_course.nn.position import sincos_2d_position_embedding as ref_sincos_2d

# ---------------------------------------------------------------------------------------------- patchify


def patchify_reshape(images, patch_size):
    """Correct, with reshape/permute instead of einops."""
    b, c, h, w = images.shape
    p = patch_size
    x = images.reshape(b, c, h // p, p, w // p, p)
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, H/p, W/p, p, p, C)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def patchify_loops(images, patch_size):
    """Correct, with Python loops over the grid."""
    b, c, h, w = images.shape
    p = patch_size
    out = []
    for i in range(0, h, p):
        for j in range(0, w, p):
            patch = images[:, :, i : i + p, j : j + p]  # (B, C, p, p)
            out.append(patch.permute(0, 2, 3, 1).reshape(b, -1))
    return torch.stack(out, dim=1)


def patchify_unfold(images, patch_size):
    """Correct, with F.unfold (which flattens (c p1 p2)), then reordering each patch."""
    b, c, h, w = images.shape
    p = patch_size
    cols = F.unfold(images, kernel_size=p, stride=p)  # (B, C*p*p, N)
    cols = cols.transpose(1, 2).reshape(b, -1, c, p * p)  # (B, N, C, p*p)
    return cols.transpose(2, 3).reshape(b, -1, p * p * c)


def patchify_channel_first(images, patch_size):
    """Wrong: flattens each patch as (c p1 p2)."""
    return rearrange(images, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1=patch_size, p2=patch_size)


def patchify_unfold_raw(images, patch_size):
    """Wrong: F.unfold's (c p1 p2) order left as it is."""
    return F.unfold(images, kernel_size=patch_size, stride=patch_size).transpose(1, 2)


def patchify_column_major_grid(images, patch_size):
    """Wrong: patches numbered column by column."""
    return rearrange(images, "b c (h p1) (w p2) -> b (w h) (p1 p2 c)", p1=patch_size, p2=patch_size)


def patchify_transposed_patch(images, patch_size):
    """Wrong: pixels inside each patch listed column-major."""
    return rearrange(images, "b c (h p1) (w p2) -> b (h w) (p2 p1 c)", p1=patch_size, p2=patch_size)


def patchify_off_by_one(images, patch_size):
    """Wrong: the loop stops one patch early in each direction."""
    b, c, h, w = images.shape
    p = patch_size
    out = [
        images[:, :, i : i + p, j : j + p].permute(0, 2, 3, 1).reshape(b, -1)
        for i in range(0, h - p, p)
        for j in range(0, w - p, p)
    ]
    if not out:
        return images.new_zeros(b, 0, p * p * c)
    return torch.stack(out, dim=1)


def patchify_square_assumed(images, patch_size):
    """Wrong: loops over the height for both directions (fine on square images only)."""
    b, c, h, w = images.shape
    p = patch_size
    out = [
        images[:, :, i : i + p, j : j + p].permute(0, 2, 3, 1).reshape(b, -1)
        for i in range(0, h, p)
        for j in range(0, h, p)
    ]
    return torch.stack(out, dim=1)


def patchify_float32(images, patch_size):
    """Wrong: converts to float32 (dtype must follow the input)."""
    return ref_patchify(images, patch_size).float()


# ------------------------------------------------------------------------------------- patch_embedding


def embed_reference(images, weight, bias, patch_size):
    return ref_patchify(images, patch_size) @ weight.T + bias


def embed_linear_loops(images, weight, bias, patch_size):
    """Correct, with F.linear over patches built by loops."""
    return F.linear(patchify_loops(images, patch_size), weight, bias)


def embed_conv(images, weight, bias, patch_size):
    """Correct, as a strided convolution holding the same weights."""
    d = weight.shape[0]
    c = images.shape[1]
    p = patch_size
    kernel = weight.reshape(d, p, p, c).permute(0, 3, 1, 2)  # (D, C, p, p)
    maps = F.conv2d(images, kernel, bias, stride=p)  # (B, D, H/p, W/p)
    return maps.flatten(2).transpose(1, 2)


def embed_no_bias(images, weight, bias, patch_size):
    """Wrong: forgets the bias."""
    return ref_patchify(images, patch_size) @ weight.T


def embed_not_transposed(images, weight, bias, patch_size):
    """Wrong: multiplies by weight instead of weight.T."""
    return ref_patchify(images, patch_size) @ weight + bias


def embed_conv_wrong_kernel(images, weight, bias, patch_size):
    """Wrong: reshapes the weight straight to (D, C, p, p), which assumes (c p1 p2) flattening."""
    d, c, p = weight.shape[0], images.shape[1], patch_size
    maps = F.conv2d(images, weight.reshape(d, c, p, p), bias, stride=p)
    return maps.flatten(2).transpose(1, 2)


def embed_channel_first(images, weight, bias, patch_size):
    """Wrong: (c p1 p2) patches with a (p1 p2 c) weight."""
    return patchify_channel_first(images, patch_size) @ weight.T + bias


def embed_transposed_output(images, weight, bias, patch_size):
    """Wrong: conv output flattened without the final transpose, then reshaped to look right."""
    maps = embed_conv(images, weight, bias, patch_size).transpose(1, 2)  # (B, D, N)
    return maps.reshape(maps.shape[0], maps.shape[2], maps.shape[1])


def embed_float32(images, weight, bias, patch_size):
    """Wrong: computes in float32 whatever the input."""
    return embed_reference(images.float(), weight.float(), bias.float(), patch_size)


# --------------------------------------------------------------------------------------------- sincos 2-D


def sincos_reference(grid_h, grid_w, dim):
    return ref_sincos_2d(grid_h, grid_w, dim)


def sincos_loops(grid_h, grid_w, dim):
    """Correct, element by element with math.sin / math.cos."""
    q = dim // 4
    out = torch.zeros(grid_h * grid_w, dim)
    for k in range(grid_h * grid_w):
        row, col = k // grid_w, k % grid_w
        for i in range(q):
            omega = 1.0 / 10000 ** (i / q)
            out[k, i] = math.sin(row * omega)
            out[k, q + i] = math.cos(row * omega)
            out[k, 2 * q + i] = math.sin(col * omega)
            out[k, 3 * q + i] = math.cos(col * omega)
    return out


def sincos_meshgrid(grid_h, grid_w, dim):
    """Correct, with meshgrid and exp/log frequencies in float32."""
    q = dim // 4
    omega = torch.exp(-math.log(10000.0) * torch.arange(q, dtype=torch.float32) / q)
    rows, cols = torch.meshgrid(torch.arange(grid_h, dtype=torch.float32), torch.arange(grid_w, dtype=torch.float32), indexing="ij")
    a_r = rows.reshape(-1, 1) * omega
    a_c = cols.reshape(-1, 1) * omega
    return torch.cat([a_r.sin(), a_r.cos(), a_c.sin(), a_c.cos()], dim=1)


def _sincos_variant(grid_h, grid_w, dim, *, exponent_den=None, swap_sincos=False, swap_axes=False, interleave=False):
    q = dim // 4
    den = q if exponent_den is None else exponent_den
    omega = 1.0 / 10000.0 ** (torch.arange(q, dtype=torch.float64) / den)
    rows = torch.arange(grid_h).repeat_interleave(grid_w).double()
    cols = torch.arange(grid_w).repeat(grid_h).double()

    def one(pos):
        a = pos[:, None] * omega
        s, c = (a.cos(), a.sin()) if swap_sincos else (a.sin(), a.cos())
        if interleave:
            return torch.stack([s, c], dim=-1).reshape(len(pos), 2 * q)
        return torch.cat([s, c], dim=1)

    first, second = (one(cols), one(rows)) if swap_axes else (one(rows), one(cols))
    return torch.cat([first, second], dim=1).float()


def sincos_swapped(grid_h, grid_w, dim):
    """Wrong: cos before sin."""
    return _sincos_variant(grid_h, grid_w, dim, swap_sincos=True)


def sincos_rows_cols_swapped(grid_h, grid_w, dim):
    """Wrong: the first half encodes the column."""
    return _sincos_variant(grid_h, grid_w, dim, swap_axes=True)


def sincos_wrong_exponent(grid_h, grid_w, dim):
    """Wrong: 2i/dim of the full dim (the 1-D formula applied with the wrong dim)."""
    return _sincos_variant(grid_h, grid_w, dim, exponent_den=dim / 2)


def sincos_interleaved(grid_h, grid_w, dim):
    """Wrong: sin and cos interleaved (the original transformer's layout, not the library's)."""
    return _sincos_variant(grid_h, grid_w, dim, interleave=True)


def sincos_grid_transposed(grid_h, grid_w, dim):
    """Wrong: row = k % grid_h, col = k // grid_h (column-major numbering)."""
    k = torch.arange(grid_h * grid_w)
    rows, cols = (k % grid_h).double(), (k // grid_h).double()
    q = dim // 4
    omega = 1.0 / 10000.0 ** (torch.arange(q, dtype=torch.float64) / q)
    a_r, a_c = rows[:, None] * omega, cols[:, None] * omega
    return torch.cat([a_r.sin(), a_r.cos(), a_c.sin(), a_c.cos()], dim=1).float()


def sincos_float64(grid_h, grid_w, dim):
    """Wrong: returns float64."""
    return ref_sincos_2d(grid_h, grid_w, dim).double()


def patchify_in_place(images, patch_size):
    images.mul_(2)  # "normalises" the caller's tensor as a side effect
    return ref_patchify(images, patch_size) / 2


def embed_in_place(images, weight, bias, patch_size):
    out = embed_reference(images, weight, bias, patch_size)
    images.clamp_(0, 0.5)  # right tokens, but the caller's images are silently changed
    return out


# ------------------------------------------------------------------------- PatchEmbedding module (build)


class PatchEmbeddingReshape(nn.Module):
    """Correct, with reshape/permute and an nn.Linear called proj."""

    def __init__(self, image_size, patch_size, in_channels, dim):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(patch_size * patch_size * in_channels, dim)

    def forward(self, images):
        b, c, h, w = images.shape
        p = self.patch_size
        x = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(b, -1, p * p * c)
        return self.proj(x)


class PatchEmbeddingConvCompute(nn.Module):
    """Correct: stores the Linear-shaped weight as proj, computes the tokens with a strided convolution."""

    def __init__(self, image_size, patch_size, in_channels=3, dim=64):
        super().__init__()
        self.p, self.c = patch_size, in_channels
        self.proj = nn.Linear(patch_size * patch_size * in_channels, dim)

    def forward(self, images):
        kernel = rearrange(self.proj.weight, "d (p1 p2 c) -> d c p1 p2", p1=self.p, p2=self.p, c=self.c)
        maps = F.conv2d(images, kernel, self.proj.bias, stride=self.p)  # (B, D, H/p, W/p)
        return maps.flatten(2).transpose(1, 2)


class PatchEmbeddingOwnParameters(nn.Module):
    """Correct: nn.Parameters of its own, inside a sub-module named proj so the names match."""

    def __init__(self, image_size, patch_size, in_channels, dim):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Module()
        self.proj.weight = nn.Parameter(torch.randn(dim, patch_size * patch_size * in_channels) * 0.02)
        self.proj.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, images):
        patches = patchify_loops(images, self.patch_size)
        return patches @ self.proj.weight.T + self.proj.bias


class PatchEmbeddingChannelFirst(PatchEmbeddingReshape):
    """Wrong: patches flattened (c p1 p2)."""

    def forward(self, images):
        p = self.patch_size
        return self.proj(rearrange(images, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1=p, p2=p))


class PatchEmbeddingColumnMajor(PatchEmbeddingReshape):
    """Wrong: patches numbered column by column."""

    def forward(self, images):
        p = self.patch_size
        return self.proj(rearrange(images, "b c (h p1) (w p2) -> b (w h) (p1 p2 c)", p1=p, p2=p))


class PatchEmbeddingConvNamedConv(nn.Module):
    """Wrong names: a Conv2d called conv (the message lists proj.weight and proj.bias)."""

    def __init__(self, image_size, patch_size, in_channels, dim):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images):
        return self.conv(images).flatten(2).transpose(1, 2)


class PatchEmbeddingConvNamedProj(nn.Module):
    """Wrong layout: a Conv2d called proj, so proj.weight is (D, C, p, p) instead of (D, p*p*C)."""

    def __init__(self, image_size, patch_size, in_channels, dim):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images):
        return self.proj(images).flatten(2).transpose(1, 2)


class PatchEmbeddingNoBias(PatchEmbeddingReshape):
    """Wrong: nn.Linear(..., bias=False)."""

    def __init__(self, image_size, patch_size, in_channels, dim):
        super().__init__(image_size, patch_size, in_channels, dim)
        self.proj = nn.Linear(patch_size * patch_size * in_channels, dim, bias=False)


class PatchEmbeddingPlainTensor(PatchEmbeddingOwnParameters):
    """Wrong: the weight is a plain tensor, not an nn.Parameter (never registered, never trained)."""

    def __init__(self, image_size, patch_size, in_channels, dim):
        super().__init__(image_size, patch_size, in_channels, dim)
        del self.proj.weight
        self.proj.weight = torch.randn(dim, patch_size * patch_size * in_channels) * 0.02


class PatchEmbeddingNoGrad(PatchEmbeddingReshape):
    """Wrong: the forward runs under torch.no_grad(), so nothing would train."""

    def forward(self, images):
        with torch.no_grad():
            return super().forward(images)


class PatchEmbeddingDetachedWeight(PatchEmbeddingReshape):
    """Wrong: the weight is used through .detach() (the bias still trains, the weight never does)."""

    def forward(self, images):
        p = self.patch_size
        patches = rearrange(images, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=p, p2=p)
        return F.linear(patches, self.proj.weight.detach(), self.proj.bias)


# ----------------------------------------------------------------------------- train_position (train)
# A correct answer is a trained model; two of them here are exact rule-based "models" (they read the
# shape's pixels directly), one is trained with the exercise's recipe (lazily, about 2 CPU-seconds).

_RGB = torch.tensor([COLOR_RGB[c] for c in COLORS])  # (4, 3)


def _shape_mask(images):
    """(B, H, W) True where a pixel is coloured (the background is grey: its channels are nearly equal)."""
    return (images.max(dim=1).values - images.min(dim=1).values) > 0.3


def _oracle_parts(images):
    mask = _shape_mask(images).float()  # (B, H, W)
    b, h, w = mask.shape
    area = mask.sum(dim=(1, 2)).clamp(min=1)
    rows = (mask * torch.arange(h).view(1, h, 1)).sum(dim=(1, 2)) / area
    cols = (mask * torch.arange(w).view(1, 1, w)).sum(dim=(1, 2)) / area
    position = (rows >= h / 2).long() * 2 + (cols >= w / 2).long()
    mean_rgb = (images * mask[:, None]).sum(dim=(2, 3)) / area[:, None]  # (B, 3)
    color = torch.cdist(mean_rgb, _RGB).argmin(dim=1)
    return color, position


def oracle_position_model(images):
    """Correct: finds the coloured pixels, their centroid's quadrant and their mean colour."""
    color, position = _oracle_parts(images)
    return F.one_hot(4 * color + position, 16).float() * 10


class OracleQuadrantModule(nn.Module):
    """Correct, as an nn.Module: coloured pixels per quadrant decide the position (avg-pooling), colour as above."""

    def __init__(self):
        super().__init__()
        self.temperature = nn.Parameter(torch.tensor(5.0))

    def forward(self, images):
        per_quadrant = F.avg_pool2d(_shape_mask(images).float()[:, None], images.shape[-1] // 2).flatten(1)  # (B, 4)
        color, _ = _oracle_parts(images)
        return (F.one_hot(color, 4)[:, :, None] + per_quadrant[:, None, :]).flatten(1) * self.temperature


class _PositionClassifier(nn.Module):
    """The exercise's recipe: patch tokens + learned positions -> per-token Linear+GELU -> mean -> head."""

    def __init__(self, dim=64, use_position=True):
        super().__init__()
        self.patch_embedding = PatchEmbeddingReshape(32, 8, 3, dim)
        self.position = nn.Parameter(torch.randn(1, 16, dim)) if use_position else None
        self.mlp = nn.Sequential(nn.Linear(dim, 128), nn.GELU())
        self.head = nn.Linear(128, 16)

    def forward(self, images):
        x = self.patch_embedding(images)
        if self.position is not None:
            x = x + self.position
        return self.head(self.mlp(x).mean(dim=1))


@functools.lru_cache(maxsize=2)
def _trained_position_classifier(use_position=True):
    # The first call comes from inside the check, which evaluates under no_grad: training needs grad.
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(0)
        data = generate_shapes(2000, seed=1)
        labels = data.color * 4 + data.position
        model = _PositionClassifier(use_position=use_position)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        steps = 15 * (2000 // 64)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
        for _ in range(15):
            perm = torch.randperm(2000)
            for i in range(0, 2000 - 63, 64):
                idx = perm[i : i + 64]
                loss = F.cross_entropy(model(data.images[idx]), labels[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
    return model.eval()


def trained_position_model(images):
    """Correct: really trained with the recipe (the first call trains it, about 2 CPU-seconds)."""
    return _trained_position_classifier()(images)


def colour_only_model(images):
    """Wrong: what a mean-pooled bag of patches learns without positions: the colour, always the same quadrant."""
    color, _ = _oracle_parts(images)
    return F.one_hot(4 * color + 0, 16).float() * 10


def swapped_classes_model(images):
    """Wrong: classes numbered 4 * position + colour."""
    color, position = _oracle_parts(images)
    return F.one_hot(4 * position + color, 16).float() * 10


def untrained_model(images):
    """Wrong: the right architecture, never trained."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = _PositionClassifier()
    return model(images)


def quadrant_logits_only(images):
    """Wrong: 4 position logits, not 16 colour x position ones."""
    _, position = _oracle_parts(images)
    return F.one_hot(position, 4).float()


def class_indices_model(images):
    """Wrong: returns the predicted class indices (B,), not logits (B, 16)."""
    color, position = _oracle_parts(images)
    return 4 * color + position


# ------------------------------------------------------------------------------------------- bpe_merges


def _words(corpus):
    return Counter(w for text in corpus for w in text.split())


def bpe_reference(corpus, num_merges):
    """Correct: straight from the spec, with symbol ids for ties."""
    words = _words(corpus)
    ids = {ch: i for i, ch in enumerate(sorted({ch for w in words for ch in w}))}
    seqs = {w: list(w) for w in words}
    merges = []
    for _ in range(num_merges):
        pairs = Counter()
        for w, n in words.items():
            s = seqs[w]
            for a, b in zip(s, s[1:]):
                pairs[a, b] += n
        if not pairs:
            break
        best = min(pairs, key=lambda pr: (-pairs[pr], ids[pr[0]], ids[pr[1]]))
        merges.append(best)
        ids.setdefault(best[0] + best[1], len(ids))
        for w, s in seqs.items():
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    return merges


def bpe_sennrich_fixed(corpus, num_merges):
    """Correct: Sennrich et al.'s regex code (words as space-separated symbols), with the id tie rule."""
    vocab = {" ".join(w): n for w, n in _words(corpus).items()}
    order = {ch: i for i, ch in enumerate(sorted({ch for w in _words(corpus) for ch in w}))}
    merges = []
    for _ in range(num_merges):
        pairs = defaultdict(int)
        for word, freq in vocab.items():
            symbols = word.split()
            for i in range(len(symbols) - 1):
                pairs[symbols[i], symbols[i + 1]] += freq
        if not pairs:
            break
        top = max(pairs.values())
        best = min((p for p in pairs if pairs[p] == top), key=lambda p: (order[p[0]], order[p[1]]))
        merges.append(best)
        order.setdefault("".join(best), len(order))
        pattern = re.compile(r"(?<!\S)" + re.escape(" ".join(best)) + r"(?!\S)")
        vocab = {pattern.sub("".join(best), word): freq for word, freq in vocab.items()}
    return merges


def bpe_with_tokenizers(corpus, num_merges):
    """Correct: asks the tokenizers library itself (what the check compares with)."""
    return [list(m) for m in ref_bpe_merges(corpus, num_merges)]  # lists instead of tuples are fine


def bpe_sennrich_max(corpus, num_merges):
    """Wrong: Sennrich et al.'s original `max(pairs, key=pairs.get)`, so ties go to the first pair seen."""
    vocab = {" ".join(w): n for w, n in _words(corpus).items()}
    merges = []
    for _ in range(num_merges):
        pairs = defaultdict(int)
        for word, freq in vocab.items():
            symbols = word.split()
            for i in range(len(symbols) - 1):
                pairs[symbols[i], symbols[i + 1]] += freq
        if not pairs:
            break
        best = max(pairs, key=pairs.get)
        merges.append(best)
        pattern = re.compile(r"(?<!\S)" + re.escape(" ".join(best)) + r"(?!\S)")
        vocab = {pattern.sub("".join(best), word): freq for word, freq in vocab.items()}
    return merges


def bpe_string_ties(corpus, num_merges):
    """Wrong: ties broken alphabetically by the strings of the pair."""
    words = _words(corpus)
    seqs = {w: list(w) for w in words}
    merges = []
    for _ in range(num_merges):
        pairs = Counter()
        for w, n in words.items():
            for a, b in zip(seqs[w], seqs[w][1:]):
                pairs[a, b] += n
        if not pairs:
            break
        best = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        merges.append(best)
        seqs = {w: _remerge(s, best) for w, s in seqs.items()}
    return merges


def _remerge(s, pair):
    out, i = [], 0
    while i < len(s):
        if i + 1 < len(s) and (s[i], s[i + 1]) == pair:
            out.append(s[i] + s[i + 1])
            i += 2
        else:
            out.append(s[i])
            i += 1
    return out


def bpe_across_words(corpus, num_merges):
    """Wrong: each text is one sequence, so pairs are counted across word boundaries."""
    glued = [text.replace(" ", "") for text in corpus]
    return bpe_reference(glued, num_merges)


def bpe_counts_never_updated(corpus, num_merges):
    """Wrong: counts the pairs once, then takes the most frequent ones in turn without recounting."""
    words = _words(corpus)
    ids = {ch: i for i, ch in enumerate(sorted({ch for w in words for ch in w}))}
    pairs = Counter()
    for w, n in words.items():
        for a, b in zip(w, w[1:]):
            pairs[a, b] += n
    ranked = sorted(pairs, key=lambda pr: (-pairs[pr], ids[pr[0]], ids[pr[1]]))
    return ranked[:num_merges]


def bpe_distinct_words(corpus, num_merges):
    """Wrong: every distinct word once, ignoring how often it occurs."""
    distinct = sorted(set(w for text in corpus for w in text.split()))
    return bpe_reference([" ".join(distinct)], num_merges)


def bpe_returns_symbols(corpus, num_merges):
    """Wrong: returns the new symbols ('lo') instead of the merged pairs (('l', 'o'))."""
    return ["".join(p) for p in bpe_reference(corpus, num_merges)]


def bpe_ignores_num_merges_stop(corpus, num_merges):
    """Wrong: keeps merging pairs that occur 0 times once the real pairs run out (pads with ('', ''))."""
    merges = bpe_reference(corpus, num_merges)
    return merges + [("", "")] * (num_merges - len(merges))


# -------------------------------------------------------------------------- interpolate_positions (stretch)


def interp_reference(pos_embed, grid_h, grid_w):
    return ref_interpolate_positions(pos_embed, grid_h, grid_w)


def interp_with_transformers(pos_embed, grid_h, grid_w):
    """Correct: transformers' own ViTEmbeddings.interpolate_pos_encoding holding the same table."""
    d = pos_embed.shape[-1]
    g = int(round((pos_embed.shape[1] - 1) ** 0.5))
    config = ViTConfig(hidden_size=d, num_attention_heads=1, image_size=g * 2, patch_size=2, num_channels=1)
    emb = ViTEmbeddings(config)
    with torch.no_grad():
        emb.position_embeddings = nn.Parameter(pos_embed.clone(), requires_grad=False)
    dummy = pos_embed.new_zeros(1, 1 + grid_h * grid_w, d)
    return emb.interpolate_pos_encoding(dummy, grid_h * 2, grid_w * 2).detach()


def interp_einops(pos_embed, grid_h, grid_w):
    """Correct, with einops and split/cat written differently."""
    g = int(round((pos_embed.shape[1] - 1) ** 0.5))
    cls_pos, grid = pos_embed.split([1, g * g], dim=1)
    grid = rearrange(grid, "1 (h w) d -> 1 d h w", h=g)
    grid = F.interpolate(grid, size=(grid_h, grid_w), mode="bicubic", align_corners=False)
    return torch.cat([cls_pos, rearrange(grid, "1 d h w -> 1 (h w) d")], dim=1)


def _interp(pos_embed, grid_h, grid_w, mode="bicubic", corners=False, permute=True, size=None, keep_cls=True):
    d = pos_embed.shape[-1]
    g = int(round((pos_embed.shape[1] - 1) ** 0.5))
    grid = pos_embed[:, 1:]
    img = grid.reshape(1, g, g, d).permute(0, 3, 1, 2) if permute else grid.reshape(1, d, g, g)
    out = F.interpolate(img, size=size or (grid_h, grid_w), mode=mode, align_corners=corners if mode != "nearest" else None)
    flat = out.permute(0, 2, 3, 1).reshape(1, -1, d) if permute else out.reshape(1, -1, d)
    return torch.cat([pos_embed[:, :1], flat], dim=1) if keep_cls else flat


def interp_bilinear(pos_embed, grid_h, grid_w):
    """Wrong: bilinear."""
    return _interp(pos_embed, grid_h, grid_w, mode="bilinear")


def interp_align_corners(pos_embed, grid_h, grid_w):
    """Wrong: align_corners=True."""
    return _interp(pos_embed, grid_h, grid_w, corners=True)


def interp_reshape_not_permute(pos_embed, grid_h, grid_w):
    """Wrong: (1, N, D) reshaped straight to (1, D, g, g)."""
    return _interp(pos_embed, grid_h, grid_w, permute=False)


def interp_swapped_size(pos_embed, grid_h, grid_w):
    """Wrong: size=(grid_w, grid_h)."""
    return _interp(pos_embed, grid_h, grid_w, size=(grid_w, grid_h))


def interp_drops_cls(pos_embed, grid_h, grid_w):
    """Wrong: returns only the resized grid, without the [CLS] row."""
    return _interp(pos_embed, grid_h, grid_w, keep_cls=False)


def interp_in_place(pos_embed, grid_h, grid_w):
    """Wrong: normalises the caller's table in place on the way."""
    out = ref_interpolate_positions(pos_embed, grid_h, grid_w)
    pos_embed.mul_(0.5)
    return out


CASES = {
    "ch01.patchify": {
        "correct": [ref_patchify, patchify_reshape, patchify_loops, patchify_unfold],
        "wrong": {
            "channel-first (c p1 p2)": patchify_channel_first,
            "raw F.unfold order": patchify_unfold_raw,
            "column-major grid": patchify_column_major_grid,
            "transposed pixels in a patch": patchify_transposed_patch,
            "off-by-one loop": patchify_off_by_one,
            "square images assumed": patchify_square_assumed,
            "always float32": patchify_float32,
            "changes its input in place": patchify_in_place,
        },
    },
    "ch01.patch_embedding": {
        "correct": [embed_reference, embed_linear_loops, embed_conv],
        "wrong": {
            "missing bias": embed_no_bias,
            "weight not transposed": embed_not_transposed,
            "conv kernel reshaped as (D, C, p, p)": embed_conv_wrong_kernel,
            "channel-first patches": embed_channel_first,
            "(B, D, N) reshaped instead of transposed": embed_transposed_output,
            "always float32": embed_float32,
            "changes its input in place": embed_in_place,
        },
    },
    "ch01.sincos_2d": {
        "correct": [sincos_reference, sincos_loops, sincos_meshgrid],
        "wrong": {
            "sin and cos swapped": sincos_swapped,
            "rows and columns swapped": sincos_rows_cols_swapped,
            "wrong frequency exponent": sincos_wrong_exponent,
            "sin/cos interleaved": sincos_interleaved,
            "grid numbered column-major": sincos_grid_transposed,
            "float64 output": sincos_float64,
        },
    },
    "ch01.patch_embedding_module": {
        "correct": [RefPatchEmbedding, PatchEmbeddingReshape, PatchEmbeddingConvCompute, PatchEmbeddingOwnParameters],
        "wrong": {
            "channel-first (c p1 p2)": PatchEmbeddingChannelFirst,
            "column-major grid": PatchEmbeddingColumnMajor,
            "Conv2d named conv": PatchEmbeddingConvNamedConv,
            "Conv2d named proj (kernel layout)": PatchEmbeddingConvNamedProj,
            "bias missing": PatchEmbeddingNoBias,
            "weight a plain tensor": PatchEmbeddingPlainTensor,
            "forward under no_grad": PatchEmbeddingNoGrad,
            "weight detached": PatchEmbeddingDetachedWeight,
            "an instance instead of the class": PatchEmbeddingReshape(32, 8, 3, 16),
        },
    },
    "ch01.train_position": {
        "correct": [oracle_position_model, OracleQuadrantModule(), trained_position_model],
        "wrong": {
            "colour only (no positions)": colour_only_model,
            "classes numbered 4*position + colour": swapped_classes_model,
            "untrained": untrained_model,
            "4 quadrant logits only": quadrant_logits_only,
            "class indices instead of logits": class_indices_model,
            "the class instead of a trained instance": OracleQuadrantModule,
        },
    },
    "ch01.bpe_merges": {
        "correct": [bpe_reference, bpe_sennrich_fixed, bpe_with_tokenizers],
        "wrong": {
            "Sennrich's max(): first-seen ties": bpe_sennrich_max,
            "alphabetical ties": bpe_string_ties,
            "pairs across word boundaries": bpe_across_words,
            "counts never updated": bpe_counts_never_updated,
            "distinct words counted once": bpe_distinct_words,
            "new symbols instead of pairs": bpe_returns_symbols,
            "does not stop when no pair is left": bpe_ignores_num_merges_stop,
        },
    },
    "ch01.interpolate_positions": {
        "correct": [interp_reference, interp_with_transformers, interp_einops],
        "wrong": {
            "bilinear": interp_bilinear,
            "align_corners=True": interp_align_corners,
            "reshape instead of permute": interp_reshape_not_permute,
            "rows and columns swapped": interp_swapped_size,
            "[CLS] row dropped": interp_drops_cls,
            "changes its input in place": interp_in_place,
        },
    },
    "ch01.q1": {"answer": "b", "wrong": ["a", "c", "d", "z"]},
    "ch01.q2": {"answer": "d", "wrong": ["a", "b", "c"]},
    "ch01.q3": {"answer": "c", "wrong": ["a", "b", "d"]},
    "ch01.q4": {"answer": "a", "wrong": ["b", "c", "d"]},
    "ch01.q5": {"answer": "b", "wrong": ["a", "c", "d"]},
}
