"""Fuzz specs of chapter 6 (backbone B: gated cross-attention inside a frozen LM)."""

from __future__ import annotations

import functools

import torch


def specs(fuzz):
    """fuzz is tests/test_api_fuzz.py itself (Spec, Call, _rand, _fs, _tiny_lm, _lm_tok, _mllm, MISSING_FOLDER...)."""
    from mmllm_course.backbones import (
        CrossAttentionMLLM,
        GatedCrossAttentionBlock,
        GatedCrossAttentionConfig,
        gated_cross_attention_from_transformers,
        media_attention_mask,
    )
    from mmllm_course.bridges import make_bridge

    Spec, Call, _rand, _fs = fuzz.Spec, fuzz.Call, fuzz._rand, fuzz._fs
    prompts = ["<image>Describe the image.", "A <image> then <image>?"]

    def model(every: int = 1) -> CrossAttentionMLLM:
        torch.manual_seed(0)
        return CrossAttentionMLLM(fuzz._mllm().encoder, make_bridge("mlp", in_dim=16, out_dim=32), fuzz._tiny_lm(),
                                  fuzz._lm_tok(), every=every).eval()

    def batch(targets: bool = True) -> dict:
        return model().tokenize(prompts, [" a red circle", " red"] if targets else None)

    def block() -> GatedCrossAttentionBlock:
        torch.manual_seed(0)
        b = GatedCrossAttentionBlock(GatedCrossAttentionConfig(dim=16, num_heads=4, num_kv_heads=2, mlp_dim=32, media_dim=8))
        with torch.no_grad():
            b.attn_gate.fill_(0.5)
            b.mlp_gate.fill_(0.5)
        return b.eval()

    def mask(b: int = 2, t: int = 5, s: int = 6) -> torch.Tensor:
        m = torch.ones(b, t, s, dtype=torch.bool)
        m[0, 0] = False
        return m

    @functools.lru_cache(maxsize=None)
    def mllama_layer():
        import pytest

        transformers = pytest.importorskip("transformers")
        from transformers.models.mllama.modeling_mllama import MllamaCrossAttentionDecoderLayer

        config = transformers.MllamaTextConfig(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                                               num_key_value_heads=2, intermediate_size=64, cross_attention_layers=[1, 3],
                                               bos_token_id=1, eos_token_id=2, pad_token_id=0)
        torch.manual_seed(0)
        return MllamaCrossAttentionDecoderLayer(config, layer_idx=1).eval()

    ids = torch.tensor([[2, 3, 10, 3, 11, 0], [2, 10, 3, 11, 12, 13]])
    return {
        "media_attention_mask": Spec(
            lambda: [Call(media_attention_mask, (ids, 3), dict(attend="all", attention_mask=torch.ones(2, 6, dtype=torch.long)),
                          zero_ok=_fs("image_token_id"))],
            lambda: [("attend 'first'", lambda: media_attention_mask(ids, 3, attend="first")),
                     ("mask (2, 5)", lambda: media_attention_mask(ids, 3, attention_mask=torch.ones(2, 5, dtype=torch.long))),
                     ("mask with a 2", lambda: media_attention_mask(ids, 3, attention_mask=2 * torch.ones(2, 6, dtype=torch.long))),
                     ("float mask", lambda: media_attention_mask(ids, 3, attention_mask=torch.ones(2, 6)))],
        ),
        "GatedCrossAttentionConfig": Spec(
            lambda: [Call(GatedCrossAttentionConfig, kwargs=dict(dim=16, num_heads=4, num_kv_heads=2, mlp_dim=32, media_dim=8,
                                                                  eps=1e-5))],
            lambda: [("dim not divisible", lambda: GatedCrossAttentionConfig(dim=30, num_heads=4)),
                     ("4 heads, 3 kv heads", lambda: GatedCrossAttentionConfig(dim=16, num_heads=4, num_kv_heads=3)),
                     ("qk_norm 'yes'", lambda: GatedCrossAttentionConfig(qk_norm="yes"))],
        ),
        "GatedCrossAttentionBlock": Spec(
            lambda: [
                Call(GatedCrossAttentionBlock, (GatedCrossAttentionConfig(dim=16, num_heads=4),)),
                Call(block(), (_rand(2, 5, 16), _rand(2, 6, 8), mask()), dict(return_attention=True)),
                Call(block(), (_rand(2, 5, 16), _rand(2, 6, 8))),
            ],
            lambda: [("x width 12", lambda: block()(_rand(2, 5, 12), _rand(2, 6, 8))),
                     ("media width 16", lambda: block()(_rand(2, 5, 16), _rand(2, 6, 16))),
                     ("media batch 3", lambda: block()(_rand(2, 5, 16), _rand(3, 6, 8))),
                     ("no media tokens", lambda: block()(_rand(2, 5, 16), _rand(2, 0, 8))),
                     ("mask (2, 5, 7)", lambda: block()(_rand(2, 5, 16), _rand(2, 6, 8), mask(s=7))),
                     ("float mask", lambda: block()(_rand(2, 5, 16), _rand(2, 6, 8), mask().float())),
                     ("config 'abc'", lambda: GatedCrossAttentionBlock("abc"))],
        ),
        "gated_cross_attention_from_transformers": Spec(
            lambda: [Call(gated_cross_attention_from_transformers, (mllama_layer(),), str_value=fuzz.MISSING_FOLDER)],
            lambda: [("a Linear", lambda: gated_cross_attention_from_transformers(torch.nn.Linear(2, 2))),
                     ("a layer and an index", lambda: gated_cross_attention_from_transformers(mllama_layer(), layer=1)),
                     ("a Llama model", lambda: gated_cross_attention_from_transformers(fuzz._tiny_lm(), layer=0))],
        ),
        "CrossAttentionMLLM": Spec(
            lambda: [
                Call(CrossAttentionMLLM, (fuzz._mllm().encoder, make_bridge("mlp", in_dim=16, out_dim=32), fuzz._tiny_lm(),
                                          fuzz._lm_tok()), dict(every=1, feature_layer=-2, drop_class_token=True),
                     negative_ok=_fs("feature_layer"), zero_ok=_fs("feature_layer")),
                Call(model(), kwargs=dict(**batch(), images=_rand(3, 3, 32, 32))),
                Call(model(), kwargs=dict(**batch(False), image_features=_rand(3, 17, 16))),
                Call(model().generate, (prompts,), dict(images=_rand(3, 3, 32, 32), max_new_tokens=3)),
                Call(model().tokenize, (prompts, [" a red circle", " red"])),
                Call(model().media, (batch()["input_ids"], model().position_ids(batch()["attention_mask"])),
                     dict(images=_rand(3, 3, 32, 32)), run_good=True, fixed=_fs("position_ids")),
                Call(model().tokens_in_context, (batch()["attention_mask"],)),
                Call(model().gate_values),
            ],
            lambda: [
                ("every 2 for 1 layer", lambda: model(every=2)),
                ("attend 'first'", lambda: CrossAttentionMLLM(fuzz._mllm().encoder, make_bridge("mlp", in_dim=16, out_dim=32),
                                                              fuzz._tiny_lm(), fuzz._lm_tok(), attend="first")),
                ("block_config 'abc'", lambda: CrossAttentionMLLM(fuzz._mllm().encoder, make_bridge("mlp", in_dim=16, out_dim=32),
                                                                  fuzz._tiny_lm(), fuzz._lm_tok(), block_config="abc")),
                ("block_config of width 16", lambda: CrossAttentionMLLM(
                    fuzz._mllm().encoder, make_bridge("mlp", in_dim=16, out_dim=32), fuzz._tiny_lm(), fuzz._lm_tok(),
                    block_config=GatedCrossAttentionConfig(dim=16, num_heads=4))),
                ("bridge width 48 for an LM of 32", lambda: CrossAttentionMLLM(
                    fuzz._mllm().encoder, make_bridge("mlp", in_dim=16, out_dim=48), fuzz._tiny_lm(), fuzz._lm_tok())),
                ("no placeholder", lambda: model().tokenize(["Describe the image."])),
                ("more placeholders than images", lambda: model()(**batch(), images=_rand(2, 3, 32, 32))),
                ("more images than placeholders", lambda: model()(**batch(), images=_rand(4, 3, 32, 32))),
                ("neither images nor features", lambda: model()(**batch())),
                ("features of 16 tokens", lambda: model()(**batch(), image_features=_rand(3, 16, 16))),
                ("generate past the context", lambda: model().generate(["<image>"], images=_rand(1, 3, 32, 32), max_new_tokens=60)),
                ("id 600", lambda: model()(batch()["input_ids"] * 0 + 600, images=_rand(3, 3, 32, 32))),
                ("labels (2, 3)", lambda: model()(batch()["input_ids"], labels=torch.zeros(2, 3, dtype=torch.long),
                                                  images=_rand(3, 3, 32, 32))),
            ]),
    }
