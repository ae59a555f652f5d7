"""Input checks shared by every public entry point of the library.

The rule: bad input raises a ``ValueError`` (a ``TypeError`` for a value of the wrong type) that
names what was expected and what came, before any arithmetic runs, so the message points at the
caller's mistake instead of a line deep inside torch.

**dtype rule** (the rule ``transformers``' ``ViTModel`` and ``CLIPModel`` follow for
``pixel_values``): a module with parameters casts floating-point inputs to the dtype of its
parameters, so a float64 or float16 batch runs through a float32 model and comes out float32.
Integers where floats are expected (uint8 images) are refused rather than guessed at; token ids of
any integer dtype are accepted. Functions without parameters (attention, losses) need their
floating-point inputs to share one dtype and raise a ``TypeError`` naming both otherwise.

**Masks**: boolean, True = keep; or integer (or float, where a mask cannot be additive) holding
only 0 and 1, 1 = keep (what a tokenizer returns as ``attention_mask``). Anything else is refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn


class InputTypeError(TypeError, ValueError):
    """A value of the wrong type (a list or numpy array where a tensor is needed, a float dtype for ids...).

    A ``TypeError``, and also a ``ValueError`` so that ``except ValueError`` written against the
    library's earlier behaviour keeps working (numpy's ``AxisError`` is likewise both a
    ``ValueError`` and an ``IndexError``).
    """


def describe(value: Any) -> str:
    """A short description of what came: ``numpy.ndarray of shape (2, 3)``, ``list``, ``None``, ``str 'gpu'``."""
    if value is None:
        return "None"
    if isinstance(value, np.ndarray):
        return f"a numpy.ndarray of shape {value.shape} and dtype {value.dtype}"
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, str):
        return f"the str {value!r}"
    if isinstance(value, (bool, int, float)):
        return f"{type(value).__name__} {value!r}"
    return f"a {type(value).__module__}.{type(value).__qualname__}" if type(value).__module__ != "builtins" else f"a {type(value).__name__}"


def check_tensor(
    x: Any,
    name: str,
    layout: str | None = None,
    ndim: int | Sequence[int] | None = None,
    kind: str | None = None,
) -> torch.Tensor:
    """``x`` itself when it is a tensor with ``ndim`` dims of the right ``kind``; raise otherwise.

    ``layout`` is the shape in words for the message, e.g. ``"(B, N, D)"``. ``kind``: ``"float"``
    (floating point), ``"int"`` (integers, not bool) or None (any).
    """
    where = f" of shape {layout}" if layout else ""
    if not isinstance(x, torch.Tensor):
        hint = ""
        if isinstance(x, (np.ndarray, list, tuple)):
            hint = " (convert it first, e.g. torch.as_tensor(x))"
        raise InputTypeError(f"{name} must be a torch.Tensor{where}, got {describe(x)}{hint}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.dim() not in allowed:
            want = " or ".join(str(d) for d in allowed)
            raise ValueError(f"{name} must have {want} dims{' ' + layout if layout else ''}, got {x.dim()} dims with shape {tuple(x.shape)}")
    if kind == "float" and not x.is_floating_point():
        raise InputTypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if kind == "int" and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        raise InputTypeError(f"{name} must hold integers (e.g. torch.long), got dtype {x.dtype}")
    return x


def check_int(value: Any, name: str, minimum: int | None = 1) -> int:
    """``value`` as an ``int`` when it is an integer (not a bool) >= ``minimum``; raise otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputTypeError(f"{name} must be an integer, got {describe(value)}")
    if minimum is not None and value < minimum:
        what = {1: "a positive integer", 0: "a non-negative integer"}.get(minimum, f"an integer >= {minimum}")
        raise ValueError(f"{name} must be {what}, got {value}")
    return int(value)


def check_index(i: Any, length: int, what: str) -> int:
    """A sequence index: an int (numpy ints too) in ``[-length, length)``; IndexError outside, as Python's protocol wants."""
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
        raise InputTypeError(f"index must be an integer, got {describe(i)}")
    if not -length <= i < length:
        raise IndexError(f"index {i} out of range for {length} {what}")
    return int(i)


def check_number(
    value: Any, name: str, low: float | None = None, high: float | None = None, low_open: bool = False, high_open: bool = False
) -> float:
    """``value`` as a ``float`` when it is a finite real number in the interval; raise otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputTypeError(f"{name} must be a number, got {describe(value)}")
    value = float(value)
    bad = not math.isfinite(value)
    bad = bad or (low is not None and (value <= low if low_open else value < low))
    bad = bad or (high is not None and (value >= high if high_open else value > high))
    if bad:
        lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
        raise ValueError(f"{name} must be a finite number in {lo}, {hi}, got {value!r}")
    return value


def check_dropout(value: Any, name: str = "dropout") -> float:
    """A probability of dropping, in [0, 1)."""
    return check_number(value, name, 0.0, 1.0, high_open=True)


def check_choice(value: Any, name: str, choices: Sequence[Any]) -> Any:
    """``value`` when it is one of ``choices`` (a ValueError listing them otherwise)."""
    if isinstance(value, (list, dict, set)) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_str_sequence(values: Any, name: str, allow_empty: bool = True) -> list[str]:
    """A list of strings from a list/tuple/iterable of strings; one bare ``str`` is refused (it would split into characters)."""
    if isinstance(values, str):
        raise InputTypeError(
            f"{name} must be a list of strings, got the single str {values!r}: wrap it in a list, e.g. [{values!r}]"
        )
    if not isinstance(values, Iterable) or isinstance(values, (bytes, dict)):
        raise InputTypeError(f"{name} must be a list of strings, got {describe(values)}")
    values = list(values)
    bad = [v for v in values if not isinstance(v, str)]
    if bad:
        raise InputTypeError(f"{name} must hold only strings, got {describe(bad[0])} among them")
    if not allow_empty and not values:
        raise ValueError(f"{name} must hold at least one string, got an empty list")
    return values


def keep_mask(mask: Any, name: str, additive_ok: bool = False) -> torch.Tensor:
    """A mask as a boolean tensor, True = keep (or, with ``additive_ok``, a float mask unchanged).

    Accepts bool masks; integer masks holding only 0 and 1 (1 = keep, a tokenizer's
    ``attention_mask``); float masks holding only 0 and 1 when ``additive_ok`` is False. Anything
    else raises: an integer mask with other values is most likely a bug, not a mask.
    """
    check_tensor(mask, name)
    if mask.dtype == torch.bool:
        return mask
    if mask.is_complex():
        raise InputTypeError(f"{name} must be a boolean or 0/1 integer mask, got dtype {mask.dtype}")
    if mask.is_floating_point() and additive_ok:
        return mask
    if mask.numel() and not bool(((mask == 0) | (mask == 1)).all()):
        values = torch.unique(mask.detach().flatten().cpu())[:6].tolist()
        extra = " (or a float mask, which is added to the scores)" if additive_ok else ""
        raise ValueError(
            f"{name} must be boolean (True = keep) or hold only 0 and 1 (1 = keep){extra}; "
            f"got dtype {mask.dtype} with values {values}"
        )
    return mask != 0


def check_same_float_dtype(name_to_tensor: dict[str, torch.Tensor]) -> torch.dtype:
    """The one floating dtype shared by the tensors; a TypeError naming each dtype otherwise."""
    dtypes = {name: t.dtype for name, t in name_to_tensor.items()}
    for name, t in name_to_tensor.items():
        if not t.is_floating_point():
            raise InputTypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"{n} {d}" for n, d in dtypes.items())
        raise InputTypeError(f"expected one floating dtype for {', '.join(dtypes)}, got {listed}: cast them to one dtype first")
    return next(iter(dtypes.values()))


def param_dtype(module: nn.Module) -> torch.dtype | None:
    """The dtype of a module's first floating-point parameter (None without any)."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


def to_module_dtype(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """The dtype rule: a floating-point ``x`` cast to the module's parameter dtype (no copy when equal)."""
    dtype = param_dtype(module)
    if dtype is not None and x.is_floating_point() and x.dtype != dtype:
        return x.to(dtype)
    return x


def check_module(value: Any, name: str, cls: type) -> Any:
    """``value`` when it is an instance of ``cls``; a TypeError naming what came otherwise."""
    if not isinstance(value, cls):
        raise InputTypeError(f"{name} must be a {cls.__name__}, got {describe(value)}")
    return value


def padding_mask(mask: Any, name: str, shape: tuple[int, int] | None = None) -> torch.Tensor:
    """A (B, N) padding mask as a boolean tensor, True = real token: bool, or integer holding only 0 and 1.

    Float masks are refused (a float mask reads as additive elsewhere in the library); ``shape``,
    when given, is the (B, N) the mask must have.
    """
    if shape is not None:
        check_tensor(mask, name, f"(B, N) = {shape}")
        if tuple(mask.shape) != tuple(shape):
            raise ValueError(f"{name} must be (B, N) = {tuple(shape)} with True/1 = real token, got shape {tuple(mask.shape)}")
    else:
        check_tensor(mask, name, "(B, N)", ndim=2)
    if mask.is_floating_point():
        raise InputTypeError(f"{name} must be bool or integer (True/1 = real, False/0 = padding), got dtype {mask.dtype}")
    return keep_mask(mask, name)
