"""Converters from ``transformers`` (issue 6, section 3): never silent random weights.

A converter refuses a checkpoint of the wrong ``model_type`` (object, saved folder, before anything
is loaded), refuses models it cannot convert by name with the supported list, fails when a weight
is missing or left unused, matches ``CLIPModel``'s logits for any stored ``logit_scale``, and
carries dropout over so a converted model in train mode equals the reference under the same seed.
"""

import json
import math

import pytest
import torch

transformers = pytest.importorskip("transformers")

from mmllm_course.encoders import (  # noqa: E402
    CLIP,
    CLIPConfig,
    clip_from_transformers,
    clip_text_from_transformers,
    clip_vision_from_transformers,
    load_pretrained_clip,
    vision_embeddings_from_vit,
    vit_from_transformers,
)
from mmllm_course.nn import attention_from_clip  # noqa: E402

T = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
I = dict(image_size=32, patch_size=8)  # noqa: E741
TEXT = dict(T, vocab_size=100, max_position_embeddings=16, eos_token_id=99)
SUPPORTED = ["'vit'", "'clip'", "'clip_vision_model'", "'clip_text_model'"]


def _vit(**kw):
    torch.manual_seed(0)
    return transformers.ViTModel(transformers.ViTConfig(**T, **I, **kw), add_pooling_layer=False).eval()


def _clip(vision=None, text=None):
    torch.manual_seed(0)
    config = transformers.CLIPConfig(vision_config=dict(T, **I, **(vision or {})), text_config=dict(TEXT, **(text or {})),
                                     projection_dim=16)
    return transformers.CLIPModel(config).eval()


def _clip_vision():
    torch.manual_seed(0)
    return transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**T, **I)).eval()


def _images(b=2):
    return torch.rand(b, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _ids(b=3):
    ids = torch.randint(0, 99, (b, 8), generator=torch.Generator().manual_seed(2))
    ids[:, -2] = 99
    return ids


def _no_loading(monkeypatch):
    """Make every from_pretrained fail loudly: a converter must refuse before it loads anything."""
    def boom(*args, **kwargs):
        raise AssertionError("from_pretrained was called on a checkpoint of the wrong kind")

    for name in ("ViTModel", "CLIPModel", "CLIPVisionModel", "CLIPTextModel"):
        monkeypatch.setattr(getattr(transformers, name), "from_pretrained", boom)


# --------------------------------------------------------------------------------- wrong model_type


@pytest.mark.parametrize(
    "converter, saved, came",
    [
        (vit_from_transformers, _clip, "'clip'"),  # was: a 12-layer 768-wide ViT of random weights
        (vit_from_transformers, _clip_vision, "'clip_vision_model'"),
        (clip_from_transformers, _clip_vision, "'clip_vision_model'"),  # was: random weights, differing by ~4.6
        (clip_from_transformers, _vit, "'vit'"),
        (clip_vision_from_transformers, _vit, "'vit'"),
        (clip_text_from_transformers, _vit, "'vit'"),
        (clip_text_from_transformers, _clip_vision, "'clip_vision_model'"),
    ],
)
def test_a_folder_of_the_wrong_kind_is_refused_before_loading(converter, saved, came, tmp_path, monkeypatch):
    saved().save_pretrained(tmp_path)
    _no_loading(monkeypatch)
    with pytest.raises(ValueError) as info:
        converter(tmp_path)
    message = str(info.value)
    assert f"model_type {came}" in message and converter.__name__ in message
    for model_type in SUPPORTED:
        assert model_type in message


@pytest.mark.parametrize(
    "converter, build",
    [(vit_from_transformers, _clip), (clip_from_transformers, _vit), (clip_vision_from_transformers, _vit),
     (clip_text_from_transformers, _clip_vision)],
)
def test_an_object_of_the_wrong_kind_is_refused(converter, build):
    with pytest.raises(ValueError, match="converts model_type"):
        converter(build())


@pytest.mark.parametrize(
    "cls, config, model_type",
    [
        ("DeiTModel", lambda: transformers.DeiTConfig(**T, **I), "deit"),
        ("Dinov2Model", lambda: transformers.Dinov2Config(**T, **I), "dinov2"),
        ("SiglipVisionModel", lambda: transformers.SiglipVisionConfig(**T, **I), "siglip_vision_model"),
    ],
)
def test_unsupported_architectures_are_refused_by_name(cls, config, model_type, tmp_path):
    model = getattr(transformers, cls)(config()).eval()
    for converter in (vit_from_transformers, clip_vision_from_transformers, clip_from_transformers):
        with pytest.raises(ValueError, match=f"model_type '{model_type}'.*DeiT, DINOv2, SigLIP") as info:
            converter(model)  # was: KeyError or a size mismatch
        for supported in SUPPORTED:
            assert supported in str(info.value)
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=f"model_type '{model_type}'"):
        vit_from_transformers(tmp_path)


def test_a_missing_folder_or_hub_name_of_the_wrong_kind(tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        vit_from_transformers(tmp_path / "nothing_here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="without a config.json"):
        clip_from_transformers(tmp_path / "empty")
    _vit().save_pretrained(tmp_path / "vit")
    with pytest.raises(ValueError, match="load_pretrained_clip converts model_type \\['clip'\\].*'vit'"):
        load_pretrained_clip(str(tmp_path / "vit"))  # the hub-name path goes through the same check


# --------------------------------------------------------------------------------- every weight, once


def test_a_missing_weight_is_named():
    hf = _vit()
    hf.layernorm = torch.nn.Identity()  # the final LayerNorm's weights are gone
    with pytest.raises(ValueError, match=r"missing weights \['layernorm.bias', 'layernorm.weight'\]|missing weights \['layernorm.weight', 'layernorm.bias'\]"):
        vit_from_transformers(hf)


def test_an_unused_weight_is_named():
    hf = _clip()
    hf.vision_model.extra_adapter = torch.nn.Linear(2, 2)  # a weight no mapping reads
    with pytest.raises(ValueError, match=r"unused source weights \['vision_model.extra_adapter.bias', 'vision_model.extra_adapter.weight'\]"):
        clip_from_transformers(hf)
    with pytest.raises(ValueError, match="unused source weights.*extra_adapter"):
        clip_vision_from_transformers(hf)


def test_a_folder_with_a_missing_weight_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    _vit().save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["encoder.layer.1.output.dense.weight"]  # saved under the 4.x names: live layers.1.mlp.fc2.weight
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing keys: \['layers.1.mlp.fc2.weight'\]"):
        vit_from_transformers(tmp_path)  # was: loaded with that weight freshly initialised


def test_heads_we_do_not_port_are_not_unused_weights(tmp_path):
    torch.manual_seed(0)
    with_pooler = transformers.ViTModel(transformers.ViTConfig(**T, **I)).eval()  # dense + tanh pooler
    vit_from_transformers(with_pooler)
    classifier = transformers.ViTForImageClassification(transformers.ViTConfig(**T, **I, num_labels=3)).eval()
    vit_from_transformers(classifier)
    classifier.save_pretrained(tmp_path)
    vit_from_transformers(tmp_path)
    with_projection = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(**T, **I, projection_dim=8))
    clip_vision_from_transformers(with_projection)


def test_vision_embeddings_and_attention_refuse_other_modules():
    with pytest.raises(ValueError, match="not a ViTEmbeddings.*CLIPVisionEmbeddings"):
        vision_embeddings_from_vit(_clip().vision_model.embeddings)
    with pytest.raises(ValueError, match="not a CLIPAttention.*missing \\['out_proj.bias', 'out_proj.weight'\\].*o_proj"):
        attention_from_clip(_vit().layers[0].attention)
    with pytest.raises(TypeError, match="CLIPAttention"):
        attention_from_clip("q_proj")


# --------------------------------------------------------------------------------------- logit scale


def test_converted_logits_match_clipmodel_above_ln_100():
    hf = _clip()
    with torch.no_grad():
        hf.logit_scale.fill_(math.log(300.0))  # above CLIP's training cap of 100
    ours = clip_from_transformers(hf).eval()
    assert ours.config.max_logit_scale is None
    x, ids = _images(), _ids()
    with torch.no_grad():
        ref = hf(input_ids=ids, pixel_values=x).logits_per_image
        got = ours(x, ids)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-5)  # was: capped at 100, a third of the reference
    assert ours.scale().item() == pytest.approx(300.0, rel=1e-5)


def test_models_built_here_keep_the_documented_cap():
    model = CLIP(CLIPConfig()).eval()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000.0))
    assert model.scale().item() == pytest.approx(100.0)
    uncapped = CLIP(CLIPConfig(max_logit_scale=None)).eval()
    with torch.no_grad():
        uncapped.logit_scale.fill_(math.log(1000.0))
    assert uncapped.scale().item() == pytest.approx(1000.0, rel=1e-5)


# ------------------------------------------------------------------------------------------- dropout


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("output_attentions", [False, True])
def test_vit_dropout_carries_over_and_matches_in_train_mode(attn_implementation, output_attentions):
    hf = _vit(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.2, attn_implementation=attn_implementation).train()
    ours = vit_from_transformers(hf)
    assert ours.training and (ours.config.dropout, ours.config.attention_dropout) == (0.1, 0.2)
    x = _images()
    torch.manual_seed(5)
    ref = hf(pixel_values=x).last_hidden_state
    torch.manual_seed(5)
    got = ours(x, output_attentions=output_attentions).last_hidden_state  # the explicit path drops like eager
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    torch.manual_seed(6)
    assert not torch.allclose(ours(x).last_hidden_state, got)  # dropout is really on


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_clip_attention_dropout_carries_over_and_matches_in_train_mode(attn_implementation):
    hf = _clip(vision=dict(attention_dropout=0.3), text=dict(attention_dropout=0.2))
    hf.config._attn_implementation = attn_implementation
    for sub in (hf.config.vision_config, hf.config.text_config):
        sub._attn_implementation = attn_implementation
    hf.train()
    ours = clip_from_transformers(hf)
    assert ours.training
    assert ours.config.vision.attention_dropout == 0.3 and ours.config.text.attention_dropout == 0.2
    assert ours.config.vision.dropout == 0.0 and ours.config.text.dropout == 0.0  # CLIP has no other dropout
    assert clip_vision_from_transformers(hf).config.attention_dropout == 0.3
    assert clip_text_from_transformers(hf).config.attention_dropout == 0.2
    x, ids = _images(), _ids()
    torch.manual_seed(5)
    ref = hf(input_ids=ids, pixel_values=x).logits_per_image
    torch.manual_seed(5)
    got = ours(x, ids)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-5)


def test_attention_from_clip_carries_dropout():
    from transformers.models.clip.modeling_clip import CLIPAttention

    ref = CLIPAttention(transformers.CLIPVisionConfig(**dict(T, attention_dropout=0.25)))
    ours = attention_from_clip(ref)
    assert ours.dropout == 0.25 and ours.training == ref.training


def test_saved_config_json_is_read_not_trusted_blindly(tmp_path):
    """A folder whose config.json says 'vit' but whose weights are CLIP's is caught by the weight check."""
    _clip_vision().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_type"] = "vit"
    config["architectures"] = ["ViTModel"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not hold exactly the weights of a ViTModel"):
        vit_from_transformers(tmp_path)


def test_one_tower_from_a_saved_clipmodel_folder(tmp_path):
    hf = _clip()
    hf.save_pretrained(tmp_path)
    x, ids = _images(), _ids()
    vision, text = clip_vision_from_transformers(tmp_path).eval(), clip_text_from_transformers(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(vision(x).pooled, hf.vision_model(pixel_values=x).pooler_output, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(text(ids).pooled, hf.text_model(input_ids=ids).pooler_output, atol=1e-5, rtol=1e-5)
