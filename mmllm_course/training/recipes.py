"""Chapter 5's runs, written once so the notebook, the tests and the benchmark run the same thing.

1. The "pretrained LLM": a tiny ``LlamaForCausalLM`` trained on shapes-world text with context reading
   (:func:`pretrain_chapter5_lm`); shipped as ``mmllm_course/weights/chapter5_lm.safetensors``
   (``python -m mmllm_course.pretrained chapter5_lm``), with its pitfall twin pretrained on isolated
   captions (``chapter5_lm_isolated``).
2. Stage 1 (:func:`train_chapter5_captioner`): chapter 2's frozen mini-CLIP, a new bridge, the frozen
   LM; only the bridge learns, on image-caption pairs. :func:`evaluate_captioner` generates captions
   for held-out images and scores them (:func:`~mmllm_course.training.metrics.caption_metrics`).
3. The five bridges of chapters 3-4 as stage-1 captioners, equal steps (:func:`compare_bridges`,
   :data:`CHAPTER5_COMPARISON`; the notebook asserts :data:`CHAPTER5_BRIDGE_BARS`).
4. A real pretrained LM under the same code, online only (:func:`load_real_lm`, :func:`add_image_token`).

The seed ``s`` of a stage-1 run sets its training images (``generate_shapes(train_size, seed=2s)``),
its held-out images (seed ``2s + 1``), the bridge's initial weights and the batch order. Run
``python -m mmllm_course.training.recipes --seeds 0 1 2`` for the multi-seed table and
``--pitfall`` for the isolated-caption LM under the same stage 1, ``--compare`` for the five bridges.

Measured with this recipe (2026-11-23, 1 CPU thread on a shared 2-core machine, load 3-12; 36-146 ms
per step, 33-132 s per whole run including features and evaluation), held-out exact captions on
seeds 0-4: 96.6%, 96.0%, 96.0%, 98.6%, 96.2%; shape 96.0-98.6%, colour 100%, size >= 99.8%,
position 100%. Shape is the weak attribute: chapter 2's encoder confuses small shapes (a linear probe
on its features reads shape at 96.1%, small shapes 93%). The same stage 1 on the LM pretrained on
isolated captions: 1.4% exact (seed 0). Issue 9 asks 97% on shape; tried for it (2026-12-03, held-out
shape on seeds 0, 1, 2...): the encoder's second-to-last layer (LLaVA's ``feature_layer=-2``) 96.4,
96.0, 95.0, 97.6%; 16 queries instead of 8: 96.8, 96.8, 95.4%; the Q-Former reading layers 0 and 2
together (34 tokens): 96.6%; 1200 steps instead of 800: 96.6, 96.4, 96.0%; 20,000 training images
instead of 10,000: 96.4% (seed 1), 96.6% (seed 2; this recipe's seed 2: 96.0%). None lifts the worst
seed to 97%, so the bar stays at 95%. Run with ``torch.set_num_threads(1)`` on a busy machine: two
threads competing with other processes made a step 10x slower (577 ms instead of 46 ms).

The five bridges with :data:`CHAPTER5_COMPARISON` (200 steps, 200 held-out images; 2026-12-03, 1
thread, load 7-11), held-out exact captions on seeds 0-4: linear 34.5, 46.5, 40.5, 40.5, 46.5%; MLP
81.0, 74.5, 84.5, 88.0, 82.5%; Q-Former 94.0, 96.0, 94.0, 97.5, 94.5%; resampler 92.5, 92.5, 93.0,
96.0, 96.0%; token merging 43.5, 39.0, 42.0, 43.0, 47.5%. Smallest margins of
:func:`bridge_comparison_summary` over those seeds: query over linear 46.0 points, over token merging
47.0, over the MLP 8.0; MLP over linear 28.0 (bars: :data:`CHAPTER5_BRIDGE_BARS`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from mmllm_course._checks import InputTypeError, check_int, describe
from mmllm_course.data import ShapesBatch, generate_shapes
from mmllm_course.language.corpus import CAPTION_PROMPT, CorpusConfig, make_text_corpus
from mmllm_course.language.lm import IMAGE_TOKEN, CausalLMConfig, course_lm_tokenizer, lm_width, make_causal_lm
from mmllm_course.training.loop import TrainConfig, TrainHistory, count_parameters, freeze, train
from mmllm_course.training.metrics import caption_metrics


@dataclass(frozen=True)
class Chapter5Recipe:
    """The LM, its text pretraining, and stage 1 of chapter 5 (all fields plain values, so it is hashable)."""

    # the language model (LLaMA architecture)
    arch: str = "llama"
    lm_dim: int = 64
    lm_depth: int = 2
    lm_heads: int = 4
    lm_kv_heads: int = 2
    lm_mlp_dim: int = 128
    context_length: int = 64
    # its pretraining on text: captions after a context to read (min_slots..max_slots filler + key words)
    pretrain_examples: int = 20_000
    min_slots: int = 6
    max_slots: int = 24
    qa_fraction: float = 0.0
    pretrain_steps: int = 300
    pretrain_batch_size: int = 128
    pretrain_lr: float = 3e-3
    # stage 1: frozen encoder and LM, the bridge learns. The Q-Former (K = 8 queries) measured best:
    # held-out exact 96.0-96.6% on seeds 0-2 after 800 steps, where the MLP bridge (LLaVA's) reached 87.4%
    # on this LM (95.8% on an LM twice as wide); see the module docstring and the chapter's bridge table.
    bridge: str = "qformer"
    num_queries: int = 8  # K of the query bridges (Q-Former queries, resampler latents)
    feature_layer: int | None = None  # which encoder layer the bridge reads (None: the last; LLaVA reads -2)
    train_size: int = 10_000
    held_out_size: int = 500
    steps: int = 800
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 30
    prompt: str = IMAGE_TOKEN + CAPTION_PROMPT
    max_new_tokens: int = 10
    # CPU threads for stage 1 and its evaluation (None: leave torch's setting). Matrices this small gain
    # nothing from a second thread, and on a busy machine lose a lot (see the module docstring); a real
    # LM (the notebook's online cell) wants every thread.
    cpu_threads: int | None = 1

    def lm_config(self) -> CausalLMConfig:
        return CausalLMConfig(arch=self.arch, dim=self.lm_dim, depth=self.lm_depth, num_heads=self.lm_heads,
                              num_kv_heads=self.lm_kv_heads, mlp_dim=self.lm_mlp_dim, context_length=self.context_length)

    def corpus_config(self, context_reading: bool = True) -> CorpusConfig:
        return CorpusConfig(context_reading=context_reading, min_slots=self.min_slots, max_slots=self.max_slots,
                            qa_fraction=self.qa_fraction)

    def pretrain_config(self, seed: int = 0) -> TrainConfig:
        return TrainConfig(steps=self.pretrain_steps, batch_size=self.pretrain_batch_size, lr=self.pretrain_lr,
                           warmup_steps=self.warmup_steps, seed=seed)

    def stage1_config(self, seed: int = 0) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, warmup_steps=self.warmup_steps, seed=seed)

    def data(self, seed: int) -> tuple[ShapesBatch, ShapesBatch]:
        """(train, held_out) shapes for stage-1 run ``seed``: generator seeds ``2 * seed`` and ``2 * seed + 1``."""
        return generate_shapes(self.train_size, seed=2 * seed), generate_shapes(self.held_out_size, seed=2 * seed + 1)

    @property
    def drop_class_token(self) -> bool:
        """Token merging (pixel shuffle) needs a square grid: it reads the 16 patch tokens without the class token."""
        return self.bridge in ("token_merge", "pixel_shuffle")

    def bridge_kwargs(self) -> dict:
        """Config fields for ``make_bridge(self.bridge, ...)``: the mini-CLIP's width 64 in, the LM's width out."""
        extra = {"qformer": {"num_queries": self.num_queries}, "resampler": {"num_latents": self.num_queries}}.get(self.bridge, {})
        return dict(in_dim=64, out_dim=self.lm_dim, **extra)


CHAPTER5 = Chapter5Recipe()
# What chapter 5's notebook asserts about the stage-1 captioner on held-out images (fractions). Issue 9
# asks 97% for shape too; the worst of seeds 0-4 reaches 96.0% (see the module docstring for what was
# tried), so shape's bar is 95%.
CHAPTER5_BARS: dict[str, float] = {"exact": 0.95, "shape": 0.95, "color": 0.97, "size": 0.97, "position": 0.97}


def chapter5_failures(metrics: dict[str, float]) -> list[str]:
    """The notebook's assertions that ``metrics`` (from :func:`evaluate_captioner`) would fail; empty if none."""
    return [f"{k} {metrics[k]:.1%} < {bar:.0%}" for k, bar in CHAPTER5_BARS.items() if metrics[k] < bar]


def pretrain_chapter5_lm(seed: int = 0, recipe: Chapter5Recipe = CHAPTER5, context_reading: bool = True,
                         progress: bool = True):
    """Pretrain the chapter's LM on text alone: ``(lm, tokenizer, history)``, the LM frozen and in eval mode.

    ``context_reading=False`` pretrains on isolated captions (no context slots): the pitfall.
    """
    tokenizer = course_lm_tokenizer()
    corpus = make_text_corpus(recipe.pretrain_examples, seed=seed, config=recipe.corpus_config(context_reading), tokenizer=tokenizer)
    lm = make_causal_lm(recipe.lm_config(), tokenizer, seed=seed).requires_grad_(True)
    history = train(lm, corpus.tensors(), recipe.pretrain_config(seed), progress=progress,
                    desc="pretraining the LM" + ("" if context_reading else " (isolated captions)"))
    return freeze(lm), tokenizer, history


def lm_text_accuracy(lm, tokenizer, recipe: Chapter5Recipe = CHAPTER5, context_reading: bool = True,
                     n: int = 500, seed: int = 10_000) -> float:
    """Fraction of held-out text examples whose whole target the LM predicts right (teacher-forced argmax)."""
    corpus = make_text_corpus(n, seed=seed, config=recipe.corpus_config(context_reading), tokenizer=tokenizer)
    with torch.no_grad():
        logits = lm(input_ids=corpus.input_ids, attention_mask=corpus.attention_mask).logits
    pred, labels = logits[:, :-1].argmax(-1), corpus.labels[:, 1:]
    return float(((pred == labels) | (labels == -100)).all(dim=1).float().mean())


@dataclass
class CaptionerRun:
    """A stage-1 run: the model (bridge trained), its history, the data and the precomputed encoder features."""

    model: object  # UnifiedEmbeddingMLLM
    history: TrainHistory
    train: ShapesBatch
    held_out: ShapesBatch
    held_out_features: torch.Tensor  # (n, N, 64): the frozen encoder's features of the held-out images
    seed: int
    recipe: Chapter5Recipe


def build_captioner(lm=None, tokenizer=None, recipe: Chapter5Recipe = CHAPTER5, seed: int = 0, bridge=None):
    """The chapter's :class:`UnifiedEmbeddingMLLM`: shipped mini-CLIP (frozen) + a fresh bridge + ``lm`` (frozen).

    ``lm`` defaults to the shipped chapter-5 LM; any ``transformers`` causal LM works (its tokenizer
    must hold ``<image>``: :func:`add_image_token`), the bridge's output width is the LM's. The
    bridge's initial weights follow ``seed``.
    """
    from mmllm_course.backbones import UnifiedEmbeddingMLLM
    from mmllm_course.bridges import make_bridge
    from mmllm_course.pretrained import load_chapter2_clip, load_chapter5_lm

    clip, _ = load_chapter2_clip()
    if lm is None:
        lm, tokenizer = load_chapter5_lm()
    tokenizer = tokenizer if tokenizer is not None else course_lm_tokenizer()
    if bridge is None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            bridge = make_bridge(recipe.bridge, **dict(recipe.bridge_kwargs(), out_dim=lm_width(lm)))
    return UnifiedEmbeddingMLLM(freeze(clip), bridge, freeze(lm), tokenizer, drop_class_token=recipe.drop_class_token,
                                feature_layer=recipe.feature_layer)


def add_image_token(lm, tokenizer, image_token: str = IMAGE_TOKEN) -> int:
    """Make a real ``transformers`` LM and its tokenizer ready for :class:`UnifiedEmbeddingMLLM`; returns the token's id.

    Adds ``image_token`` to ``tokenizer`` as one special token (never split, skipped when decoding)
    and grows ``lm``'s embedding table (and a tied output layer) to the new vocabulary,
    ``resize_token_embeddings(len(tokenizer), mean_resizing=False)``: the new row is never read as an
    input, since the bridge's tokens are written over every ``<image>`` position. A tokenizer without
    a pad token gets its eos token as pad (GPT-2's has none). Changes both in place; nothing is
    resized if the token is already there and the table holds it. The shared logic is
    :func:`~mmllm_course.language.add_special_tokens_to_lm` (chapter 9's signal tokens use it too).
    """
    from mmllm_course.language.lm import add_special_tokens_to_lm

    if not isinstance(image_token, str) or not image_token.strip():
        raise InputTypeError(f"image_token must be a non-empty str, got {describe(image_token)}")
    return add_special_tokens_to_lm(lm, tokenizer, [image_token])[0]


REAL_LM = "HuggingFaceTB/SmolLM2-135M"  # the notebook's online LM (LlamaForCausalLM, width 576, 30 layers); "gpt2" works too


def load_real_lm(name: str = REAL_LM):
    """ONLINE ONLY: a pretrained ``transformers`` causal LM and its tokenizer, ready for :func:`build_captioner`.

    Downloads ``name`` from the Hugging Face Hub the first time (or reads the local cache or a
    folder), in float32, then :func:`add_image_token` and :func:`~mmllm_course.training.freeze`.
    Returns ``(lm, tokenizer)``. Offline it raises an OSError that says so; the course's own LM,
    :func:`~mmllm_course.pretrained.load_chapter5_lm`, needs no network.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not isinstance(name, (str, os.PathLike)) or not os.fspath(name):
        raise InputTypeError(f"name must be a hub model name or a folder path, got {describe(name)}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        lm = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
    except OSError as err:
        raise OSError(f"could not load the causal LM {name!r}: it downloads from the Hugging Face Hub the first time, so it "
                      "needs network access (or a copy in the local cache, or a folder saved with save_pretrained). The course "
                      f"itself runs offline with load_chapter5_lm(). Original error: {err}") from err
    add_image_token(lm, tokenizer)
    return freeze(lm), tokenizer


def encode_all(model, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The frozen encoder's features of all ``images``, computed once: (n, N, D_enc)."""
    with torch.no_grad():
        return torch.cat([model.image_features(images[i:i + batch_size]) for i in range(0, images.shape[0], batch_size)])


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, then restore the count; ``n=None`` changes nothing."""
    if n is None:
        yield
        return
    check_int(n, "n")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_chapter5_captioner(seed: int = 0, recipe: Chapter5Recipe = CHAPTER5, lm=None, tokenizer=None, bridge=None,
                             progress: bool = True, features: tuple[torch.Tensor, torch.Tensor] | None = None) -> CaptionerRun:
    """Stage 1: train a bridge between the frozen mini-CLIP and the frozen LM on captions (seed ``seed``).

    The encoder is frozen, so its features are computed once for all training images; each step
    runs the bridge and the LM on a batch of them. ``features``: the (train, held-out) features of
    ``recipe.data(seed)``'s images, if already computed (:func:`compare_bridges` shares them).
    """
    model = build_captioner(lm, tokenizer, recipe, seed, bridge)
    train_set, held_out = recipe.data(seed)
    if features is None:
        with cpu_threads(recipe.cpu_threads):
            features = encode_all(model, train_set.images), encode_all(model, held_out.images)
    train_features, held_out_features = features
    n = model.num_image_features
    if train_features.shape[:2] != (len(train_set), n) or held_out_features.shape[:2] != (len(held_out), n):
        raise ValueError(f"features must be ({len(train_set)}, {n}, D) and ({len(held_out)}, {n}, D) for this recipe, "
                         f"got {tuple(train_features.shape)} and {tuple(held_out_features.shape)}")
    batch = model.tokenize([recipe.prompt] * len(train_set), [" " + c for c in train_set.captions])
    with cpu_threads(recipe.cpu_threads):
        history = train(model, dict(batch, image_features=train_features), recipe.stage1_config(seed), progress=progress,
                        desc=f"stage 1 ({recipe.bridge} bridge)")
    return CaptionerRun(model, history, train_set, held_out, held_out_features, seed, recipe)


def evaluate_captioner(run: CaptionerRun, batch_size: int = 250) -> dict[str, float]:
    """Greedy captions for the held-out images, scored: ``{"exact", "shape", "color", "size", "position"}``."""
    n = len(run.held_out)
    prompts = [run.recipe.prompt] * n
    texts: list[str] = []
    with cpu_threads(run.recipe.cpu_threads):
        for i in range(0, n, batch_size):
            texts += run.model.generate(prompts[i:i + batch_size], image_features=run.held_out_features[i:i + batch_size],
                                        max_new_tokens=run.recipe.max_new_tokens)
    run.predictions = texts
    return caption_metrics(texts, run.held_out.objects[:, 0])


BRIDGE_NAMES = ("linear", "mlp", "qformer", "resampler", "token_merge")
# The notebook's five-bridge comparison: the chapter's stage 1 with a quarter of its steps and 200 held-out images.
CHAPTER5_COMPARISON = dataclasses.replace(CHAPTER5, steps=200, held_out_size=200)


def compare_bridges(seed: int = 0, recipe: Chapter5Recipe = CHAPTER5_COMPARISON, lm=None, tokenizer=None,
                    bridges: tuple[str, ...] = BRIDGE_NAMES, progress: bool = False, steps: int | None = None) -> list[dict]:
    """Every bridge as a stage-1 captioner on the same frozen LM, encoder, data, seed and number of steps.

    ``recipe`` (its ``bridge`` field is replaced by each name in turn; ``steps`` overrides its steps)
    sets the data, the optimisation and the held-out set; the encoder's features are computed once
    and shared (token merging reads them without the class token). Returns one row per bridge:
    ``bridge``, ``K``, ``trainable`` parameters, ``ms_per_step`` and the held-out metrics of
    :func:`evaluate_captioner`.
    """
    if lm is None:
        from mmllm_course.pretrained import load_chapter5_lm

        lm, tokenizer = load_chapter5_lm()
    if steps is not None:
        recipe = dataclasses.replace(recipe, steps=steps)
    first = build_captioner(lm, tokenizer, dataclasses.replace(recipe, bridge="mlp"), seed)  # keeps the class token
    train_set, held_out = recipe.data(seed)
    with cpu_threads(recipe.cpu_threads):
        shared = encode_all(first, train_set.images), encode_all(first, held_out.images)
    rows = []
    for name in bridges:
        named = dataclasses.replace(recipe, bridge=name)
        features = tuple(f[:, 1:] for f in shared) if named.drop_class_token else shared
        run = train_chapter5_captioner(seed, named, lm=lm, tokenizer=tokenizer, progress=progress, features=features)
        rows.append({"bridge": name, "K": run.model.num_image_tokens,
                     "trainable": count_parameters(run.model, trainable_only=True),
                     "ms_per_step": 1000 * run.history.seconds_per_step, **evaluate_captioner(run)})
    return rows


QUERY_BRIDGES = ("qformer", "resampler")
# What chapter 5's notebook asserts about compare_bridges(seed) (held-out exact captions, fractions):
# the weaker query bridge beats the linear bridge, token merging and the MLP by at least these margins,
# and the MLP beats the linear bridge by at least "mlp_over_linear". Smallest margins measured over
# seeds 0-4 (2026-12-03): see the module docstring.
CHAPTER5_BRIDGE_BARS: dict[str, float] = {"query_over_linear": 0.30, "query_over_token_merge": 0.30,
                                          "query_over_mlp": 0.02, "mlp_over_linear": 0.15}


def bridge_comparison_summary(rows: list[dict]) -> dict[str, float]:
    """Held-out exact captions per bridge (``exact/<bridge>``) and the margins the notebook asserts, from :func:`compare_bridges`."""
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "bridge" in r and "exact" in r for r in rows):
        raise InputTypeError(f"rows must be the list of dicts compare_bridges returns, got {describe(rows)}")
    exact = {r["bridge"]: float(r["exact"]) for r in rows}
    missing = sorted(set(BRIDGE_NAMES) - set(exact))
    if missing:
        raise ValueError(f"rows lack the bridge(s) {missing}: compare all of {list(BRIDGE_NAMES)}")
    worst_query = min(exact[b] for b in QUERY_BRIDGES)
    return {**{f"exact/{b}": exact[b] for b in BRIDGE_NAMES},
            "query_over_linear": worst_query - exact["linear"],
            "query_over_token_merge": worst_query - exact["token_merge"],
            "query_over_mlp": worst_query - exact["mlp"],
            "mlp_over_linear": exact["mlp"] - exact["linear"]}


def bridge_comparison_failures(summary: dict[str, float]) -> list[str]:
    """The notebook's assertions on :func:`bridge_comparison_summary` that would fail; empty if none."""
    return [f"{k} {summary[k]:+.1%} < {bar:+.0%}" for k, bar in CHAPTER5_BRIDGE_BARS.items() if summary[k] < bar]


def run_chapter5_bridges(seed: int) -> dict[str, float]:
    """The notebook's five-bridge comparison on seed ``seed`` (data, initial weights, order), summarised for the benchmark."""
    return bridge_comparison_summary(compare_bridges(seed))


def bench_chapter5_timing(steps: int = 30, new_tokens: int = 10, batch_size: int = 64, recipe: Chapter5Recipe = CHAPTER5) -> dict[str, float]:
    """Milliseconds per stage-1 training step (batch of ``recipe.batch_size``) and per generated token (batch of ``batch_size``).

    Uses the shipped mini-CLIP and chapter-5 LM with a fresh bridge; the encoder's features are
    precomputed, as in :func:`train_chapter5_captioner`. Numbers depend on the machine and its load.
    """
    model = build_captioner(recipe=recipe)
    shapes = generate_shapes(max(256, batch_size), seed=0)
    features = encode_all(model, shapes.images)
    batch = model.tokenize([recipe.prompt] * len(shapes), [" " + c for c in shapes.captions])
    config = dataclasses.replace(recipe.stage1_config(0), steps=steps)
    history = train(model, dict(batch, image_features=features), config, progress=False)
    prompts = [recipe.prompt] * batch_size
    model.generate(prompts[:2], image_features=features[:2], max_new_tokens=2)  # warm-up
    start = time.perf_counter()
    model.generate(prompts, image_features=features[:batch_size], max_new_tokens=new_tokens, eos_token_id=None)
    per_token = (time.perf_counter() - start) / new_tokens
    return {"ms_per_train_step": 1000 * history.seconds_per_step, "ms_per_generated_token": 1000 * per_token,
            "train_batch": recipe.batch_size, "generate_batch": batch_size}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mmllm_course.training.recipes", description="chapter 5's stage 1 on several seeds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--bridge", default=CHAPTER5.bridge)
    parser.add_argument("--steps", type=int, default=CHAPTER5.steps)
    parser.add_argument("--pitfall", action="store_true", help="stage 1 on the LM pretrained on isolated captions")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timing", action="store_true", help="only time a training step and a generated token")
    parser.add_argument("--compare", action="store_true", help="the five bridges, CHAPTER5_COMPARISON's steps, per seed")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.timing:
        print(bench_chapter5_timing())
        return
    if args.compare:
        for seed in args.seeds:
            summary = bridge_comparison_summary(compare_bridges(seed))
            failures = bridge_comparison_failures(summary)
            print(f"seed={seed} " + " ".join(f"{k}={v:.4f}" for k, v in summary.items()) + (f" FAILS {failures}" if failures else ""), flush=True)
        return
    from mmllm_course.pretrained import load_chapter5_lm

    recipe = dataclasses.replace(CHAPTER5, bridge=args.bridge, steps=args.steps)
    lm, tok = load_chapter5_lm(isolated=args.pitfall)
    for seed in args.seeds:
        start = time.perf_counter()
        run = train_chapter5_captioner(seed, recipe, lm=lm, tokenizer=tok, progress=False)
        metrics = evaluate_captioner(run)
        total = time.perf_counter() - start
        print(f"bridge={recipe.bridge} pitfall={args.pitfall} seed={seed} steps={recipe.steps} "
              f"train {run.history.seconds:.1f}s ({1000 * run.history.seconds_per_step:.0f} ms/step) total {total:.1f}s "
              f"trainable={count_parameters(run.model, trainable_only=True)} K={run.model.num_image_tokens} "
              + " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
              + (f" FAILS {chapter5_failures(metrics)}" if chapter5_failures(metrics) else ""), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
