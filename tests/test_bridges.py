"""The bridges' interface: shapes, K for a given N, padding masks, make_bridge, and bad input."""

import pytest
import torch
from einops import rearrange

from mmllm_course.bridges import (
    BRIDGES,
    Bridge,
    LinearBridge,
    LinearBridgeConfig,
    MLPBridge,
    MLPBridgeConfig,
    PerceiverResamplerBridge,
    PerceiverResamplerBridgeConfig,
    QFormerBridge,
    QFormerBridgeConfig,
    TokenMergeBridge,
    TokenMergeBridgeConfig,
    make_bridge,
    pixel_shuffle,
)
from mmllm_course.bridges.token_merge import pixel_shuffle_einops

NAMES = sorted(BRIDGES)


def _x(b: int = 2, n: int = 16, d: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, n, d, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", NAMES)
def test_every_bridge_maps_features_to_k_llm_tokens(name):
    torch.manual_seed(0)
    bridge = make_bridge(name, in_dim=64, out_dim=96).eval()
    assert isinstance(bridge, Bridge) and (bridge.in_dim, bridge.out_dim) == (64, 96)
    for n in (16, 64):
        out = bridge(_x(n=n))
        assert out.shape == (2, bridge.num_output_tokens(n), 96)
        assert torch.isfinite(out).all()
    expected_k = {"linear": 64, "mlp": 64, "qformer": 8, "resampler": 8, "token_merge": 16}[name]
    assert bridge.num_output_tokens(64) == expected_k


@pytest.mark.parametrize("name", ["qformer", "resampler"])
def test_query_bridges_give_k_tokens_whatever_n(name):
    bridge = make_bridge(name, num_queries=5) if name == "qformer" else make_bridge(name, num_latents=5)
    for n in (1, 7, 16, 100):
        assert bridge(_x(n=n)).shape == (2, 5, 128)
        assert bridge.num_output_tokens(n) == 5


@pytest.mark.parametrize("name", NAMES)
def test_every_bridge_trains(name):
    torch.manual_seed(0)
    bridge = make_bridge(name)
    bridge(_x()).pow(2).mean().backward()
    grads = [p.grad for p in bridge.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("name", ["qformer", "resampler"])
def test_padding_is_never_attended(name):
    """A padded row gives exactly what the same row without its padding gives."""
    torch.manual_seed(0)
    bridge = make_bridge(name).eval()
    x = _x(b=2, n=16)
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[1, 9:] = False
    x_junk = x.clone()
    x_junk[1, 9:] = 1e3  # anything in the padding
    with torch.no_grad():
        padded = bridge(x_junk, mask)
        alone = bridge(x[1:, :9])
        unmasked = bridge(x_junk)
    torch.testing.assert_close(padded[1:], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded[:1], bridge(x[:1]).detach(), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(unmasked[1:], alone, atol=1e-3)  # without the mask the junk leaks in
    int_mask = mask.long()
    with torch.no_grad():
        torch.testing.assert_close(bridge(x_junk, int_mask), padded)


@pytest.mark.parametrize("name", ["qformer", "resampler"])
def test_attention_maps_cover_the_features(name):
    torch.manual_seed(0)
    bridge = make_bridge(name, depth=2).eval()
    x = _x(n=16)
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[0, 12:] = False
    with torch.no_grad():
        maps = bridge.cross_attention_maps(x, mask)
        out = bridge(x, mask)
    assert len(maps) == 2 and all(m.shape == (2, 4, 8, 16) for m in maps)
    assert all(m[0, :, :, 12:].abs().max() == 0 for m in maps)
    sums = maps[0].sum(-1)
    if name == "qformer":  # cross-attention: each query's weights over the features sum to one
        torch.testing.assert_close(sums, torch.ones_like(sums))
    else:  # the rest of each latent's attention went to the latents themselves
        assert (sums > 0).all() and (sums < 1).all()
    torch.testing.assert_close(bridge(x, mask), out)  # the explicit path did not change the result


def test_qformer_is_post_norm_and_cross_attends_on_schedule():
    bridge = QFormerBridge(QFormerBridgeConfig(depth=4, cross_attention_frequency=2))
    assert [layer.cross_attn is not None for layer in bridge.layers] == [True, False, True, False]
    assert len(bridge.cross_attention_maps(_x())) == 2
    # post-norm: every layer's output is LayerNorm-ed (zero mean, unit variance per query before the affine)
    layer = bridge.layers[1]
    with torch.no_grad():
        for ln in (layer.ln_self, layer.ln_mlp):
            ln.weight.fill_(1.0)
            ln.bias.zero_()
        q, _ = layer(torch.randn(2, 8, 64) * 5 + 3, _x())
    torch.testing.assert_close(q.mean(-1), torch.zeros(2, 8), atol=1e-5, rtol=0)
    torch.testing.assert_close(q.var(-1, unbiased=False), torch.ones(2, 8), atol=1e-3, rtol=0)


def test_linear_and_mlp_bridges():
    lin = LinearBridge(LinearBridgeConfig(in_dim=64, out_dim=32))
    x = _x()
    torch.testing.assert_close(lin(x), x @ lin.proj.weight.T + lin.proj.bias)
    mlp = MLPBridge(MLPBridgeConfig(in_dim=64, out_dim=32))
    assert [tuple(layer.weight.shape) for layer in mlp.layers] == [(32, 64), (32, 32)]  # LLaVA-1.5: F = D_llm
    h = torch.nn.functional.gelu(mlp.layers[0](x))
    torch.testing.assert_close(mlp(x), mlp.layers[1](h))
    deep = MLPBridge(MLPBridgeConfig(in_dim=64, out_dim=32, hidden_dim=48, depth=3))
    assert [tuple(layer.weight.shape) for layer in deep.layers] == [(48, 64), (48, 48), (32, 48)]
    one = MLPBridge(MLPBridgeConfig(in_dim=64, out_dim=32, depth=1))
    one.layers[0].load_state_dict(lin.proj.state_dict())
    torch.testing.assert_close(one(x), lin(x))  # depth 1 is the linear bridge


def test_mask_passes_through_token_wise_bridges():
    mask = torch.tensor([[1, 1, 0, 0]] * 2)
    for name in ("linear", "mlp"):
        bridge = make_bridge(name)
        x = _x(n=4)
        torch.testing.assert_close(bridge(x, mask), bridge(x))  # per token: the mask cannot change a token
        assert torch.equal(bridge.output_mask(mask), mask.bool())
    for name in ("qformer", "resampler"):
        assert make_bridge(name).output_mask(mask).shape == (2, 8)


def test_pixel_shuffle_order_matches_idefics3():
    x = torch.arange(2 * 16 * 3, dtype=torch.float32).reshape(2, 16, 3)
    out = pixel_shuffle(x, 2)
    assert out.shape == (2, 4, 12)
    grid = x.reshape(2, 4, 4, 3)
    # merged token (0, 1) holds grid tokens (0,2), (0,3), (1,2), (1,3): row offset first, then column, then channel
    expected = torch.cat([grid[:, 0, 2], grid[:, 0, 3], grid[:, 1, 2], grid[:, 1, 3]], dim=-1)
    torch.testing.assert_close(out[:, 1], expected)
    torch.testing.assert_close(out, rearrange(grid, "b (h r1) (w r2) d -> b (h w) (r1 r2 d)", r1=2, r2=2))
    y = _x(n=36)
    torch.testing.assert_close(pixel_shuffle(y, 3), pixel_shuffle_einops(y, 3))
    assert pixel_shuffle(y, 1).equal(y)


def test_token_merge_bridge():
    bridge = TokenMergeBridge(TokenMergeBridgeConfig(in_dim=64, out_dim=32, ratio=2))
    x = _x(n=16)
    torch.testing.assert_close(bridge(x), pixel_shuffle(x, 2) @ bridge.proj.layers[0].weight.T)
    assert bridge.proj.layers[0].bias is None  # Idefics3's projection has no bias
    assert [bridge.num_output_tokens(n) for n in (4, 16, 196, 256)] == [1, 4, 49, 64]
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[1, 8:] = False  # the bottom two grid rows of image 1 are padding
    assert bridge.output_mask(mask).tolist() == [[True] * 4, [True, True, False, False]]
    mlp = TokenMergeBridge(TokenMergeBridgeConfig(depth=2, hidden_dim=40))
    assert mlp(x).shape == (2, 4, 128) and len(mlp.proj.layers) == 2


# --- make_bridge -----------------------------------------------------------------------------------


def test_make_bridge_names_aliases_and_fields():
    assert type(make_bridge("MLP")) is MLPBridge
    assert type(make_bridge("perceiver")) is PerceiverResamplerBridge
    assert type(make_bridge("pixel_shuffle")) is TokenMergeBridge
    assert type(make_bridge("q-former")) is QFormerBridge
    assert make_bridge("mlp", depth=3).config.depth == 3
    with pytest.raises(ValueError, match="unknown bridge 'conv'.*linear"):
        make_bridge("conv")
    with pytest.raises(TypeError, match="num_queries.*valid fields"):
        make_bridge("mlp", num_queries=8)
    with pytest.raises(TypeError, match="str"):
        make_bridge(3)


# --- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_wrong_feature_width_or_rank_names_the_sizes(name):
    bridge = make_bridge(name, in_dim=64)
    with pytest.raises(ValueError, match=r"D_in = 64.*\(2, 16, 32\)"):
        bridge(torch.randn(2, 16, 32))
    with pytest.raises(ValueError, match=r"\(16, 64\)"):
        bridge(torch.randn(16, 64))
    with pytest.raises(ValueError, match="floating-point tensor, got dtype torch.int64"):
        bridge(torch.ones(2, 16, 64, dtype=torch.long))
    with pytest.raises(ValueError, match=r"N >= 1.*\(2, 0, 64\)"):
        bridge(torch.randn(2, 0, 64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        bridge([[0.0] * 64])


@pytest.mark.parametrize("name", NAMES)
def test_bad_mask_names_the_sizes(name):
    bridge = make_bridge(name)
    x = _x(n=16)
    with pytest.raises(ValueError, match=r"\(2, 16\).*\(2, 15\)"):
        bridge(x, torch.ones(2, 15, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(2, 16\).*\(16,\)"):
        bridge(x, torch.ones(16, dtype=torch.bool))
    with pytest.raises(ValueError, match="float32"):
        bridge(x, torch.ones(2, 16))
    with pytest.raises(ValueError, match=r"only 0 and 1.*values \[2\]"):
        bridge(x, torch.full((2, 16), 2))


def test_token_merge_rejects_grids_it_cannot_merge():
    bridge = make_bridge("token_merge", ratio=2)
    with pytest.raises(ValueError, match=r"N=17.*\[CLS\]"):
        bridge(_x(n=17))  # 16 patches + a [CLS] token
    with pytest.raises(ValueError, match=r"S=5.*N=25.*r=2"):
        bridge(_x(n=25))
    with pytest.raises(ValueError, match="N=12"):
        bridge.num_output_tokens(12)
    with pytest.raises(ValueError, match="S=3"):
        pixel_shuffle(_x(n=9), 2)


@pytest.mark.parametrize(
    "config_cls, kwargs, match",
    [
        (LinearBridgeConfig, dict(in_dim=0), "in_dim must be a positive integer, got 0"),
        (MLPBridgeConfig, dict(depth=0), "depth must be a positive integer, got 0"),
        (MLPBridgeConfig, dict(activation="relu"), "activation"),
        (QFormerBridgeConfig, dict(dim=30, num_heads=4), "dim=30 is not divisible"),
        (QFormerBridgeConfig, dict(cross_attention_frequency=0), "cross_attention_frequency"),
        (PerceiverResamplerBridgeConfig, dict(num_heads=4, num_kv_heads=3), "multiple of num_kv_heads=3"),
        (PerceiverResamplerBridgeConfig, dict(input_projection="none"), "in_dim == out_dim"),
        (PerceiverResamplerBridgeConfig, dict(norm="batchnorm"), "norm must be one of"),
        (TokenMergeBridgeConfig, dict(ratio=0), "ratio must be a positive integer, got 0"),
        (QFormerBridgeConfig, dict(dropout=1.0), r"dropout must be a finite number in \[0, 1\), got 1.0"),
        (PerceiverResamplerBridgeConfig, dict(norm_eps=0.0), r"norm_eps must be a finite number in \(0, inf\), got 0.0"),
    ],
)
def test_config_validation(config_cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        config_cls(**kwargs)


def test_config_types():
    with pytest.raises(TypeError, match="in_dim must be an integer, got float 64.0"):
        LinearBridgeConfig(in_dim=64.0)
    with pytest.raises(TypeError, match="num_queries must be an integer, got bool True"):
        QFormerBridgeConfig(num_queries=True)


def test_resampler_variants():
    flamingo = PerceiverResamplerBridge()
    assert isinstance(flamingo.norm, torch.nn.LayerNorm) and flamingo.layers[0].attn.q_proj.bias is None
    idefics2 = PerceiverResamplerBridge(PerceiverResamplerBridgeConfig(
        in_dim=64, out_dim=64, norm="rmsnorm", mlp="swiglu", num_heads=4, head_dim=8, num_kv_heads=2, input_projection="none"))
    attn = idefics2.layers[0].attn
    assert tuple(attn.q_proj.weight.shape) == (32, 64) and tuple(attn.k_proj.weight.shape) == (16, 64)
    assert isinstance(idefics2.input_proj, torch.nn.Identity)
    assert idefics2(_x()).shape == (2, 8, 64)


@pytest.mark.parametrize("name", NAMES)
def test_features_follow_the_parameter_dtype(name):
    torch.manual_seed(0)
    bridge = make_bridge(name).eval()
    x = _x()
    with torch.no_grad():
        ref = bridge(x)
        out = bridge(x.double())  # float64 features are cast to the float32 weights, as transformers does
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("name", NAMES)
def test_output_mask_and_token_count_check_their_input(name):
    bridge = make_bridge(name)
    with pytest.raises(ValueError, match=r"\(B, N\).*\(16,\)"):
        bridge.output_mask(torch.ones(16, dtype=torch.bool))
    with pytest.raises(ValueError, match="float32"):
        bridge.output_mask(torch.ones(2, 16))
    with pytest.raises(ValueError, match="n must be a positive integer, got 0"):
        bridge.num_output_tokens(0)
    with pytest.raises(TypeError, match="n must be an integer, got float 16.0"):
        bridge.num_output_tokens(16.0)
