"""Benchmark cases for the bridges (chapters 3-4): each bridge against its ``transformers`` twin.

``CASES`` joins :func:`mmllm_course.bench.bench_modules` (``python -m mmllm_course.bench --only bridge``):
our bridge and the reference hold identical weights (through the converters the parity tests
prove), are checked to agree on the input, then timed (eval mode, no grad, median). Sizes are
small-real (width 128-256, 64 patches, batch 8): large enough that the maths, not Python overhead
alone, is measured, small enough to run in seconds on a CPU. A benchmark, not a test.
"""

from __future__ import annotations

from typing import Callable

import torch

Case = tuple[str, Callable[[], object], Callable[[], object]]  # (name, ours, reference)

B, N, D_VISION, D_TEXT = 8, 64, 128, 256
_TEXT = dict(model_type="llama", vocab_size=100, hidden_size=D_TEXT, intermediate_size=512, num_hidden_layers=1,
             num_attention_heads=4, num_key_value_heads=2)
_VISION = dict(hidden_size=D_VISION, num_hidden_layers=1, num_attention_heads=4, intermediate_size=256, image_size=64, patch_size=8)


def _features(d: int = D_VISION) -> torch.Tensor:
    return torch.randn(B, N, d, generator=torch.Generator().manual_seed(0))


def _mlp_case() -> Case:
    import transformers

    from mmllm_course.bridges import mlp_bridge_from_transformers

    torch.manual_seed(0)
    hf = transformers.LlavaForConditionalGeneration(transformers.LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", **_VISION), text_config=_TEXT, image_token_index=99))
    ref = hf.model.multi_modal_projector.eval()
    ours = mlp_bridge_from_transformers(ref).eval()
    x = _features()
    return f"MLP bridge (LlavaMultiModalProjector, {B}x{N}x{D_VISION} -> {D_TEXT})", lambda: ours(x), lambda: ref(x)


def _blip2(cross_attention_frequency: int = 1):
    import transformers

    torch.manual_seed(0)
    config = transformers.Blip2Config(
        vision_config=_VISION,
        qformer_config=dict(hidden_size=D_VISION, num_hidden_layers=2, num_attention_heads=4, intermediate_size=512,
                            vocab_size=100, cross_attention_frequency=cross_attention_frequency, encoder_hidden_size=D_VISION),
        text_config=dict(model_type="opt", vocab_size=100, hidden_size=D_TEXT, num_hidden_layers=1, ffn_dim=512,
                         num_attention_heads=4, word_embed_proj_dim=D_TEXT),
        num_query_tokens=16,
    )
    return transformers.Blip2ForConditionalGeneration(config).eval()


def _qformer_case(masked: bool) -> Case:
    from mmllm_course.bridges import qformer_bridge_from_transformers

    hf = _blip2()
    ours = qformer_bridge_from_transformers(hf).eval()
    x = _features()
    mask = None
    if masked:
        mask = torch.ones(B, N, dtype=torch.long)
        mask[1::2, N // 2:] = 0  # every other image padded to half its patches

    def ref():
        q = hf.qformer(query_embeds=hf.query_tokens.expand(B, -1, -1), encoder_hidden_states=x, encoder_attention_mask=mask)
        return hf.language_projection(q.last_hidden_state)

    label = "with padding mask" if masked else "no mask"
    return (f"Q-Former bridge (Blip2QFormerModel + projection, 16 queries, 2 layers, {label})",
            lambda: ours(x, mask), ref)


def _resampler_case() -> Case:
    import transformers
    from transformers.models.idefics2.modeling_idefics2 import Idefics2PerceiverResampler

    from mmllm_course.bridges import perceiver_resampler_bridge_from_transformers

    torch.manual_seed(0)
    ref = Idefics2PerceiverResampler(transformers.Idefics2PerceiverConfig(
        hidden_size=D_VISION, resampler_n_latents=16, resampler_depth=2, resampler_n_heads=4, resampler_head_dim=32,
        num_key_value_heads=2)).eval()
    ours = perceiver_resampler_bridge_from_transformers(ref).eval()
    x = _features()
    mask = torch.ones(B, N, dtype=torch.long)  # the reference's forward requires a mask
    return ("Perceiver resampler (Idefics2PerceiverResampler, 16 latents, 2 layers, GQA 4/2)",
            lambda: ours(x, mask), lambda: ref(context=x, attention_mask=mask))


def _token_merge_case() -> Case:
    import transformers

    from mmllm_course.bridges import token_merge_bridge_from_transformers

    torch.manual_seed(0)
    hf = transformers.Idefics3ForConditionalGeneration(transformers.Idefics3Config(
        vision_config=_VISION, text_config=_TEXT, scale_factor=2))
    ref = hf.model.connector.eval()
    ours = token_merge_bridge_from_transformers(ref).eval()
    x = _features()
    return f"token-merge bridge (Idefics3Connector, r=2, {B}x{N}x{D_VISION} -> {D_TEXT})", lambda: ours(x), lambda: ref(x)


CASES: dict[str, Callable[[], Case]] = {
    "bridge-mlp": _mlp_case,
    "bridge-qformer": lambda: _qformer_case(masked=False),
    "bridge-qformer-mask": lambda: _qformer_case(masked=True),
    "bridge-resampler": _resampler_case,
    "bridge-token-merge": _token_merge_case,
}


def bench_lm_per_bridge(n: int = 196, text_tokens: int = 16, min_run_time: float = 0.5) -> list[dict]:
    """The LM's forward time on the sequence each bridge produces from ``n`` patch features.

    Every bridge (library defaults but a 128-wide LLM space; BLIP-2's 32 queries, Flamingo's 64
    latents, Idefics3's r = 2) maps a batch of 8 images of ``n`` features (width 64; 196 = a 224x224
    image in 16-pixel patches) to K tokens; a tiny ``LlamaForCausalLM`` (width 128, 2 layers) then
    runs on K image tokens + ``text_tokens`` text tokens. Rows: ``bridge``, ``K``, ``params``,
    ``bridge_ms``, ``lm_ms`` (medians, eval, no grad).
    """
    import transformers

    from mmllm_course.bench import median_seconds
    from mmllm_course.bridges import make_bridge

    torch.manual_seed(0)
    lm = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=100, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024)).eval()
    features = torch.randn(B, n, 64, generator=torch.Generator().manual_seed(0))
    text = torch.randn(B, text_tokens, 128, generator=torch.Generator().manual_seed(1))
    configs = {"linear": {}, "mlp": {}, "qformer": dict(num_queries=32), "resampler": dict(num_latents=64),
               "token_merge": dict(ratio=2)}
    rows = []
    for name, extra in configs.items():
        bridge = make_bridge(name, in_dim=64, out_dim=128, **extra).eval()
        with torch.inference_mode():
            sequence = torch.cat([bridge(features), text], dim=1)  # (B, K + T, D_llm)
        k = bridge.num_output_tokens(n)
        t_bridge = median_seconds(lambda: bridge(features), min_run_time)
        t_lm = median_seconds(lambda: lm(inputs_embeds=sequence).logits, min_run_time)
        params = sum(p.numel() for p in bridge.parameters())
        rows.append({"bridge": name, "K": k, "params": params, "bridge_ms": t_bridge * 1e3, "lm_ms": t_lm * 1e3})
        print(f"  {name:<12} K = {k:4d}   params {params:8,d}   bridge {t_bridge * 1e3:7.3f} ms   "
              f"LM on K + {text_tokens} tokens {t_lm * 1e3:7.3f} ms", flush=True)
    return rows
