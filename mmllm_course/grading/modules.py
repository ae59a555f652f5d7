"""Helpers for build-tier and train-tier checks: the learner writes a whole ``nn.Module``.

A build-tier check follows three steps, each with a message a learner can act on:

1. :func:`build_learner_module` constructs the learner's class with the documented constructor
   arguments (``raise NotImplementedError`` -> todo, any other exception -> error, something that
   is not an ``nn.Module`` -> fail);
2. :func:`load_reference_weights` loads the library's ``state_dict()`` into it strictly, so the
   learner's parameters must carry the documented names and shapes; a mismatch lists the expected
   names with shapes, and which ones are missing, unexpected or of the wrong shape;
3. :func:`expect_same_forward` runs both modules on several inputs and compares the outputs and,
   through a fixed random projection of the output, the gradients with respect to the inputs and
   to every parameter (a detached branch, a missing residual or an unused parameter shows there).

A train-tier check only evaluates what the learner trained: :func:`predict_logits` runs a learner's
classifier under ``no_grad`` in eval mode (restoring its mode afterwards) and validates the logits.

Example (chapter 1)::

    ref = PatchEmbedding(32, 8, 3, 16)
    mine = build_learner_module(cls, "PatchEmbedding(32, 8, 3, 16)", 32, 8, 3, 16)
    load_reference_weights(mine, ref, "PatchEmbedding(32, 8, 3, 16)")
    expect_same_forward(mine, ref, [torch.rand(1, 3, 32, 32), torch.rand(4, 3, 32, 32)], "PatchEmbedding")
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

from mmllm_course.grading.compare import expect_tensor, same_values
from mmllm_course.grading.core import CheckFailed, LearnerError, call

__all__ = ["build_learner_module", "expect_same_forward", "format_state_dict", "load_reference_weights", "predict_logits"]

_MAX_LISTED = 24  # names listed in a message before "... and N more"


def _fmt_shape(shape: Sequence[int]) -> str:
    dims = [str(int(s)) for s in shape]
    return "(" + dims[0] + ",)" if len(dims) == 1 else "(" + ", ".join(dims) + ")"


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f", ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


def format_state_dict(state: dict[str, Any]) -> str:
    """``"proj.weight (16, 192), proj.bias (16,)"``: parameter names with shapes, for messages."""
    return _listing([f"{k} {_fmt_shape(v.shape)}" for k, v in state.items()])


# --------------------------------------------------------------------------------------------------
# 1. Build
# --------------------------------------------------------------------------------------------------


def build_learner_module(cls: Any, what: str, *args: Any, **kwargs: Any) -> nn.Module:
    """Construct the learner's module ``cls(*args, **kwargs)`` through :func:`~mmllm_course.grading.core.call`.

    ``what`` names the call in messages, e.g. ``"PatchEmbedding(image_size=32, patch_size=8, ...)"``.
    Raises ``NotDone`` (todo) if the constructor raises ``NotImplementedError``, ``LearnerError``
    (error) for any other exception, and :class:`CheckFailed` when the result is not an ``nn.Module``
    (or when an instance was passed instead of the class).
    """
    if isinstance(cls, nn.Module):
        raise CheckFailed(
            f"got an instance of {type(cls).__name__}; pass the class itself (`check(..., {type(cls).__name__})`, "
            f"no parentheses), the check builds it as {what}"
        )
    try:
        module = call(cls, *args, **kwargs)
    except LearnerError as exc:
        if "Module.__init__() call" in str(exc):  # torch's message when super().__init__() is missing
            raise LearnerError(f"{exc}. Call `super().__init__()` first thing in your __init__") from None
        raise
    if module is None:
        raise CheckFailed(f"{what} returned None; expected an nn.Module (a class that subclasses torch.nn.Module)")
    if not isinstance(module, nn.Module):
        raise CheckFailed(
            f"{what} returned a {type(module).__name__}; expected an nn.Module: "
            f"write a class that subclasses torch.nn.Module and pass the class itself"
        )
    return module


# --------------------------------------------------------------------------------------------------
# 2. Load the library's weights
# --------------------------------------------------------------------------------------------------


def _plain_tensor_attribute(module: nn.Module, name: str) -> bool:
    """True when ``name`` ("proj.weight") resolves to a tensor that is not a registered parameter/buffer."""
    obj: Any = module
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return False
    return isinstance(obj, torch.Tensor) and not isinstance(obj, nn.Parameter)


def load_reference_weights(learner_module: nn.Module, reference_module: nn.Module, what: str) -> None:
    """Copy ``reference_module.state_dict()`` into ``learner_module``; names and shapes must match exactly.

    On a mismatch raises :class:`CheckFailed` listing the expected names with shapes, and which of
    the learner's entries are missing, unexpected or of the wrong shape (a tensor stored as a plain
    attribute instead of an ``nn.Parameter`` is named as such).
    """
    expected = reference_module.state_dict()
    try:
        got = call(learner_module.state_dict)
    except LearnerError as exc:
        raise LearnerError(f"{what}: reading your module's state_dict() failed: {exc}") from None
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    wrong_shape = [
        f"{k} is {_fmt_shape(got[k].shape)}, expected {_fmt_shape(expected[k].shape)}"
        for k in expected
        if k in got and tuple(got[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or wrong_shape:
        problems = []
        if missing:
            plain = [k for k in missing if _plain_tensor_attribute(learner_module, k)]
            note = (
                f" ({_listing(plain)} {'is a plain tensor' if len(plain) == 1 else 'are plain tensors'}: wrap in "
                f"nn.Parameter, or use an nn.Linear/nn.Conv2d sub-module, so it is registered and trained)"
                if plain
                else ""
            )
            problems.append(f"missing: {_listing(missing)}{note}")
        if unexpected:
            problems.append(f"unexpected: {_listing(unexpected)}")
        if wrong_shape:
            problems.append(f"wrong shape: {_listing(wrong_shape)}")
        raise CheckFailed(
            f"{what}: the library's weights do not fit your module. Expected exactly these parameters: "
            f"{format_state_dict(expected)}; your module has: {format_state_dict(got) if got else 'none'}. "
            + "; ".join(problems)
            + "."
        )
    try:
        with torch.no_grad():
            call(learner_module.load_state_dict, expected, strict=True)
    except LearnerError as exc:
        raise LearnerError(f"{what}: loading the library's weights into your module failed: {exc}") from None


# --------------------------------------------------------------------------------------------------
# 3. Compare forward passes and gradients
# --------------------------------------------------------------------------------------------------


def _as_tuple(x: Any) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _describe_inputs(args: tuple) -> str:
    parts = []
    for a in args:
        if isinstance(a, torch.Tensor):
            dtype = str(a.dtype).replace("torch.", "")
            parts.append(f"{_fmt_shape(a.shape)}" + ("" if a.dtype == torch.float32 else f" {dtype}"))
        else:
            parts.append(repr(a)[:40])
    return ", ".join(parts)


def _leaf_copies(args: tuple) -> tuple:
    """Fresh copies of the inputs; floating-point tensors require grad so their gradients can be compared."""
    out = []
    for a in args:
        if isinstance(a, torch.Tensor):
            a = a.detach().clone()
            if a.is_floating_point():
                a.requires_grad_(True)
        out.append(a)
    return tuple(out)


def _grad_atol(expected: torch.Tensor, atol: float) -> float:
    # Gradients sum over the batch and the projection: scale the tolerance with their size.
    return atol * max(1.0, float(expected.detach().abs().max()) if expected.numel() else 1.0)


def expect_same_forward(
    learner_module: nn.Module,
    reference_module: nn.Module,
    inputs: Sequence[Any],
    what: str,
    forward: Callable[..., torch.Tensor] | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    check_grads: bool = True,
    train: bool = False,
    seed: int = 0,
    diagnose: Callable[..., dict[str, torch.Tensor]] | None = None,
) -> None:
    """Run both modules on every input; outputs (and gradients) must match the reference's.

    ``inputs``: a list whose items are one tensor or a tuple of positional arguments.
    ``forward(module, *args) -> tensor`` replaces ``module(*args)`` when the call is not plain.
    Both modules run in eval mode (``train=True``: train mode; only for modules without randomness);
    the learner's module gets its mode back afterwards. With ``check_grads``, the scalar
    ``(output * R).sum()`` for a fixed random ``R`` is differentiated with respect to every
    floating-point input and every parameter of both modules, and the gradients are compared by
    parameter name: a gradient that differs or is missing is reported with the parameter's name.
    The inputs must not be changed in place. ``diagnose(*args) -> {explanation: output}`` names a
    known mistake when the learner's output equals that mistake's output on the same input.
    Raises :class:`CheckFailed`; learner exceptions go through :func:`~mmllm_course.grading.core.call`.
    """
    run = forward if forward is not None else (lambda module, *a: module(*a))
    was_training = learner_module.training
    try:
        learner_module.train(train)
        reference_module.train(train)
        with torch.enable_grad():
            for i, item in enumerate(inputs):
                args = _as_tuple(item)
                case = f"{what} on input {_describe_inputs(args)}"
                ref_args = _leaf_copies(args)
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed + i)
                    expected = run(reference_module, *ref_args)
                my_args = _leaf_copies(args)
                originals = [a.detach().clone() if isinstance(a, torch.Tensor) else None for a in my_args]
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed + i)
                    got = call(run, learner_module, *my_args)
                try:
                    expect_tensor(got, expected, case, atol=atol, rtol=rtol)
                except CheckFailed as exc:
                    if diagnose is not None:
                        with torch.no_grad():
                            mistakes = diagnose(*_as_tuple(item))
                        for explanation, wrong in mistakes.items():
                            if same_values(got, wrong, atol=atol, rtol=rtol):
                                raise CheckFailed(f"{exc}. Your output equals {explanation}.") from None
                    raise
                for a, o in zip(my_args, originals):
                    if o is not None and not torch.equal(a.detach(), o):
                        raise CheckFailed(f"{case}: your module changed its input in place; leave the input as it was")
                if check_grads:
                    _expect_same_grads(learner_module, reference_module, got, expected, my_args, ref_args, case, atol, rtol, seed + i)
    finally:
        learner_module.train(was_training)


def _expect_same_grads(
    learner_module: nn.Module,
    reference_module: nn.Module,
    got: torch.Tensor,
    expected: torch.Tensor,
    my_args: tuple,
    ref_args: tuple,
    case: str,
    atol: float,
    rtol: float,
    seed: int,
) -> None:
    ref_params = dict(reference_module.named_parameters())
    my_params = dict(learner_module.named_parameters())
    my_buffers = dict(learner_module.named_buffers())
    for name, p in ref_params.items():
        if p.requires_grad and name not in my_params:
            kind = "a buffer" if name in my_buffers else "not a parameter"
            raise CheckFailed(f"{case}: `{name}` is {kind} in your module, so it would never be trained; make it an nn.Parameter")
        if p.requires_grad and not my_params[name].requires_grad:
            raise CheckFailed(f"{case}: your parameter `{name}` has requires_grad=False, so it would never be trained")
    projection = torch.randn(expected.shape, generator=torch.Generator().manual_seed(1000 + seed), dtype=torch.float64)
    targets = [(f"the input #{j}" if len(ref_args) > 1 else "the input", j) for j, a in enumerate(ref_args)
               if isinstance(a, torch.Tensor) and a.requires_grad]
    names = [n for n, p in ref_params.items() if p.requires_grad]
    ref_wrt = [ref_args[j] for _, j in targets] + [ref_params[n] for n in names]
    ref_loss = (expected * projection.to(expected.dtype)).sum()
    ref_grads = torch.autograd.grad(ref_loss, ref_wrt, allow_unused=True)
    if not got.requires_grad:
        raise CheckFailed(
            f"{case}: your output is cut off from the computation graph (no gradient reaches the parameters or the "
            f"input): look for torch.no_grad(), .detach(), .item() or .data in your forward."
        )
    my_wrt = [my_args[j] for _, j in targets] + [my_params[n] for n in names]
    my_loss = (got * projection.to(got.dtype)).sum()
    try:
        my_grads = torch.autograd.grad(my_loss, my_wrt, allow_unused=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckFailed(f"{case}: backpropagating through your module failed ({first[:200]})") from None
    labels = [label for label, _ in targets] + [f"parameter `{n}`" for n in names]
    for label, mine, ref, wrt in zip(labels, my_grads, ref_grads, ref_wrt):
        ref = torch.zeros_like(wrt) if ref is None else ref
        if mine is None:
            if ref.abs().max() > 0:
                raise CheckFailed(
                    f"{case}: no gradient reaches {label} in your module (the library's gets one): it is unused in "
                    f"your forward, or its path is detached (.detach(), torch.no_grad(), .data)."
                )
            continue
        try:
            expect_tensor(mine, ref, f"the gradient with respect to {label}", atol=_grad_atol(ref, atol), rtol=rtol)
        except CheckFailed as exc:
            raise CheckFailed(
                f"{case}: the outputs match but the gradients do not. {exc} (gradients of (output * a fixed random "
                f"tensor).sum(); a detached branch or a missing term changes them)."
            ) from None


# --------------------------------------------------------------------------------------------------
# Train tier: evaluate what the learner trained
# --------------------------------------------------------------------------------------------------


def predict_logits(
    model: Any,
    inputs: torch.Tensor,
    what: str,
    num_classes: int,
    forward: Callable[..., Any] | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """The learner's classifier on ``inputs`` in batches, in eval mode under ``no_grad``: logits (n, num_classes).

    ``model`` is an ``nn.Module`` (its train/eval mode is restored afterwards; the inputs go to the
    device of its first parameter) or any callable; ``forward(model, x)`` replaces ``model(x)``.
    Raises :class:`CheckFailed` when the output is not a finite float tensor of shape (batch, num_classes).
    """
    run = forward if forward is not None else (lambda m, x: m(x))
    is_module = isinstance(model, nn.Module)
    was_training = model.training if is_module else False
    device = next((p.device for p in model.parameters()), None) if is_module else None
    out = []
    try:
        if is_module:
            model.eval()
        with torch.no_grad():
            for start in range(0, inputs.shape[0], batch_size):
                x = inputs[start : start + batch_size]
                logits = call(run, model, x if device is None else x.to(device))
                if logits is None:
                    raise CheckFailed(f"{what} returned None for a batch of shape {_fmt_shape(x.shape)}: did you forget `return`?")
                if isinstance(logits, (tuple, list)) or not isinstance(logits, torch.Tensor):
                    raise CheckFailed(
                        f"{what} returned a {type(logits).__name__} for a batch of shape {_fmt_shape(x.shape)}; "
                        f"expected one tensor of logits (B, {num_classes})"
                    )
                if tuple(logits.shape) != (x.shape[0], num_classes):
                    raise CheckFailed(
                        f"{what} returned shape {_fmt_shape(logits.shape)} for a batch of shape {_fmt_shape(x.shape)}; "
                        f"expected logits (B, {num_classes}) = ({x.shape[0]}, {num_classes})"
                    )
                if not logits.is_floating_point() or not torch.isfinite(logits).all():
                    raise CheckFailed(f"{what} returned non-finite or non-float logits (dtype {logits.dtype})")
                out.append(logits.detach().cpu().float())
    finally:
        if is_module:
            model.train(was_training)
    return torch.cat(out)
