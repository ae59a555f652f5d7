"""Backbone B's block and media mask against transformers' Mllama (Llama 3.2 Vision) on identical weights.

``MllamaCrossAttentionDecoderLayer`` (gated cross-attention + gated feed-forward) of a tiny
``MllamaTextConfig`` is converted by ``gated_cross_attention_from_transformers`` from its live
``state_dict()``, with random non-zero gates; both run on the same hidden states, the same media
(two images of two tiles each) and the same mask, built by Mllama's own
``_prepare_cross_attention_mask`` on one side and given as (B, T, S) booleans on the other. Our
media mask with ``attend="last"`` equals the dense mask of Mllama's processor on interleaved
sequences (whose markers are not adjacent: Mllama groups adjacent images).
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
mllama = pytest.importorskip("transformers.models.mllama.modeling_mllama")

from mmllm_course.backbones import gated_cross_attention_from_transformers, media_attention_mask  # noqa: E402

TOL = 1e-5
D, IMAGES, TILES, TOKENS = 32, 2, 2, 3  # media tokens per row S = IMAGES * TILES * TOKENS


def _config(**kw):
    cfg = dict(vocab_size=100, hidden_size=D, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
               intermediate_size=64, cross_attention_layers=[1, 3], bos_token_id=1, eos_token_id=2,
               pad_token_id=0)
    cfg.update(kw)
    return transformers.MllamaTextConfig(**cfg)


@pytest.fixture(scope="module", params=["eager", "sdpa"])
def layers(request):
    torch.manual_seed(0)
    config = _config()
    config._attn_implementation = request.param
    theirs = mllama.MllamaCrossAttentionDecoderLayer(config, layer_idx=1).eval()
    with torch.no_grad():  # random weights everywhere, gates far from 0 (tanh(0) = 0 would hide both branches)
        for p in theirs.parameters():
            p.normal_(0, 0.3)
        theirs.cross_attn_attn_gate.fill_(0.8)
        theirs.cross_attn_mlp_gate.fill_(-0.6)
        theirs.input_layernorm.weight.add_(1.0)
    return theirs, gated_cross_attention_from_transformers(theirs)


def _mask_4d():
    """(B, T, images, tiles) in Mllama's layout: row 0 sees image 0 from token 1 and image 1 from token 5; row 1 one image."""
    t = 8
    m = torch.zeros(2, t, IMAGES, TILES, dtype=torch.long)
    m[0, 1:5, 0] = 1  # tokens 1-4 see image 0 (token 0, the bos, sees none)
    m[0, 5:, 1] = 1  # tokens 5-7 see image 1 only (Flamingo's "most recent image")
    m[1, 2:, 0, :1] = 1  # row 1: one image with one real tile, seen from token 2
    return m


def _run_both(theirs, ours, mask4d):
    torch.manual_seed(1)
    b, t = mask4d.shape[:2]
    hidden = torch.randn(b, t, D)
    media = torch.randn(b, IMAGES * TILES * TOKENS, D)
    cross_mask, full_row = mllama._prepare_cross_attention_mask(mask4d, num_vision_tokens=TOKENS, dtype=torch.float32)
    with torch.no_grad():
        ref = theirs(hidden, cross_attention_states=media, cross_attention_mask=cross_mask, attention_mask=None,
                     full_text_row_masked_out_mask=full_row)
        ref = ref[0] if isinstance(ref, tuple) else ref
        ours_mask = mask4d.bool().repeat_interleave(TOKENS, dim=3).reshape(b, t, -1)  # (B, T, S)
        got = ours(hidden, media, ours_mask)
    return hidden, ref, got, ours_mask.any(-1)


def test_block_matches_mllama_cross_attention_decoder_layer(layers):
    theirs, ours = layers
    hidden, ref, got, sees = _run_both(theirs, ours, _mask_4d())
    diff = (got[sees] - ref[sees]).abs().max().item()
    assert diff < TOL, f"rows that see an image differ by {diff}"
    assert sees.sum() == 13 and (~sees).sum() == 3
    # rows that see no image: ours adds nothing at all (Flamingo); Mllama zeroes only the feed-forward
    # branch and still adds its attention branch (an all-zero additive mask = attention over every media token)
    assert torch.equal(got[~sees], hidden[~sees])
    assert (ref[~sees] - hidden[~sees]).abs().max() > 1e-3


def test_every_row_seeing_an_image_matches_everywhere(layers):
    theirs, ours = layers
    mask4d = torch.ones(2, 6, IMAGES, TILES, dtype=torch.long)
    mask4d[1, :, 1] = 0
    _, ref, got, _ = _run_both(theirs, ours, mask4d)
    assert (got - ref).abs().max().item() < TOL


def test_block_gates_and_names_follow_mllama(layers):
    theirs, ours = layers
    assert ours.gate_values()["attn"] == pytest.approx(float(torch.tanh(torch.tensor(0.8))))
    assert ours.gate_values()["mlp"] == pytest.approx(float(torch.tanh(torch.tensor(-0.6))))
    assert ours.config.num_kv_heads == 2 and ours.config.mlp_dim == 64
    assert torch.equal(ours.k_norm.weight, theirs.cross_attn.k_norm.weight)
    # a fresh Mllama layer starts with both gates at zero, as ours does
    fresh = mllama.MllamaCrossAttentionDecoderLayer(_config(), layer_idx=1)
    assert fresh.cross_attn_attn_gate.item() == 0.0 and fresh.cross_attn_mlp_gate.item() == 0.0


def test_converter_takes_a_whole_model_and_refuses_wrong_input():
    torch.manual_seed(0)
    model = transformers.MllamaForCausalLM(_config()).eval()
    block = gated_cross_attention_from_transformers(model, layer=3)
    assert torch.equal(block.q_proj.weight, model.model.layers[3].cross_attn.q_proj.weight)
    with pytest.raises(ValueError, match=r"one of \[1, 3\]"):
        gated_cross_attention_from_transformers(model, layer=2)  # a self-attention layer
    with pytest.raises(ValueError, match="model_type"):
        gated_cross_attention_from_transformers(model.model.layers[0])  # MllamaSelfAttentionDecoderLayer
    with pytest.raises(TypeError, match="transformers model"):
        gated_cross_attention_from_transformers("not a module".encode())
    with pytest.raises(ValueError, match="layer must be None"):
        gated_cross_attention_from_transformers(model.model.layers[1], layer=1)
    layer = mllama.MllamaCrossAttentionDecoderLayer(_config(), layer_idx=1)
    layer.register_parameter("cross_attn_mlp_gate", None)  # a layer without its feed-forward gate
    with pytest.raises(ValueError, match="missing weights.*cross_attn_mlp_gate"):
        gated_cross_attention_from_transformers(layer)
    gelu = mllama.MllamaCrossAttentionDecoderLayer(_config(hidden_act="gelu"), layer_idx=1)
    with pytest.raises(ValueError, match="silu"):
        gated_cross_attention_from_transformers(gelu)


@pytest.mark.parametrize("ids", [
    [2, 3, 10, 11, 12],  # one image at the start
    [2, 3, 10, 11, 3, 12, 13],  # two images: the text after the second sees only the second
    [2, 10, 3, 11, 12, 3, 13, 14, 3, 15],  # three images, text before the first
])
def test_media_mask_equals_mllama_processor(ids):
    processing = pytest.importorskip("transformers.models.mllama.processing_mllama")
    spans = processing.get_cross_attention_token_mask(ids, image_token_id=3)
    n = len(spans)
    dense = processing.convert_sparse_cross_attention_mask_to_dense([spans], [[1] * n], max_num_tiles=1, length=len(ids))
    theirs = torch.as_tensor(dense[0, :, :, 0]).bool()  # (T, M)
    ours = media_attention_mask(torch.tensor([ids]), 3, attend="last")[0]
    assert torch.equal(ours, theirs)


def test_whole_model_matches_mllama_for_causal_lm():
    """CrossAttentionMLLM around a plain Llama equals MllamaForCausalLM: its cross-attention layers 0 and 2 are
    our blocks before our layers 0 and 1, its self-attention layers 1 and 3 are our frozen Llama's layers."""
    from mmllm_course.backbones import CrossAttentionMLLM
    from mmllm_course.bridges import make_bridge
    from mmllm_course.language import course_lm_tokenizer

    tok = course_lm_tokenizer()
    vocab, rope = len(tok), {"rope_type": "default", "rope_theta": 10000.0}
    config = _config(vocab_size=vocab, cross_attention_layers=[0, 2], max_position_embeddings=64, rope_parameters=rope)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    theirs = transformers.MllamaForCausalLM(config).eval()
    with torch.no_grad():
        for i, (a, m) in {0: (0.7, -0.4), 2: (-0.5, 0.9)}.items():
            theirs.model.layers[i].cross_attn_attn_gate.fill_(a)
            theirs.model.layers[i].cross_attn_mlp_gate.fill_(m)
    rows = theirs.model.embed_tokens.num_embeddings  # Mllama keeps 8 extra embedding rows
    lm = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=rows, hidden_size=D, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=64, rms_norm_eps=config.rms_norm_eps, rope_parameters=rope, tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)).eval()
    sd = theirs.state_dict()
    mapped = {"model.embed_tokens.weight": sd["model.embed_tokens.weight"], "model.norm.weight": sd["model.norm.weight"],
              "lm_head.weight": torch.cat([sd["lm_head.weight"], torch.zeros(rows - vocab, D)])}
    for ours_i, their_i in ((0, 1), (1, 3)):
        prefix = f"model.layers.{their_i}."
        mapped.update({f"model.layers.{ours_i}." + k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)})
    result = lm.load_state_dict(mapped, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    tokens = 3  # media tokens per image; an identity bridge passes Mllama's cross_attention_states through unchanged
    bridge = make_bridge("linear", in_dim=D, out_dim=D)
    with torch.no_grad():
        bridge.proj.weight.copy_(torch.eye(D))
        bridge.proj.bias.zero_()
    ours = CrossAttentionMLLM(None, bridge, lm, tok, every=1, num_image_features=tokens, add_bos=False).eval()
    ours.blocks[0].load_state_dict(gated_cross_attention_from_transformers(theirs, layer=0).state_dict())
    ours.blocks[1].load_state_dict(gated_cross_attention_from_transformers(theirs, layer=2).state_dict())

    # every token sees an image (the rows start with one): Mllama's no-image rows differ by design, see above
    batch = ours.tokenize(["<image> a red circle <image> a blue square", "<image> Describe the image."])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    features = torch.randn(3, tokens, D)  # row 0's two images, then row 1's one
    visible = media_attention_mask(ids, ours.image_token_id, attend="last")  # (B, T, M = 2)
    states = torch.zeros(2, 2, tokens, D)
    states[0], states[1, 0] = features[:2], features[2]
    cross_mask, full_row = mllama._prepare_cross_attention_mask(visible[..., None].long(), num_vision_tokens=tokens,
                                                               dtype=torch.float32)
    with torch.no_grad():
        got = ours(ids, mask, image_features=features).logits[..., :vocab]
        ref = theirs(input_ids=ids, attention_mask=mask, cross_attention_states=states.reshape(2, 2 * tokens, D),
                     cross_attention_mask=cross_mask, full_text_row_masked_out_mask=full_row).logits
        bare = lm(input_ids=ids, attention_mask=mask).logits[..., :vocab]
    real = mask.bool()
    diff = (got[real] - ref[real]).abs().max().item()
    assert diff < TOL, f"logits differ by {diff}"
    assert (bare[real] - ref[real]).abs().max() > 1e-2  # the cross-attention layers matter: the test can fail


def test_adjacent_images_are_where_mllama_differs_from_attend_last():
    processing = pytest.importorskip("transformers.models.mllama.processing_mllama")
    ids = [2, 3, 3, 10, 11]  # "<image><image> a b": Mllama groups the two images
    spans = processing.get_cross_attention_token_mask(ids, image_token_id=3)
    dense = processing.convert_sparse_cross_attention_mask_to_dense([spans], [[1, 1]], max_num_tiles=1, length=len(ids))
    theirs = torch.as_tensor(dense[0, :, :, 0]).bool()
    last = media_attention_mask(torch.tensor([ids]), 3, attend="last")[0]
    assert theirs[3:].all() and not last[3:, 0].any()  # their text sees both images, ours only the second
    assert torch.equal(media_attention_mask(torch.tensor([ids]), 3, attend="all")[0][2:], theirs[2:])
