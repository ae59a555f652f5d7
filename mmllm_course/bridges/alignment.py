"""The chapter's target space: train a bridge to carry frozen image features into a frozen embedding space.

Chapters 3 and 4 need a task on which bridges can be compared before an LLM exists (chapter 5). The
stand-in: every image of the shapes world has a caption; give each caption (each class) one fixed
random unit vector of width ``D_out``, "the LLM's embedding of that caption". A bridge maps the
frozen chapter-2 image features into that space and is scored by which target its output lands nearest.

Dims: ``n`` images, ``N`` feature tokens per image (1 when pooled, the 16 patch tokens otherwise),
``D_in`` the encoder's width (64), ``K`` the bridge's output tokens, ``D_out`` the target width,
``C`` classes (160 captions, or 20 colour x shape names).

Scoring (:func:`alignment_logits`): the bridge's output (B, K, D_out) is averaged over its K tokens,
L2-normalised and compared by cosine with the normalised targets (C, D_out); the loss is the
cross-entropy of ``cosine * ALIGNMENT_SCALE`` against the label, the accuracy the share of images whose
nearest target is their own. Because the targets are random, the map from an image's attributes
(colour, shape, size, position) to its target is arbitrary, not a rotation: a linear bridge must place
160 unrelated points with one matrix; an MLP can bend the space (chapter 3 measures the difference)::

    task = make_alignment_task()                           # frozen chapter-2 features, 160 caption targets
    bridge = make_bridge("mlp", in_dim=64, out_dim=64, hidden_dim=32)
    losses = train_bridge(bridge, task, steps=1500)
    alignment_accuracy(bridge, task)                       # held-out images, never trained on
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mmllm_course._checks import InputTypeError, check_choice, check_int, check_number, check_tensor, describe
from mmllm_course.utils import one_thread

ALIGNMENT_SCALE = 20.0  # cosine similarities are multiplied by this before the softmax (a fixed temperature)


@dataclass
class AlignmentTask:
    """Frozen features and their targets, all tensors on the CPU.

    ``train_features`` (n, N, D_in) and ``held_out_features`` (m, N, D_in): frozen image features
    (held-out images come from another data seed and are never trained on); ``train_labels`` (n,) and
    ``held_out_labels`` (m,): each image's class; ``targets`` (C, D_out): one fixed random unit vector
    per class; ``classes``: the C class names (captions or colour x shape names).
    """

    train_features: torch.Tensor  # (n, N, D_in)
    train_labels: torch.Tensor  # (n,) long
    held_out_features: torch.Tensor  # (m, N, D_in)
    held_out_labels: torch.Tensor  # (m,) long
    targets: torch.Tensor  # (C, D_out), unit rows
    classes: list[str]

    @property
    def in_dim(self) -> int:
        """D_in, the width of the features (a bridge's ``in_dim``)."""
        return self.train_features.shape[-1]

    @property
    def out_dim(self) -> int:
        """D_out, the width of the target space (a bridge's ``out_dim``)."""
        return self.targets.shape[-1]

    @property
    def num_tokens(self) -> int:
        """N, the feature tokens per image (1 when pooled)."""
        return self.train_features.shape[1]

    @property
    def num_classes(self) -> int:
        """C, the number of targets; chance accuracy is 1 / C."""
        return self.targets.shape[0]


def random_targets(num_classes: int, dim: int, seed: int = 0) -> torch.Tensor:
    """(C, D) random unit vectors, the same for the same seed: the stand-in for the LLM's caption embeddings."""
    check_int(num_classes, "num_classes")
    check_int(dim, "dim")
    check_int(seed, "seed", minimum=0)
    g = torch.Generator().manual_seed(10_000 + seed)
    return F.normalize(torch.randn(num_classes, dim, generator=g), dim=-1)


@torch.no_grad()
def image_features(encoder: nn.Module, images: torch.Tensor, pooled: bool = True, batch_size: int = 1000) -> torch.Tensor:
    """Frozen features of ``images`` (B, 3, H, W): (B, 1, D) pooled, or (B, N, D) the patch tokens (class token dropped)."""
    if not isinstance(encoder, nn.Module):
        raise InputTypeError(f"encoder must be an image encoder (a torch.nn.Module such as clip.vision), got {describe(encoder)}")
    check_tensor(images, "images", "(B, 3, H, W)", ndim=4, kind="float")
    if not isinstance(pooled, bool):
        raise InputTypeError(f"pooled must be True or False, got {describe(pooled)}")
    check_int(batch_size, "batch_size")
    was_training = encoder.training
    encoder.eval()
    chunks = []
    for i in range(0, len(images), batch_size):
        out = encoder(images[i : i + batch_size])
        chunks.append(out.pooled[:, None] if pooled else out.last_hidden_state[:, 1:])  # (b, 1, D) | (b, N, D)
    encoder.train(was_training)
    return torch.cat(chunks).float().cpu()


def make_alignment_task(
    encoder: nn.Module | None = None,
    train_size: int = 8000,
    held_out_size: int = 2000,
    out_dim: int = 64,
    pooled: bool = True,
    labels: str = "caption",
    seed: int = 0,
) -> AlignmentTask:
    """Frozen features of fresh shapes images and one random target per class; same seed, same task.

    ``encoder``: an image encoder returning ``.pooled`` (B, D) and ``.last_hidden_state`` (B, 1+N, D)
    (None = the shipped chapter-2 mini-CLIP's ViT, ``load_chapter2_clip()[0].vision``). ``pooled``: one
    feature token per image (the ViT's pooled output, N = 1) or the 16 patch tokens (N = 16).
    ``labels``: ``"caption"`` (the 160 captions: colour x shape x size x position of the first object)
    or ``"color_shape"`` (20 classes). Seed ``s`` draws training images ``generate_shapes(train_size,
    seed=1000 + 2s)``, held-out images from seed ``1001 + 2s`` (neither is chapter 2's training data)
    and the targets from ``random_targets(C, out_dim, s)``.
    """
    from mmllm_course.data import all_caption_classes, color_shape_classes, generate_shapes

    check_int(train_size, "train_size")
    check_int(held_out_size, "held_out_size")
    check_int(out_dim, "out_dim")
    check_int(seed, "seed", minimum=0)
    if not isinstance(pooled, bool):
        raise InputTypeError(f"pooled must be True or False, got {describe(pooled)}")
    check_choice(labels, "labels", ("caption", "color_shape"))
    if encoder is None:
        from mmllm_course.pretrained import load_chapter2_clip

        encoder = load_chapter2_clip()[0].vision
    if not isinstance(encoder, nn.Module):
        raise InputTypeError(f"encoder must be an image encoder (a torch.nn.Module such as clip.vision) or None, got {describe(encoder)}")

    train, held = generate_shapes(train_size, seed=1000 + 2 * seed), generate_shapes(held_out_size, seed=1001 + 2 * seed)
    if labels == "caption":
        classes, train_labels, held_labels = all_caption_classes(), train.caption_class_labels(), held.caption_class_labels()
    else:
        classes, train_labels, held_labels = color_shape_classes(), train.color_shape_labels(), held.color_shape_labels()
    return AlignmentTask(
        train_features=image_features(encoder, train.images, pooled),
        train_labels=train_labels.long(),
        held_out_features=image_features(encoder, held.images, pooled),
        held_out_labels=held_labels.long(),
        targets=random_targets(len(classes), out_dim, seed),
        classes=list(classes),
    )


def _check_task(task: object) -> AlignmentTask:
    if not isinstance(task, AlignmentTask):
        raise InputTypeError(f"task must be an AlignmentTask (from make_alignment_task), got {describe(task)}")
    return task


def alignment_logits(outputs: torch.Tensor, targets: torch.Tensor, scale: float = ALIGNMENT_SCALE) -> torch.Tensor:
    """Scores (B, C) of bridge outputs (B, K, D_out) against targets (C, D_out): scale x cosine of the mean token.

    The K output tokens are averaged, the mean and the targets L2-normalised; ``scale`` sharpens the softmax.
    """
    check_tensor(outputs, "outputs", "(B, K, D_out)", ndim=3, kind="float")
    check_tensor(targets, "targets", "(C, D_out)", ndim=2, kind="float")
    if outputs.shape[-1] != targets.shape[-1]:
        raise ValueError(
            f"outputs (B, K, D_out) and targets (C, D_out) must share D_out: got outputs {tuple(outputs.shape)}, "
            f"targets {tuple(targets.shape)} (build the bridge with out_dim = {targets.shape[-1]})"
        )
    pooled = F.normalize(outputs.mean(dim=1), dim=-1)  # (B, D_out)
    return scale * pooled @ F.normalize(targets.to(pooled), dim=-1).T  # (B, C)


def alignment_loss(outputs: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of :func:`alignment_logits` (B, C) against ``labels`` (B,): the loss a bridge is trained with."""
    check_tensor(labels, "labels", "(B,)", ndim=1, kind="int")
    logits = alignment_logits(outputs, targets)
    if labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels must be (B,) with B = {logits.shape[0]} (the outputs' batch), got shape {tuple(labels.shape)}")
    return F.cross_entropy(logits, labels.to(logits.device))


def _check_bridge(bridge: object, task: AlignmentTask) -> nn.Module:
    if not isinstance(bridge, nn.Module):
        raise InputTypeError(f"bridge must be a torch.nn.Module mapping (B, N, D_in) to (B, K, D_out), got {describe(bridge)}")
    for attr, want in (("in_dim", task.in_dim), ("out_dim", task.out_dim)):
        have = getattr(bridge, attr, want)
        if have != want:
            raise ValueError(f"bridge.{attr} = {have} does not fit the task: expected {attr} = {want} "
                             f"(features (n, {task.num_tokens}, {task.in_dim}), targets ({task.num_classes}, {task.out_dim}))")
    return bridge


def train_bridge(
    bridge: nn.Module,
    task: AlignmentTask,
    steps: int = 1500,
    batch_size: int = 256,
    lr: float = 3e-3,
    seed: int = 0,
    progress: bool = False,
) -> list[float]:
    """Train ``bridge`` (its parameters only; the features are frozen) on ``task``'s training split; returns the losses.

    AdamW (weight decay 0) at a constant ``lr``, ``steps`` minibatches of ``batch_size`` training images
    drawn without replacement within each pass, in an order set by ``seed`` (the bridge's initial
    weights are the caller's: seed them with ``torch.manual_seed`` before building it). Leaves the
    bridge in eval mode. On the CPU the loop runs on one thread and then restores the previous
    setting: matrices this small gain nothing from a second thread, and on a busy machine two
    threads that wait on each other made training 5x slower (measured).
    """
    task = _check_task(task)
    _check_bridge(bridge, task)
    check_int(steps, "steps")
    check_int(batch_size, "batch_size")
    check_number(lr, "lr", 0.0, low_open=True)
    check_int(seed, "seed", minimum=0)
    params = [p for p in bridge.parameters() if p.requires_grad]
    if not params:
        raise ValueError("bridge has no trainable parameters (all have requires_grad=False)")
    device = params[0].device
    x_all, y_all, targets = task.train_features, task.train_labels, task.targets.to(device)
    batch_size = min(batch_size, len(x_all))
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x_all), generator=g)
    bar = range(steps)
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(bar, desc=f"{type(bridge).__name__}", leave=False)
    losses: list[float] = []
    n, cursor = len(x_all), 0
    with one_thread() if device.type == "cpu" else nullcontext():
        bridge.train()
        for _ in bar:
            if cursor + batch_size > n:  # a new pass over the training images, in a new order
                order, cursor = torch.randperm(n, generator=g), 0
            idx = order[cursor : cursor + batch_size]
            cursor += batch_size
            loss = alignment_loss(bridge(x_all[idx].to(device)), y_all[idx], targets)  # (B, K, D_out) vs (B,)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                raise ValueError(f"training diverged (loss {losses[-1]}) at step {len(losses)}: lower lr (got {lr})")
    bridge.eval()
    return losses


@torch.no_grad()
def alignment_accuracy(bridge: nn.Module, task: AlignmentTask, split: str = "held_out", batch_size: int = 2000) -> float:
    """Share of ``split`` (``"held_out"`` or ``"train"``) images whose bridge output is nearest its own target (cosine)."""
    task = _check_task(task)
    _check_bridge(bridge, task)
    check_choice(split, "split", ("held_out", "train"))
    features, labels = (task.held_out_features, task.held_out_labels) if split == "held_out" else (task.train_features, task.train_labels)
    was_training = bridge.training
    bridge.eval()
    device = next((p.device for p in bridge.parameters()), torch.device("cpu"))
    correct = 0
    for i in range(0, len(features), batch_size):
        out = bridge(features[i : i + batch_size].to(device))  # (b, K, D_out)
        if not isinstance(out, torch.Tensor) or out.dim() != 3:
            raise ValueError(f"bridge must return (B, K, D_out) = (b, K, {task.out_dim}), got {describe(out)}")
        correct += (alignment_logits(out, task.targets.to(device)).argmax(-1).cpu() == labels[i : i + batch_size]).sum().item()
    bridge.train(was_training)
    return correct / len(features)


# --------------------------------------------------------------------------- chapter 3's comparison (a recipe)

CAPTION_ATTRIBUTES: tuple[str, ...] = ("size", "color", "shape", "position")  # the nesting order of the 160 caption classes


def regroup_task(task: AlignmentTask, attributes: tuple[str, ...] = ("color", "shape"), seed: int = 0) -> AlignmentTask:
    """The same images and features, with one new random target per combination of ``attributes`` only.

    ``task`` must have the 160 caption classes (``labels="caption"``). ``attributes``: a non-empty
    subset of ``("size", "color", "shape", "position")``; ``("color", "shape")`` gives the 20 colour x
    shape classes, all four the 160 captions again (with new targets). The targets are
    ``random_targets(C, D_out, seed)`` with ``C`` the product of the attributes' sizes.
    """
    from mmllm_course.data import COLORS, POSITIONS, SHAPES, SIZES, all_caption_classes

    task = _check_task(task)
    if task.num_classes != len(all_caption_classes()):
        raise ValueError(f"task must have the 160 caption classes (labels='caption'), got {task.num_classes} classes")
    check_int(seed, "seed", minimum=0)
    if isinstance(attributes, str):
        attributes = (attributes,)
    if not isinstance(attributes, (tuple, list)):
        raise InputTypeError(f"attributes must be a tuple of names from {CAPTION_ATTRIBUTES}, got {describe(attributes)}")
    if not attributes:
        raise ValueError(f"attributes must be a non-empty tuple of names from {CAPTION_ATTRIBUTES}, got {attributes!r}")
    for a in attributes:
        check_choice(a, "attribute", CAPTION_ATTRIBUTES)
    keep = [a for a in CAPTION_ATTRIBUTES if a in attributes]  # the captions' nesting order
    names = {"size": SIZES, "color": COLORS, "shape": SHAPES, "position": POSITIONS}
    radix = [len(names[a]) for a in CAPTION_ATTRIBUTES]  # (2, 4, 5, 4)

    def digits(y: torch.Tensor) -> dict[str, torch.Tensor]:
        # caption index = ((size * 4 + color) * 5 + shape) * 4 + position
        out = {}
        for a, r in zip(reversed(CAPTION_ATTRIBUTES), reversed(radix)):
            out[a], y = y % r, y // r
        return out

    def relabel(y: torch.Tensor) -> torch.Tensor:
        d, new = digits(y), torch.zeros_like(y)
        for a in keep:
            new = new * len(names[a]) + d[a]
        return new

    classes = [""]
    for a in keep:
        classes = [f"{c} {'in the ' if a == 'position' else ''}{v}".strip() for c in classes for v in names[a]]
    if len(keep) == len(CAPTION_ATTRIBUTES):
        classes = all_caption_classes()  # the same order, written as captions
    return AlignmentTask(task.train_features, relabel(task.train_labels), task.held_out_features,
                         relabel(task.held_out_labels), random_targets(len(classes), task.out_dim, seed), classes)


# The target sets of chapter 3's comparison: which attributes of the first object name a target.
TARGET_GROUPS: dict[str, tuple[str, ...]] = {
    "color_shape": ("color", "shape"),  # 20 targets
    "size_color_shape": ("size", "color", "shape"),  # 40
    "color_shape_position": ("color", "shape", "position"),  # 80
    "caption": CAPTION_ATTRIBUTES,  # 160: the full captions (the task's own targets)
}


@dataclass(frozen=True)
class BridgeComparisonRecipe:
    """Chapter 3's experiment: a linear and an MLP bridge of the same size, trained the same way into the target space.

    Seed ``s`` sets everything random: the task (images, held-out images and targets,
    ``make_alignment_task(seed=s)``), each bridge's initial weights (``torch.manual_seed(s)`` just
    before it is built) and the batch order (``train_bridge(seed=s)``). The same features are scored
    against 20, 40, 80 and 160 targets (:data:`TARGET_GROUPS`, :func:`regroup_task`) to show where the
    gap between the two bridges opens; a wide MLP is trained on the 160 captions too.
    """

    train_size: int = 8000
    held_out_size: int = 2000
    out_dim: int = 64  # D_out
    steps: int = 1000
    batch_size: int = 256
    lr: float = 3e-3
    equal_hidden: int = 32  # the MLP's hidden width with (about) the linear bridge's parameter count
    wide_hidden: int = 256  # a wider MLP, 8x the parameters

    def bridge(self, name: str, in_dim: int, seed: int) -> nn.Module:
        """``"linear"``, ``"mlp"`` (equal size) or ``"mlp_wide"``, built right after ``torch.manual_seed(seed)``."""
        from mmllm_course.bridges import make_bridge

        check_choice(name, "name", ("linear", "mlp", "mlp_wide"))
        extra = {"linear": {}, "mlp": {"hidden_dim": self.equal_hidden}, "mlp_wide": {"hidden_dim": self.wide_hidden}}[name]
        torch.manual_seed(seed)
        return make_bridge("linear" if name == "linear" else "mlp", in_dim=in_dim, out_dim=self.out_dim, **extra)

    def train_kwargs(self) -> dict:
        """The keyword arguments of :func:`train_bridge` (all but the seed)."""
        return dict(steps=self.steps, batch_size=self.batch_size, lr=self.lr)


CHAPTER3_COMPARISON = BridgeComparisonRecipe()

# What chapter 3's notebook asserts (fractions of held-out images): "group/what" -> bar. "gap" is MLP - linear
# at equal size. Seeds 0-4 of CHAPTER3_COMPARISON (torch 2.13 CPU) measured, worst seed in brackets:
# 160 targets: linear 41.2-45.1%, MLP 93.9-95.3%, gap 49.3-53.4 points; 80: gap 21.5-25.7 points;
# 40: gap 2.0-2.6 points; 20: linear 95.4-96.7%, |gap| 0.05-1.1 points; wide MLP on 160: 95.9-97.3%.
CHAPTER3_BARS: dict[str, float] = {
    "caption/gap_min": 0.40,  # (0.493)
    "caption/mlp_min": 0.90,  # (0.939)
    "caption/linear_max": 0.55,  # (0.4505)
    "color_shape_position/gap_min": 0.15,  # (0.215)
    "size_color_shape/gap_max": 0.05,  # |gap| (0.0255)
    "color_shape/gap_max": 0.03,  # |gap| (0.011)
    "color_shape/linear_min": 0.90,  # (0.954)
}


@dataclass
class BridgeComparison:
    """What :func:`compare_bridges` measured, per ``"group/bridge"`` key (``"caption/linear"``, ...).

    ``accuracy``: held-out accuracy; ``train_accuracy``: the same on the training images; ``losses``:
    per step; ``seconds``: training time; ``parameters``: per bridge name; ``num_classes``: per group.
    """

    accuracy: dict[str, float]
    train_accuracy: dict[str, float]
    losses: dict[str, list[float]]
    seconds: dict[str, float]
    parameters: dict[str, int]
    num_classes: dict[str, int]
    seed: int
    recipe: BridgeComparisonRecipe


def compare_bridges(
    seed: int = 0,
    recipe: BridgeComparisonRecipe = CHAPTER3_COMPARISON,
    encoder: nn.Module | None = None,
    task: AlignmentTask | None = None,
    progress: bool = False,
) -> BridgeComparison:
    """Chapter 3's run: a linear and an equal-size MLP bridge on 20, 40, 80 and 160 targets, and a wide MLP on 160.

    ``task``: a ready ``make_alignment_task(encoder, recipe.train_size, recipe.held_out_size,
    recipe.out_dim, seed=seed)`` (built when None; pass it to reuse the features).
    """
    import time

    if not isinstance(recipe, BridgeComparisonRecipe):
        raise InputTypeError(f"recipe must be a BridgeComparisonRecipe, got {describe(recipe)}")
    check_int(seed, "seed", minimum=0)
    if task is None:
        task = make_alignment_task(encoder, recipe.train_size, recipe.held_out_size, recipe.out_dim, seed=seed)
    task = _check_task(task)
    if task.out_dim != recipe.out_dim:
        raise ValueError(f"task.out_dim = {task.out_dim} differs from the recipe's out_dim = {recipe.out_dim}")
    runs = [(group, name) for group in TARGET_GROUPS for name in ("linear", "mlp")] + [("caption", "mlp_wide")]
    result = BridgeComparison({}, {}, {}, {}, {}, {}, seed, recipe)
    for group, name in runs:
        t = task if group == "caption" else regroup_task(task, TARGET_GROUPS[group], seed)
        bridge = recipe.bridge(name, t.in_dim, seed)
        key = f"{group}/{name}"
        start = time.perf_counter()
        result.losses[key] = train_bridge(bridge, t, seed=seed, progress=progress, **recipe.train_kwargs())
        result.seconds[key] = time.perf_counter() - start
        result.accuracy[key] = alignment_accuracy(bridge, t)
        result.train_accuracy[key] = alignment_accuracy(bridge, t, "train")
        result.parameters[name] = sum(p.numel() for p in bridge.parameters())
        result.num_classes[group] = t.num_classes
    return result


def bridge_comparison_failures(accuracy: dict[str, float], bars: dict[str, float] = CHAPTER3_BARS) -> list[str]:
    """The notebook's assertions that ``accuracy`` (``BridgeComparison.accuracy``) would fail; empty if none.

    Bars (see :data:`CHAPTER3_BARS`) are ``"group/gap_min"`` (MLP - linear >= bar), ``"group/gap_max"``
    (|MLP - linear| <= bar), ``"group/mlp_min"``, ``"group/linear_min"`` and ``"group/linear_max"``.
    """
    if not isinstance(accuracy, dict) or not isinstance(bars, dict):
        raise InputTypeError(f"accuracy and bars must be dicts (BridgeComparison.accuracy, CHAPTER3_BARS), got {describe(accuracy)}")
    needed = sorted({f"{key.split('/')[0]}/{b}" for key in bars for b in ("linear", "mlp")} - set(accuracy))
    if needed:
        raise ValueError(f"accuracy lacks {needed}: pass BridgeComparison.accuracy from compare_bridges")
    failed = []
    for key, bar in bars.items():
        group, what = key.split("/")
        linear, mlp = accuracy[f"{group}/linear"], accuracy[f"{group}/mlp"]
        value = {"gap_min": mlp - linear, "gap_max": abs(mlp - linear), "mlp_min": mlp,
                 "linear_min": linear, "linear_max": linear}[what]
        ok = value <= bar if what.endswith("_max") else value >= bar
        if not ok:
            sign = "<=" if what.endswith("_max") else ">="
            failed.append(f"{group} ({what}): {value:.1%}, expected {sign} {bar:.0%}")
    return failed
