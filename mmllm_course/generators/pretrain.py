"""Chapter 9's frozen generator and its judge: the recipe, the script that trains them, the loaders.

The generator (:class:`~mmllm_course.generators.latent_diffusion.LatentDiffusionGenerator`) costs
tens of CPU-minutes to train, so it is trained once by this script and shipped as safetensors
(fp16) inside the package; chapter 9 loads it frozen and never trains it::

    python -m mmllm_course.generators.pretrain chapter9_judge        # 1,500 steps: 21 min on a loaded 2-core CPU
    python -m mmllm_course.generators.pretrain chapter9_generator    # 1,400 + 2,400 + 5,000 steps: ~45 min there

    generator = load_chapter9_generator()    # frozen, eval mode
    judge = load_judge()                     # the CNN that reads what an image shows

The generator's recipe, stage by stage, each measured before the next builds on it:

1. the autoencoder on real images of the one-object world drawn without pixel noise (noise has no
   content; an 8x8x4 bottleneck would spend its capacity on it), L1 reconstruction + a 1e-6 KL
   term as in Stable Diffusion, the object's pixels weighted 10x in the L1 (the flat grey
   background is most of every image and dominated an unweighted loss: after 600 steps the judge
   read shape on 62% and colour on 77% of reconstructions), decoding the posterior MEAN in training (decoding a posterior
   sample, as Stable Diffusion does, left colour and shape at 77% and 74% on reconstructions after
   1,000 steps here: the sample's noise, std ~0.4 against a latent spread of ~1.5, blurred the
   signal); the judge then reads its reconstructions (``metrics["ae_*"]``);
2. the latents of the training images are computed once (posterior means) and scaled to unit
   standard deviation (``latent_scale``, Stable Diffusion's ``scaling_factor``);
3. the UNet on those latents, v-prediction, cross-attention to the frozen chapter-2 text tower's
   token states of the caption, the caption dropped to the empty one 10% of the time (for
   classifier-free guidance), AdamW, warmup + cosine, an exponential moving average of the weights
   (what ships); the judge scores images sampled from held-out true captions
   (``metrics["color_shape"]`` etc.).

4. the decoder alone, on the frozen encoder's latents (which therefore do not change, so the UNet
   stays valid; Stable Diffusion's improved sd-vae-ft-mse decoder was made the same way): the
   judge's reading of shape on reconstructions went from 48% to 96% in 5,000 cheap steps.

What the shipped file reached (``generator.pretrained_metrics``, judge on 256 held-out requests,
10 DDIM steps, guidance 3): colour 100%, position 100%, size 100%, shape 94.9% (the target is 95%).
Before stage 4 (UNet 1,200 steps, decoder of stage 1): shape 50%. Colour, position and size came
within 400 UNet steps; shape needs the decoder of stage 4 and the longer UNet.

Seeds: generator data 9000, judge data 9100-9102, judge held-out 9199, generator held-out captions
9299; training seed 0.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import time
from dataclasses import dataclass

import torch

from mmllm_course._checks import InputTypeError, check_int, check_number, describe
from mmllm_course.generators.judge import JudgeConfig, ShapesJudge, evaluate_judge, judge_images, train_judge
from mmllm_course.generators.latent_diffusion import GeneratorConfig, LatentDiffusionGenerator, diffusion_loss, make_train_scheduler

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")
NAMES = ("chapter9_generator", "chapter9_judge")
HELD_OUT_SEED = 9299


def weights_path(name: str) -> str:
    """Path of the shipped file ``name`` (``"chapter9_generator"`` or ``"chapter9_judge"``)."""
    if not isinstance(name, str):
        raise InputTypeError(f"name must be a str, one of {NAMES}, got {describe(name)}")
    if name not in NAMES:
        raise ValueError(f"unknown weights {name!r}: expected one of {NAMES}")
    return os.path.join(WEIGHTS_DIR, f"{name}.safetensors")


@dataclass
class GeneratorRecipe:
    """How the shipped generator is trained (seed 0); ``quick()`` gives the layout-only test version."""

    data_seed: int = 9000
    train_size: int = 20000
    world_noise: float = 0.0
    ae_steps: int = 1400
    ae_batch_size: int = 16
    ae_lr: float = 2e-3
    ae_kl_weight: float = 1e-6
    ae_sample_posterior: bool = False  # decode the posterior mean in training (a sample's noise slowed learning here)
    ae_object_weight: float = 10.0  # L1 weight of the object's pixels against the flat background's
    unet_steps: int = 2400
    decoder_steps: int = 5000  # stage 4: the decoder alone, on the frozen encoder's latents (the UNet stays valid)
    decoder_lr: float = 1e-3
    unet_batch_size: int = 64
    unet_lr: float = 2e-3
    cond_dropout: float = 0.1
    ema_decay: float = 0.995
    eval_every: int = 200
    eval_images: int = 64
    sample_steps: int = 10
    guidance_scale: float = 3.0
    final_eval_images: int = 256

    def __post_init__(self) -> None:
        for name in ("train_size", "ae_batch_size", "unet_batch_size", "eval_every", "eval_images", "sample_steps", "final_eval_images"):
            check_int(getattr(self, name), name)
        for name in ("ae_steps", "unet_steps", "decoder_steps", "data_seed"):
            check_int(getattr(self, name), name, minimum=0)
        for name in ("ae_lr", "unet_lr", "decoder_lr"):
            check_number(getattr(self, name), name, low=0.0, low_open=True)
        check_number(self.world_noise, "world_noise", 0.0, 1.0)
        check_number(self.ae_kl_weight, "ae_kl_weight", low=0.0)
        check_number(self.cond_dropout, "cond_dropout", 0.0, 1.0, high_open=True)
        check_number(self.ema_decay, "ema_decay", 0.0, 1.0, high_open=True)
        check_number(self.guidance_scale, "guidance_scale", low=0.0)

    @staticmethod
    def quick() -> "GeneratorRecipe":
        return GeneratorRecipe(train_size=256, ae_steps=3, ae_batch_size=16, unet_steps=3, unet_batch_size=16, decoder_steps=2,
                               eval_every=1000, eval_images=8, sample_steps=2, final_eval_images=16)


def _warmup(step: int, warmup: int) -> float:
    """Linear warmup, then constant: a run stopped after N steps is the same as a run of N steps."""
    return min(1.0, (step + 1) / max(warmup, 1))


def _log(log, message: str) -> None:
    if log is not None:
        log(message)


def object_weights(images: torch.Tensor, object_weight: float) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W): ``object_weight`` where a pixel differs from the image's background, 1 elsewhere.

    The background is each image's per-channel median (the object covers under a quarter of the
    image); a pixel belongs to the object when a channel differs from it by more than 0.2 (in [-1, 1]).
    """
    background = images.flatten(2).median(-1).values[..., None, None]  # (B, 3, 1, 1)
    on_object = (images - background).abs().amax(1, keepdim=True) > 0.2
    return 1.0 + (object_weight - 1.0) * on_object.float()


def train_autoencoder(generator: LatentDiffusionGenerator, images: torch.Tensor, recipe: GeneratorRecipe,
                      gen: torch.Generator, progress: bool = False, log=None, evaluate=None) -> list[float]:
    """Stage 1: ``generator.vae`` on images (N, 3, H, W) in [0, 1]; L1 (object pixels weighted, :func:`object_weights`)
    + ``ae_kl_weight`` x KL. Returns the losses.

    ``evaluate(step)`` is called every ``eval_every`` steps (in eval mode) and its result logged.
    """
    from tqdm.auto import tqdm

    vae = generator.vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=recipe.ae_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _warmup(s, 100))
    losses = []
    for step in tqdm(range(recipe.ae_steps), desc="autoencoder", disable=not progress):
        x = images[torch.randint(0, len(images), (recipe.ae_batch_size,), generator=gen)] * 2 - 1
        dist = vae.encode(x).latent_dist
        recon = vae.decode(dist.sample(gen) if recipe.ae_sample_posterior else dist.mean).sample
        weight = object_weights(x, recipe.ae_object_weight)  # (B, 1, H, W)
        loss = (weight * (recon - x).abs()).sum() / (3 * weight.sum()) + recipe.ae_kl_weight * dist.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if (step + 1) % recipe.eval_every == 0:
            message = f"ae step {step + 1}: loss {sum(losses[-100:]) / len(losses[-100:]):.4f}"
            if evaluate is not None:
                vae.eval()
                message += f" | {evaluate(step + 1)}"
                vae.train()
            _log(log, message)
    vae.eval()
    return losses


def finetune_decoder(generator: LatentDiffusionGenerator, images: torch.Tensor, recipe: GeneratorRecipe,
                     gen: torch.Generator, progress: bool = False, log=None, evaluate=None) -> list[float]:
    """Stage 4: only ``generator.vae``'s decoder (and post-quant conv) on the frozen encoder's posterior means.

    The latents do not change, so a UNet trained on them stays valid: Stable Diffusion's improved
    autoencoders (sd-vae-ft-mse) were made the same way. Same loss as stage 1. Returns the losses.
    """
    from tqdm.auto import tqdm

    vae = generator.vae
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    vae.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=recipe.decoder_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _warmup(s, 100))
    losses = []
    vae.eval()
    vae.decoder.train()
    for step in tqdm(range(recipe.decoder_steps), desc="decoder", disable=not progress):
        x = images[torch.randint(0, len(images), (recipe.ae_batch_size,), generator=gen)] * 2 - 1
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mean
        recon = vae.decode(z).sample
        weight = object_weights(x, recipe.ae_object_weight)
        loss = (weight * (recon - x).abs()).sum() / (3 * weight.sum())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if (step + 1) % recipe.eval_every == 0:
            message = f"decoder step {step + 1}: loss {sum(losses[-100:]) / len(losses[-100:]):.4f}"
            if evaluate is not None:
                vae.decoder.eval()
                message += f" | {evaluate(step + 1)}"
                vae.decoder.train()
            _log(log, message)
    vae.eval().requires_grad_(False)
    return losses


def train_unet(generator: LatentDiffusionGenerator, latents: torch.Tensor, caption_ids: torch.Tensor,
               caption_cond: torch.Tensor, recipe: GeneratorRecipe, gen: torch.Generator, progress: bool = False,
               log=None, evaluate=None) -> tuple[torch.nn.Module, list[float]]:
    """Stage 3: the UNet on scaled latents (N, C, h, w); row i's caption is ``caption_cond[caption_ids[i]]`` (K, L, D).

    Returns the EMA copy of the UNet (what ships) and the losses. ``evaluate(unet)`` is called every
    ``eval_every`` steps on the EMA weights (``evaluate(ema, step)``) and its result logged.
    """
    from tqdm.auto import tqdm

    unet = generator.unet.train()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    scheduler = make_train_scheduler(generator.config)
    null = generator.null_conditioning(1)  # (1, L, D)
    opt = torch.optim.AdamW(unet.parameters(), lr=recipe.unet_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _warmup(s, 100))
    losses = []
    for step in tqdm(range(recipe.unet_steps), desc="unet", disable=not progress):
        idx = torch.randint(0, len(latents), (recipe.unet_batch_size,), generator=gen)
        cond = caption_cond[caption_ids[idx]]  # (B, L, D)
        drop = torch.rand(len(idx), generator=gen) < recipe.cond_dropout
        cond = torch.where(drop[:, None, None], null, cond)
        loss = diffusion_loss(unet, scheduler, latents[idx], cond, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        decay = min(recipe.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(p, 1 - decay)
        losses.append(float(loss.detach()))
        if (step + 1) % recipe.eval_every == 0:
            message = f"unet step {step + 1}: loss {sum(losses[-100:]) / len(losses[-100:]):.4f}"
            if evaluate is not None:
                message += f" | {evaluate(ema, step + 1)}"
            _log(log, message)
    unet.eval()
    return ema, losses


def held_out_captions(n: int, seed: int = HELD_OUT_SEED) -> list[str]:
    """``n`` one-object captions from a seed no training set uses (the generator's evaluation requests)."""
    from mmllm_course.data import generate_shapes

    return generate_shapes(check_int(n, "n"), seed=seed).captions


def evaluate_generator(generator: LatentDiffusionGenerator, judge: ShapesJudge, n: int = 128, num_inference_steps: int = 10,
                       guidance_scale: float = 3.0, seed: int = 0, batch_size: int = 128) -> dict[str, float]:
    """The judge's accuracies on ``n`` images sampled from held-out TRUE captions (the generator's own metric)."""
    _check_models(generator, judge)
    check_int(n, "n")
    check_int(batch_size, "batch_size")
    check_int(seed, "seed", minimum=0)
    captions = held_out_captions(n)
    images = torch.cat([generator.generate(captions[i : i + batch_size], num_inference_steps=num_inference_steps,
                                           guidance_scale=guidance_scale, seed=seed + i)
                        for i in range(0, n, batch_size)])
    return judge_images(judge, images, captions)


def _check_models(generator, judge=None, need_judge: bool = True) -> None:
    if not isinstance(generator, LatentDiffusionGenerator):
        raise InputTypeError(f"generator must be a LatentDiffusionGenerator (load_chapter9_generator()), got {describe(generator)}")
    if need_judge and not isinstance(judge, ShapesJudge):
        raise InputTypeError(f"judge must be a ShapesJudge (load_judge()), got {describe(judge)}")


def sampling_seconds_per_image(generator: LatentDiffusionGenerator | None = None, n: int = 64, num_inference_steps: int = 10,
                               guidance_scale: float = 3.0, repeats: int = 1) -> float:
    """Wall-clock seconds per generated image (caption -> conditioning -> DDIM with guidance -> decoder), best of ``repeats``.

    ``generator`` None: the shipped one. For the benchmark; one batch of ``n`` held-out captions.
    """
    generator = load_chapter9_generator() if generator is None else generator
    _check_models(generator, need_judge=False)
    check_int(n, "n")
    check_int(repeats, "repeats")
    check_int(num_inference_steps, "num_inference_steps")
    check_number(guidance_scale, "guidance_scale", low=0.0)
    captions = held_out_captions(n)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        generator.generate(captions, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale)
        best = min(best, time.perf_counter() - start)
    return best / n


def _fmt(metrics: dict[str, float], prefix: str = "") -> str:
    keys = [prefix + k for k in ("l1", "color", "shape", "color_shape", "size", "position")]
    return " ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k in keys)


def _judge_if_shipped() -> ShapesJudge | None:
    """The shipped judge, or None before it has been made (the generator's metrics then skip the judge)."""
    return load_judge() if os.path.isfile(weights_path("chapter9_judge")) else None


def make_chapter9_generator(path: str | None = None, quick: bool = False, progress: bool = False, log=print,
                            autoencoder: str | None = None, checkpoint_dir: str | None = None,
                            recipe: GeneratorRecipe | None = None, stop_after_autoencoder: bool = False,
                            unet: str | None = None, decoder: str | None = None) -> str:
    """Train the generator by :class:`GeneratorRecipe` (seed 0) and save it (fp16) to ``path`` (default: the shipped file).

    ``quick``: a few steps on 256 images, the same layout, for a test of this script. ``autoencoder``:
    a file written by an earlier run's stage 1 (``<checkpoint_dir>/autoencoder.pt``) to start from stage 2.
    ``checkpoint_dir``: where the autoencoder and the UNet's EMA are saved at every evaluation
    (nowhere when None). ``recipe`` replaces :class:`GeneratorRecipe`'s defaults. ``unet``: the EMA
    UNet an earlier run saved at step ``recipe.unet_steps`` (``unet_ema_<step>.pt``), to finish that
    run without training again (the learning rate is constant after warmup, so a run stopped at step
    N holds the weights a run of N steps ends with). ``decoder``: likewise, stage 4's ``decoder_<step>.pt``.
    """
    from mmllm_course.data import ShapesWorldConfig, generate_shapes
    from mmllm_course.pretrained import load_chapter2_clip
    from mmllm_course.utils import seed_everything

    if recipe is None:
        recipe = GeneratorRecipe.quick() if quick else GeneratorRecipe()
    if not isinstance(recipe, GeneratorRecipe):
        raise InputTypeError(f"recipe must be a GeneratorRecipe or None, got {describe(recipe)}")
    path = path or weights_path("chapter9_generator")
    start = time.perf_counter()
    gen = seed_everything(0)
    clip, tokenizer = load_chapter2_clip()
    generator = LatentDiffusionGenerator(GeneratorConfig(), text_encoder=copy.deepcopy(clip.text), tokenizer=tokenizer)
    data = generate_shapes(recipe.train_size, seed=recipe.data_seed, config=ShapesWorldConfig(noise=recipe.world_noise))
    metrics: dict[str, float] = {}

    # stage 1: the autoencoder, judged on reconstructions of held-out images
    held = generate_shapes(recipe.final_eval_images, seed=HELD_OUT_SEED, config=ShapesWorldConfig(noise=recipe.world_noise))
    if checkpoint_dir is not None:
        os.makedirs(checkpoint_dir, exist_ok=True)

    def evaluate_ae(step: int | None = None) -> dict[str, float]:
        with torch.no_grad():
            recon = generator.decode_latents(generator.encode_images(held.images))
        out = {"ae_l1": float((recon - held.images).abs().mean())}
        judge = _judge_if_shipped()
        if judge is not None:
            out.update({f"ae_{k}": v for k, v in judge_images(judge, recon, held).items()})
        if step is not None and checkpoint_dir is not None:
            torch.save(generator.vae.state_dict(), os.path.join(checkpoint_dir, f"autoencoder_{step}.pt"))
        return out

    if autoencoder is not None:
        generator.vae.load_state_dict(torch.load(autoencoder, weights_only=True))
        _log(log, f"autoencoder loaded from {autoencoder}")
    else:
        train_autoencoder(generator, data.images, recipe, gen, progress=progress, log=log,
                          evaluate=lambda step: _fmt(evaluate_ae(step), prefix="ae_"))
    generator.vae.eval().requires_grad_(False)
    if autoencoder is None:
        metrics["ae_seconds"] = time.perf_counter() - start
    metrics.update(evaluate_ae())
    _log(log, f"autoencoder: {json.dumps({k: round(v, 4) for k, v in metrics.items()})}")
    if stop_after_autoencoder:
        return ""

    # stage 2: latents once, scaled to unit std
    with torch.no_grad():
        latents = torch.cat([generator.encode_images(data.images[i : i + 500]) for i in range(0, len(data), 500)])
    scale = float(1.0 / latents.std())
    generator.config.latent_scale = scale
    generator.vae.register_to_config(scaling_factor=scale)
    latents = latents * scale
    captions = sorted(set(data.captions))
    index = {c: i for i, c in enumerate(captions)}
    caption_ids = torch.tensor([index[c] for c in data.captions])
    caption_cond = generator.encode_prompt(captions)  # (K, L, D)
    _log(log, f"latents {tuple(latents.shape)}, scale {scale:.4f}, {len(captions)} captions")

    # stage 3: the UNet
    def evaluate(ema, step: int) -> str:
        if checkpoint_dir is not None:
            torch.save(ema.state_dict(), os.path.join(checkpoint_dir, f"unet_ema_{step}.pt"))
        judge = _judge_if_shipped()
        live = generator.unet
        generator.unet = ema
        try:
            return _fmt(evaluate_generator(generator, judge, n=recipe.eval_images, num_inference_steps=recipe.sample_steps,
                                           guidance_scale=recipe.guidance_scale)) if judge is not None else "no judge"
        finally:
            generator.unet = live

    gen = torch.Generator().manual_seed(1)  # stage 3's own stream: the same whether stage 1 ran here or was loaded
    if unet is not None:  # the EMA an earlier run saved after recipe.unet_steps steps (constant lr: the same weights)
        generator.unet.load_state_dict(torch.load(unet, weights_only=True))
        _log(log, f"UNet (EMA) loaded from {unet}")
        losses: list[float] = []
    else:
        ema, losses = train_unet(generator, latents, caption_ids, caption_cond, recipe, gen, progress=progress, log=log,
                                 evaluate=evaluate)
        generator.unet = ema
    # stage 4: the decoder alone, judged on reconstructions again
    if decoder is not None:
        generator.vae.load_state_dict(torch.load(decoder, weights_only=True))
        _log(log, f"fine-tuned autoencoder loaded from {decoder}")
    elif recipe.decoder_steps:
        def evaluate_decoder(step: int) -> str:
            out = _fmt(evaluate_ae(), prefix="ae_")
            if checkpoint_dir is not None:
                torch.save(generator.vae.state_dict(), os.path.join(checkpoint_dir, f"decoder_{step}.pt"))
            return out

        finetune_decoder(generator, data.images, recipe, torch.Generator().manual_seed(2), progress=progress, log=log,
                         evaluate=evaluate_decoder)
    if decoder is not None or recipe.decoder_steps:
        metrics.update({f"{k}_before_decoder": v for k, v in metrics.items() if k.startswith("ae_") and k != "ae_seconds"})
        metrics.update(evaluate_ae())
    generator.eval().requires_grad_(False)
    if autoencoder is None and unet is None:
        metrics["train_seconds"] = time.perf_counter() - start
    if losses:
        metrics["final_loss"] = sum(losses[-100:]) / len(losses[-100:])
    judge = _judge_if_shipped()
    if judge is not None:
        metrics.update(evaluate_generator(generator, judge, n=recipe.final_eval_images, num_inference_steps=recipe.sample_steps,
                                          guidance_scale=recipe.guidance_scale))
    _log(log, f"generator: {json.dumps({k: round(v, 4) for k, v in metrics.items()})}")
    loaded = {"autoencoder_loaded_from": autoencoder or "", "unet_loaded_from": unet or "", "decoder_loaded_from": decoder or ""}
    save_generator(generator, path, metadata={"recipe": "GeneratorRecipe" + (" quick" if quick else ""), **loaded,
                                              "recipe_config": json.dumps(dataclasses.asdict(recipe)),
                                              "metrics": json.dumps({k: round(v, 4) for k, v in metrics.items()})})
    return path


def save_generator(generator: LatentDiffusionGenerator, path: str, metadata: dict[str, str] | None = None) -> None:
    """Save the generator's three parts as fp16 safetensors, its :class:`GeneratorConfig` in the metadata."""
    from safetensors.torch import save_file

    state = {k: v.detach().to(torch.float16).contiguous() for k, v in generator.state_dict().items()}
    meta = {"config": json.dumps(dataclasses.asdict(generator.config)), "torch": torch.__version__, "seed": "0", **(metadata or {})}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(state, path, metadata=meta)


def _read(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise ValueError(f"no weights file at {path!r}: rebuild it with `python -m mmllm_course.generators.pretrain`")
    with safe_open(path, framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


def _path(path, name: str) -> str:
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise InputTypeError(f"path must be a str or None, got {describe(path)}")
    return os.fspath(path) if path is not None else weights_path(name)


def load_chapter9_generator(path: str | None = None) -> LatentDiffusionGenerator:
    """Chapter 9's frozen generator (float32, eval mode, no gradients); its metrics in ``.pretrained_metrics``."""
    from mmllm_course.data import shapes_tokenizer

    state, metadata = _read(_path(path, "chapter9_generator"))
    config = GeneratorConfig(**json.loads(metadata["config"]))
    generator = LatentDiffusionGenerator(config, tokenizer=shapes_tokenizer())
    missing, unexpected = generator.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    if missing or unexpected:
        raise ValueError(f"weights file does not fit the generator: missing {sorted(missing)}, unused {sorted(unexpected)}")
    generator.vae.register_to_config(scaling_factor=config.latent_scale)
    generator.eval().requires_grad_(False)
    generator.pretrained_metrics = json.loads(metadata.get("metrics", "{}"))
    return generator


def make_chapter9_judge(path: str | None = None, quick: bool = False, progress: bool = False, log=print) -> str:
    """Train the judge (seed 0) and save it with its accuracy on real held-out images; ``quick``: 5 steps, layout only."""
    from safetensors.torch import save_file

    config = JudgeConfig(steps=5, train_size=600) if quick else JudgeConfig()
    judge, stats = train_judge(config, seed=0, progress=progress)
    metrics = {**evaluate_judge(judge, n=200 if quick else 2000), **stats}
    _log(log, f"judge on real held-out images: {json.dumps({k: round(v, 4) for k, v in metrics.items()})}")
    path = path or weights_path("chapter9_judge")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in judge.state_dict().items()}
    save_file(state, path, metadata={"config": json.dumps(dataclasses.asdict(config)), "seed": "0", "torch": torch.__version__,
                                     "metrics": json.dumps({k: round(v, 4) for k, v in metrics.items()})})
    return path


def load_judge(path: str | None = None) -> ShapesJudge:
    """The shipped judge (eval mode, frozen); its accuracy on real held-out images in ``.pretrained_metrics``."""
    state, metadata = _read(_path(path, "chapter9_judge"))
    saved = json.loads(metadata["config"])
    judge = ShapesJudge(JudgeConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}))
    missing, unexpected = judge.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"weights file does not fit the judge: missing {sorted(missing)}, unused {sorted(unexpected)}")
    judge.eval().requires_grad_(False)
    judge.pretrained_metrics = json.loads(metadata.get("metrics", "{}"))
    return judge


MAKERS = {"chapter9_generator": make_chapter9_generator, "chapter9_judge": make_chapter9_judge}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mmllm_course.generators.pretrain", description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=NAMES, help="which weights to rebuild")
    parser.add_argument("--out", default=None, help="where to write (default: the shipped file inside the package)")
    parser.add_argument("--quick", action="store_true", help="a few steps only: checks the script, not a useful model")
    parser.add_argument("--autoencoder", default=None, help="generator only: stage-1 weights of an earlier run to start from")
    parser.add_argument("--checkpoint-dir", default=None, help="generator only: where to keep stage 1's autoencoder")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="generator only: change a GeneratorRecipe field, e.g. --set unet_steps=3000")
    parser.add_argument("--unet", default=None, help="generator only: an earlier run's unet_ema_<step>.pt (with --set unet_steps=<step>)")
    parser.add_argument("--decoder", default=None, help="generator only: an earlier run's decoder_<step>.pt (with --set decoder_steps=<step>)")
    parser.add_argument("--stop-after-autoencoder", action="store_true", help="generator only: stage 1, then stop")
    parser.add_argument("--threads", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    kwargs = {}
    if args.name == "chapter9_generator":
        recipe = GeneratorRecipe.quick() if args.quick else GeneratorRecipe()
        types = {f.name: f.type for f in dataclasses.fields(GeneratorRecipe)}
        for item in args.set:
            key, _, value = item.partition("=")
            if key not in types:
                parser.error(f"--set {item}: unknown field {key!r}, expected one of {sorted(types)}")
            recipe = dataclasses.replace(recipe, **{key: (float if types[key] in (float, "float") else int)(value)})
        kwargs = {"autoencoder": args.autoencoder, "checkpoint_dir": args.checkpoint_dir, "recipe": recipe,
                  "stop_after_autoencoder": args.stop_after_autoencoder, "unet": args.unet,
                  "decoder": args.decoder}
    path = MAKERS[args.name](args.out, quick=args.quick, progress=True, **kwargs)
    if not path:
        return
    _, metadata = _read(path)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)\nmetrics: {metadata.get('metrics')}")


if __name__ == "__main__":
    main()
