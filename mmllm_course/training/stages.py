"""What each training stage trains: freezing per stage, LoRA adapters through ``peft``, and their parameter counts.

A multimodal LLM is trained in stages (LLaVA, arXiv:2304.08485), each unfreezing a different part:

    stage       encoder   bridge    LM                               data
    "stage1"    frozen    trained   frozen                           image-caption pairs (alignment)
    "stage2"    frozen    trained   frozen, LoRA adapters trained    instructions: question -> answer
    "full"      frozen    trained   every weight trained             the same instructions

**LoRA** (Hu et al. 2021, arXiv:2106.09685) keeps a pretrained weight ``W`` (d_out, d_in) frozen and
learns a low-rank change beside it::

    y = W x + (alpha / r) * B (A x)        A: (r, d_in), B: (d_out, r), r << min(d_in, d_out)

``B`` starts at zero, so training starts from the unchanged LM, and each adapted matrix costs
``r * (d_in + d_out)`` trainable numbers instead of ``d_in * d_out``. Afterwards ``W + (alpha/r) B A``
can be **merged** into ``W``: the merged LM is as fast as the original and gives the same outputs.
:func:`add_lora` puts adapters on the named linear layers with ``peft``; :func:`lora_parameter_count`
is the count written out by hand (it must equal what ``peft`` creates).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from mmllm_course._checks import InputTypeError, check_choice, check_int, check_number, describe

STAGES: tuple[str, ...] = ("stage1", "stage2", "full")
# LLaMA's attention projections: what LoRA adapts by default (the paper adapts W_q and W_v; we take all four).
LLAMA_ATTENTION: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


def _linear_shapes(lm: nn.Module) -> dict[str, list[tuple[str, int, int]]]:
    """Leaf name ("q_proj") -> [(full name, d_in, d_out)] for every linear layer of ``lm`` (GPT-2's Conv1D too)."""
    out: dict[str, list[tuple[str, int, int]]] = {}
    for name, module in lm.named_modules():
        if "lora_" in name:
            continue
        if isinstance(module, nn.Linear):
            d_in, d_out = module.in_features, module.out_features
        elif type(module).__name__ == "Conv1D" and hasattr(module, "weight"):  # transformers' GPT-2: weight (in, out)
            d_in, d_out = module.weight.shape
        else:
            continue
        out.setdefault(name.rsplit(".", 1)[-1], []).append((name, int(d_in), int(d_out)))
    return out


def _check_targets(lm: nn.Module, targets: Sequence[str]) -> tuple[str, ...]:
    if isinstance(targets, str) or not isinstance(targets, Sequence) or not targets:
        raise InputTypeError(f"targets must be a non-empty sequence of module names such as {LLAMA_ATTENTION}, got {describe(targets)}")
    if not all(isinstance(t, str) for t in targets):
        raise InputTypeError(f"targets must be module names (str), got {list(targets)!r}")
    linears = _linear_shapes(lm)
    missing = [t for t in targets if t not in linears]
    if "lm_head" in targets:
        missing.append("lm_head")
    if missing:
        available = sorted(n for n in linears if n != "lm_head")
        raise ValueError(f"LoRA target module(s) {missing} not found among the LM's linear layers: expected names from {available}"
                         + (" (lm_head is the tied output layer: not a LoRA target here)" if "lm_head" in missing else ""))
    return tuple(dict.fromkeys(targets))


def _check_lm(lm: nn.Module) -> nn.Module:
    if not isinstance(lm, nn.Module) or not hasattr(lm, "get_input_embeddings"):
        raise InputTypeError(f"lm must be a transformers causal LM (e.g. LlamaForCausalLM), got {describe(lm)}")
    if is_lora(lm):
        raise ValueError("lm already has LoRA adapters (a peft model): pass the base LM, or keep the adapters you have")
    return lm


def is_lora(module: nn.Module) -> bool:
    """Whether ``module`` holds LoRA adapters (a ``peft`` model, or a model containing one)."""
    return any("lora_A" in name for name, _ in module.named_parameters())


def lora_parameter_count(lm: nn.Module, rank: int, targets: Sequence[str] = LLAMA_ATTENTION) -> int:
    """Trainable numbers LoRA of rank ``rank`` adds on the ``targets`` layers of ``lm``: sum of r * (d_in + d_out).

    Each adapted layer W (d_out, d_in) gets A (r, d_in) and B (d_out, r). A target name that is not
    a linear layer of ``lm`` raises a ``ValueError`` listing the names it has.
    """
    _check_lm(lm)
    rank = check_int(rank, "rank")
    targets = _check_targets(lm, targets)
    linears = _linear_shapes(lm)
    return sum(rank * (d_in + d_out) for t in targets for _, d_in, d_out in linears[t])


def add_lora(lm: nn.Module, rank: int = 8, targets: Sequence[str] = LLAMA_ATTENTION, alpha: float | None = None,
             dropout: float = 0.0, seed: int | None = 0, inplace: bool = False):
    """``lm`` with LoRA adapters of rank ``rank`` on its ``targets`` linear layers (a ``peft`` ``PeftModel``).

    Only the adapters are trainable (every weight of ``lm`` is frozen); ``B`` starts at zero, so the
    adapted LM's outputs equal ``lm``'s at first. ``alpha`` defaults to ``2 * rank`` (scale alpha/r
    = 2). ``seed`` seeds ``A``'s random initialisation. The adapters go on a copy of ``lm`` (``lm``
    is left as it was) unless ``inplace`` (peft then swaps ``lm``'s own layers for LoRA layers: no
    second copy of a large LM). :func:`merge_lora` folds the adapters back into plain weights.
    """
    import copy

    from peft import LoraConfig, get_peft_model

    _check_lm(lm)
    rank = check_int(rank, "rank")
    targets = _check_targets(lm, targets)
    alpha = 2.0 * rank if alpha is None else check_number(alpha, "alpha", 0.0, low_open=True)
    dropout = check_number(dropout, "dropout", 0.0, 1.0, high_open=True)
    if seed is not None:
        check_int(seed, "seed", minimum=0)
    if not isinstance(inplace, bool):
        raise InputTypeError(f"inplace must be a bool, got {describe(inplace)}")
    if not inplace:
        lm = copy.deepcopy(lm)
    fan_in_fan_out = type(lm).__name__.startswith("GPT2")
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=dropout, bias="none",
                        fan_in_fan_out=fan_in_fan_out)
    with torch.random.fork_rng():
        if seed is not None:
            torch.manual_seed(seed)
        model = get_peft_model(lm, config)
    return model.eval()


def merge_lora(lm: nn.Module) -> nn.Module:
    """The plain LM with every adapter folded into its weights: W <- W + (alpha / r) B A (``peft``'s ``merge_and_unload``).

    The merged LM has no extra layers and no trainable adapters, and gives the adapted LM's outputs
    (to float rounding). It is frozen and in eval mode.
    """
    from peft import PeftModel

    if not isinstance(lm, PeftModel):
        raise InputTypeError(f"lm must be a peft model with LoRA adapters (add_lora(...)), got {describe(lm)}")
    return lm.merge_and_unload().requires_grad_(False).eval()


def save_adapters(lm: nn.Module, folder: str) -> list[str]:
    """Write ``lm``'s LoRA adapters (``adapter_model.safetensors`` + ``adapter_config.json``) to ``folder``; returns the files.

    Only the adapters are written: kilobytes, where the LM itself ships separately.
    """
    from peft import PeftModel

    if not isinstance(lm, PeftModel):
        raise InputTypeError(f"lm must be a peft model with LoRA adapters (add_lora(...)), got {describe(lm)}")
    if not isinstance(folder, (str, os.PathLike)):
        raise InputTypeError(f"folder must be a str, got {describe(folder)}")
    lm.save_pretrained(os.fspath(folder))
    return sorted(os.listdir(folder))


def load_adapters(lm: nn.Module, folder: str, trainable: bool = False):
    """The base ``lm`` with the adapters saved in ``folder`` by :func:`save_adapters` (a ``PeftModel``)."""
    from peft import PeftModel

    _check_lm(lm)
    if not isinstance(folder, (str, os.PathLike)):
        raise InputTypeError(f"folder must be a str, got {describe(folder)}")
    if not os.path.isfile(os.path.join(folder, "adapter_config.json")):
        raise ValueError(f"no adapters in {os.fspath(folder)!r}: expected adapter_config.json there (save_adapters)")
    if not isinstance(trainable, bool):
        raise InputTypeError(f"trainable must be a bool, got {describe(trainable)}")
    model = PeftModel.from_pretrained(lm, os.fspath(folder), is_trainable=trainable)
    return model.eval()


def _parts(model: nn.Module) -> tuple[nn.Module | None, nn.Module, nn.Module]:
    for name in ("bridge", "lm"):
        if not isinstance(getattr(model, name, None), nn.Module):
            raise InputTypeError(f"model must be a multimodal model with .bridge and .lm (UnifiedEmbeddingMLLM...), "
                                 f"got {describe(model)} without .{name}")
    encoder = getattr(model, "encoder", None)
    return encoder if isinstance(encoder, nn.Module) else None, model.bridge, model.lm


def freeze_for_stage(model: nn.Module, stage: str) -> nn.Module:
    """Set ``requires_grad`` on ``model`` (``.encoder``, ``.bridge``, ``.lm``) for ``stage``; returns ``model``.

    ``"stage1"``: only the bridge trains. ``"stage2"``: the bridge and the LM's LoRA adapters (the LM
    must have them: :func:`add_lora`). ``"full"``: the bridge and every weight of the LM. The
    encoder is frozen in every stage. Any other part of ``model`` (e.g. backbone B's gated
    cross-attention blocks) trains with the bridge.
    """
    stage = check_choice(stage, "stage", STAGES)
    encoder, bridge, lm = _parts(model)
    if stage == "stage2" and not is_lora(lm):
        raise ValueError("stage 'stage2' trains LoRA adapters, but model.lm has none: model.lm = add_lora(model.lm, rank) first")
    if stage == "full" and is_lora(lm):
        raise ValueError("stage 'full' trains the LM's own weights: use an LM without LoRA adapters (merge_lora first)")
    model.requires_grad_(True)
    if encoder is not None:
        encoder.requires_grad_(False)
    for name, p in lm.named_parameters():
        p.requires_grad_(stage == "full" or (stage == "stage2" and "lora_" in name))
    return model


def stage_parameter_counts(model: nn.Module) -> dict[str, int]:
    """Trainable and total parameters per part: ``{"encoder", "bridge", "lm", "lm_lora", "other", "trainable", "total"}``.

    ``"lm"`` counts the LM's own weights and ``"lm_lora"`` its adapters, trainable ones only; an
    other part of ``model`` counts under ``"other"``. Shared tensors (tied embeddings) count once.
    """
    encoder, bridge, lm = _parts(model)
    seen: set[int] = set()
    counts = dict.fromkeys(("encoder", "bridge", "lm", "lm_lora", "other"), 0)
    groups = [("encoder", encoder), ("bridge", bridge), ("lm", lm), ("other", model)]
    total = 0
    for part, module in groups:
        if module is None:
            continue
        for name, p in module.named_parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            total += p.numel()
            if p.requires_grad:
                counts["lm_lora" if part == "lm" and "lora_" in name else part] += p.numel()
    counts["trainable"] = sum(counts.values())
    counts["total"] = total
    return counts


__all__ = ["LLAMA_ATTENTION", "STAGES", "add_lora", "freeze_for_stage", "is_lora", "load_adapters", "lora_parameter_count",
           "merge_lora", "save_adapters", "stage_parameter_counts"]
