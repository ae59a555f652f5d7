"""Benchmark cases for the bridges (chapters 3-4): each bridge against its ``transformers`` twin; chapter 4's
measurements (:func:`bridge_comparison_table`, :func:`lm_time_by_tokens`) and its trained Q-Former
(:func:`train_chapter4_qformer`, the run the notebook asserts and ``bench --seeds`` repeats).

``CASES`` joins :func:`mmllm_course.bench.bench_modules` (``python -m mmllm_course.bench --only bridge``):
our bridge and the reference hold identical weights (through the converters the parity tests
prove), are checked to agree on the input, then timed (eval mode, no grad, median). Sizes are
small-real (width 128-256, 64 patches, batch 8): large enough that the maths, not Python overhead
alone, is measured, small enough to run in seconds on a CPU. A benchmark, not a test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from mmllm_course.utils import one_thread  # one CPU thread for tiny models (also imported from here by tests)

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


# --- chapter 4's comparison table: the five bridges on the same frozen encoder -------------------

# The bridges as chapter 4 compares them: the chapter-2 encoder's width in (64), a 128-wide LLM out;
# the query bridges with 8 queries / latents (BLIP-2 uses 32, Flamingo 64), token merging with r = 2.
TABLE_BRIDGES: dict[str, dict] = {
    "linear": {}, "mlp": {}, "qformer": dict(num_queries=8), "resampler": dict(num_latents=8), "token_merge": dict(ratio=2),
}


def tiny_llama(width: int = 128, layers: int = 2, max_positions: int = 2048) -> torch.nn.Module:
    """A small random ``transformers`` ``LlamaForCausalLM`` (eval mode) that stands in for the LLM when timing sequence lengths."""
    import transformers

    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=100, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=max_positions)).eval()


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of one call of ``fn`` as ``torch.utils.flop_counter.FlopCounterMode`` counts them.

    It counts the matrix products (2 FLOPs per multiply-add: linear layers, attention scores and mixing),
    which dominate; element-wise work (softmax, norms, activations) is left out.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:  # (its module tracker needs autograd on: no inference_mode here)
        fn()
    return int(counter.get_total_flops())


def bridge_comparison_table(
    patch_counts: Sequence[int] = (16, 784),
    in_dim: int = 64,
    out_dim: int = 128,
    text_tokens: int = 16,
    batch: int = 8,
    bridges: dict[str, dict] | None = None,
    lm: torch.nn.Module | None = None,
    min_run_time: float = 0.2,
    seed: int = 0,
) -> list[dict]:
    """The five bridges side by side: parameters, K, FLOPs and the LM's forward time, for each patch count N.

    Every bridge (``TABLE_BRIDGES`` unless ``bridges`` is given: name -> extra config fields) maps
    ``in_dim``-wide features to ``out_dim``-wide tokens. For each ``n`` in ``patch_counts`` (16 = a
    32x32 image in 8-pixel patches, the chapter-2 encoder's; 784 = a 224x224 image in the same patches)
    one row per bridge:

    - ``params``: trainable parameters of the bridge (the same whatever N);
    - ``K``: ``bridge.num_output_tokens(n)``, the image tokens the LLM reads;
    - ``bridge_mflops``: the bridge's forward on one image of ``n`` features (``count_flops``), millions;
    - ``lm_mflops``, ``lm_ms``: the LLM (``lm``, default :func:`tiny_llama` of width ``out_dim``) on the
      sequence the bridge produces, K image tokens + ``text_tokens`` text tokens: FLOPs per sequence
      (millions) and the measured median forward time for a batch of ``batch`` sequences (eval, no grad).

    Random weights are enough: none of these numbers depends on what the bridge learned.
    """
    from mmllm_course.bench import median_seconds
    from mmllm_course.bridges import make_bridge

    bridges = TABLE_BRIDGES if bridges is None else bridges
    lm = tiny_llama(out_dim) if lm is None else lm
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(batch, text_tokens, out_dim, generator=g)
    rows, lm_cost = [], {}
    for n in patch_counts:
        features = torch.randn(batch, n, in_dim, generator=g)
        for name, extra in bridges.items():
            torch.manual_seed(seed)
            bridge = make_bridge(name, in_dim=in_dim, out_dim=out_dim, **extra).eval()
            k = bridge.num_output_tokens(n)
            with torch.no_grad():
                sequence = torch.cat([bridge(features), text], dim=1)  # (batch, K + T, D_llm)
            if sequence.shape[1] != k + text_tokens:
                raise RuntimeError(f"{name}: produced {sequence.shape[1] - text_tokens} tokens, num_output_tokens says {k}")
            if k not in lm_cost:  # the LM's cost depends only on the sequence length: measure each K once
                lm_cost[k] = (count_flops(lambda: lm(inputs_embeds=sequence[:1]).logits) / 1e6,
                              median_seconds(lambda: lm(inputs_embeds=sequence).logits, min_run_time) * 1e3)
            rows.append({
                "bridge": name, "N": n, "K": k,
                "params": sum(p.numel() for p in bridge.parameters() if p.requires_grad),
                "bridge_mflops": count_flops(lambda: bridge(features[:1])) / 1e6,
                "lm_mflops": lm_cost[k][0], "lm_ms": lm_cost[k][1],
            })
    return rows


def format_bridge_table(rows: Sequence[dict]) -> str:
    """``bridge_comparison_table``'s rows as a fixed-width text table (one line per bridge and N)."""
    header = f"{'bridge':<12} {'N':>5} {'K':>5} {'params':>9} {'bridge MFLOPs':>14} {'LM MFLOPs':>10} {'LM ms':>8}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['bridge']:<12} {r['N']:>5} {r['K']:>5} {r['params']:>9,} {r['bridge_mflops']:>14.2f} "
                     f"{r['lm_mflops']:>10.1f} {r['lm_ms']:>8.2f}")
    return "\n".join(lines)


def lm_time_by_tokens(
    image_tokens: Sequence[int] = (4, 8, 16, 64, 196, 392, 784),
    text_tokens: int = 16,
    batch: int = 8,
    width: int = 128,
    lm: torch.nn.Module | None = None,
    min_run_time: float = 0.2,
    known: Sequence[dict] = (),
) -> list[dict]:
    """The LLM's forward time and FLOPs as the number of image tokens K grows: rows ``K``, ``lm_mflops``, ``lm_ms``.

    ``lm`` (default :func:`tiny_llama` of width ``width``) runs on K + ``text_tokens`` random token
    embeddings, a batch of ``batch``; FLOPs are per sequence (millions), time is the median (eval, no grad).
    ``known``: rows already measured with the same LM and sizes (``bridge_comparison_table``'s), reused
    for their K instead of measured again. Rows come sorted by K.
    """
    from mmllm_course.bench import median_seconds

    lm = tiny_llama(width) if lm is None else lm
    g = torch.Generator().manual_seed(0)
    rows = [{"K": r["K"], "lm_mflops": r["lm_mflops"], "lm_ms": r["lm_ms"]} for r in {r["K"]: r for r in known}.values()]
    for k in sorted(set(image_tokens) - {r["K"] for r in rows}):
        sequence = torch.randn(batch, k + text_tokens, width, generator=g)
        rows.append({"K": k, "lm_mflops": count_flops(lambda: lm(inputs_embeds=sequence[:1]).logits) / 1e6,
                     "lm_ms": median_seconds(lambda: lm(inputs_embeds=sequence).logits, min_run_time) * 1e3})
    return sorted(rows, key=lambda r: r["K"])


# --- chapter 4's trained Q-Former: the run the notebook makes, and ``bench --seeds`` repeats -----

# The Q-Former chapter 4 trains on the alignment task (mmllm_course.bridges.alignment) with the frozen
# chapter-2 encoder's 16 patch tokens (pooled=False): K = 8 queries, tokens of the targets' width 64.
CHAPTER4_QFORMER = dict(in_dim=64, out_dim=64, dim=64, num_queries=8, depth=2, num_heads=4, mlp_dim=128)
CHAPTER4_TRAIN = dict(steps=500, batch_size=128, lr=3e-3)
CHAPTER4_ACCURACY_BAR = 0.90  # held-out accuracy over the 160 caption classes that the notebook asserts


@dataclass
class Chapter4Run:
    """A trained Q-Former with what it was trained and is evaluated on (see :func:`train_chapter4_qformer`)."""

    bridge: torch.nn.Module
    task: object  # the AlignmentTask it was trained on
    losses: list
    seconds: float
    held_out: object  # the held-out ShapesBatch (images, captions, boxes) behind task.held_out_features
    seed: int


def chapter4_task(seed: int = 0):
    """The alignment task on patch tokens: ``make_alignment_task(pooled=False, labels="caption", seed=seed)``."""
    from mmllm_course.bridges.alignment import make_alignment_task

    return make_alignment_task(pooled=False, labels="caption", seed=seed)


def train_chapter4_qformer(seed: int = 0, progress: bool = False) -> Chapter4Run:
    """Chapter 4's run: a Q-Former (``CHAPTER4_QFORMER``) trained on the frozen chapter-2 encoder's patch tokens.

    Seed ``s`` sets the task (training and held-out images, targets: :func:`chapter4_task`), the
    initial weights (``torch.manual_seed(s)``) and the batch order (``train_bridge(seed=s)``).
    """
    import time

    from mmllm_course.bridges import make_bridge
    from mmllm_course.bridges.alignment import train_bridge
    from mmllm_course.data import generate_shapes

    task = chapter4_task(seed)
    held_out = generate_shapes(len(task.held_out_labels), seed=1001 + 2 * seed)  # the task's held-out images
    if not torch.equal(held_out.caption_class_labels().long(), task.held_out_labels):
        raise RuntimeError("the held-out images no longer match the alignment task's: update train_chapter4_qformer")
    torch.manual_seed(seed)
    bridge = make_bridge("qformer", **CHAPTER4_QFORMER)
    start = time.perf_counter()
    with one_thread():
        losses = train_bridge(bridge, task, seed=seed, progress=progress, **CHAPTER4_TRAIN)
    return Chapter4Run(bridge.eval(), task, losses, time.perf_counter() - start, held_out, seed)


def shape_patch_mask(boxes: torch.Tensor, image_size: int = 32, patch_size: int = 8) -> torch.Tensor:
    """Which patches each image's shape touches: boxes (n, 4) in pixels (x0, y0, x1, y1) -> bool (n, gh * gw), row-major."""
    side = image_size // patch_size
    edges = torch.arange(side) * patch_size  # left / top pixel of each patch column / row
    x0, y0, x1, y1 = boxes.unbind(-1)
    cols = (edges[None] < x1[:, None]) & (edges[None] + patch_size > x0[:, None])  # (n, side)
    rows = (edges[None] < y1[:, None]) & (edges[None] + patch_size > y0[:, None])
    return (rows[:, :, None] & cols[:, None, :]).reshape(len(boxes), side * side)


def evaluate_chapter4_qformer(run: Chapter4Run, probe: int = 500) -> dict[str, float]:
    """Held-out accuracy, and where the last layer's queries look on ``probe`` held-out images.

    ``attention_on_shape``: the share of a query's cross-attention (mean of heads, then of queries and
    images) on the patches the shape touches; ``attention_uniform``: that share if attention were
    spread evenly; ``peak_on_shape``: how often a query's most-attended patch is one of the shape's.
    """
    from mmllm_course.bridges.alignment import alignment_accuracy

    features = run.task.held_out_features[:probe]
    with torch.no_grad():
        maps = run.bridge.cross_attention_maps(features)[-1].mean(dim=1)  # (probe, K, N)
    on_shape = shape_patch_mask(run.held_out.boxes[:probe, 0]).float()  # (probe, N)
    share = (maps * on_shape[:, None]).sum(-1)  # (probe, K)
    peak = on_shape.gather(1, maps.argmax(-1))  # (probe, K)
    centred = torch.nn.functional.normalize(maps - maps.mean(-1, keepdim=True), dim=-1)  # (probe, K, N)
    corr = centred @ centred.transpose(1, 2)  # (probe, K, K): correlation between two queries' maps of one image
    k = corr.shape[-1]
    pairs = (corr.sum((1, 2)) - corr.diagonal(dim1=1, dim2=2).sum(-1)) / (k * (k - 1))  # (probe,) mean over pairs
    return {"accuracy": alignment_accuracy(run.bridge, run.task), "attention_on_shape": share.mean().item(),
            "attention_uniform": on_shape.mean().item(), "peak_on_shape": peak.mean().item(),
            "query_map_correlation": pairs.mean().item()}


def chapter4_eval_features(size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Held-out ``(features (n, 16, 64), labels (n,), targets (160, 64))`` for the exercise's check: new images
    (``generate_shapes(size, seed)``) through the frozen chapter-2 encoder, and the targets of the
    exercise's task (:func:`chapter4_task` seed 0)."""
    from mmllm_course.bridges.alignment import image_features, random_targets
    from mmllm_course.data import all_caption_classes, generate_shapes
    from mmllm_course.pretrained import load_chapter2_clip

    shapes = generate_shapes(size, seed=seed)
    features = image_features(load_chapter2_clip()[0].vision, shapes.images, pooled=False)
    return features, shapes.caption_class_labels().long(), random_targets(len(all_caption_classes()), 64, 0)


CHAPTER4_PEAK_RATIO = 1.5  # peak_on_shape must exceed this multiple of attention_uniform (the notebook asserts it)
CHAPTER4_QUERY_CORRELATION = 0.7  # query_map_correlation must exceed this: the queries look alike (the notebook asserts it)


def chapter4_failures(metrics: dict[str, float]) -> list[str]:
    """The chapter-4 notebook's assertions that ``metrics`` (from :func:`evaluate_chapter4_qformer`) would fail; empty if none."""
    failed = []
    if metrics["accuracy"] < CHAPTER4_ACCURACY_BAR:
        failed.append(f"accuracy {metrics['accuracy']:.1%} < {CHAPTER4_ACCURACY_BAR:.0%}")
    if not metrics["peak_on_shape"] > CHAPTER4_PEAK_RATIO * metrics["attention_uniform"]:
        failed.append(f"peak_on_shape {metrics['peak_on_shape']:.1%} <= {CHAPTER4_PEAK_RATIO} x {metrics['attention_uniform']:.1%}")
    if not metrics["query_map_correlation"] > CHAPTER4_QUERY_CORRELATION:
        failed.append(f"query_map_correlation {metrics['query_map_correlation']:.2f} <= {CHAPTER4_QUERY_CORRELATION}")
    return failed
