"""Helpers checkers use to compare a learner's output with the reference and explain the difference."""

from __future__ import annotations

from typing import Any

import torch

from mmllm_course.grading.core import CheckFailed, a_or_an


def _fmt_shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape))  # (2, 3), and (1,) for one axis


def expect_tensor(
    got: Any,
    expected: torch.Tensor,
    what: str,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    check_dtype: bool = True,
) -> None:
    """Raise :class:`CheckFailed` saying how ``got`` differs from ``expected`` (type, shape, dtype, values).

    ``what`` names the case in the message, e.g. ``"patchify(images (2, 3, 8, 8), patch_size=4)"``.
    """
    if got is None:
        raise CheckFailed(f"{what} returned None: did you forget `return`?")
    if not isinstance(got, torch.Tensor):
        raise CheckFailed(f"{what} returned {a_or_an(type(got).__name__)}; expected a torch.Tensor of shape {_fmt_shape(expected)}")
    if got.shape != expected.shape:
        raise CheckFailed(f"{what} returned shape {_fmt_shape(got)}; expected {_fmt_shape(expected)}")
    if check_dtype and got.dtype != expected.dtype:
        raise CheckFailed(f"{what} returned dtype {got.dtype}; expected {expected.dtype}")
    # Compare on the CPU: a learner may well have moved the result to the GPU.
    try:
        g = got.detach().cpu().to(torch.float64)
    except (RuntimeError, NotImplementedError) as exc:
        raise CheckFailed(f"{what} returned a tensor on device {got.device} whose values cannot be read ({exc})") from None
    e = expected.detach().cpu().to(torch.float64)
    if not torch.isfinite(g).all() and torch.isfinite(e).all():
        raise CheckFailed(f"{what} returned NaN or inf values")
    if not torch.allclose(g, e, atol=atol, rtol=rtol):
        diff = (g - e).abs()
        idx = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape))
        raise CheckFailed(
            f"{what}: values differ (max abs difference {diff.max().item():.3g} at index {idx}: "
            f"got {g[idx].item():.5g}, expected {e[idx].item():.5g})"
        )


def expect_close_scalar(got: Any, expected: float, what: str, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Like :func:`expect_tensor` for a number (a Python float or a 0-d tensor)."""
    if got is None:
        raise CheckFailed(f"{what} returned None: did you forget `return`?")
    if isinstance(got, torch.Tensor):
        if got.numel() != 1:
            raise CheckFailed(f"{what} returned a tensor of shape {_fmt_shape(got)}; expected a single number")
        got = got.item()
    if not isinstance(got, (int, float)):
        raise CheckFailed(f"{what} returned {a_or_an(type(got).__name__)}; expected a number")
    if abs(got - expected) > atol + rtol * abs(expected):
        raise CheckFailed(f"{what} returned {got:.6g}; expected {expected:.6g}")


def same_values(a: Any, b: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """True when ``a`` is a tensor of ``b``'s shape holding (nearly) the same values."""
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.shape != b.shape:
        return False
    try:
        return torch.allclose(a.detach().cpu().double(), b.detach().cpu().double(), atol=atol, rtol=rtol)
    except (RuntimeError, NotImplementedError):
        return False


def same_values_nan_as_zero(a: Any, b: torch.Tensor) -> bool:
    """:func:`same_values`, NaN read as 0 on both sides (a fully masked row gives NaN from a softmax of -inf)."""
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.shape != b.shape:
        return False
    try:
        a = a.detach().cpu().double().nan_to_num(nan=0.0)
    except (RuntimeError, NotImplementedError):
        return False
    return same_values(a, b.detach().cpu().double().nan_to_num(nan=0.0))


def expect_tensor_or_diagnose(got: Any, expected: torch.Tensor, what: str, mistakes: dict[str, torch.Tensor]) -> None:
    """Like :func:`expect_tensor`; when the values are wrong, name the known mistake they match.

    ``mistakes`` maps an explanation ("softmax over the wrong axis; ...") to the output that mistake
    produces on the same input. A mistake whose output equals the right one on this input is never
    named; NaN counts as 0 on both sides.
    """
    try:
        expect_tensor(got, expected, what)
    except CheckFailed as exc:
        for explanation, wrong in mistakes.items():
            if not same_values(wrong, expected) and same_values_nan_as_zero(got, wrong):
                raise CheckFailed(f"{exc}. Your output equals {explanation}.") from None
        raise


def record_distinct_mistakes(expected: torch.Tensor, mistakes: dict[str, torch.Tensor], seen: set[str]) -> None:
    """Add to ``seen`` the named mistakes whose output differs from ``expected`` on this case.

    A check calls it on every case and raises if some mistake was never told apart: its cases would
    then pass that mistake.
    """
    for explanation, wrong in mistakes.items():
        if not same_values(wrong.double().nan_to_num(0.0), expected.double()):
            seen.add(explanation)
