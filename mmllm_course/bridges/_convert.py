"""Shared plumbing of the bridges' ``*_from_transformers`` converters (not part of the public API).

A converter takes a live ``transformers`` object or a saved folder, checks that it is the kind of
model it expects (``model_type``), picks the sub-module that is the bridge, and maps its live
``state_dict()`` onto ours, failing on a weight it needs that is not there (missing) and on a weight
of the bridge it did not use (unused): a silent mismatch would give a bridge that runs and computes
something else.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn


def resolve_reference(
    model_or_path: object, load_classes: dict[str, str], module_classes: tuple[str, ...], what: str
) -> tuple[nn.Module, list[str]]:
    """Return ``(hf_object, problems)``: a ``transformers`` object that holds the bridge.

    ``load_classes`` maps each accepted ``model_type`` to the ``transformers`` class that loads a
    folder of that type; ``module_classes`` names bare modules that are accepted as they are (they
    have no config, e.g. ``LlavaMultiModalProjector``). A folder of another ``model_type`` is refused
    before anything is loaded. ``problems`` lists the weights the folder lacked or had in excess
    (``from_pretrained``'s loading info) for the caller to filter to the bridge's own weights.
    """
    if isinstance(model_or_path, (str, os.PathLike)):
        path = os.fspath(model_or_path)
        model_type = _folder_model_type(path, what)
        if model_type not in load_classes:
            raise ValueError(
                f"{what}: {path!r} holds a checkpoint of model_type {model_type!r}; "
                f"expected one of {sorted(load_classes)}"
            )
        try:
            hf, info = _load_class(load_classes[model_type]).from_pretrained(path, output_loading_info=True)
        except OSError as err:  # no weights file, unreadable weights...
            raise ValueError(f"{what}: could not load the checkpoint {path!r}: {err}") from err
        problems = [f"missing {k}" for k in info.get("missing_keys", [])]
        problems += [f"unexpected {k}" for k in info.get("unexpected_keys", [])]
        problems += [f"mismatched {k[0] if isinstance(k, tuple) else k}" for k in info.get("mismatched_keys", [])]
        return hf, problems
    if not isinstance(model_or_path, nn.Module):
        raise TypeError(
            f"{what}: expected a transformers model ({', '.join(sorted({c.rpartition('.')[2] for c in load_classes.values()}))}"
            f"{', ' if module_classes else ''}{', '.join(module_classes)}) or a folder path, "
            f"got {type(model_or_path).__name__}"
        )
    if type(model_or_path).__name__ in module_classes:
        return model_or_path, []
    model_type = getattr(getattr(model_or_path, "config", None), "model_type", None)
    if model_type not in load_classes:
        raise ValueError(
            f"{what}: got a {type(model_or_path).__name__} (model_type {model_type!r}); expected model_type "
            f"one of {sorted(load_classes)} or a module of class {', '.join(module_classes) or '-'}"
        )
    return model_or_path, []


def _folder_model_type(path: str, what: str) -> str | None:
    """The ``model_type`` in a saved folder's ``config.json`` (or of a hub name, via ``AutoConfig``), read before loading."""
    folder = Path(path)
    if folder.is_dir():
        config_file = folder / "config.json"
        if not config_file.is_file():
            raise ValueError(f"{what}: {path!r} is a folder without a config.json: expected a folder written by save_pretrained")
        try:
            config = json.loads(config_file.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{what}: {config_file} is not a valid transformers config: {err}") from err
        return config.get("model_type") if isinstance(config, dict) else None
    if os.path.isabs(path) or path.startswith((".", "~")) or folder.exists():
        raise ValueError(f"{what}: {path!r} is not a folder: expected a folder written by save_pretrained (or a hub model name)")
    import transformers  # lazy: importing transformers takes seconds

    try:  # a hub name: transformers reads its config from the local cache or the network
        return transformers.AutoConfig.from_pretrained(path).model_type
    except (OSError, ValueError) as err:
        raise ValueError(
            f"{what}: could not read a checkpoint from {path!r}: not a local folder, and transformers could not "
            f"load a config by that name (offline, or no such model). Original error: {err}"
        ) from err


def _load_class(name: str) -> type:
    """``"LlavaForConditionalGeneration"`` (exported by ``transformers``) or a dotted path to a class."""
    import importlib

    module, _, cls = name.rpartition(".")
    return getattr(importlib.import_module(module or "transformers"), cls)


def check_loading_problems(problems: list[str], prefixes: tuple[str, ...] | None, what: str) -> None:
    """Raise if the saved folder lacked, or had in excess, a weight under one of the bridge's ``prefixes``
    (None: every weight of the checkpoint is the bridge's)."""
    ours = [p for p in problems if prefixes is None or any(prefix in p for prefix in prefixes)]
    if ours:
        raise ValueError(f"{what}: the checkpoint does not match the bridge's weights: {ours}")


class WeightMap:
    """Hands out a reference's weights by name, then says which of them were never used.

    ``take(name)`` fails with a ValueError naming the missing weight; ``finish()`` fails if any weight
    of the reference was not taken (a layer we do not know, e.g. a third projector layer).
    """

    def __init__(self, state: dict[str, torch.Tensor], what: str):
        self.state, self.what, self.used = dict(state), what, set()

    def __contains__(self, name: str) -> bool:
        return name in self.state

    def take(self, name: str) -> torch.Tensor:
        if name not in self.state:
            raise ValueError(f"{self.what}: weight {name!r} is missing from the reference (has {sorted(self.state)[:8]}...)")
        self.used.add(name)
        return self.state[name]

    def finish(self) -> None:
        unused = sorted(set(self.state) - self.used)
        if unused:
            raise ValueError(f"{self.what}: the reference has weights this bridge does not use: {unused}")
