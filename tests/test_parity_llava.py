"""Backbone A against transformers' LlavaForConditionalGeneration: same vision tower, projector and LM weights.

The tower is converted into our ViT (``clip_vision_from_transformers``), the projector into our
MLPBridge (``mlp_bridge_from_transformers``), and the language model is a plain ``LlamaForCausalLM``
holding LLaVA's ``model.language_model.*`` and ``lm_head.*`` weights, mapped from the live
``state_dict()``. Our ``UnifiedEmbeddingMLLM`` then splices with LLaVA's feature choice
(``feature_layer=-2``, class token dropped) and must give the same logits and loss, for prompts of
different lengths, with one or two images each, right- and left-padded.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from mmllm_course.backbones import UnifiedEmbeddingMLLM  # noqa: E402
from mmllm_course.bridges import mlp_bridge_from_transformers  # noqa: E402
from mmllm_course.encoders import clip_vision_from_transformers  # noqa: E402
from mmllm_course.language import course_lm_tokenizer  # noqa: E402

PROMPTS = ["<image>Describe the image.", "<image>What colour is the circle?", "<image> and <image> Describe the image."]
TARGETS = [" a small red circle in the top left", " red", " two shapes"]
TOL = 1e-5


@pytest.fixture(scope="module")
def pair():
    tok = course_lm_tokenizer()
    image_id = tok.convert_tokens_to_ids("<image>")
    t = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    llama = dict(model_type="llama", vocab_size=len(tok), hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    llava = transformers.LlavaForConditionalGeneration(transformers.LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", image_size=32, patch_size=8, **t), text_config=llama,
        image_token_index=image_id, projector_hidden_act="gelu")).eval()
    assert llava.config.vision_feature_layer == -2 and llava.config.vision_feature_select_strategy == "default"
    # the LM: LLaVA's language model and head, mapped by name from the live state_dict
    lm = transformers.LlamaForCausalLM(llava.config.text_config).eval()
    theirs = llava.state_dict()
    mapped = {"model." + k[len("model.language_model."):]: v for k, v in theirs.items() if k.startswith("model.language_model.")}
    mapped["lm_head.weight"] = theirs["lm_head.weight"]
    result = lm.load_state_dict(mapped, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    vision = clip_vision_from_transformers(llava.model.vision_tower).eval()
    bridge = mlp_bridge_from_transformers(llava).eval()
    ours = UnifiedEmbeddingMLLM(vision, bridge, lm, tok, feature_layer=-2, drop_class_token=True).eval()
    assert ours.num_image_tokens == 16
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))  # prompt 3 holds two images
    return ours, llava, images


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_spliced_logits_and_loss_equal_llava(pair, padding_side):
    ours, llava, images = pair
    batch = ours.tokenize(PROMPTS, TARGETS, padding_side=padding_side)
    lengths = batch["attention_mask"].sum(1)
    assert len(set(lengths.tolist())) == 3, "the prompts must have different lengths"
    positions = ours.position_ids(batch["attention_mask"])
    with torch.no_grad():
        mine = ours(**batch, images=images)
        ref = llava(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=positions,
                    pixel_values=images, labels=batch["labels"])
    diff = (mine.logits - ref.logits).abs().max().item()
    print(f"{padding_side} padding: max |logits - LLaVA| = {diff:.2e}, loss {mine.loss.item():.6f} vs {ref.loss.item():.6f}")
    assert mine.logits.shape == ref.logits.shape
    assert diff < TOL
    assert abs(mine.loss.item() - ref.loss.item()) < TOL


def test_right_padding_matches_llava_default_positions_on_real_tokens(pair):
    """LLaVA's own positions (0..T-1) without position_ids: the real tokens of right-padded rows agree."""
    ours, llava, images = pair
    batch = ours.tokenize(PROMPTS, TARGETS, padding_side="right")
    with torch.no_grad():
        mine = ours(**batch, images=images).logits
        ref = llava(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=images).logits
    real = batch["attention_mask"].bool()
    assert (mine[real] - ref[real]).abs().max().item() < TOL


def test_image_features_equal_llava(pair):
    ours, llava, images = pair
    with torch.no_grad():
        mine = ours.image_embeddings(images)  # (4, 16, 48)
        ref = llava.model.get_image_features(pixel_values=images)
        ref = ref.pooler_output if hasattr(ref, "pooler_output") else ref
        ref = torch.cat(list(ref)) if isinstance(ref, (list, tuple)) else ref
    assert (mine.reshape(-1, 48) - ref.reshape(-1, 48)).abs().max().item() < TOL


def test_greedy_generation_equals_llava(pair):
    """Our generate (the LM's generate on spliced inputs_embeds) continues like LLaVA's generate, row by row."""
    ours, llava, images = pair
    for prompt, imgs in ((PROMPTS[0], images[:1]), (PROMPTS[2], images[2:4])):
        batch = ours.tokenize([prompt])
        with torch.no_grad():
            ref = llava.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=imgs,
                                 max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
        ref_text = ours.tokenizer.decode(ref[0, batch["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        mine = ours.generate([prompt], images=imgs, max_new_tokens=6, eos_token_id=None)
        assert mine == [ref_text]
