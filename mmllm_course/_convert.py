"""Shared plumbing of every ``*_from_transformers`` converter: encoders and bridges (not public API).

A converter must never return a model with weights it did not load. So each one
  1. checks the checkpoint's ``model_type`` (a folder's ``config.json`` is read BEFORE anything is
     loaded, so a saved CLIPModel folder is never opened as a freshly initialised ViTModel), and
     fails on a weight the saved folder lacked or had in excess (``from_pretrained``'s loading info):
     :func:`resolve_hf_model`;
  2. maps names with a plan (ours <- theirs) and fails when a weight it needs is missing or a
     source weight is left unused (a few heads deliberately not ported are named and skipped):
     :func:`apply_plan`;
  3. compares names and shapes before ``load_state_dict``: :func:`load_exact`.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from mmllm_course._checks import InputTypeError, check_dropout, describe

# Every model_type this library converts, and the function that converts it.
SUPPORTED_MODEL_TYPES: dict[str, str] = {
    "vit": "vit_from_transformers",
    "clip": "clip_from_transformers (one tower: clip_vision_from_transformers, clip_text_from_transformers)",
    "clip_vision_model": "clip_vision_from_transformers",
    "clip_text_model": "clip_text_from_transformers",
    "llava": "mlp_bridge_from_transformers",
    "blip-2": "qformer_bridge_from_transformers",
    "idefics2": "perceiver_resampler_bridge_from_transformers",
    "idefics2_perceiver": "perceiver_resampler_bridge_from_transformers",
    "idefics3": "token_merge_bridge_from_transformers",
    "smolvlm": "token_merge_bridge_from_transformers",
    "whisper": "whisper_encoder_from_transformers",
    "hubert": "hubert_feature_encoder_from_transformers",
}

# transformers' activation names -> ours (mmllm_course.nn.transformer.ACTIVATIONS)
HF_ACTIVATIONS = {"gelu": "gelu", "quick_gelu": "quick_gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}


def activation_from_hf(hidden_act: object, name: str = "hidden_act", converter: str | None = None) -> str:
    """Our activation name for a ``transformers`` one; a ValueError listing the supported ones otherwise."""
    if not isinstance(hidden_act, str) or hidden_act not in HF_ACTIVATIONS:
        who = f"{converter}: " if converter else ""
        raise ValueError(f"{who}unsupported {name} {hidden_act!r}: expected one of {sorted(HF_ACTIVATIONS)}")
    return HF_ACTIVATIONS[hidden_act]


def dropout_from_hf(value: object, name: str) -> float:
    """A ``transformers`` config's dropout probability (None counts as 0), checked to lie in [0, 1)."""
    return check_dropout(float(value or 0.0), name)


def refuse_model_type(
    model_type: object, converter: str, accepted: dict[str, str], what: str, module_classes: tuple[str, ...] = ()
) -> None:
    """Raise a ValueError naming what came and every model_type the library converts, unless ``model_type`` is accepted."""
    if model_type in accepted:
        return
    supported = "; ".join(f"{t!r} -> {fn}" for t, fn in SUPPORTED_MODEL_TYPES.items())
    modules = f" (or a bare {' / '.join(module_classes)})" if module_classes else ""
    raise ValueError(
        f"{converter} converts model_type {sorted(accepted)}{modules}, got {what} with model_type {model_type!r}. "
        f"This library converts only: {supported}. Other architectures (DeiT, DINOv2, SigLIP, ...) differ "
        "in layers or weights and are not supported."
    )


def folder_model_type(path: str, converter: str | None = None) -> str | None:
    """The ``model_type`` of a saved folder's ``config.json`` (or of a hub name, via ``AutoConfig``), read before loading."""
    who = f"{converter}: " if converter else ""
    folder = Path(path)
    if folder.is_dir():
        config_file = folder / "config.json"
        if not config_file.is_file():
            raise ValueError(f"{who}{path!r} is a folder without a config.json: expected a folder written by save_pretrained")
        try:
            return json.loads(config_file.read_text()).get("model_type")
        except (json.JSONDecodeError, AttributeError) as err:
            raise ValueError(f"{who}{config_file} is not a valid transformers config: {err}") from err
    if os.path.isabs(path) or path.startswith((".", "~")) or folder.exists():
        raise ValueError(f"{who}{path!r} is not a folder: expected a folder written by save_pretrained (or a hub model name)")
    import transformers  # lazy: importing transformers takes seconds

    try:  # a hub name: transformers reads its config from the local cache or the network
        return transformers.AutoConfig.from_pretrained(path).model_type
    except (OSError, ValueError) as err:
        raise ValueError(
            f"{who}could not read a transformers checkpoint from {path!r}: it is not a local folder, and transformers "
            f"could not load a config by that name (offline, or no such model). Original error: {err}"
        ) from err


def load_class(name: str) -> type:
    """``"LlavaForConditionalGeneration"`` (exported by ``transformers``) or a dotted path to a class."""
    module, _, cls = name.rpartition(".")
    return getattr(importlib.import_module(module or "transformers"), cls)


def resolve_hf_model(
    model_or_path: object,
    converter: str,
    accepted: dict[str, str],
    ignore: tuple[str, ...] = (),
    only: dict[str, tuple[str, ...]] | None = None,
    module_classes: tuple[str, ...] = (),
) -> nn.Module:
    """The ``transformers`` object to convert: an object is checked, a folder (or hub name) checked then loaded.

    ``accepted`` maps each allowed ``model_type`` to the ``transformers`` class that loads a folder of
    that type (a name exported by ``transformers`` or a dotted path). ``module_classes`` names bare
    modules without a config that are accepted as they are (e.g. ``LlavaMultiModalProjector``).
    Loading reports missing, unexpected and mismatched weights; any of them raises instead of leaving
    random weights behind, except names starting with ``ignore`` (heads we do not port) and, for a
    ``model_type`` in ``only``, names that contain none of its substrings (weights of the rest of a
    large model that the converter does not read, e.g. a VLM's language model).
    """
    if isinstance(model_or_path, (str, os.PathLike)):
        path = os.fspath(model_or_path)
        model_type = folder_model_type(path, converter)
        refuse_model_type(model_type, converter, accepted, f"the checkpoint {path!r}", module_classes)
        try:
            hf, info = load_class(accepted[model_type]).from_pretrained(path, output_loading_info=True)
        except OSError as err:  # no weights file, unreadable weights...
            raise ValueError(f"{converter}: could not load the checkpoint {path!r}: {err}") from err
        keep = (only or {}).get(model_type)

        def counts(key: object) -> bool:
            name = str(key[0] if isinstance(key, tuple) else key)
            return not name.startswith(ignore) and (keep is None or any(part in name for part in keep))

        problems = {kind: sorted(k for k in info.get(kind, ()) if counts(k))
                    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")}
        if any(problems.values()):
            listed = "; ".join(f"{kind.replace('_', ' ')}: {keys[:12]}" for kind, keys in problems.items() if keys)
            raise ValueError(f"the checkpoint {path!r} does not hold exactly the weights of a {accepted[model_type]}: {listed}")
        return hf
    if not isinstance(model_or_path, nn.Module):
        modules = f", or a bare {' / '.join(module_classes)}" if module_classes else ""
        raise InputTypeError(
            f"{converter} expects a transformers model (model_type {sorted(accepted)}{modules}) or a folder path "
            f"(a folder saved with save_pretrained), got {describe(model_or_path)}"
        )
    if type(model_or_path).__name__ in module_classes:
        return model_or_path
    model_type = getattr(getattr(model_or_path, "config", None), "model_type", None)
    refuse_model_type(model_type, converter, accepted, f"a {type(model_or_path).__name__}", module_classes)
    return model_or_path


# A plan maps each of our names to (their name, transform or None); an optional entry also has a default.
Plan = dict[str, tuple]


def apply_plan(sd: dict[str, torch.Tensor], plan: Plan, source: str, ignore: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Our state dict from theirs; a ValueError listing every missing weight and every source weight left unused."""
    missing = [theirs for theirs, *rest in plan.values() if theirs not in sd and len(rest) < 2]
    used = {theirs for theirs, *_ in plan.values()}
    unused = sorted(k for k in sd if k not in used and not k.startswith(ignore))
    if missing or unused:
        raise ValueError(
            f"cannot convert {source} exactly: missing weights {missing[:12]}{' ...' if len(missing) > 12 else ''}, "
            f"unused source weights {unused[:12]}{' ...' if len(unused) > 12 else ''}"
        )
    new = {}
    for ours, (theirs, transform, *default) in plan.items():
        value = sd[theirs] if theirs in sd else default[0]()
        new[ours] = transform(value) if transform is not None else value
    return new


def load_exact(ours: nn.Module, new: dict[str, torch.Tensor], source: str) -> nn.Module:
    """``load_state_dict`` after comparing names and shapes, with a ValueError that lists every difference."""
    expected = ours.state_dict()
    missing, extra = sorted(set(expected) - set(new)), sorted(set(new) - set(expected))
    shapes = [f"{k}: ours {tuple(expected[k].shape)}, theirs {tuple(new[k].shape)}"
              for k in expected if k in new and expected[k].shape != new[k].shape]
    if missing or extra or shapes:
        raise ValueError(f"cannot load {source} into {type(ours).__name__}: missing {missing[:12]}, extra {extra[:12]}, shapes {shapes[:6]}")
    ours.load_state_dict(new)
    return ours
