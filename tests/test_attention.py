"""Attention and transformer blocks: the explicit maths equals the fast path, masks do what they say."""

import pytest
import torch

from mmllm_course.nn.attention import (
    MultiHeadAttention,
    causal_mask,
    merge_heads,
    scaled_dot_product_attention,
    split_heads,
)
from mmllm_course.nn.transformer import MLP, QuickGELU, TransformerBlock, make_activation


def _qkv(b=2, h=3, n=5, m=7, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, h, n, d, generator=g), torch.randn(b, h, m, d, generator=g), torch.randn(b, h, m, d, generator=g))


@pytest.mark.parametrize("is_causal", [False, True])
def test_math_path_equals_fast_path(is_causal):
    q, k, v = _qkv(n=6, m=6)
    fast, none = scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    slow, weights = scaled_dot_product_attention(q, k, v, is_causal=is_causal, return_weights=True)
    assert none is None
    assert weights.shape == (2, 3, 6, 6)
    torch.testing.assert_close(slow, fast, atol=1e-5, rtol=1e-5)
    # and both equal the formula written out by hand
    scores = q @ k.transpose(-2, -1) / 8**0.5
    if is_causal:
        scores = scores.masked_fill(~torch.ones(6, 6, dtype=torch.bool).tril(), float("-inf"))
    torch.testing.assert_close(slow, scores.softmax(-1) @ v, atol=1e-5, rtol=1e-5)


def test_weights_are_a_distribution_and_masked_keys_get_zero():
    q, k, v = _qkv()
    keep = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    keep[0, ..., 4:] = False
    out, w = scaled_dot_product_attention(q, k, v, attn_mask=keep, return_weights=True)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 5))
    assert torch.all(w[0, ..., 4:] == 0) and torch.all(w[1] > 0)
    fast, _ = scaled_dot_product_attention(q, k, v, attn_mask=keep)
    torch.testing.assert_close(out, fast, atol=1e-5, rtol=1e-5)
    # masking keys is the same as deleting them
    short, _ = scaled_dot_product_attention(q[:1], k[:1, :, :4], v[:1, :, :4])
    torch.testing.assert_close(out[:1], short, atol=1e-5, rtol=1e-5)


def test_float_mask_is_added_to_scores():
    q, k, v = _qkv()
    bias = torch.randn(5, 7)
    fast, _ = scaled_dot_product_attention(q, k, v, attn_mask=bias)
    slow, w = scaled_dot_product_attention(q, k, v, attn_mask=bias, return_weights=True)
    torch.testing.assert_close(slow, fast, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w, (q @ k.transpose(-2, -1) / 8**0.5 + bias).softmax(-1))


def test_causal_weights_are_lower_triangular_and_fully_masked_rows_are_zero():
    q, k, v = _qkv(n=4, m=4)
    _, w = scaled_dot_product_attention(q, k, v, is_causal=True, return_weights=True)
    assert torch.all(w.triu(diagonal=1) == 0)
    assert torch.all(w[..., causal_mask(4)] > 0)
    assert torch.equal(causal_mask(3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool))
    none = torch.zeros(1, 1, 1, 4, dtype=torch.bool)  # a query allowed to see nothing
    slow, w = scaled_dot_product_attention(q, k, v, attn_mask=none, return_weights=True)
    fast, _ = scaled_dot_product_attention(q, k, v, attn_mask=none)
    assert torch.all(w == 0) and not torch.isnan(slow).any()
    torch.testing.assert_close(slow, fast)


def test_split_and_merge_heads_are_inverse():
    x = torch.randn(2, 5, 12)
    h = split_heads(x, 3)
    assert h.shape == (2, 3, 5, 4)
    torch.testing.assert_close(h[:, 1], x[..., 4:8])  # head 1 owns channels 4..7
    torch.testing.assert_close(merge_heads(h), x)
    with pytest.raises(ValueError, match="D=12 is not divisible by num_heads=5"):
        split_heads(x, 5)


def test_sdpa_rejects_bad_shapes():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"q must be \(B, H, N, Dh\), got 3 dims"):
        scaled_dot_product_attention(q[0], k, v)
    with pytest.raises(ValueError, match=r"batch and head sizes.*\(2, 3\).*\(1, 3\)"):
        scaled_dot_product_attention(q, k[:1], v)
    with pytest.raises(ValueError, match="same number of keys M: got k 7, v 6"):
        scaled_dot_product_attention(q, k, v[:, :, :6])
    with pytest.raises(ValueError, match=r"attn_mask of shape \(5, 6\) does not broadcast to \(B, H, N, M\) = \(2, 3, 5, 7\)"):
        scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(5, 6, dtype=torch.bool))


def test_mha_self_and_cross_attention_match_fast_path():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4).eval()
    x = torch.randn(2, 5, 16)
    fast, none = mha(x)
    slow, w = mha(x, return_weights=True)
    assert none is None and w.shape == (2, 4, 5, 5)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)

    cross = MultiHeadAttention(16, 4, kv_dim=10).eval()
    ctx = torch.randn(2, 9, 10)
    out, w = cross(x, context=ctx, return_weights=True)
    assert out.shape == (2, 5, 16) and w.shape == (2, 4, 5, 9)
    torch.testing.assert_close(out, cross(x, context=ctx)[0], atol=1e-5, rtol=1e-5)


def test_mha_key_padding_mask_true_means_keep():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4).eval()
    x, ctx = torch.randn(2, 5, 16), torch.randn(2, 6, 16)
    keep = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])  # tokenizer-style, 1 = real
    out, w = mha(x, context=ctx, key_padding_mask=keep, return_weights=True)
    assert torch.all(w[0, ..., 4:] == 0)
    torch.testing.assert_close(out, mha(x, context=ctx, key_padding_mask=keep.bool())[0], atol=1e-5, rtol=1e-5)
    # padded keys change nothing: garbage in them leaves the output as it was
    ctx2 = ctx.clone()
    ctx2[0, 4:] = 100.0
    torch.testing.assert_close(mha(x, context=ctx2, key_padding_mask=keep)[0], out, atol=1e-5, rtol=1e-5)
    # causal + padding together, both paths agree
    o1, w1 = mha(x[:, :5], key_padding_mask=keep[:, :5], causal=True, return_weights=True)
    o2, _ = mha(x[:, :5], key_padding_mask=keep[:, :5], causal=True)
    torch.testing.assert_close(o1, o2, atol=1e-5, rtol=1e-5)
    assert torch.all(w1.triu(diagonal=1) == 0) and torch.all(w1[0, ..., 4] == 0)


def test_mha_rejects_bad_inputs_with_sizes():
    with pytest.raises(ValueError, match="dim=10 is not divisible by num_heads=4"):
        MultiHeadAttention(10, 4)
    mha = MultiHeadAttention(16, 4, kv_dim=8)
    x = torch.randn(2, 5, 16)
    with pytest.raises(ValueError, match=r"x must be \(B, N, 16\), got shape \(2, 5, 12\)"):
        mha(torch.randn(2, 5, 12), context=torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match="batch sizes differ: x has B=2, context has B=3"):
        mha(x, context=torch.randn(3, 4, 8))
    with pytest.raises(ValueError, match=r"context must be \(B, M, 8\)"):
        mha(x)  # self-attention on a cross-attention layer: context has the wrong width
    with pytest.raises(ValueError, match=r"key_padding_mask must be \(B, M\) = \(2, 4\).*got shape \(2, 5\)"):
        mha(x, context=torch.randn(2, 4, 8), key_padding_mask=torch.ones(2, 5, dtype=torch.bool))


def test_activations_and_mlp():
    x = torch.linspace(-4, 4, 101)
    torch.testing.assert_close(QuickGELU()(x), x * torch.sigmoid(1.702 * x))
    xg = x.clone().requires_grad_()
    QuickGELU()(xg).sum().backward()  # the autograd path works and does not modify its input
    torch.testing.assert_close(xg.detach(), x)
    torch.testing.assert_close(make_activation("gelu_tanh")(x), torch.nn.functional.gelu(x, approximate="tanh"))
    assert not torch.allclose(make_activation("gelu")(x), make_activation("quick_gelu")(x))
    with pytest.raises(ValueError, match="activation must be one of.*got 'relu6'"):
        make_activation("relu6")
    assert MLP(8, 32)(torch.randn(2, 3, 8)).shape == (2, 3, 8)


def test_transformer_block_is_pre_norm_residual():
    torch.manual_seed(0)
    block = TransformerBlock(16, 4, mlp_ratio=2.0).eval()
    assert block.mlp.fc1.out_features == 32
    x = torch.randn(2, 5, 16)
    y, none = block(x)
    h = x + block.attn(block.ln1(x))[0]
    torch.testing.assert_close(y, h + block.mlp(block.ln2(h)))
    y2, w = block(x, return_weights=True)
    assert none is None and w.shape == (2, 4, 5, 5)
    torch.testing.assert_close(y, y2, atol=1e-5, rtol=1e-5)


def test_causal_block_output_at_t_ignores_later_tokens():
    torch.manual_seed(0)
    block = TransformerBlock(16, 4).eval()
    x = torch.randn(1, 6, 16)
    x2 = x.clone()
    x2[:, 4:] = torch.randn(1, 2, 16)
    y, _ = block(x, causal=True)
    y2, _ = block(x2, causal=True)
    torch.testing.assert_close(y[:, :4], y2[:, :4])
    assert not torch.allclose(y[:, 4:], y2[:, 4:])
