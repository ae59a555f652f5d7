"""The course's own "pretrained" models: trained once by a recipe, shipped as small safetensors files.

A later chapter needs a trained model from an earlier one: chapter 3 puts bridges on chapter 2's
mini-CLIP image encoder, chapter 8 binds audio and 3-D into its embedding space. Training it again
in every notebook would cost a minute each time, so the package ships the weights that
:func:`make_weights` produces from the chapter's recipe (seed 0), and the chapter loads them::

    clip, tokenizer = load_chapter2_clip()         # frozen, eval mode, on the CPU
    lm, tokenizer = load_chapter5_lm()             # chapter 5's tiny LlamaForCausalLM (isolated=True: the pitfall twin)

Nothing is downloaded: the file lives inside the package (``mmllm_course/weights/``). Rebuild it
with ``python -m mmllm_course.pretrained chapter2_clip`` (about a minute on 2 CPU cores);
``tests/test_pretrained.py`` checks that the shipped file still reaches every bar chapter 2 asserts
and that the script writes a file of the same layout (in a quick mode).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Callable

import torch

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")


def weights_path(name: str) -> str:
    """Path of the shipped weights file ``name`` (one of :data:`MAKERS`)."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, one of {sorted(MAKERS)}; got {type(name).__name__}")
    if name not in MAKERS:
        raise ValueError(f"unknown weights {name!r}: expected one of {sorted(MAKERS)}")
    return os.path.join(WEIGHTS_DIR, f"{name}.safetensors")


def _save(model: torch.nn.Module, path: str, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, path, metadata=metadata)


def _read(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise ValueError(f"no weights file at {path!r}: rebuild it with `python -m mmllm_course.pretrained`")
    with safe_open(path, framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


# --------------------------------------------------------------------------- chapter 2's mini-CLIP


def make_chapter2_clip(path: str | None = None, quick: bool = False, progress: bool = False) -> str:
    """Train chapter 2's recipe (seed 0) and save the model to ``path`` (default: the shipped file).

    ``quick`` trains 5 steps on 1000 images: the same layout, for a test of this script, not a useful
    model. Returns the path written.
    """
    from mmllm_course.recipes import CHAPTER2_CLIP, evaluate_chapter2_clip, train_chapter2_clip

    recipe = dataclasses.replace(CHAPTER2_CLIP, steps=5, train_size=1000, held_out_size=200, batch_size=64, warmup_steps=2) if quick else CHAPTER2_CLIP
    run = train_chapter2_clip(seed=0, recipe=recipe, progress=progress)
    run.model.eval()
    metrics = evaluate_chapter2_clip(run, attention_images=100 if quick else 500)
    metadata = {
        "recipe": "CHAPTER2_CLIP" if not quick else "CHAPTER2_CLIP quick",
        "seed": "0",
        "config": json.dumps(dataclasses.asdict(recipe)),
        "metrics": json.dumps({k: round(v, 4) for k, v in metrics.items()}),
        "torch": torch.__version__,
    }
    path = path or weights_path("chapter2_clip")
    _save(run.model, path, metadata)
    return path


def load_chapter2_clip(path: str | None = None):
    """Chapter 2's trained mini-CLIP and its tokenizer: ``(clip, tokenizer)``, frozen, in eval mode.

    ``clip.vision`` maps images ``(B, 3, 32, 32)`` in [0, 1] to 16 patch tokens (and a class token) of
    width 64; ``clip.encode_image`` / ``clip.encode_text`` give the shared 64-d space. Its held-out
    metrics are in ``clip.pretrained_metrics`` (a dict of fractions, measured when it was made).
    """
    from mmllm_course.data import shapes_tokenizer
    from mmllm_course.encoders.clip import CLIP
    from mmllm_course.recipes import CHAPTER2_CLIP

    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or None, got {type(path).__name__}")
    state, metadata = _read(os.fspath(path) if path is not None else weights_path("chapter2_clip"))
    tokenizer = shapes_tokenizer()
    recipe = CHAPTER2_CLIP
    if "config" in metadata:
        fields = {f.name for f in dataclasses.fields(recipe)}
        saved = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(metadata["config"]).items() if k in fields}
        recipe = dataclasses.replace(recipe, **saved)
    model = CLIP(recipe.clip_config(tokenizer))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"weights file does not fit chapter 2's CLIP: missing {sorted(missing)}, unused {sorted(unexpected)}")
    model.eval().requires_grad_(False)
    model.pretrained_metrics = json.loads(metadata.get("metrics", "{}"))
    return model, tokenizer


# --------------------------------------------------------------------------- chapter 5's language model


def _make_chapter5(path: str | None, quick: bool, progress: bool, context_reading: bool) -> str:
    from mmllm_course.training.recipes import CHAPTER5, lm_text_accuracy, pretrain_chapter5_lm

    name = "chapter5_lm" if context_reading else "chapter5_lm_isolated"
    recipe = dataclasses.replace(CHAPTER5, pretrain_steps=5, pretrain_examples=500) if quick else CHAPTER5
    lm, tokenizer, history = pretrain_chapter5_lm(seed=0, recipe=recipe, context_reading=context_reading, progress=progress)
    metrics = {"context_reading_exact": lm_text_accuracy(lm, tokenizer, recipe, context_reading=True),
               "isolated_exact": lm_text_accuracy(lm, tokenizer, recipe, context_reading=False),
               "final_loss": history.loss[-1]}
    metadata = {
        "recipe": "CHAPTER5" + (" quick" if quick else ""),
        "seed": "0",
        "context_reading": str(context_reading),
        "config": json.dumps({k: v for k, v in dataclasses.asdict(recipe).items()}),
        "metrics": json.dumps({k: round(v, 4) for k, v in metrics.items()}),
        "torch": torch.__version__,
    }
    path = path or weights_path(name)
    # tied input/output embeddings share one tensor, which safetensors refuses: store a copy of each
    state = {k: v.detach().clone().contiguous().cpu() for k, v in lm.state_dict().items()}
    from safetensors.torch import save_file

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(state, path, metadata=metadata)
    return path


def make_chapter5_lm(path: str | None = None, quick: bool = False, progress: bool = False) -> str:
    """Pretrain chapter 5's LM on context-reading text (recipe seed 0) and save it; ``quick``: 5 steps, layout only."""
    return _make_chapter5(path, quick, progress, context_reading=True)


def make_chapter5_lm_isolated(path: str | None = None, quick: bool = False, progress: bool = False) -> str:
    """The pitfall twin: the same LM pretrained on isolated captions only (no context to read)."""
    return _make_chapter5(path, quick, progress, context_reading=False)


def load_chapter5_lm(path: str | None = None, isolated: bool = False):
    """Chapter 5's pretrained tiny ``LlamaForCausalLM`` and its tokenizer: ``(lm, tokenizer)``, frozen, eval mode.

    ``isolated=True`` loads the pitfall twin pretrained on isolated captions. Its text metrics
    (teacher-forced exact targets, with and without a context) are in ``lm.pretrained_metrics``.
    """
    from mmllm_course.language.lm import course_lm_tokenizer, make_causal_lm
    from mmllm_course.training.recipes import CHAPTER5

    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or None, got {type(path).__name__}")
    if not isinstance(isolated, bool):
        raise TypeError(f"isolated must be a bool, got {type(isolated).__name__}")
    name = "chapter5_lm_isolated" if isolated else "chapter5_lm"
    state, metadata = _read(os.fspath(path) if path is not None else weights_path(name))
    recipe = CHAPTER5
    if "config" in metadata:
        lm_fields = {"arch", "lm_dim", "lm_depth", "lm_heads", "lm_kv_heads", "lm_mlp_dim", "context_length"}  # the LM's size
        recipe = dataclasses.replace(recipe, **{k: v for k, v in json.loads(metadata["config"]).items() if k in lm_fields})
    tokenizer = course_lm_tokenizer()
    lm = make_causal_lm(recipe.lm_config(), tokenizer)
    missing, unexpected = lm.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"weights file does not fit chapter 5's LM: missing {sorted(missing)}, unused {sorted(unexpected)}")
    lm.eval().requires_grad_(False)
    lm.pretrained_metrics = json.loads(metadata.get("metrics", "{}"))
    return lm, tokenizer


MAKERS: dict[str, Callable[..., str]] = {"chapter2_clip": make_chapter2_clip, "chapter5_lm": make_chapter5_lm,
                                         "chapter5_lm_isolated": make_chapter5_lm_isolated}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mmllm_course.pretrained", description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=sorted(MAKERS), help="which weights to rebuild")
    parser.add_argument("--out", default=None, help="where to write (default: the shipped file inside the package)")
    parser.add_argument("--quick", action="store_true", help="a few steps only: checks the script, not a useful model")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    path = MAKERS[args.name](args.out, quick=args.quick, progress=True)
    _, metadata = _read(path)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)\nheld-out metrics: {metadata.get('metrics')}")


if __name__ == "__main__":
    main()
