"""Parity with ``transformers``: the bridges hold the references' weights (live object and saved folder)
and compute the same numbers, eval mode, 1e-5.

- ``MLPBridge`` vs LLaVA's ``LlavaMultiModalProjector``;
- ``QFormerBridge`` vs BLIP-2's ``Blip2QFormerModel`` + ``query_tokens`` + ``language_projection``,
  with and without an image padding mask, cross-attention every layer and every 2nd layer;
- ``PerceiverResamplerBridge`` vs ``Idefics2PerceiverResampler`` (grouped-query attention, RMSNorm,
  SwiGLU) and the whole Idefics2 connector (SwiGLU input projection + resampler);
- ``TokenMergeBridge`` vs ``Idefics3Connector`` and ``SmolVLMConnector`` (pixel shuffle + linear).

Tiny random models (REFERENCE-NOTES), every parameter perturbed so that a mapping mistake cannot hide
behind an init of ones or zeros. The converters refuse a checkpoint of the wrong ``model_type`` and
fail on a weight that is missing or that the bridge would not use.
"""

import os

import pytest
import torch

transformers = pytest.importorskip("transformers")

from mmllm_course.bridges import (  # noqa: E402
    mlp_bridge_from_transformers,
    perceiver_resampler_bridge_from_transformers,
    qformer_bridge_from_transformers,
    token_merge_bridge_from_transformers,
)

T = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
I = dict(image_size=32, patch_size=8)  # noqa: E741
LLAMA = dict(model_type="llama", vocab_size=100, hidden_size=48, intermediate_size=64, num_hidden_layers=1,
             num_attention_heads=4, num_key_value_heads=2)
ATOL = 1e-5


def _perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return model.eval()


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=ATOL, rtol=ATOL)


def _features(b: int = 3, n: int = 16, d: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, n, d, generator=torch.Generator().manual_seed(seed))


def _padding_mask(b: int = 3, n: int = 16) -> torch.Tensor:
    """Long 0/1 mask (as a processor returns): row 0 full, rows 1.. padded at different places."""
    mask = torch.ones(b, n, dtype=torch.long)
    for row, keep in enumerate([n, 9, 4][:b]):
        mask[row, keep:] = 0
    return mask


def _save(model: torch.nn.Module, path) -> str:
    model.save_pretrained(path)
    return str(path)


def _converted(converter, hf: torch.nn.Module, source: str, tmp_path, module: torch.nn.Module | None = None):
    """``converter`` (in eval mode) given the model object ("object"), a folder saved from it ("folder") or ``module``."""
    given = {"object": hf, "folder": None}.get(source, module)
    return converter(given if given is not None else _save(hf, tmp_path)).eval()


def _edit_checkpoint(folder: str, edit) -> None:
    from safetensors.torch import load_file, save_file

    file = os.path.join(folder, "model.safetensors")
    state = load_file(file)
    edit(state)
    save_file(state, file, metadata={"format": "pt"})


# --- LLaVA: MLPBridge -----------------------------------------------------------------------------


def _llava(**kw):
    torch.manual_seed(0)
    config = transformers.LlavaConfig(vision_config=dict(model_type="clip_vision_model", **T, **I), text_config=LLAMA,
                                      image_token_index=99, **kw)
    return _perturb(transformers.LlavaForConditionalGeneration(config))


@pytest.fixture(scope="module")
def hf_llava():
    return _llava()


@pytest.mark.parametrize("source", ["object", "projector", "folder"])
def test_mlp_bridge_matches_llava_projector(hf_llava, source, tmp_path):
    ours = _converted(mlp_bridge_from_transformers, hf_llava, source, tmp_path, hf_llava.model.multi_modal_projector)
    x = _features()
    with torch.no_grad():
        ref = hf_llava.model.multi_modal_projector(x)
        out = ours(x)
    assert out.shape == (3, 16, 48) and ours.num_output_tokens(16) == 16
    _close(out, ref)
    assert ours.config.depth == 2 and ours.config.in_dim == 32 and ours.config.hidden_dim == 48


def test_mlp_bridge_two_feature_layers_and_tanh_gelu():
    hf = _llava(vision_feature_layer=[-2, -1], projector_hidden_act="gelu_pytorch_tanh")
    ours = mlp_bridge_from_transformers(hf).eval()
    x = _features(d=64)  # two layers' features side by side
    with torch.no_grad():
        _close(ours(x), hf.model.multi_modal_projector(x))
    assert ours.config.activation == "gelu_tanh" and ours.config.in_dim == 64


def test_mlp_bridge_matches_llava_end_to_end_image_features(hf_llava):
    """Our bridge on the reference's own vision features gives the image features LLaVA splices into the LM."""
    pixels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    ours = mlp_bridge_from_transformers(hf_llava).eval()
    with torch.no_grad():
        ref = hf_llava.model.get_image_features(pixel_values=pixels)
        ref = ref.pooler_output if hasattr(ref, "pooler_output") else ref
        ref = torch.stack(list(ref)) if isinstance(ref, (list, tuple)) else ref
        layer = hf_llava.config.vision_feature_layer
        feats = hf_llava.model.vision_tower(pixels, output_hidden_states=True).hidden_states[layer]
        if hf_llava.config.vision_feature_select_strategy == "default":
            feats = feats[:, 1:]  # LLaVA drops the [CLS] token
        _close(ours(feats).reshape(ref.shape), ref)


# --- BLIP-2: QFormerBridge ------------------------------------------------------------------------


def _blip2(frequency: int = 1, layers: int = 2, attn: str = "sdpa"):
    torch.manual_seed(0)
    config = transformers.Blip2Config(
        vision_config=dict(T, **I),
        qformer_config=dict(T, num_hidden_layers=layers, vocab_size=100, cross_attention_frequency=frequency,
                            encoder_hidden_size=32),
        text_config=dict(model_type="opt", vocab_size=100, hidden_size=48, num_hidden_layers=1, ffn_dim=64,
                         num_attention_heads=4, word_embed_proj_dim=48),
        num_query_tokens=8,
    )
    config.qformer_config._attn_implementation = attn
    return _perturb(transformers.Blip2ForConditionalGeneration(config))


@pytest.fixture(scope="module")
def hf_blip2():
    return _blip2()


def _blip2_reference(hf, x, mask=None, **kw):
    queries = hf.query_tokens.expand(x.shape[0], -1, -1)
    out = hf.qformer(query_embeds=queries, encoder_hidden_states=x, encoder_attention_mask=mask, **kw)
    return hf.language_projection(out.last_hidden_state), out


@pytest.mark.parametrize("source", ["object", "folder"])
@pytest.mark.parametrize("masked", [False, True])
def test_qformer_bridge_matches_blip2(hf_blip2, source, masked, tmp_path):
    ours = _converted(qformer_bridge_from_transformers, hf_blip2, source, tmp_path)
    x = _features()
    mask = _padding_mask() if masked else None
    with torch.no_grad():
        ref, _ = _blip2_reference(hf_blip2, x, mask)
        out = ours(x, mask)
    assert out.shape == (3, 8, 48) and ours.num_output_tokens(16) == ours.num_output_tokens(100) == 8
    _close(out, ref)
    if masked:  # the mask matters: padded features are ignored, so changing them changes nothing
        x2 = x.clone()
        x2[mask == 0] = 100.0
        with torch.no_grad():
            _close(ours(x2, mask), out)
            assert not torch.allclose(ours(x2), out, atol=1e-3)


def test_qformer_bridge_cross_attention_every_second_layer():
    hf = _blip2(frequency=2, layers=3)
    ours = qformer_bridge_from_transformers(hf).eval()
    assert [layer.cross_attn is not None for layer in ours.layers] == [True, False, True]
    x, mask = _features(), _padding_mask()
    with torch.no_grad():
        _close(ours(x, mask), _blip2_reference(hf, x, mask)[0])


def test_qformer_bridge_attention_maps_match_eager_blip2():
    hf = _blip2(attn="eager")
    ours = qformer_bridge_from_transformers(hf).eval()
    x, mask = _features(), _padding_mask()
    with torch.no_grad():
        _, ref = _blip2_reference(hf, x, mask, output_attentions=True)
        maps = ours.cross_attention_maps(x, mask)
    assert len(maps) == len(ref.cross_attentions) == 2
    for a, b in zip(maps, ref.cross_attentions):
        assert a.shape == (3, 4, 8, 16)
        _close(a, b)
        assert a[mask[:, None, None, :].expand_as(a) == 0].abs().max() == 0  # no weight on padding


def test_qformer_bridge_matches_blip2_image_features(hf_blip2):
    pixels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    ours = qformer_bridge_from_transformers(hf_blip2).eval()
    with torch.no_grad():
        ref = hf_blip2.get_image_features(pixel_values=pixels)
        ref = ref.pooler_output if hasattr(ref, "pooler_output") else ref
        feats = hf_blip2.vision_model(pixel_values=pixels).last_hidden_state
        _close(ours(feats), ref)


def test_qformer_bridge_refuses_text_feed_forward():
    torch.manual_seed(0)
    config = transformers.Blip2Config(
        vision_config=dict(T, **I),
        qformer_config=dict(T, vocab_size=100, cross_attention_frequency=1, encoder_hidden_size=32, use_qformer_text_input=True),
        text_config=dict(model_type="opt", vocab_size=100, hidden_size=48, num_hidden_layers=1, ffn_dim=64,
                         num_attention_heads=4, word_embed_proj_dim=48),
        num_query_tokens=8,
    )
    with pytest.raises(ValueError, match=r"unused source weights \[.*intermediate\.dense"):
        qformer_bridge_from_transformers(transformers.Blip2ForConditionalGeneration(config))


# --- Idefics2: PerceiverResamplerBridge -----------------------------------------------------------

PERCEIVER = dict(resampler_n_latents=8, resampler_depth=2, resampler_n_heads=4, resampler_head_dim=8, num_key_value_heads=2)


@pytest.fixture(scope="module")
def hf_resampler():
    from transformers.models.idefics2.modeling_idefics2 import Idefics2PerceiverResampler

    torch.manual_seed(0)
    return _perturb(Idefics2PerceiverResampler(transformers.Idefics2PerceiverConfig(hidden_size=32, **PERCEIVER)))


@pytest.mark.parametrize("source", ["object", "folder"])
@pytest.mark.parametrize("masked", [False, True])
def test_resampler_bridge_matches_idefics2(hf_resampler, source, masked, tmp_path):
    ours = _converted(perceiver_resampler_bridge_from_transformers, hf_resampler, source, tmp_path)
    x = _features()
    mask = _padding_mask() if masked else torch.ones(3, 16, dtype=torch.long)  # its forward needs a mask
    with torch.no_grad():
        ref = hf_resampler(context=x, attention_mask=mask)
        out = ours(x, mask if masked else None)
    assert out.shape == (3, 8, 32) and ours.num_output_tokens(16) == ours.num_output_tokens(7) == 8
    assert ours.config.num_kv_heads == 2 and ours.config.head_dim == 8
    _close(out, ref)


def test_resampler_bridge_matches_whole_idefics2_connector(tmp_path):
    torch.manual_seed(0)
    config = transformers.Idefics2Config(
        vision_config=dict(T, **I), perceiver_config=dict(hidden_size=48, **PERCEIVER),
        text_config=dict(model_type="mistral", vocab_size=100, hidden_size=48, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2),
    )
    hf = _perturb(transformers.Idefics2ForConditionalGeneration(config))
    x, mask = _features(), _padding_mask()
    with torch.no_grad():
        ref = hf.model.connector(x, attention_mask=mask)
    for given in (hf, _save(hf, tmp_path)):
        ours = perceiver_resampler_bridge_from_transformers(given).eval()
        assert ours.config.input_projection == "swiglu" and (ours.in_dim, ours.out_dim) == (32, 48)
        with torch.no_grad():
            _close(ours(x, mask), ref)


# --- Idefics3 / SmolVLM: TokenMergeBridge ---------------------------------------------------------


def _vlm(kind: str, scale_factor: int = 2):
    torch.manual_seed(0)
    cls, cfg = {"idefics3": (transformers.Idefics3ForConditionalGeneration, transformers.Idefics3Config),
                "smolvlm": (transformers.SmolVLMForConditionalGeneration, transformers.SmolVLMConfig)}[kind]
    return _perturb(cls(cfg(vision_config=dict(T, **I), text_config=LLAMA, scale_factor=scale_factor)))


@pytest.mark.parametrize("kind", ["idefics3", "smolvlm"])
@pytest.mark.parametrize("source", ["object", "connector", "folder"])
def test_token_merge_bridge_matches_connector(kind, source, tmp_path):
    hf = _vlm(kind)
    ours = _converted(token_merge_bridge_from_transformers, hf, source, tmp_path, hf.model.connector)
    x = _features()
    with torch.no_grad():
        ref = hf.model.connector(x)
        out = ours(x)
    assert out.shape == (3, 4, 48) and ours.num_output_tokens(16) == 4
    _close(out, ref)


def test_token_merge_bridge_ratio_4():
    hf = _vlm("idefics3", scale_factor=4)
    ours = token_merge_bridge_from_transformers(hf).eval()
    x = _features(n=64)
    with torch.no_grad():
        _close(ours(x), hf.model.connector(x))
    assert ours.num_output_tokens(64) == 4


# --- converters refuse what they cannot convert faithfully ---------------------------------------


def test_converters_refuse_the_wrong_model_type(hf_llava, hf_blip2, tmp_path):
    llava_folder = _save(hf_llava, tmp_path / "llava")
    for converter in (qformer_bridge_from_transformers, perceiver_resampler_bridge_from_transformers,
                      token_merge_bridge_from_transformers):
        with pytest.raises(ValueError, match="'llava'"):
            converter(llava_folder)
    with pytest.raises(ValueError, match="blip-2"):
        mlp_bridge_from_transformers(hf_blip2)
    with pytest.raises(ValueError, match="blip-2"):
        mlp_bridge_from_transformers(_save(hf_blip2, tmp_path / "blip2"))
    with pytest.raises(TypeError, match="folder path"):
        mlp_bridge_from_transformers(42)


def test_converters_fail_on_missing_weights(hf_llava, hf_blip2, tmp_path):
    folder = _save(hf_llava, tmp_path / "llava")
    _edit_checkpoint(folder, lambda s: s.pop(next(k for k in s if "multi_modal_projector.linear_2.weight" in k)))
    with pytest.raises(ValueError, match="linear_2.weight"):
        mlp_bridge_from_transformers(folder)
    folder = _save(hf_blip2, tmp_path / "blip2")
    _edit_checkpoint(folder, lambda s: s.pop(next(k for k in s if "crossattention.attention.key.bias" in k)))
    with pytest.raises(ValueError, match="crossattention.attention.key.bias"):
        qformer_bridge_from_transformers(folder)


def test_converters_fail_on_unused_weights(hf_llava, tmp_path):
    folder = _save(hf_llava, tmp_path / "llava")
    extra = torch.zeros(48, 48)
    _edit_checkpoint(folder, lambda s: s.update({"multi_modal_projector.linear_3.weight": extra}))
    with pytest.raises(ValueError, match="linear_3"):
        mlp_bridge_from_transformers(folder)
    # a live object with a layer the bridge would silently drop
    projector = _llava().model.multi_modal_projector
    projector.linear_3 = torch.nn.Linear(48, 48)
    with pytest.raises(ValueError, match="linear_3"):
        mlp_bridge_from_transformers(projector)
