"""Parity with ``transformers``: ViTModel, CLIPVisionModel, CLIPTextModel and CLIPModel weights loaded
into our modules (from the live object and from a saved folder) give the same numbers.

Tiny random models (REFERENCE-NOTES), every 1-D parameter (LayerNorm weights and biases, linear
biases, [CLS]) perturbed so that a mapping mistake cannot hide behind an init of ones or zeros.
"""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from mmllm_course.encoders.clip import clip_from_transformers  # noqa: E402
from mmllm_course.encoders.text import clip_text_from_transformers  # noqa: E402
from mmllm_course.encoders.vit import clip_vision_from_transformers, vit_from_transformers  # noqa: E402
from mmllm_course.nn.attention import attention_from_clip  # noqa: E402

T = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
I = dict(image_size=32, patch_size=8)  # noqa: E741
TEXT = dict(T, vocab_size=100, max_position_embeddings=16, eos_token_id=99)
ATOL = 1e-5


def _perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.3 * torch.randn(p.shape, generator=g))
            elif p.dim() == 0:  # logit_scale
                p.fill_(2.0)
    return model.eval()


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=ATOL, rtol=ATOL)


def _images(b: int = 3) -> torch.Tensor:
    return torch.rand(b, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _text(b: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids with an eos (99) in every row (at different places), right padding after it."""
    ids = torch.randint(0, 99, (b, 10), generator=torch.Generator().manual_seed(2))
    mask = torch.ones(b, 10, dtype=torch.long)
    for row, pos in enumerate([9, 4, 6, 7][:b]):
        ids[row, pos] = 99
        mask[row, pos + 1 :] = 0
    ids[2, 8] = 99  # a second eos after the first: the first one counts
    return ids, mask


@pytest.fixture(scope="module")
def hf_vit():
    torch.manual_seed(0)
    return _perturb(transformers.ViTModel(transformers.ViTConfig(**T, **I, attn_implementation="eager")))


@pytest.fixture(scope="module")
def hf_clip_vision():
    torch.manual_seed(0)
    return _perturb(transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**T, **I, projection_dim=16)))


@pytest.fixture(scope="module")
def hf_clip():
    torch.manual_seed(0)
    config = transformers.CLIPConfig(vision_config=dict(T, **I), text_config=TEXT, projection_dim=16)
    return _perturb(transformers.CLIPModel(config))


@pytest.mark.parametrize("source", ["object", "folder"])
def test_vit_matches_vitmodel(hf_vit, source, tmp_path):
    if source == "folder":
        hf_vit.save_pretrained(tmp_path)
    ours = vit_from_transformers(hf_vit if source == "object" else tmp_path).eval()
    x = _images()
    with torch.no_grad():
        ref = hf_vit(pixel_values=x, output_hidden_states=True, output_attentions=True)
        out = ours(x, output_hidden_states=True, output_attentions=True)
    _close(out.last_hidden_state, ref.last_hidden_state)
    _close(out.pooled, ref.last_hidden_state[:, 0])  # HF's pooler (dense + tanh) is deliberately not ported
    assert len(out.hidden_states) == len(ref.hidden_states) == 3
    for a, b in zip(out.hidden_states, ref.hidden_states):
        _close(a, b)
    assert len(out.attentions) == len(ref.attentions) == 2
    for a, b in zip(out.attentions, ref.attentions):
        _close(a, b)
    assert ours.config.layer_norm_eps == 1e-12 and ours.config.activation == "gelu"


def test_vit_without_qkv_bias():
    torch.manual_seed(0)
    hf = _perturb(transformers.ViTModel(transformers.ViTConfig(**T, **I, qkv_bias=False)))
    x = _images()
    with torch.no_grad():
        _close(vit_from_transformers(hf).eval()(x).last_hidden_state, hf(pixel_values=x).last_hidden_state)


@pytest.mark.parametrize("source", ["object", "folder"])
def test_vit_matches_clip_vision_model(hf_clip_vision, source, tmp_path):
    if source == "folder":
        hf_clip_vision.save_pretrained(tmp_path)
    ours = clip_vision_from_transformers(hf_clip_vision if source == "object" else tmp_path).eval()
    x = _images()
    with torch.no_grad():
        ref = hf_clip_vision(pixel_values=x, output_hidden_states=True)
        out = ours(x, output_hidden_states=True)
    _close(out.last_hidden_state, ref.last_hidden_state)  # not post-normed
    _close(out.pooled, ref.pooler_output)  # post_layernorm(CLS)
    assert len(out.hidden_states) == len(ref.hidden_states)
    for a, b in zip(out.hidden_states, ref.hidden_states):
        _close(a, b)
    assert ours.config.activation == "quick_gelu"


@pytest.mark.parametrize("source", ["object", "folder"])
def test_clip_matches_clipmodel(hf_clip, source, tmp_path):
    if source == "folder":
        hf_clip.save_pretrained(tmp_path)
    ours = clip_from_transformers(hf_clip if source == "object" else tmp_path).eval()
    x = _images(3)
    ids, mask = _text(4)
    with torch.no_grad():
        ref = hf_clip(input_ids=ids, pixel_values=x, attention_mask=mask)
        logits = ours(x, ids, attention_mask=mask)
        _close(ours.encode_image(x), ref.image_embeds)
        _close(ours.encode_text(ids, mask), ref.text_embeds)
        _close(ours.encode_image(x, normalize=False), hf_clip.get_image_features(pixel_values=x).pooler_output)
        _close(ours.encode_text(ids, mask, normalize=False), hf_clip.get_text_features(input_ids=ids, attention_mask=mask).pooler_output)
    assert logits.shape == (3, 4)
    _close(logits, ref.logits_per_image)
    _close(logits.T, ref.logits_per_text)
    assert ours.logit_scale.item() == pytest.approx(2.0)


def test_clip_text_tower_hidden_states_and_attentions(hf_clip):
    hf_clip.config.text_config._attn_implementation = "eager"
    hf_text = hf_clip.text_model
    hf_text.config._attn_implementation = "eager"
    ours = clip_text_from_transformers(hf_clip).eval()
    ids, mask = _text(4)
    with torch.no_grad():
        ref = hf_text(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        out = ours(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        no_mask = ours(ids)
        ref_no_mask = hf_text(input_ids=ids)
    _close(out.last_hidden_state, ref.last_hidden_state)
    _close(out.pooled, ref.pooler_output)
    _close(no_mask.pooled, ref_no_mask.pooler_output)
    for a, b in zip(out.hidden_states, ref.hidden_states, strict=True):
        _close(a, b)
    assert ref.attentions is not None and len(ref.attentions) == 2
    for a, b in zip(out.attentions, ref.attentions, strict=True):
        _close(a, b)


def test_clip_vision_from_a_clipmodel_object(hf_clip):
    ours = clip_vision_from_transformers(hf_clip).eval()
    x = _images()
    with torch.no_grad():
        _close(ours(x).pooled, hf_clip.vision_model(pixel_values=x).pooler_output)


def test_legacy_eos_token_id_2_pools_where_transformers_does():
    # Old CLIP configs say eos_token_id=2 and transformers then pools at argmax(input_ids); the real
    # end-of-text token is the highest id, so we pool at the first vocab_size - 1.
    torch.manual_seed(0)
    hf = _perturb(transformers.CLIPTextModel(transformers.CLIPTextConfig(**dict(TEXT, eos_token_id=2))))
    ours = clip_text_from_transformers(hf).eval()
    assert ours.config.eos_token_id == 99
    ids, _ = _text(4)
    with torch.no_grad():
        _close(ours(ids).pooled, hf(input_ids=ids).pooler_output)


def test_attention_from_clip_matches_clip_attention():
    from transformers.models.clip.modeling_clip import CLIPAttention

    torch.manual_seed(0)
    cfg = transformers.CLIPVisionConfig(**T)
    ref = _perturb(CLIPAttention(cfg))
    ours = attention_from_clip(ref).eval()
    x = torch.randn(2, 17, 32)
    with torch.no_grad():
        _close(ours(x)[0], ref(x)[0])
