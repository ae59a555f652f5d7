"""Pretrain the capstone's frozen point-cloud decoder and its judge, and ship them as safetensors.

    python -m mmllm_course.generators.pretrain_points            # both files, recipe seed 0
    python -m mmllm_course.generators.pretrain_points judge      # only the judge (chapter 8's point classifier)
    python -m mmllm_course.generators.pretrain_points decoder    # only the decoder (evaluated by the shipped judge)
    python -m mmllm_course.generators.pretrain_points --quick --out /tmp/w   # a few steps: the same layout, for a test

The judge comes first: the decoder's metrics, stored in its file, are measured by it. Files land in
``mmllm_course/weights/`` (``chapter11_point_judge.safetensors``, ``chapter11_point_decoder.safetensors``)
unless ``--out`` names a folder. Load them with :func:`~mmllm_course.generators.point_diffusion.load_point_decoder`
and :func:`~mmllm_course.generators.point_diffusion.load_point_judge`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

import torch

from mmllm_course.generators.point_diffusion import (
    CHAPTER11_DECODER,
    CHAPTER11_JUDGE,
    DECODER_FILE,
    JUDGE_FILE,
    WEIGHTS_DIR,
    PointDecoderRecipe,
    PointDecoderRun,
    PointJudge,
    evaluate_point_decoder,
    load_point_judge,
    make_attributed_clouds,
    train_point_decoder,
    train_point_judge,
)


def _save(model: torch.nn.Module, path: str, metadata: dict[str, str]) -> str:
    from safetensors.torch import save_file

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, path, metadata=metadata)
    return path


def _check_path(path: object, default: str) -> str:
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or None, got {type(path).__name__}")
    return os.fspath(path) if path is not None else os.path.join(WEIGHTS_DIR, default)


def make_point_judge(path: str | None = None, quick: bool = False, progress: bool = False) -> str:
    """Train the judge (``CHAPTER11_JUDGE``: chapter 8's point classifier on upright clouds, seed 0), save; returns the path.

    Stored metrics, on 500 held-out upright clouds (seed 101): ``classifier_held_out`` (the solid) and
    ``size_judge``. ``quick``: 5 training steps, the same layout.
    """
    path = _check_path(path, JUDGE_FILE)
    recipe = dataclasses.replace(CHAPTER11_JUDGE, steps=5, train_size=200, warmup_steps=2) if quick else CHAPTER11_JUDGE
    judge = train_point_judge(seed=0, recipe=recipe, progress=progress)
    held = make_attributed_clouds(500, seed=101)
    metrics = {
        "classifier_held_out": (judge.solids(held.points) == held.solid).double().mean().item(),
        "size_judge": (judge.sizes(held.points, held.solid) == held.size).double().mean().item(),
    }
    metadata = {"recipe": "CHAPTER11_JUDGE" + (" quick" if quick else ""), "seed": "0", "torch": torch.__version__,
                "recipe_config": json.dumps(dataclasses.asdict(recipe)),
                "metrics": json.dumps({k: round(v, 4) for k, v in metrics.items()})}
    return _save(judge, path, metadata)


def make_point_decoder(path: str | None = None, quick: bool = False, judge_path: str | None = None,
                       progress: bool = False) -> str:
    """Pretrain the decoder (``CHAPTER11_DECODER``, seed 0), measure it with the judge, save; returns the path.

    ``quick``: 5 steps on 200 clouds and a small evaluation, the same layout (not a useful model).
    """
    path = _check_path(path, DECODER_FILE)
    recipe = dataclasses.replace(CHAPTER11_DECODER, steps=5, train_size=200, warmup_steps=2, eval_per_pair=2,
                                 sample_steps=5, reference_per_pair=5, held_out_size=100) if quick else CHAPTER11_DECODER
    judge = load_point_judge(judge_path)
    run = train_point_decoder(seed=0, recipe=recipe, progress=progress)
    return save_point_decoder(run, recipe, judge, path, quick)


def save_point_decoder(run: PointDecoderRun, recipe: PointDecoderRecipe, judge: PointJudge, path: str, quick: bool = False) -> str:
    """Measure a trained run with ``judge`` (:func:`evaluate_point_decoder`) and save it with its recipe and metrics."""
    metrics = evaluate_point_decoder(run.decoder, judge, seed=run.seed, recipe=recipe)
    metrics["train_seconds"] = run.seconds
    metadata = {
        "recipe": "CHAPTER11_DECODER" + (" quick" if quick else ""),
        "seed": str(run.seed),
        "config": json.dumps(dataclasses.asdict(run.decoder.config)),
        "recipe_config": json.dumps(dataclasses.asdict(recipe)),
        "metrics": json.dumps({k: round(v, 4) for k, v in metrics.items()}),
        "torch": torch.__version__,
    }
    return _save(run.decoder, path, metadata)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mmllm_course.generators.pretrain_points", description=__doc__.split("\n")[0])
    parser.add_argument("what", nargs="?", choices=("all", "judge", "decoder"), default="all")
    parser.add_argument("--quick", action="store_true", help="a few steps: the same file layout, not a useful model")
    parser.add_argument("--out", default=None, help="folder for the files (default: the package's weights folder)")
    args = parser.parse_args(argv)
    out = args.out or WEIGHTS_DIR
    judge_path = os.path.join(out, JUDGE_FILE)
    if args.what in ("all", "judge"):
        print("wrote", make_point_judge(judge_path, quick=args.quick, progress=True))
    if args.what in ("all", "decoder"):
        path = make_point_decoder(os.path.join(out, DECODER_FILE), quick=args.quick,
                                  judge_path=judge_path if os.path.isfile(judge_path) else None, progress=True)
        print("wrote", path)


if __name__ == "__main__":
    main()
