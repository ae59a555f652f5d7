"""The losses that align an LM's output side with a frozen generator (NExT-GPT, Wu et al. 2023, https://arxiv.org/abs/2309.05519).

NExT-GPT trains its output side with three terms; two are here, the third (the generator's own
conditional denoising loss, fed the projector's output as conditioning) is
:func:`~mmllm_course.generators.diffusion_loss`:

- :func:`signal_token_nll`: the LM's shifted causal cross-entropy on the signal tokens only
  (labels from :func:`~mmllm_course.output.signal_token_labels`): the LM learns *when* to ask for an image;
- :func:`conditioning_l2_loss`: the squared l2 distance between the projector's output and the
  conditioning the generator's own text encoder gives the caption: the projector learns to speak
  the generator's language.

Dims: ``B`` rows, ``T`` tokens, ``V`` vocabulary, ``L`` conditioning tokens, ``D`` their width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmllm_course._checks import check_same_float_dtype, check_tensor


def conditioning_l2_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``((pred - target) ** 2).sum(-1).mean()``: squared Euclidean distance over the feature axis D, mean over B and L; 0-d.

    pred, target: (B, L, D), the same shape and floating dtype. The sum over D (not a mean) is
    NExT-GPT's "l2 distance" per token; averaging over D too would only rescale it by 1/D.
    """
    check_tensor(pred, "pred", "(B, L, D)", ndim=3, kind="float")
    check_tensor(target, "target", "(B, L, D)", ndim=3, kind="float")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape (B, L, D), got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.numel() == 0:
        raise ValueError(f"pred and target must not be empty, got shape {tuple(pred.shape)}")
    check_same_float_dtype({"pred": pred, "target": target})
    return ((pred - target) ** 2).sum(-1).mean()


def signal_token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The shifted causal cross-entropy: position t's logits predict ``labels[:, t + 1]``; -100 is ignored; 0-d.

    logits: (B, T, V) floating; labels: (B, T) integers in [0, V) or -100 (e.g.
    :func:`~mmllm_course.output.signal_token_labels`). Equals ``transformers``' causal-LM loss
    (``lm(ids, labels=labels).loss``) for the same labels. A ValueError if no label is kept (the
    mean of nothing is NaN).
    """
    check_tensor(logits, "logits", "(B, T, V)", ndim=3, kind="float")
    check_tensor(labels, "labels", "(B, T)", ndim=2, kind="int")
    if tuple(labels.shape) != tuple(logits.shape[:2]):
        raise ValueError(f"labels (B, T) must match logits (B, T, V) on (B, T), got {tuple(labels.shape)} and {tuple(logits.shape)}")
    target = labels[:, 1:].long()
    kept = target != -100
    if not bool(kept.any()):
        raise ValueError("labels keep no token after the first position (all are -100): there is nothing to learn; "
                         "build them with signal_token_labels on rows that hold the signal tokens")
    v = logits.shape[-1]
    bad = kept & ((target < 0) | (target >= v))
    if bool(bad.any()):
        raise ValueError(f"labels must be -100 or token ids in [0, {v}) (V = logits.shape[-1]), got {int(target[bad][0])}")
    return F.cross_entropy(logits[:, :-1].reshape(-1, v).float(), target.reshape(-1), ignore_index=-100)
