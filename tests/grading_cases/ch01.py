"""Grader cases for chapter 1: correct versions written several ways, and the mistakes learners make."""

import math

import torch
import torch.nn.functional as F
from einops import rearrange

from mmllm_course.encoders.patches import patchify as ref_patchify
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
    "ch01.q1": {"answer": "b", "wrong": ["a", "c", "d", "z"]},
    "ch01.q2": {"answer": "d", "wrong": ["a", "b", "c"]},
    "ch01.q3": {"answer": "c", "wrong": ["a", "b", "d"]},
    "ch01.q4": {"answer": "a", "wrong": ["b", "c", "d"]},
}
