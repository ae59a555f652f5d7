"""The README's figure of the capstone: held-out spoken requests and the point clouds the pipeline built from them.

    python -m mmllm_course.pipelines.figure                  # trains run 0 (CHAPTER11), writes docs/capstone.png
    python -m mmllm_course.pipelines.figure --out /tmp/c.png

One held-out request per (solid, size), 5 x 2 panels, each titled with what the clip says and what
the judge reads on the generated cloud.
"""

from __future__ import annotations

import argparse
import os

import torch

from mmllm_course._checks import InputTypeError, describe


def make_capstone_figure(path: str | os.PathLike = "docs/capstone.png", model=None, data=None, seed: int = 0,
                         progress: bool = False) -> str:
    """Write the figure to ``path`` (PNG); ``model`` / ``data``: a trained :class:`AudioTo3D` and its CapstoneData (else run ``seed``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmllm_course.data.points import SOLIDS
    from mmllm_course.data.shapes import SIZES
    from mmllm_course.generators.point_diffusion import load_point_judge
    from mmllm_course.pipelines.audio_to_3d import CHAPTER11, AudioTo3D, make_capstone_data, train_capstone

    if not isinstance(path, (str, os.PathLike)):
        raise InputTypeError(f"path must be a str, got {describe(path)}")
    if data is None:
        data = make_capstone_data(seed, CHAPTER11)
    if model is None:
        model = train_capstone(seed, CHAPTER11, data, progress=progress).model
    if not isinstance(model, AudioTo3D):
        raise InputTypeError(f"model must be an AudioTo3D, got {describe(model)}")
    held = data.held_out.subset(data.held_out.is_object)
    rows = [int(((held.solid == s) & (held.size == z)).nonzero()[0]) for z in range(2) for s in range(5)]
    result = model.generate(held.waveforms[rows], steps=CHAPTER11.sample_steps, generator=torch.Generator().manual_seed(seed))
    judge = load_point_judge()
    seen = judge.solids(result.points).tolist()
    sizes = judge.sizes(result.points, held.solid[rows]).tolist()
    fig = plt.figure(figsize=(11, 4.8))
    for j, i in enumerate(rows):
        pts = result.points[j].numpy()
        ax = fig.add_subplot(2, 5, j + 1, projection="3d")
        ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], c=pts[:, 2], cmap="viridis", s=3)
        ax.view_init(elev=22, azim=35)
        ax.set(xlim=(-1, 1), ylim=(-1, 1), zlim=(-1, 1), xticks=[], yticks=[], zticks=[])
        ax.set_title(f"heard \"{held.captions[i]}\"\njudged: {SIZES[sizes[j]]} {SOLIDS[seen[j]]}", fontsize=8)
    fig.suptitle("Chapter 11: spoken request -> audio encoder -> LM says [3D0] [3D1] -> projector -> point diffusion decoder",
                 fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return os.fspath(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mmllm_course.pipelines.figure", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="docs/capstone.png", help="where to write the PNG")
    parser.add_argument("--seed", type=int, default=0, help="the recipe run to train")
    args = parser.parse_args(argv)
    path = make_capstone_figure(args.out, seed=args.seed, progress=True)
    print(f"wrote {path} ({os.path.getsize(path) / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
