"""Training a CLIP from scratch on paired images and captions, and measuring what it learned.

Dims: ``N`` pairs in the dataset, ``B`` pairs in a batch, ``L`` caption tokens, ``K`` classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from mmllm_course.encoders.clip import CLIP, clip_loss, retrieval_recall_at_k, zero_shot_classifier, zero_shot_predict
from mmllm_course.nn.optim import adamw_with_schedule


def tokenize_captions(tokenizer, texts: Sequence[str], context_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions -> ``input_ids`` (N, L) ending in eos, padded, and ``attention_mask`` (N, L).

    ``tokenizer`` is a ``transformers`` tokenizer with eos and pad tokens (e.g. the course's BPE).
    CLIP's text tower pools at the end-of-text token, so every row must hold one: a caption longer
    than ``context_length - 1`` tokens raises instead of silently losing its eos.
    """
    if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer needs an eos token and a pad token")
    if isinstance(texts, str):
        raise ValueError("texts must be a list of captions, got a single string: wrap it in a list")
    if len(texts) == 0:
        raise ValueError("texts is empty: expected at least one caption")
    rows = [ids + [tokenizer.eos_token_id] for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    longest = max(len(r) for r in rows)
    if longest > context_length:
        worst = max(range(len(rows)), key=lambda i: len(rows[i]))
        raise ValueError(
            f"caption {texts[worst]!r} is {longest} tokens with eos, longer than context_length={context_length}"
        )
    length = longest
    ids = torch.full((len(rows), length), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


@dataclass
class TrainingHistory:
    """Loss (and learning rate) at every step, for the learning-curve figure."""

    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: float = 0.0


def train_clip(
    model: CLIP,
    images: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    steps: int = 600,
    batch_size: int = 128,
    lr: float = 2e-3,
    warmup_steps: int = 50,
    weight_decay: float = 0.05,
    seed: int = 0,
    progress: bool = True,
    distinct_captions: bool = True,
) -> TrainingHistory:
    """Train ``model`` with :func:`clip_loss` on random batches of the N pairs (images (N, C, H, W), ids (N, L)).

    AdamW with linear warmup and cosine decay. A fixed number of steps, not a time budget, so the
    same seed gives the same model on any machine, however busy.

    ``attention_mask`` is accepted for symmetry with the tokenizer's output but not passed to the
    text tower: with a causal mask and pooling at the first eos, padding after the eos cannot reach
    the pooled vector, so the result is the same, and torch's fused causal kernel is several times
    faster on a CPU than an explicit padding mask.

    ``distinct_captions``: a batch never holds the same caption twice. The loss treats every other
    text of the batch as a wrong match, so two images with identical captions would be pushed apart
    from each other's (identical) text: a false negative. With few distinct captions (the shapes world
    has 160) that happens in nearly every batch and slows learning badly; batches are then capped at
    the number of distinct captions.
    """
    import time

    n = images.shape[0]
    if input_ids.shape[0] != n:
        raise ValueError(f"got {n} images but {input_ids.shape[0]} captions: they must be paired")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must have the shape of input_ids {tuple(input_ids.shape)}")
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} is larger than the {n} pairs in the dataset")
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    if batch_size < 2:
        raise ValueError(f"batch_size must be at least 2 (a contrastive loss needs negatives), got {batch_size}")
    sample = _distinct_caption_sampler(input_ids, generator) if distinct_captions else None
    if sample is not None and batch_size > sample.groups:
        raise ValueError(
            f"batch_size={batch_size} but the data holds only {sample.groups} distinct captions; with "
            f"distinct_captions=True a batch can hold at most {sample.groups}"
        )
    optimizer, scheduler = adamw_with_schedule(model, lr, steps, warmup_steps, weight_decay)
    history = TrainingHistory()
    model.train()
    start = time.perf_counter()
    bar = tqdm(range(steps), desc="training CLIP", disable=not progress)
    for _ in bar:
        idx = sample(batch_size) if sample else torch.randperm(n, generator=generator)[:batch_size]
        logits = model(images[idx].to(device), input_ids[idx].to(device), paired=True)  # (B, B); see the docstring on masks
        loss = clip_loss(logits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.loss.append(loss.item())
        history.lr.append(scheduler.get_last_lr()[0])  # the rate this step used
        scheduler.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", T=f"{1 / model.scale().item():.3f}")
    history.seconds = time.perf_counter() - start
    model.eval()
    return history


def _distinct_caption_sampler(input_ids: torch.Tensor, generator: torch.Generator):
    """A function ``sample(B) -> (min(B, G),)`` indices of pairs whose captions are all different.

    Groups the N pairs by caption (G groups), picks random distinct groups, then one random pair
    of each group.
    """
    _, group = torch.unique(input_ids, dim=0, return_inverse=True)  # (N,) caption group of each pair
    order = torch.argsort(group, stable=True)  # pair indices sorted by group
    counts = torch.bincount(group)  # (G,)
    starts = torch.cumsum(counts, 0) - counts  # (G,) where each group begins in `order`

    def sample(batch_size: int) -> torch.Tensor:
        groups = torch.randperm(len(counts), generator=generator)[:batch_size]  # (B,)
        offsets = (torch.rand(len(groups), generator=generator) * counts[groups]).long()
        return order[starts[groups] + offsets]

    sample.groups = len(counts)  # how many distinct captions there are
    return sample


@torch.no_grad()
def encode_images(model: CLIP, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Unit-length image embeddings (N, E), computed in batches in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model.encode_image(images[i : i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)])


@torch.no_grad()
def encode_texts(model: CLIP, tokenizer, texts: Sequence[str], batch_size: int = 1024) -> torch.Tensor:
    """Unit-length text embeddings (T, E) of raw strings, tokenized with :func:`tokenize_captions`."""
    model.eval()
    device = next(model.parameters()).device
    ids, _ = tokenize_captions(tokenizer, texts, model.config.text.context_length)
    return torch.cat([
        model.encode_text(ids[i : i + batch_size].to(device)).cpu()  # no mask needed: causal + eos pooling
        for i in range(0, len(ids), batch_size)
    ])


def unique_caption_indices(captions: Sequence[str]) -> torch.Tensor:
    """Indices (U,) of the first image of each distinct caption, in order of first appearance.

    Retrieval needs one right answer per query: in the shapes world many images share a caption,
    so the gallery keeps one image per caption.
    """
    seen: dict[str, int] = {}
    for i, c in enumerate(captions):
        seen.setdefault(c, i)
    return torch.tensor(list(seen.values()), dtype=torch.long)


@torch.no_grad()
def text_to_image_recall(
    model: CLIP, images: torch.Tensor, captions: Sequence[str], tokenizer, ks: Sequence[int] = (1, 5)
) -> dict[int, float]:
    """Recall@k of text->image retrieval: caption i must find image i among the ``len(images)``.

    ``captions`` must be distinct (see :func:`unique_caption_indices`), so each query has exactly
    one right image. Returns ``{k: recall}``.
    """
    if len(captions) != len(images):
        raise ValueError(f"got {len(images)} images but {len(captions)} captions: they must be paired")
    if len(set(captions)) != len(captions):
        raise ValueError("captions must be distinct (one right image per query): select with unique_caption_indices")
    similarity = encode_texts(model, tokenizer, captions) @ encode_images(model, images).T  # (T, I)
    return {k: retrieval_recall_at_k(similarity, k) for k in ks}


@torch.no_grad()
def zero_shot_accuracy(
    model: CLIP,
    images: torch.Tensor,
    labels: torch.Tensor,
    tokenizer,
    class_names: Sequence[str],
    templates: Sequence[str] = ("a photo of a {}",),
    ensemble: str = "mean",
) -> float:
    """Accuracy of zero-shot classification: each image gets the class whose prompts it matches best.

    ``class_names[k]`` fills every template (prompt ensembling when there are several); ``labels``
    (N,) holds the true class index of each image. No training on these classes is involved.

    ``ensemble`` says how a class's P prompts become one score: ``"mean"`` (CLIP's recipe) averages
    their unit embeddings into one class embedding and scores its cosine with the image; ``"max"``
    scores the class by its best-matching prompt. When each prompt names one precise image (a size
    and a position, as in the shapes world) the average blurs those details and "max" is more exact.
    """
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must be ({images.shape[0]},), one per image, got shape {tuple(labels.shape)}")
    if ensemble not in ("mean", "max"):
        raise ValueError(f"ensemble must be 'mean' or 'max', got {ensemble!r}")
    prompts = [t.format(name) for name in class_names for t in templates]
    k, p = len(class_names), len(templates)
    image_embeds = encode_images(model, images)  # (N, E)
    if ensemble == "max":
        prompt_embeds = encode_texts(model, tokenizer, prompts).view(k, p, -1)  # (K, P, E)
        predictions = torch.einsum("ne,kpe->nkp", image_embeds, prompt_embeds).amax(dim=-1).argmax(dim=-1)  # (N,)
        return (predictions == labels).float().mean().item()
    ids, _ = tokenize_captions(tokenizer, prompts, model.config.text.context_length)
    classes = zero_shot_classifier(model, ids.view(k, p, -1))  # (K, E); no mask needed: causal + eos pooling
    predictions = zero_shot_predict(image_embeds, classes)  # (N,)
    return (predictions == labels).float().mean().item()
