"""Optimisation helpers shared by every training loop: AdamW with a warmup + cosine learning rate."""

from __future__ import annotations

import math

import torch
from torch import nn


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.05) -> float:
    """Learning-rate multiplier: linear warmup over ``warmup_steps``, then a cosine decay to ``min_ratio``.

    Warmup keeps the first, noisy updates small (Adam's moment estimates start at zero); the cosine
    tail lets the model settle into a minimum instead of bouncing around it.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def adamw_with_schedule(
    model: nn.Module, lr: float, total_steps: int, warmup_steps: int, weight_decay: float = 0.05
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW whose weight decay skips biases, norms, embeddings' 1-D params and scalars (as in GPT-2 / CLIP)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, total_steps, warmup_steps))
    return optimizer, scheduler
