"""Checks for chapter 3, linear and MLP bridges.

- **core**: the MLP bridge's forward pass from its weights (linear, GELU, linear: LLaVA-1.5's
  order), and a bridge's budget, its trainable parameters and the K tokens it gives the LLM;
- **build**: an MLP bridge module that takes the library's ``MLPBridge`` weights (parameter names
  ``layers.0``, ``layers.1``), gives its outputs and gradients, says its K and refuses a feature
  width it was not built for with a ``ValueError``;
- **train**: the learner's own trained bridge, scored (never trained here) on new images in the
  chapter's target space, the 160 caption targets of ``make_alignment_task(seed=0)``;
- a **stretch**: a depth-configurable MLP bridge (1 to 4 layers) with the library's weights.

Every case is sized so that each named mistake gives a result of its own (square layers where the
order of the layers or a missing transpose would otherwise only raise). Questions store only
answer hashes.
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmllm_course.bridges import LinearBridge, MLPBridge, MLPBridgeConfig, make_bridge
from mmllm_course.grading.compare import expect_tensor_or_diagnose
from mmllm_course.grading.core import CheckFailed, NotDone, a_or_an, answer_hash, call, exercise, question
from mmllm_course.grading.modules import build_learner_module, expect_same_forward, load_reference_weights


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _one_thread() -> None:
    """Tiny tensors: one thread (the grader restores the learner's thread count afterwards); see ch04."""
    torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------------
# ch03.mlp_forward
# --------------------------------------------------------------------------------------------------
# (B, N, D_in, F, D_llm, dtype): square cases (D_in = F = D_llm, as LLaVA-1.5's F = D_llm) let the
# swapped layers and the missing transpose give wrong numbers instead of a shape error.
_FORWARD_CASES = [
    (2, 3, 16, 16, 16, torch.float32),  # square first: those two mistakes fail here instead of raising
    (2, 5, 16, 16, 16, torch.float64),
    (1, 1, 8, 16, 12, torch.float32),
    (3, 4, 12, 24, 20, torch.float32),
]


def _forward_inputs(case, seed: int):
    b, n, d_in, hidden, d_llm, dtype = case
    g = _gen(seed)
    x = (2 * torch.randn(b, n, d_in, generator=g)).to(dtype)  # std 2: GELU, ReLU and tanh-GELU differ clearly
    w1 = (torch.randn(hidden, d_in, generator=g) / d_in**0.5).to(dtype)
    b1 = torch.randn(hidden, generator=g).to(dtype)
    w2 = (torch.randn(d_llm, hidden, generator=g) / hidden**0.5).to(dtype)
    b2 = torch.randn(d_llm, generator=g).to(dtype)
    return x, w1, b1, w2, b2


def mlp_forward_reference(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """LLaVA-1.5's projector: GELU(x W1^T + b1) W2^T + b2, (B, N, D_in) -> (B, N, D_llm)."""
    return F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2)


def _forward_mistakes(x, w1, b1, w2, b2) -> dict[str, torch.Tensor]:
    lin = F.linear
    out = {
        "two linear layers with NO GELU between them: that is one linear map again (W2 W1 x + ...), which is all "
        "the MLP was meant to go beyond; put F.gelu between the layers": lin(lin(x, w1, b1), w2, b2),
        "a ReLU instead of the GELU: LLaVA-1.5's projector uses the exact GELU (F.gelu / nn.GELU())": lin(F.relu(lin(x, w1, b1)), w2, b2),
        "the tanh approximation of the GELU (approximate='tanh'); LLaVA-1.5's projector uses the exact GELU, "
        "F.gelu(h) with the default approximate='none'": lin(F.gelu(lin(x, w1, b1), approximate="tanh"), w2, b2),
        "a GELU after the second layer as well: the output layer has no activation, so the LLM tokens can take "
        "any value (a GELU would keep them above -0.17)": F.gelu(lin(F.gelu(lin(x, w1, b1)), w2, b2)),
        "the GELU applied to the input before the first layer instead of between the layers": lin(lin(F.gelu(x), w1, b1), w2, b2),
        "the GELU only after the second layer (linear, linear, GELU): it goes between the two layers": F.gelu(lin(lin(x, w1, b1), w2, b2)),
        "the first layer's bias b1 forgotten": lin(F.gelu(x @ w1.T), w2, b2),
        "the second layer's bias b2 forgotten": F.gelu(lin(x, w1, b1)) @ w2.T,
        "both biases forgotten": F.gelu(x @ w1.T) @ w2.T,
    }
    if w1.shape == w2.shape:  # square: the swapped layers and x @ W (no transpose) run without a shape error
        out["the layers in the wrong order (W2, b2 first, then W1, b1): the first layer maps D_in to F"] = lin(F.gelu(lin(x, w2, b2)), w1, b1)
        out["x @ W instead of x @ W.T: a weight is stored as (out, in), like nn.Linear's, so the product is "
            "x @ W.T (or F.linear(x, W, b))"] = F.gelu(x @ w1 + b1) @ w2 + b2
    return out


@exercise(
    "ch03.mlp_forward",
    "The MLP bridge's forward pass (LLaVA-1.5)",
    hint="first layer (x @ W1.T + b1), then the exact GELU, then the second layer (h @ W2.T + b2), nothing after it; "
    "every token on its own, so the shapes go (B, N, D_in) -> (B, N, F) -> (B, N, D_llm).",
)
def _check_mlp_forward(fn) -> str:
    _one_thread()
    for i, case in enumerate(_FORWARD_CASES):
        x, w1, b1, w2, b2 = _forward_inputs(case, seed=300 + i)
        what = (f"mlp_bridge_forward(features {tuple(x.shape)}, w1 {tuple(w1.shape)}, b1 {tuple(b1.shape)}, "
                f"w2 {tuple(w2.shape)}, b2 {tuple(b2.shape)}, {x.dtype})")
        expected = mlp_forward_reference(x, w1, b1, w2, b2)
        mistakes = _forward_mistakes(x, w1, b1, w2, b2)
        got = call(fn, x.clone(), w1.clone(), b1.clone(), w2.clone(), b2.clone())
        if isinstance(got, tuple):
            raise CheckFailed(f"{what} returned a tuple; return only the LLM tokens (B, N, D_llm)")
        expect_tensor_or_diagnose(got, expected, what, mistakes)
    return "your bridge maps every feature token through linear, GELU, linear, exactly as LLaVA-1.5's projector does."


# --------------------------------------------------------------------------------------------------
# ch03.bridge_budget
# --------------------------------------------------------------------------------------------------
# (kind, image_size, patch_size, in_dim, llm_dim, hidden_dim); in_dim != llm_dim everywhere, so a
# hidden width defaulting to the wrong one shows.
_BUDGET_CASES = [
    ("linear", 32, 8, 64, 128, None),
    ("mlp", 32, 8, 64, 128, None),
    ("mlp", 32, 8, 64, 128, 256),
    ("linear", 224, 14, 1024, 4096, None),  # LLaVA
    ("mlp", 336, 14, 1024, 4096, None),  # LLaVA-1.5
    ("mlp", 224, 16, 768, 2048, 1024),
    ("linear", 64, 16, 32, 48, None),
]


def budget_reference(kind: str, image_size: int, patch_size: int, in_dim: int, llm_dim: int, hidden_dim: int | None = None) -> tuple[int, int]:
    """(trainable parameters, K) of a linear or two-layer MLP bridge on a ViT's patch tokens ([CLS] dropped)."""
    with torch.device("meta"):  # shapes only: no memory even at real sizes
        bridge = (make_bridge("linear", in_dim=in_dim, out_dim=llm_dim) if kind == "linear"
                  else make_bridge("mlp", in_dim=in_dim, out_dim=llm_dim, hidden_dim=hidden_dim))
    n = (image_size // patch_size) ** 2
    return sum(p.numel() for p in bridge.parameters()), bridge.num_output_tokens(n)


def _budget_param_mistakes(kind: str, in_dim: int, llm_dim: int, hidden_dim: int | None) -> dict[str, int]:
    if kind == "linear":
        return {"the bias forgotten: a linear bridge has D_in x D_llm weights AND D_llm biases": in_dim * llm_dim,
                "D_in biases instead of D_llm: there is one bias per OUTPUT channel": in_dim * llm_dim + in_dim}
    f = llm_dim if hidden_dim is None else hidden_dim
    out = {
        "the biases forgotten: each layer has one bias per output channel (F for the first, D_llm for the second)":
            in_dim * f + f * llm_dim,
        "only the first layer's bias counted": in_dim * f + f + f * llm_dim,
        "only the second layer's bias counted": in_dim * f + f * llm_dim + llm_dim,
        "one layer only (D_in x D_llm + D_llm): the MLP bridge has two": in_dim * llm_dim + llm_dim,
    }
    if hidden_dim is None:
        out["the hidden width taken as D_in when hidden_dim is None; LLaVA-1.5 (and the library) use F = D_llm"] = (
            in_dim * in_dim + in_dim + in_dim * llm_dim + llm_dim)
    return out


def _budget_k_mistakes(image_size: int, patch_size: int) -> dict[str, int]:
    side = image_size // patch_size
    return {
        f"the patches along one side only ({side}): an image of {image_size}x{image_size} in patches of {patch_size} "
        f"has {side} x {side} patches": side,
        "the [CLS] token counted: LLaVA drops it and hands only the patch tokens to the bridge, and a linear or MLP "
        "bridge keeps one LLM token per feature token (K = N)": side * side + 1,
        "K = 1: that is a pooled image vector; these bridges keep one token per patch": 1,
        "pixels per patch counted instead of patches": patch_size * patch_size,
    }


def _as_int(value: Any, what: str, name: str) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            import numpy as np

            if isinstance(value, np.integer):
                return int(value)
        except ImportError:  # pragma: no cover
            pass
        raise CheckFailed(f"{what}: the {name} must be an int, got {a_or_an(type(value).__name__)} ({value!r:.40})")
    return value


@exercise(
    "ch03.bridge_budget",
    "Count a bridge's parameters and tokens",
    hint="a linear layer from a to b has a*b weights and b biases; the MLP has two such layers (a hidden width F, "
    "D_llm when not given); K is the number of patch tokens, (image_size // patch_size) squared, [CLS] left out.",
)
def _check_bridge_budget(fn) -> str:
    for kind, image_size, patch_size, in_dim, llm_dim, hidden in _BUDGET_CASES:
        args = (kind, image_size, patch_size, in_dim, llm_dim, hidden)
        what = f"bridge_budget{args}"
        params, k = budget_reference(*args)
        got = call(fn, *args)
        if got is None:
            raise CheckFailed(f"{what} returned None: did you forget `return params, k`?")
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise CheckFailed(f"{what} returned {a_or_an(type(got).__name__)}; expected a pair (parameters, K)")
        got_params, got_k = _as_int(got[0], what, "parameter count"), _as_int(got[1], what, "K")
        if (got_params, got_k) == (k, params):
            raise CheckFailed(f"{what} returned ({got_params}, {got_k}): the two are swapped; return (parameters, K)")
        if got_params != params:
            for explanation, wrong in _budget_param_mistakes(kind, in_dim, llm_dim, hidden).items():
                if got_params == wrong:
                    raise CheckFailed(f"{what}: parameters {got_params:,}, expected {params:,}. That is {explanation}.")
            raise CheckFailed(f"{what}: parameters {got_params:,}, expected {params:,}")
        if got_k != k:
            for explanation, wrong in _budget_k_mistakes(image_size, patch_size).items():
                if got_k == wrong:
                    raise CheckFailed(f"{what}: K = {got_k}, expected {k}. That is {explanation}.")
            raise CheckFailed(f"{what}: K = {got_k}, expected {k}")
    p, k = budget_reference("mlp", 336, 14, 1024, 4096)
    return f"right on every case, e.g. LLaVA-1.5's projector: {p:,} parameters and {k} tokens per image."


# --------------------------------------------------------------------------------------------------
# ch03.mlp_bridge (build) and ch03.deep_mlp_bridge (stretch)
# --------------------------------------------------------------------------------------------------


def _reference_bridge(in_dim: int, out_dim: int, hidden_dim: int | None, depth: int, seed: int) -> MLPBridge:
    torch.manual_seed(seed)
    ref = MLPBridge(MLPBridgeConfig(in_dim=in_dim, out_dim=out_dim, hidden_dim=hidden_dim, depth=depth))
    with torch.no_grad():  # biases of a size that shows when one is forgotten
        for layer in ref.layers:
            layer.bias.normal_(0.0, 0.5, generator=_gen(seed + 1))
    return ref


def _bridge_mistakes(ref: MLPBridge):
    """Outputs of the usual mistakes, with ``ref``'s weights: ``diagnose(features) -> {explanation: output}``."""

    def run(x: torch.Tensor, act, where: str) -> torch.Tensor:
        layers = list(ref.layers)
        if where == "every":  # an activation after every layer, the last included
            for layer in layers:
                x = act(layer(x))
            return x
        if where == "first":  # only after the first layer
            x = layers[0](x)
            x = act(x) if len(layers) > 1 else x
            for layer in layers[1:]:
                x = layer(x)
            return x
        x = layers[0](x)  # "between": the right places
        for layer in layers[1:]:
            x = layer(act(x))
        return x

    def diagnose(x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {
            "no GELU at all: the layers then compose into one linear map": run(x, lambda t: t, "between"),
            "a ReLU instead of the exact GELU": run(x, F.relu, "between"),
            "the tanh approximation of the GELU; the library's (and LLaVA-1.5's) is the exact one": run(
                x, lambda t: F.gelu(t, approximate="tanh"), "between"),
            "a GELU after the last layer too: the output layer has no activation": run(x, F.gelu, "every"),
        }
        if len(ref.layers) > 2:
            out["a GELU after the first layer only: there is one between EVERY two consecutive layers"] = run(x, F.gelu, "first")
        return out

    return diagnose


def _expect_value_error_on_width(module: nn.Module, in_dim: int, what: str) -> None:
    bad = torch.randn(2, 3, in_dim + 3)
    try:
        module(bad)
    except NotImplementedError as exc:
        raise NotDone(str(exc)) from None
    except ValueError as exc:
        text = str(exc)
        if str(in_dim) not in text or str(in_dim + 3) not in text:
            raise CheckFailed(
                f"{what} on features (2, 3, {in_dim + 3}) raised ValueError({text[:120]!r}); good, but the message must "
                f"name the expected width {in_dim} and the width that came, {in_dim + 3}"
            ) from None
        return
    except Exception as exc:  # noqa: BLE001 - any other exception is the learner's to fix
        raise CheckFailed(
            f"{what} on features (2, 3, {in_dim + 3}) raised {type(exc).__name__} ({str(exc)[:100]}); expected a ValueError "
            f"raised by your forward before any arithmetic, naming the expected width {in_dim} and the width that came"
        ) from None
    raise CheckFailed(f"{what} accepted features (2, 3, {in_dim + 3}) although it was built for in_dim={in_dim}: "
                      f"expected a ValueError naming {in_dim} and {in_dim + 3}")


def _check_bridge_module(cls: Any, configs: list[tuple], name: str, with_depth: bool) -> None:
    _one_thread()
    for i, (in_dim, out_dim, hidden, depth) in enumerate(configs):
        args = (in_dim, out_dim, hidden, depth) if with_depth else (in_dim, out_dim, hidden)
        what = f"{name}{args}"
        ref = _reference_bridge(in_dim, out_dim, hidden, depth, seed=700 + i)
        mine = build_learner_module(cls, what, *args)
        load_reference_weights(mine, ref, what)
        g = _gen(800 + i)
        inputs = [2 * torch.randn(2, 16, in_dim, generator=g), 2 * torch.randn(1, 1, in_dim, generator=g),
                  2 * torch.randn(3, 5, in_dim, generator=g)]
        expect_same_forward(mine, ref, inputs, what, diagnose=_bridge_mistakes(ref))
        if not callable(getattr(mine, "num_output_tokens", None)):
            raise CheckFailed(f"{what} has no num_output_tokens method; every bridge says its K for a given N")
        for n in (1, 16, 576):
            k = call(mine.num_output_tokens, n)
            if k != n:
                raise CheckFailed(f"{what}.num_output_tokens({n}) returned {k!r}; expected {n}: one LLM token per feature token")
        _expect_value_error_on_width(mine, in_dim, what)


_BUILD_CONFIGS = [(64, 96, 48, 2), (32, 48, None, 2), (24, 40, 16, 2)]
_DEEP_CONFIGS = [(16, 24, 32, 1), (16, 24, 32, 2), (24, 16, 20, 3), (12, 20, 8, 4)]


@exercise(
    "ch03.mlp_bridge",
    "Build the MLP bridge module",
    hint="self.layers = nn.ModuleList([nn.Linear(in_dim, F), nn.Linear(F, out_dim)]) with F = hidden_dim or out_dim; "
    "forward: check the width, then layers[0], GELU, layers[1]; num_output_tokens(n) returns n.",
)
def _check_mlp_bridge(cls) -> str:
    _check_bridge_module(cls, _BUILD_CONFIGS, "MyMLPBridge", with_depth=False)
    return ("your module holds the library's MLPBridge weights and gives its outputs and gradients, keeps K = N, "
            "and names a wrong feature width.")


@exercise(
    "ch03.deep_mlp_bridge",
    "Stretch: an MLP bridge of any depth",
    hint="widths [in_dim, hidden, ..., hidden, out_dim] for depth linear layers (depth 1: one layer in_dim -> out_dim); "
    "a GELU between every two consecutive layers and none after the last.",
)
def _check_deep_mlp_bridge(cls) -> str:
    _check_bridge_module(cls, _DEEP_CONFIGS, "DeepMLPBridge", with_depth=True)
    return "depth 1 to 4, your bridge equals the library's MLPBridge(depth=...) on its weights."


# --------------------------------------------------------------------------------------------------
# ch03.train_bridge: the learner's trained bridge, scored on new images in the chapter's target space
# --------------------------------------------------------------------------------------------------
TRAIN_BRIDGE_THRESHOLD = 0.85  # held-out accuracy over the 160 caption targets; chance 0.6%
TRAIN_BRIDGE_EVAL_SEED = 20_303  # the check's own images: generate_shapes(TRAIN_BRIDGE_EVAL_SIZE, seed=...)
TRAIN_BRIDGE_EVAL_SIZE = 2_000
TRAIN_BRIDGE_TARGET_SEED = 0  # the targets of make_alignment_task(seed=0)


@lru_cache(maxsize=1)
def train_bridge_eval_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The check's pooled features (n, 1, 64) of new images, their caption labels (n,) and the 160 targets (160, 64)."""
    from mmllm_course.bridges.alignment import image_features, random_targets
    from mmllm_course.data import all_caption_classes, generate_shapes
    from mmllm_course.pretrained import load_chapter2_clip

    held = generate_shapes(TRAIN_BRIDGE_EVAL_SIZE, seed=TRAIN_BRIDGE_EVAL_SEED)
    features = image_features(load_chapter2_clip()[0].vision, held.images, pooled=True)
    targets = random_targets(len(all_caption_classes()), 64, TRAIN_BRIDGE_TARGET_SEED)
    return features, held.caption_class_labels(), targets


def _trained_bridge(answer: Any) -> nn.Module:
    if isinstance(answer, type):
        raise CheckFailed(f"got the class {answer.__name__}; pass your TRAINED bridge (the object), not its class")
    if not isinstance(answer, nn.Module) and callable(answer):
        try:
            params = inspect.signature(answer).parameters.values()
        except (TypeError, ValueError):
            params = []
        required = [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if required:
            raise CheckFailed(
                f"got a function that needs arguments ({', '.join(required)}); pass your TRAINED bridge "
                "(what your training function returned), e.g. check('ch03.train_bridge', my_bridge)"
            )
        answer = call(answer)
    if answer is None:
        raise CheckFailed("got None instead of a trained bridge: did your training function forget `return bridge`?")
    if not isinstance(answer, nn.Module):
        raise CheckFailed(f"expected your trained bridge (an nn.Module mapping (B, 1, 64) to (B, K, 64)), got {a_or_an(type(answer).__name__)}")
    return answer


def _is_linear(module: nn.Module) -> bool:
    """A bridge with no non-linearity in it: only Linear layers (and containers), or the library's LinearBridge."""
    if isinstance(module, LinearBridge):
        return True
    leaves = [m for m in module.modules() if not list(m.children())]
    return bool(leaves) and all(isinstance(m, (nn.Linear, nn.Identity, nn.Dropout)) for m in leaves)


@exercise(
    "ch03.train_bridge",
    "Train a bridge into the chapter's target space",
    hint="a non-linear bridge (an MLP) trained with the chapter's loss: cross-entropy of 20 x cosine(mean over K of your "
    "outputs, task.targets) against the caption label; a few hundred AdamW steps of 256 images at lr 3e-3 are enough.",
    timeout=30.0,
)
def _check_train_bridge(answer) -> str:
    from mmllm_course.bridges.alignment import alignment_logits

    bridge = _trained_bridge(answer)
    features, labels, targets = train_bridge_eval_data()
    _one_thread()
    device = next((p.device for p in bridge.parameters()), torch.device("cpu"))
    was_training = bridge.training
    predictions = []
    try:
        bridge.eval()
        with torch.no_grad():
            for start in range(0, len(features), 500):
                x = features[start : start + 500].clone()
                what = f"your bridge on pooled features {tuple(x.shape)}"
                out = call(bridge, x.to(device))
                if isinstance(out, (tuple, list)) or not isinstance(out, torch.Tensor):
                    raise CheckFailed(f"{what} returned {a_or_an(type(out).__name__)}; expected one tensor (B, K, 64)")
                if out.dim() == 2 and out.shape == (len(x), targets.shape[1]):
                    raise CheckFailed(f"{what} returned shape {tuple(out.shape)}; expected (B, K, 64): keep the token "
                                      "axis (K = 1 here), as every bridge does")
                if out.dim() != 3 or out.shape[0] != len(x):
                    raise CheckFailed(f"{what} returned shape {tuple(out.shape)}; expected (B, K, 64) = ({len(x)}, K, 64)")
                if out.shape[-1] != targets.shape[1]:
                    raise CheckFailed(f"{what} returned width {out.shape[-1]}; the targets (task.targets) have width "
                                      f"{targets.shape[1]}: build the bridge with out_dim=64")
                if not out.is_floating_point() or not torch.isfinite(out).all():
                    raise CheckFailed(f"{what} returned non-finite or non-float values (dtype {out.dtype})")
                predictions.append(alignment_logits(out.detach().cpu().float(), targets).argmax(-1))
    finally:
        bridge.train(was_training)
    accuracy = (torch.cat(predictions) == labels).double().mean().item()
    detail = (f"held-out accuracy {accuracy:.1%} over the 160 caption targets on {len(labels)} new images "
              f"(chance {1 / targets.shape[0]:.1%})")
    if accuracy >= TRAIN_BRIDGE_THRESHOLD:
        return f"{detail}: above the {TRAIN_BRIDGE_THRESHOLD:.0%} bar. Your bridge aligns the frozen encoder with the target space."
    if _is_linear(bridge):
        raise CheckFailed(
            f"{detail}: below the {TRAIN_BRIDGE_THRESHOLD:.0%} bar. Your bridge is linear: the chapter's linear bridge "
            "reached 41-45% of held-out images on this task (5 seeds), far from the bar, because no linear map places "
            "these 160 random targets. Add a non-linearity (an MLP bridge)."
        )
    if accuracy < 0.03:
        raise CheckFailed(
            f"{detail}: about chance. Is the bridge trained, and against task.targets of make_alignment_task(seed=0) "
            "(the targets the check uses), with the caption labels task.train_labels?"
        )
    raise CheckFailed(f"{detail}: below the {TRAIN_BRIDGE_THRESHOLD:.0%} bar. Train longer, or check your loss and learning rate.")


# --------------------------------------------------------------------------------------------------
# Checked questions
# --------------------------------------------------------------------------------------------------
question(
    "ch03.q1",
    "Better than one linear layer",
    {
        "a": "A single linear layer with a larger output width, so that more of the LLM's dimensions are used.",
        "b": "A multi-layer MLP with a non-linearity between the layers, as LLaVA-1.5's two layers with a GELU.",
        "c": "Two linear layers stacked without an activation, so that the projection has twice the parameters.",
        "d": "The same linear layer, with the encoder's features L2-normalised before they go into it.",
    },
    [answer_hash("b")],
    "Right: an MLP with a non-linearity (LLaVA-1.5's mlp2x_gelu) can bend the encoder's space; width, stacking "
    "without activation or normalising keep the map linear.",
)
question(
    "ch03.q2",
    "Two linear layers without an activation",
    {
        "a": "Exactly the maps one linear layer can give: W2 (W1 x + b1) + b2 is one matrix W2 W1 and one bias.",
        "b": "Every continuous map, given a wide enough hidden layer between the two linear layers.",
        "c": "Only the maps that keep the width, because the hidden layer forces D_in = D_llm.",
        "d": "Strictly more than one layer, but less than an MLP with a GELU of the same width.",
    },
    [answer_hash("a")],
    "Right: without a non-linearity, stacked linear layers collapse into one linear map (with the hidden width as a "
    "rank limit at most); the GELU is what makes the MLP more than a linear bridge.",
)
question(
    "ch03.q3",
    "Why the linear bridge reached 20 targets but not 160",
    {
        "a": "With 160 targets the linear bridge overfits its training images; on those it is nearly perfect.",
        "b": "The linear bridge was given fewer training steps than the MLP for the larger target set.",
        "c": "A linear map can place at most D_in + 1 class means anywhere; 160 means in 64 dimensions are affinely "
             "dependent, and random targets do not respect those dependencies.",
        "d": "Random unit vectors in 64 dimensions are too close to each other to be told apart beyond 20 classes.",
    },
    [answer_hash("c")],
    "Right: 20 or 40 independent class means can each be sent to their own target by one affine map; beyond D_in + 1 "
    "they cannot (the chapter's linear bridge did not even fit its training images, while the MLP of the same size did).",
)
question(
    "ch03.q4",
    "How many tokens does LLaVA-1.5's bridge give the LLM per image?",
    {
        "a": "1: the bridge pools the image into one vector of the LLM's width.",
        "b": "24: one token per row of patches of the 336 x 336 image.",
        "c": "576: one token per 14 x 14 patch of the 336 x 336 image, the [CLS] token dropped (K = N).",
        "d": "577: the 576 patch tokens and the [CLS] token, each mapped to the LLM's width.",
    },
    [answer_hash("c")],
    "Right: (336 / 14)^2 = 576 patch tokens, each mapped on its own by the MLP: K = N. Chapter 4's bridges shrink K.",
)
