"""Patches, patch embedding and position embeddings: shapes, orders, exact inverses, clear errors."""

import math

import matplotlib
import pytest
import torch
import torch.nn.functional as F

from mmllm_course.encoders.patches import PatchEmbedding, VisionEmbeddings, patchify, unpatchify
from mmllm_course.nn.position import (
    LearnedPositionEmbedding,
    sincos_1d_position_embedding,
    sincos_2d_position_embedding,
)

matplotlib.use("Agg")


def _rand(*shape, seed=0, dtype=torch.float32):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ------------------------------------------------------------------------------------------- patchify


@pytest.mark.parametrize("b, c, h, w, p", [(1, 3, 8, 8, 4), (2, 3, 12, 8, 4), (3, 1, 6, 9, 3), (2, 2, 4, 4, 1), (1, 3, 8, 8, 8)])
def test_patchify_shape_and_inverse(b, c, h, w, p):
    x = _rand(b, c, h, w)
    patches = patchify(x, p)
    assert patches.shape == (b, (h // p) * (w // p), p * p * c)
    back = unpatchify(patches, p, h // p, w // p)
    assert torch.equal(back, x)  # exact, not just close: it only moves numbers around


def test_patchify_order_is_row_major_grid_and_p1_p2_c_inside():
    # Pixel values that encode (channel, row, col) so every position in the output can be read off.
    c, h, w, p = 2, 4, 6, 2
    x = torch.zeros(1, c, h, w)
    for ci in range(c):
        for r in range(h):
            for col in range(w):
                x[0, ci, r, col] = 100 * ci + 10 * r + col
    patches = patchify(x, p)[0]  # (6, 8)
    # Patch 1 is the grid's row 0, column 1: pixel rows 0-1, pixel columns 2-3.
    # Its first entries are pixel (0, 2) channel 0, pixel (0, 2) channel 1, then pixel (0, 3)...
    assert patches[1].tolist() == [2, 102, 3, 103, 12, 112, 13, 113]
    # Patch 3 starts the grid's second row (3 patches per row): pixel (2, 0).
    assert patches[3, 0].item() == 20


def test_patchify_keeps_dtype():
    x = _rand(2, 3, 8, 8, dtype=torch.float64)
    assert patchify(x, 4).dtype == torch.float64


@pytest.mark.parametrize(
    "x, p, words",
    [
        (_rand(1, 3, 10, 8), 4, ["10x8", "patch_size=4"]),
        (_rand(1, 3, 8, 10), 4, ["8x10", "multiples of 4"]),
        (_rand(3, 8, 8), 4, ["4 dims", "3 dims", "(3, 8, 8)"]),
        (_rand(1, 1, 3, 8, 8), 4, ["4 dims", "5 dims"]),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 4, ["floating-point", "torch.uint8"]),
        (_rand(1, 3, 8, 8), 0, ["positive", "got 0"]),
    ],
)
def test_patchify_bad_input_names_expected_and_actual(x, p, words):
    with pytest.raises(ValueError) as info:
        patchify(x, p)
    for word in words:
        assert word in str(info.value), f"{word!r} not in {info.value}"


def test_patchify_rejects_non_tensors():
    with pytest.raises(ValueError, match="torch.Tensor"):
        patchify([[1.0]], 1)


def test_unpatchify_bad_input():
    with pytest.raises(ValueError, match="expected 2x2=4 patches, got 6"):
        unpatchify(torch.zeros(1, 6, 12), 2, 2)
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        unpatchify(torch.zeros(1, 4, 10), 2, 2)
    with pytest.raises(ValueError, match=r"\(B, N, p\*p\*C\)"):
        unpatchify(torch.zeros(4, 12), 2, 2)


# ------------------------------------------------------------------------------------ PatchEmbedding


def test_patch_embedding_is_a_linear_map_per_patch():
    torch.manual_seed(0)
    pe = PatchEmbedding(image_size=8, patch_size=4, in_channels=3, dim=5)
    x = _rand(2, 3, 8, 8)
    tokens = pe(x)
    assert tokens.shape == (2, 4, 5)
    manual = patchify(x, 4) @ pe.proj.weight.T + pe.proj.bias
    torch.testing.assert_close(tokens, manual)


def test_patch_embedding_equals_strided_conv():
    torch.manual_seed(0)
    pe = PatchEmbedding(image_size=16, patch_size=4, in_channels=3, dim=6)
    conv = pe.to_conv2d()
    assert (conv.kernel_size, conv.stride) == ((4, 4), (4, 4))
    x = _rand(2, 3, 16, 16)
    maps = conv(x)  # (B, D, 4, 4)
    torch.testing.assert_close(pe(x), maps.flatten(2).transpose(1, 2), atol=1e-6, rtol=1e-5)


def test_load_conv2d_round_trip():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 6, kernel_size=4, stride=4)
    pe = PatchEmbedding(16, 4, 3, 6).load_conv2d(conv.weight.detach(), conv.bias.detach())
    x = _rand(1, 3, 16, 16)
    torch.testing.assert_close(pe(x), conv(x).flatten(2).transpose(1, 2), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(pe.to_conv2d().weight, conv.weight)


def test_patch_embedding_bad_input():
    pe = PatchEmbedding(image_size=8, patch_size=4, in_channels=3, dim=5)
    with pytest.raises(ValueError, match="expected 3 channels, got 1"):
        pe(_rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="expected images of size 8x8, got 12x12"):
        pe(_rand(1, 3, 12, 12))
    with pytest.raises(ValueError, match="image_size=10 is not divisible by patch_size=4"):
        PatchEmbedding(image_size=10, patch_size=4)
    with pytest.raises(ValueError, match=r"expected a conv weight of shape \(5, 3, 4, 4\), got \(5, 3, 2, 2\)"):
        pe.load_conv2d(torch.zeros(5, 3, 2, 2))
    with pytest.raises(ValueError, match="bias=False"):
        PatchEmbedding(8, 4, 3, 5, bias=False).load_conv2d(torch.zeros(5, 3, 4, 4), torch.zeros(5))


# ----------------------------------------------------------------------------------- VisionEmbeddings


@pytest.mark.parametrize("position", ["learned", "sincos"])
@pytest.mark.parametrize("cls_token", [True, False])
def test_vision_embeddings_shapes(position, cls_token):
    torch.manual_seed(0)
    emb = VisionEmbeddings(image_size=16, patch_size=4, dim=8, cls_token=cls_token, position=position)
    out = emb(_rand(2, 3, 16, 16))
    assert out.shape == (2, 16 + int(cls_token), 8)
    assert emb.num_tokens == 16 + int(cls_token)


def test_vision_embeddings_cls_first_and_positions_added():
    torch.manual_seed(0)
    emb = VisionEmbeddings(image_size=8, patch_size=4, dim=8, position="learned")
    x = _rand(2, 3, 8, 8)
    out = emb(x)
    pos = emb.position_embedding[0]
    torch.testing.assert_close(out[:, 0], (emb.cls_token[0, 0] + pos[0]).expand(2, -1))
    torch.testing.assert_close(out[:, 1:], emb.patch_embedding(x) + pos[1:])


def test_vision_embeddings_sincos_gives_cls_position_zero_and_is_not_saved():
    emb = VisionEmbeddings(image_size=8, patch_size=4, dim=8, position="sincos")
    assert torch.equal(emb.position_embedding[0, 0], torch.zeros(8))
    torch.testing.assert_close(emb.position_embedding[0, 1:], sincos_2d_position_embedding(2, 2, 8))
    assert "position_embedding" not in emb.state_dict()


def test_vision_embeddings_follow_float64():
    emb = VisionEmbeddings(image_size=8, patch_size=4, dim=8).double()
    assert emb(_rand(1, 3, 8, 8, dtype=torch.float64)).dtype == torch.float64


def test_vision_embeddings_bad_position_kind():
    with pytest.raises(ValueError, match="'learned' or 'sincos', got 'rope'"):
        VisionEmbeddings(position="rope")


# ---------------------------------------------------------------------------------- position embeddings


def test_sincos_1d_values_and_layout():
    pos = torch.tensor([0.0, 1.0, 5.0])
    emb = sincos_1d_position_embedding(pos, 6)
    assert emb.shape == (3, 6) and emb.dtype == torch.float32
    for k, p in enumerate(pos.tolist()):
        for i in range(3):
            omega = 1.0 / 10000 ** (i / 3)
            assert emb[k, i].item() == pytest.approx(math.sin(p * omega), abs=1e-6)
            assert emb[k, 3 + i].item() == pytest.approx(math.cos(p * omega), abs=1e-6)
    # Every row has unit norm per (sin, cos) pair: sin^2 + cos^2 = 1.
    torch.testing.assert_close(emb[:, :3] ** 2 + emb[:, 3:] ** 2, torch.ones(3, 3))


def test_sincos_2d_layout_rows_then_columns():
    gh, gw, dim = 3, 4, 16
    table = sincos_2d_position_embedding(gh, gw, dim)
    assert table.shape == (gh * gw, dim)
    k = 6  # row 1, column 2
    torch.testing.assert_close(table[k, : dim // 2], sincos_1d_position_embedding(torch.tensor([1.0]), dim // 2)[0])
    torch.testing.assert_close(table[k, dim // 2 :], sincos_1d_position_embedding(torch.tensor([2.0]), dim // 2)[0])
    # Patches in one row share the row half; patches in one column share the column half.
    assert torch.equal(table[4, : dim // 2], table[7, : dim // 2])
    assert torch.equal(table[2, dim // 2 :], table[10, dim // 2 :])
    assert len({tuple(r) for r in table.tolist()}) == gh * gw  # every position distinct


def test_sincos_2d_neighbours_are_more_similar_than_far_patches():
    table = sincos_2d_position_embedding(8, 8, 64)
    sim = F.cosine_similarity(table[27:28], table, dim=-1).reshape(8, 8)  # patch (3, 3)
    assert sim[3, 3] == pytest.approx(1.0)
    assert sim[3, 4] > sim[3, 7] and sim[4, 3] > sim[7, 3]


def test_position_bad_input():
    with pytest.raises(ValueError, match="even dim, got dim=5"):
        sincos_1d_position_embedding(torch.arange(3), 5)
    with pytest.raises(ValueError, match=r"1-D \(N,\), got shape \(2, 3\)"):
        sincos_1d_position_embedding(torch.zeros(2, 3), 4)
    with pytest.raises(ValueError, match="divisible by 4, got dim=6"):
        sincos_2d_position_embedding(2, 2, 6)
    with pytest.raises(ValueError, match="at least 1x1, got 0x3"):
        sincos_2d_position_embedding(0, 3, 8)


def test_learned_position_embedding():
    torch.manual_seed(0)
    lpe = LearnedPositionEmbedding(num_positions=10, dim=4)
    x = torch.zeros(2, 7, 4)
    out = lpe(x)
    torch.testing.assert_close(out, lpe.weight[:7].expand(2, -1, -1))
    out.sum().backward()
    assert lpe.weight.grad[:7].abs().sum() > 0 and lpe.weight.grad[7:].abs().sum() == 0
    with pytest.raises(ValueError, match=r"expected tokens \(B, N, 4\), got \(2, 7, 5\)"):
        lpe(torch.zeros(2, 7, 5))
    with pytest.raises(ValueError, match="got 11 tokens but this embedding holds 10 positions"):
        lpe(torch.zeros(1, 11, 4))


# ------------------------------------------------------------------------------------- chapter-1 figures


def test_figures_and_explorer_build_headless():
    import matplotlib.pyplot as plt

    from mmllm_course.viz.patches import (
        patch_size_explorer,
        plot_position_similarity,
        plot_token_count,
        position_similarity,
        show_patch_grid,
        show_patch_sequence,
    )

    img = _rand(3, 32, 48)
    assert "24 patches" in show_patch_grid(img, 8).get_title()
    assert "24 patch tokens" in show_patch_sequence(img, 8).get_title()
    table = sincos_2d_position_embedding(4, 6, 16)
    sim = position_similarity(table, 7, 4, 6)
    assert sim.shape == (4, 6) and sim[1, 1].item() == pytest.approx(1.0)
    assert len(plot_position_similarity(table, 4, 6)) == 3
    plot_token_count(224, (14, 16))
    with pytest.raises(ValueError, match="not divisible by patch_size=5"):
        show_patch_grid(img, 5)
    explorer = patch_size_explorer(img)
    dropdown = explorer.children[0]
    assert list(dropdown.options) == [2, 4, 8, 16]  # every size dividing both 32 and 48
    dropdown.value = 4  # re-draws without error
    plt.close("all")


def test_patch_embedding_fast_path_equals_patchify_then_linear():
    """forward runs as a strided convolution; it must equal the teaching form, values and gradients."""
    from mmllm_course.encoders.patches import PatchEmbedding

    torch.manual_seed(0)
    for size, p, c, bias in ((32, 8, 3, True), (12, 4, 1, False), (8, 2, 2, True)):
        module = PatchEmbedding(size, p, c, 10, bias=bias)
        images = torch.rand(3, c, size, size, requires_grad=True)
        fast, slow = module(images), module.forward_patchify(images)
        assert torch.allclose(fast, slow, atol=1e-6)
        g_fast = torch.autograd.grad(fast.square().sum(), [images, module.proj.weight])
        g_slow = torch.autograd.grad(slow.square().sum(), [images, module.proj.weight])
        for a, b in zip(g_fast, g_slow):
            assert torch.allclose(a, b, atol=1e-5)
