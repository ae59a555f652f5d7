"""Chapter 10's shipped tokenizer and image-token LM: the recipe, the script that trains them, the loaders.

Training both takes longer than a notebook may (tens of CPU-minutes on a loaded 2-core CPU), so,
under chapter 9's rule, this script trains them once and ships them as safetensors (fp16) inside
the package; chapter 10's notebook loads them::

    python -m mmllm_course.visual_tokens.pretrain            # the shipped weights, weights/chapter10_image_tokens.safetensors
    python -m mmllm_course.visual_tokens.pretrain --quick    # a few steps on a few images: the file's layout only (tested)

    tokenizer, model = load_chapter10()     # frozen, eval mode; metrics in model.pretrained_metrics

The recipe (:data:`CHAPTER10`):

1. the VQ tokenizer (:class:`~.tokenizer.VQTokenizer`, 8x8 grid, 128 codes of width 16) on 8,000
   one-object images drawn without pixel noise (noise has no content, and a codebook would spend
   codes on it), squared error with the object's pixels weighted 5x (the grey background is most
   of every image), dead codes restarted every 50 steps, cosine learning rate;
2. the training images tokenized once by the frozen tokenizer; the LM (:class:`~.image_lm.ImageTokenLM`)
   trained by next-token prediction on "draw <caption> <boi> 64 image tokens <eoi>";
3. measured: the tokenizer's reconstructions of held-out images (PSNR, codes used, and the
   chapter-9 judge's reading of them), and the judge's reading of images the LM writes for held-out
   requests (temperature and top-k of :data:`CHAPTER10`).

Seeds: training images 10000, tokenizer held-out images 10099, held-out requests 10199; training seed 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field

import torch

from mmllm_course._checks import InputTypeError, check_int, check_number, describe
from mmllm_course.visual_tokens.image_lm import ImageLMConfig, ImageLMTrainConfig, ImageTokenLM, request_for, train_image_lm
from mmllm_course.visual_tokens.tokenizer import (
    TokenizerTrainConfig,
    VQTokenizer,
    VQTokenizerConfig,
    tokenizer_metrics,
    train_tokenizer,
)

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")
NAME = "chapter10_image_tokens"
DATA_SEED, HELD_OUT_IMAGES_SEED, HELD_OUT_REQUESTS_SEED = 10000, 10099, 10199


@dataclass
class Chapter10Recipe:
    """Everything the shipped tokenizer and LM were trained with (see the module docstring)."""

    train_images: int = 8000
    tokenizer: VQTokenizerConfig = field(default_factory=VQTokenizerConfig)
    tokenizer_train: TokenizerTrainConfig = field(
        default_factory=lambda: TokenizerTrainConfig(steps=1500, batch_size=64, lr=2e-3, restart_every=50, object_weight=5.0, cosine=True))
    lm: ImageLMConfig = field(default_factory=ImageLMConfig)
    lm_train: ImageLMTrainConfig = field(default_factory=ImageLMTrainConfig)
    temperature: float = 1.0
    top_k: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        check_int(self.train_images, "train_images")
        check_number(self.temperature, "temperature", low=0.0)
        check_int(self.top_k, "top_k")
        check_int(self.seed, "seed", minimum=0)
        if (self.lm.num_codes, self.lm.grid_size) != (self.tokenizer.num_codes, self.tokenizer.grid_size):
            raise ValueError(f"the LM writes {self.lm.grid_size}x{self.lm.grid_size} grids of {self.lm.num_codes} codes but the tokenizer "
                             f"makes {self.tokenizer.grid_size}x{self.tokenizer.grid_size} grids of {self.tokenizer.num_codes}")


CHAPTER10 = Chapter10Recipe()


def world():
    """The chapter's world: one object, no pixel noise."""
    from mmllm_course.data.shapes import ShapesWorldConfig

    return ShapesWorldConfig(noise=0.0)


def training_data(n: int, seed: int = DATA_SEED):
    from mmllm_course.data.shapes import generate_shapes

    return generate_shapes(n, seed=seed, config=world())


def held_out_requests(n: int = 256, seed: int = HELD_OUT_REQUESTS_SEED) -> tuple[list[str], list[str]]:
    """``n`` held-out (requests, captions): captions of images drawn with a seed no training set uses."""
    check_int(n, "n")
    captions = training_data(n, seed).captions
    return [request_for(c) for c in captions], captions


def weights_path(name: str = NAME) -> str:
    return os.path.join(WEIGHTS_DIR, f"{name}.safetensors")


def _log(log, message: str) -> None:
    if log is not None:
        log(message)


def make_chapter10(path: str | None = None, quick: bool = False, progress: bool = False, log=print,
                   recipe: Chapter10Recipe | None = None, tokenizer_state: dict | None = None, lm_state: dict | None = None) -> str:
    """Train the tokenizer (stage 1) and the image-token LM (stage 2) by ``recipe`` and save both; returns the path.

    ``quick``: 5 steps each on 256 images (the layout only). ``tokenizer_state``: a stage-1 result
    of this same recipe to start stage 2 from, ``lm_state`` a stage-2 result (each stage is
    deterministic in the seed: the shipped file was assembled from the two stages run separately).
    """
    from mmllm_course.generators import judge_images, load_judge

    recipe = recipe or CHAPTER10
    if not isinstance(recipe, Chapter10Recipe):
        raise InputTypeError(f"recipe must be a Chapter10Recipe or None, got {describe(recipe)}")
    if quick:
        recipe = dataclasses.replace(recipe, train_images=256, tokenizer_train=dataclasses.replace(recipe.tokenizer_train, steps=5),
                                     lm_train=dataclasses.replace(recipe.lm_train, steps=5, warmup=1))
    start = time.perf_counter()
    data = training_data(recipe.train_images)
    torch.manual_seed(recipe.seed)
    tokenizer = VQTokenizer(recipe.tokenizer)
    if tokenizer_state is not None:
        tokenizer.load_state_dict(tokenizer_state)
    else:
        train_tokenizer(tokenizer, data.images, recipe.tokenizer_train, seed=recipe.seed, progress=progress)
    tokenizer.eval().requires_grad_(False)
    judge = load_judge()
    n_eval = 32 if quick else 256
    held = training_data(n_eval, HELD_OUT_IMAGES_SEED)
    metrics = {f"tokenizer_{k}": v for k, v in tokenizer_metrics(tokenizer, held.images).items()}
    metrics.update({f"reconstruction_{k}": v for k, v in judge_images(judge, tokenizer.reconstruct(held.images), held).items()})
    _log(log, f"stage 1 (tokenizer): {_fmt(metrics)}")

    with torch.no_grad():
        codes = torch.cat([tokenizer.encode(data.images[i:i + 512]) for i in range(0, len(data.images), 512)])
    model = ImageTokenLM(recipe.lm, seed=recipe.seed)
    if lm_state is not None:
        model.lm.load_state_dict(lm_state)
    else:
        history = train_image_lm(model, [request_for(c) for c in data.captions], codes, recipe.lm_train, seed=recipe.seed, progress=progress)
        metrics["lm_final_loss"] = sum(history["loss"][-50:]) / len(history["loss"][-50:])
    model.eval().requires_grad_(False)
    gen = evaluate_image_lm(tokenizer, model, judge, n=n_eval, temperature=recipe.temperature, top_k=recipe.top_k, seed=0)
    metrics.update(gen)
    metrics["train_seconds"] = time.perf_counter() - start
    _log(log, f"stage 2 (LM): {_fmt(metrics)}")
    path = path or weights_path()
    save_chapter10(tokenizer, model, path, recipe, metrics, quick)
    return path


def evaluate_image_lm(tokenizer: VQTokenizer, model: ImageTokenLM, judge, n: int = 256, temperature: float = 1.0, top_k: int | None = 16,
                      seed: int = 0, requests_seed: int = HELD_OUT_REQUESTS_SEED) -> dict[str, float]:
    """The judge's reading of images the LM writes for ``n`` held-out requests (``generated_*``), beside chance.

    ``chance_color_shape``: the same images scored against the requests shuffled (a generator that
    ignores its request scores this); ``seconds_per_image``: sampling + decoding, wall clock.
    """
    from mmllm_course.generators import ShapesJudge, judge_images

    _check_pair(tokenizer, model)
    if not isinstance(judge, ShapesJudge):
        raise InputTypeError(f"judge must be a ShapesJudge (e.g. mmllm_course.generators.load_judge()), got {describe(judge)}")
    check_int(n, "n")
    requests, captions = held_out_requests(n, requests_seed)
    start = time.perf_counter()
    codes = model.generate(requests, temperature=temperature, top_k=top_k, seed=seed)
    images = tokenizer.decode(codes)
    seconds = (time.perf_counter() - start) / n
    out = {f"generated_{k}": v for k, v in judge_images(judge, images, captions).items()}
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1)).tolist()
    out["chance_color_shape"] = judge_images(judge, images, [captions[i] for i in perm])["color_shape"]
    out["seconds_per_image"] = seconds
    out["distinct_grids"] = float(len({tuple(c.flatten().tolist()) for c in codes})) / n
    return out


def _check_pair(tokenizer, model) -> None:
    if not isinstance(tokenizer, VQTokenizer):
        raise InputTypeError(f"tokenizer must be a VQTokenizer (e.g. load_chapter10()[0]), got {describe(tokenizer)}")
    if not isinstance(model, ImageTokenLM):
        raise InputTypeError(f"model must be an ImageTokenLM (e.g. load_chapter10()[1]), got {describe(model)}")
    if (model.config.num_codes, model.config.grid_size) != (tokenizer.config.num_codes, tokenizer.config.grid_size):
        raise ValueError(f"the LM writes {model.config.grid_size}x{model.config.grid_size} grids of {model.config.num_codes} codes but the "
                         f"tokenizer decodes {tokenizer.config.grid_size}x{tokenizer.config.grid_size} grids of {tokenizer.config.num_codes}")


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())


def save_chapter10(tokenizer: VQTokenizer, model: ImageTokenLM, path: str, recipe: Chapter10Recipe, metrics: dict[str, float],
                   quick: bool = False) -> None:
    """Both models in one safetensors file (fp16), the recipe and the metrics in its metadata."""
    from safetensors.torch import save_file

    state = {f"tokenizer.{k}": v for k, v in tokenizer.state_dict().items()}
    # the LM's tied input/output embeddings share one tensor, which safetensors refuses: store the input table only
    state.update({f"lm.{k}": v for k, v in model.lm.state_dict().items() if k != "lm_head.weight"})
    state = {k: v.detach().to(torch.float16).clone().contiguous().cpu() for k, v in state.items()}
    metadata = {"recipe": "CHAPTER10" + (" quick" if quick else ""), "config": json.dumps(dataclasses.asdict(recipe)),
                "metrics": json.dumps({k: round(float(v), 5) for k, v in metrics.items()}), "torch": torch.__version__}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(state, path, metadata=metadata)


def load_chapter10(path: str | None = None) -> tuple[VQTokenizer, ImageTokenLM]:
    """Chapter 10's shipped ``(tokenizer, image-token LM)``, frozen, eval mode, float32; metrics in ``model.pretrained_metrics``."""
    from safetensors import safe_open

    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise InputTypeError(f"path must be a str or None, got {describe(path)}")
    path = os.fspath(path) if path is not None else weights_path()
    if not os.path.exists(path):
        raise FileNotFoundError(f"no chapter-10 weights at {path}: run python -m mmllm_course.visual_tokens.pretrain")
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata() or {}
        state = {k: f.get_tensor(k).float() for k in f.keys()}
    saved = json.loads(metadata.get("config", "{}"))
    tok_cfg = VQTokenizerConfig(**{**saved.get("tokenizer", {}), "channels": tuple(saved.get("tokenizer", {}).get("channels", (32, 64)))}) \
        if saved else VQTokenizerConfig()
    lm_cfg = ImageLMConfig(**saved.get("lm", {})) if saved else ImageLMConfig()
    tokenizer = VQTokenizer(tok_cfg)
    tokenizer.load_state_dict({k[len("tokenizer."):]: v for k, v in state.items() if k.startswith("tokenizer.")})
    model = ImageTokenLM(lm_cfg, seed=None)
    lm_state = {k[len("lm."):]: v for k, v in state.items() if k.startswith("lm.")}
    missing, unexpected = model.lm.load_state_dict(lm_state, strict=False)
    if unexpected or [m for m in missing if m != "lm_head.weight"]:
        raise ValueError(f"weights file does not fit chapter 10's LM: missing {sorted(missing)}, unused {sorted(unexpected)}")
    model.lm.tie_weights()
    tokenizer.eval().requires_grad_(False)
    model.eval().requires_grad_(False)
    model.pretrained_metrics = json.loads(metadata.get("metrics", "{}"))
    model.recipe = metadata.get("recipe", "")
    return tokenizer, model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train chapter 10's VQ tokenizer and image-token LM and save them as safetensors.")
    parser.add_argument("--quick", action="store_true", help="5 steps each on 256 images: the file's layout only")
    parser.add_argument("--out", default=None, help="where to write (default: the package's weights folder)")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    print(make_chapter10(args.out, quick=args.quick, progress=args.progress))


if __name__ == "__main__":
    main()
