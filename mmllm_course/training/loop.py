"""One training loop for every stage of the course: pretraining a tiny LM, stage-1 alignment, later fine-tuning.

What it does, and nothing more::

    for step in range(steps):
        batch = next batch (random rows of a dict of tensors, or your own function)
        loss = model(**batch).loss          # any model whose output has .loss (transformers' or ours)
        loss.backward(); clip; AdamW step; warmup + cosine learning rate

Only parameters with ``requires_grad=True`` are optimised: freezing is ``requires_grad_(False)`` on
a part (:func:`freeze`), so stage 1 (encoder and LM frozen, bridge trained), LoRA (adapters trained)
and full fine-tuning are the same loop. Frozen parts also stay in eval mode while the rest trains
(no dropout in a frozen LM). :func:`save_trainable` / :func:`load_trainable` write and read only
the trained parts as safetensors.

**Several processes** (chapter 7): hand ``train`` an ``accelerate.Accelerator`` and the same loop
runs data-parallel under ``accelerate launch`` (or ``torchrun``), unchanged. Every process draws the
same global batch of ``config.batch_size`` rows (one shared seed) and keeps its own slice of
``batch_size / num_processes`` rows; ``accelerator.prepare`` wraps the model in
``DistributedDataParallel``, so ``accelerator.backward`` averages the gradients over the processes
and every replica takes the same optimizer step. The logged loss is the mean over the processes;
the progress bar shows on the main process only; ``save_trainable(..., accelerator=...)`` writes from
the main process only. With equal-length targets this is the single-process run on the global batch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from mmllm_course._checks import InputTypeError, check_int, check_number, describe
from mmllm_course.nn.optim import warmup_cosine


@dataclass
class TrainConfig:
    """Optimisation of one run: AdamW, linear warmup then cosine decay, gradient clipping."""

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 50
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0  # max global gradient norm; None = no clipping
    min_lr_ratio: float = 0.05  # the cosine ends at lr * min_lr_ratio
    seed: int = 0  # the order of the batches

    def __post_init__(self) -> None:
        check_int(self.steps, "steps")
        check_int(self.batch_size, "batch_size")
        check_number(self.lr, "lr", 0.0, low_open=True)
        check_int(self.warmup_steps, "warmup_steps", minimum=0)
        check_number(self.weight_decay, "weight_decay", 0.0)
        if self.grad_clip is not None:
            check_number(self.grad_clip, "grad_clip", 0.0, low_open=True)
        check_number(self.min_lr_ratio, "min_lr_ratio", 0.0, 1.0)
        check_int(self.seed, "seed", minimum=0)


@dataclass
class TrainHistory:
    """Loss and learning rate at every step, wall-clock seconds, and evaluations ``(step, metrics)``."""

    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: float = 0.0
    evaluations: list[tuple[int, dict[str, float]]] = field(default_factory=list)

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / max(1, len(self.loss))


def freeze(module: nn.Module) -> nn.Module:
    """``module`` with every parameter frozen (``requires_grad=False``) and in eval mode; returns it."""
    if not isinstance(module, nn.Module):
        raise InputTypeError(f"module must be a torch.nn.Module, got {describe(module)}")
    return module.requires_grad_(False).eval()


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters the loop optimises: name -> parameter, for those with ``requires_grad``."""
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be a torch.nn.Module, got {describe(model)}")
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (only the trainable ones with ``trainable_only``); shared tensors count once."""
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be a torch.nn.Module, got {describe(model)}")
    seen = {id(p): p for p in model.parameters() if p.requires_grad or not trainable_only}
    return sum(p.numel() for p in seen.values())


def _set_train_mode(model: nn.Module) -> None:
    """Train mode for the parts that learn; eval mode (no dropout) for every fully frozen submodule."""
    model.train()
    for module in model.modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.eval()


def random_batches(data: dict[str, torch.Tensor], batch_size: int, generator: torch.Generator,
                   shard: tuple[int, int] = (0, 1)) -> Callable[[], dict[str, torch.Tensor]]:
    """A function returning a random batch (rows drawn without replacement within a batch) of the tensors in ``data``.

    ``shard = (rank, num_processes)``: every process draws the same ``batch_size`` rows (same
    ``generator`` seed) and keeps the ``rank``-th of ``num_processes`` equal slices of them.
    """
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise InputTypeError(f"data must be a non-empty dict of tensors, got {describe(data)}")
    sizes = {k: v.shape[0] if v.dim() else None for k, v in data.items()}
    n = next(iter(sizes.values()))
    if n is None or any(s != n for s in sizes.values()):
        raise ValueError(f"every tensor in data must have the same number of rows, got {sizes}")
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} is larger than the {n} rows of data")
    rank, world = shard
    if batch_size % world:
        raise ValueError(f"batch_size={batch_size} (the global batch) must be divisible by the {world} processes")
    per = batch_size // world

    def sample() -> dict[str, torch.Tensor]:
        idx = torch.randperm(n, generator=generator)[:batch_size][rank * per:(rank + 1) * per]
        return {k: v[idx] for k, v in data.items()}

    return sample


def train(
    model: nn.Module,
    data: dict[str, torch.Tensor] | Callable[[], dict[str, torch.Tensor]],
    config: TrainConfig | None = None,
    *,
    progress: bool = True,
    desc: str = "training",
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    eval_every: int | None = None,
    accelerator: object | None = None,
) -> TrainHistory:
    """Train the parameters of ``model`` that have ``requires_grad`` for ``config.steps`` steps.

    ``data``: a dict of tensors with one row per example (random batches of ``config.batch_size``
    rows are drawn, in an order set by ``config.seed``), or a function returning a batch dict. A
    batch is passed as keyword arguments: ``model(**batch).loss`` must be a scalar. ``evaluate``
    (model -> metrics), if given, runs every ``eval_every`` steps and at the end (in eval mode,
    without gradients) and lands in ``history.evaluations``. ``accelerator``: an
    ``accelerate.Accelerator``, through which the model, optimizer, backward pass and gradient
    clipping go; under several processes a dict ``data`` is sharded (each process keeps its slice of
    the global batch of ``config.batch_size`` rows) and a ``data`` function must return the process's
    own slice. A fixed number of steps, not a time budget: the same seed gives the same run on any machine.
    """
    from tqdm.auto import tqdm

    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be a torch.nn.Module, got {describe(model)}")
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise InputTypeError(f"config must be a TrainConfig or None, got {describe(config)}")
    if eval_every is not None:
        check_int(eval_every, "eval_every")
    if evaluate is not None and not callable(evaluate):
        raise InputTypeError(f"evaluate must be a function model -> dict of metrics, got {describe(evaluate)}")
    params = list(trainable_parameters(model).values())
    if not params:
        raise ValueError("model has no trainable parameters (every requires_grad is False): unfreeze the part to train")
    if accelerator is not None and not all(hasattr(accelerator, a) for a in ("prepare", "backward", "num_processes")):
        raise InputTypeError(f"accelerator must be an accelerate.Accelerator or None, got {describe(accelerator)}")
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    generator = torch.Generator().manual_seed(config.seed)
    if isinstance(data, dict):
        next_batch = random_batches(data, config.batch_size, generator, shard=(rank, world))
    elif callable(data):
        next_batch = data
    else:
        raise InputTypeError(f"data must be a dict of tensors or a function returning a batch dict, got {describe(data)}")

    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, config.steps, config.warmup_steps, config.min_lr_ratio))
    inner = model  # the caller's model; under several processes `model` becomes its DistributedDataParallel wrapper
    if accelerator is not None:
        model, optimizer = accelerator.prepare(model, optimizer)
        device = accelerator.device
    else:
        device = next(iter(params)).device
    history = TrainHistory()

    def run_evaluation(step: int) -> None:
        inner.eval()
        with torch.no_grad():
            history.evaluations.append((step, dict(evaluate(inner))))
        _set_train_mode(inner)

    _set_train_mode(inner)
    start = time.perf_counter()
    main = accelerator is None or accelerator.is_local_main_process
    bar = tqdm(range(config.steps), desc=desc, disable=not progress or not main)
    try:
        for step in bar:
            batch = next_batch()
            if not isinstance(batch, dict):
                raise InputTypeError(f"the data function must return a dict of model inputs, got {describe(batch)}")
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            loss = model(**batch).loss
            if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
                raise ValueError(f"model(**batch).loss must be a scalar tensor, got {describe(loss)}")
            if not torch.isfinite(loss):
                raise ValueError(f"the loss became {loss.item()} at step {step}: lower lr (now {config.lr}) or check the data")
            optimizer.zero_grad(set_to_none=True)
            if accelerator is not None:
                accelerator.backward(loss)  # several processes: gradients averaged over them here
                if config.grad_clip is not None:
                    accelerator.clip_grad_norm_(params, config.grad_clip)
                if world > 1:
                    loss = accelerator.reduce(loss.detach(), reduction="mean")  # the global batch's loss, for the log
            else:
                loss.backward()
                if config.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            history.loss.append(loss.item())
            history.lr.append(scheduler.get_last_lr()[0])  # the rate this step used
            scheduler.step()
            if step % 10 == 0 or step == config.steps - 1:
                bar.set_postfix(loss=f"{loss.item():.3f}")
            if evaluate is not None and eval_every and (step + 1) % eval_every == 0 and step + 1 < config.steps:
                run_evaluation(step + 1)
    finally:
        history.seconds = time.perf_counter() - start
        inner.eval()
    if evaluate is not None:
        run_evaluation(config.steps)
        inner.eval()
    return history


def save_trainable(model: nn.Module, path: str, metadata: dict[str, str] | None = None, *,
                   accelerator: object | None = None) -> list[str]:
    """Write the trainable parameters of ``model`` (``requires_grad``) to a safetensors file; returns their names.

    Stage 1 saves the bridge only (~tens of kB) instead of the whole multimodal model. With an
    ``accelerator`` (several processes) only the main process writes, after every process got there.
    """
    from safetensors.torch import save_file

    if accelerator is not None:
        if not all(hasattr(accelerator, a) for a in ("unwrap_model", "wait_for_everyone", "is_main_process")):
            raise InputTypeError(f"accelerator must be an accelerate.Accelerator or None, got {describe(accelerator)}")
        model = accelerator.unwrap_model(model)
        accelerator.wait_for_everyone()
        if not accelerator.is_main_process:
            return sorted(trainable_parameters(model))

    params = trainable_parameters(model)
    if not params:
        raise ValueError("model has no trainable parameters to save (every requires_grad is False)")
    if not isinstance(path, (str, os.PathLike)):
        raise InputTypeError(f"path must be a str, got {describe(path)}")
    if metadata is not None and (not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise InputTypeError(f"metadata must be a dict of str -> str, got {describe(metadata)}")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in params.items()}, os.fspath(path), metadata=metadata)
    return sorted(params)


def load_trainable(model: nn.Module, path: str) -> list[str]:
    """Load a file written by :func:`save_trainable` into ``model``; returns the names loaded.

    Every tensor of the file must be a parameter of ``model`` of the same shape (ValueError naming
    the first that is not); parameters not in the file are left as they are.
    """
    from safetensors import safe_open

    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be a torch.nn.Module, got {describe(model)}")
    if not isinstance(path, (str, os.PathLike)):
        raise InputTypeError(f"path must be a str, got {describe(path)}")
    if not os.path.isfile(path):
        raise ValueError(f"no safetensors file at {os.fspath(path)!r}")
    own = dict(model.named_parameters())
    with safe_open(os.fspath(path), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    for name, tensor in sorted(state.items()):
        if name not in own:
            raise ValueError(f"{path}: tensor {name!r} is not a parameter of this {type(model).__name__} "
                             f"(it has e.g. {sorted(own)[:3]})")
        if tuple(own[name].shape) != tuple(tensor.shape):
            raise ValueError(f"{path}: {name!r} has shape {tuple(tensor.shape)}, the model's is {tuple(own[name].shape)}")
    with torch.no_grad():
        for name, tensor in state.items():
            own[name].copy_(tensor)
    return sorted(state)


__all__ = ["TrainConfig", "TrainHistory", "count_parameters", "freeze", "load_trainable", "random_batches",
           "save_trainable", "train", "trainable_parameters"]
