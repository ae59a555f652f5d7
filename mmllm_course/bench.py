"""Benchmark: our modules against the reference implementations, and how long each notebook takes.

    python -m mmllm_course.bench                  # everything
    python -m mmllm_course.bench --no-notebooks   # modules only
    python -m mmllm_course.bench --only vit

Each module case builds our module and its ``transformers`` twin holding identical weights (through
the same converters the parity tests prove), checks they agree on the input, then times both (eval
mode, no grad) and prints the median time and the ratio ours / reference (below 1.0: ours is faster).
A benchmark, not a test: numbers depend on the machine; run it on a quiet one.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import torch

Case = tuple[str, Callable[[], object], Callable[[], object]]  # (name, ours, reference)


def _patch_embedding_case() -> Case:
    from transformers import ViTConfig
    from transformers.models.vit.modeling_vit import ViTEmbeddings

    from mmllm_course.encoders.patches import vision_embeddings_from_vit

    cfg = ViTConfig(hidden_size=192, num_hidden_layers=1, num_attention_heads=3, intermediate_size=384, image_size=64, patch_size=8)
    ref = ViTEmbeddings(cfg).eval()
    ours = vision_embeddings_from_vit(ref).eval()
    x = torch.rand(8, 3, 64, 64)
    return "patch embedding (ViTEmbeddings, 8x3x64x64, D=192)", lambda: ours(x), lambda: ref(x)


def _vit_case() -> Case:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from mmllm_course.encoders.vit import clip_vision_from_transformers

    cfg = CLIPVisionConfig(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512, image_size=64, patch_size=8)
    ref = CLIPVisionModel(cfg).eval()
    ours = clip_vision_from_transformers(ref).eval()
    x = torch.rand(8, 3, 64, 64)
    return "ViT (CLIPVisionModel, 8x3x64x64, D=128, 4 layers)", lambda: ours(x).last_hidden_state, lambda: ref(pixel_values=x).last_hidden_state


def _attention_case() -> Case:
    from transformers import CLIPVisionConfig
    from transformers.models.clip.modeling_clip import CLIPAttention

    from mmllm_course.nn.attention import attention_from_clip

    cfg = CLIPVisionConfig(hidden_size=128, num_attention_heads=4, attn_implementation="sdpa")  # a fair fight: their fast path too
    ref = CLIPAttention(cfg).eval()
    ours = attention_from_clip(ref).eval()
    x = torch.randn(8, 65, 128)
    return "self-attention (CLIPAttention, 8x65x128, 4 heads)", lambda: ours(x)[0], lambda: ref(x)[0]


CASES: dict[str, Callable[[], Case]] = {
    "patch": _patch_embedding_case,
    "attention": _attention_case,
    "vit": _vit_case,
}


def median_seconds(fn: Callable[[], object], min_run_time: float = 0.5) -> float:
    from torch.utils import benchmark

    with torch.inference_mode():
        return benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median


def bench_modules(only: str | None = None, min_run_time: float = 0.5) -> list[dict]:
    rows = []
    for key, build in CASES.items():
        if only and only not in key:
            continue
        name, ours, ref = build()
        with torch.inference_mode():
            a, b = ours(), ref()
        max_diff = (a - b).abs().max().item()
        t_ours, t_ref = median_seconds(ours, min_run_time), median_seconds(ref, min_run_time)
        rows.append({"name": name, "ours_ms": t_ours * 1e3, "ref_ms": t_ref * 1e3, "ratio": t_ours / t_ref, "max_diff": max_diff})
        print(f"  {name:<55} ours {t_ours * 1e3:8.3f} ms   ref {t_ref * 1e3:8.3f} ms   ratio {t_ours / t_ref:5.2f}   max|diff| {max_diff:.1e}", flush=True)
    return rows


def bench_notebooks(root: Path) -> list[dict]:
    """Execute every chapter and solution notebook once and report its wall time."""
    import os

    import nbformat
    from nbclient import NotebookClient

    from mmllm_course.grade import _kernel_manager

    os.environ.update(MPLBACKEND="Agg", TQDM_DISABLE="1", MMLLM_STRICT="1")
    rows = []
    for path in sorted(root.glob("notebooks/*.ipynb")) + sorted(root.glob("solutions/*.ipynb")) + sorted(root.glob("exercises/*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        ok = True
        try:
            NotebookClient(nb, timeout=600, km=_kernel_manager(), allow_errors=path.parent.name == "exercises",
                           resources={"metadata": {"path": str(path.parent)}}).execute()
        except Exception:  # noqa: BLE001 - reported in the table
            ok = False
        seconds = time.perf_counter() - start
        rows.append({"notebook": str(path.relative_to(root)), "seconds": seconds, "ok": ok})
        print(f"  {str(path.relative_to(root)):<55} {seconds:6.1f} s  {'' if ok else 'FAILED'}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmllm_course.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="run only the module cases whose key contains this text")
    parser.add_argument("--no-notebooks", action="store_true", help="skip timing the notebooks")
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds of timing per measurement")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("modules (median, eval, no grad):")
    bench_modules(args.only, args.min_run_time)
    root = Path.cwd()
    if not args.no_notebooks and not args.only:
        if (root / "notebooks").is_dir():
            print("notebooks (wall time, fresh kernel each):")
            bench_notebooks(root)
        else:
            print("notebooks: run from the repository root to time them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
