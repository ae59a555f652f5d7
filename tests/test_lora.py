"""LoRA through peft on the course LM: parameter counts, identity at start, save / reload / merge, freezing per stage."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("peft")

from mmllm_course.bridges import make_bridge
from mmllm_course.language import CausalLMConfig, course_lm_tokenizer, make_causal_lm
from mmllm_course.training import (
    add_lora,
    count_parameters,
    freeze_for_stage,
    load_adapters,
    lora_parameter_count,
    merge_lora,
    save_adapters,
    stage_parameter_counts,
)


def _lm(arch="llama", seed=0):
    return make_causal_lm(CausalLMConfig(arch=arch, dim=32, depth=2, num_heads=4, num_kv_heads=2, mlp_dim=48), seed=seed)


def _ids():
    return torch.randint(4, 300, (3, 9), generator=torch.Generator().manual_seed(0))


def _perturb(peft_lm, seed=1):
    """Give every B a random value, as training would (B starts at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_lm.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("arch,targets", [("llama", ("q_proj", "v_proj")), ("llama", ("q_proj", "k_proj", "v_proj", "o_proj", "down_proj")),
                                          ("gpt2", ("c_attn", "c_fc"))])
@pytest.mark.parametrize("rank", [1, 4])
def test_count_by_hand_equals_what_peft_creates(arch, targets, rank):
    lm = _lm(arch)
    expected = lora_parameter_count(lm, rank, targets)
    adapted = add_lora(lm, rank, targets)
    assert count_parameters(adapted, trainable_only=True) == expected
    trainable = [n for n, p in adapted.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_llama_attention_count_is_r_times_in_plus_out():
    lm = _lm()  # width 32, 4 heads of 8, 2 kv heads: q,o (32->32), k,v (32->16)
    per_layer = 8 * ((32 + 32) + (32 + 16) + (32 + 16) + (32 + 32))
    assert lora_parameter_count(lm, 8, ("q_proj", "k_proj", "v_proj", "o_proj")) == 2 * per_layer


def test_unknown_target_names_what_exists():
    with pytest.raises(ValueError, match=r"not found.*expected names from .*q_proj"):
        add_lora(_lm(), 4, ("query",))
    with pytest.raises(ValueError, match="lm_head"):
        lora_parameter_count(_lm(), 4, ("lm_head",))
    with pytest.raises(ValueError, match="already has LoRA"):
        add_lora(add_lora(_lm(), 2), 2)


def test_adapters_start_as_the_identity_and_change_the_output_once_trained():
    base = _lm()
    ids = _ids()
    with torch.no_grad():
        before = base(input_ids=ids).logits
        adapted = add_lora(_lm(), 4)  # same weights (same seed)
        assert torch.equal(adapted(input_ids=ids).logits, before)  # B = 0: exactly the base LM
        _perturb(adapted)
        assert (adapted(input_ids=ids).logits - before).abs().max() > 1e-3


def test_save_reload_merge(tmp_path):
    ids = _ids()
    adapted = add_lora(_lm(), 4, ("q_proj", "v_proj", "down_proj"))
    _perturb(adapted)
    with torch.no_grad():
        want = adapted(input_ids=ids).logits
    files = save_adapters(adapted, tmp_path)
    assert "adapter_model.safetensors" in files and "adapter_config.json" in files
    reloaded = load_adapters(_lm(), tmp_path)
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, want)
        merged = merge_lora(reloaded)
        got = merged(input_ids=ids).logits
    assert type(merged).__name__ == "LlamaForCausalLM"
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert count_parameters(merged) == count_parameters(_lm())
    assert (got - want).abs().max().item() < 1e-5
    with pytest.raises(ValueError, match="no adapters"):
        load_adapters(_lm(), tmp_path / "nothing")


def _model(lora_rank=None):
    from mmllm_course.backbones import UnifiedEmbeddingMLLM

    lm = _lm()
    if lora_rank:
        lm = add_lora(lm, lora_rank)
    torch.manual_seed(0)
    encoder = torch.nn.Linear(4, 16)  # stands for a frozen image encoder
    return UnifiedEmbeddingMLLM(encoder, make_bridge("mlp", in_dim=16, out_dim=32), lm, course_lm_tokenizer(), num_image_features=3)


def test_freeze_for_stage_trains_exactly_the_right_parts():
    m = _model()
    bridge = count_parameters(m.bridge)
    freeze_for_stage(m, "stage1")
    assert stage_parameter_counts(m)["trainable"] == bridge == count_parameters(m, trainable_only=True)
    assert not any(p.requires_grad for p in m.lm.parameters()) and not any(p.requires_grad for p in m.encoder.parameters())
    freeze_for_stage(m, "full")
    counts = stage_parameter_counts(m)
    assert counts["lm"] == count_parameters(m.lm) and counts["bridge"] == bridge and counts["encoder"] == 0
    with pytest.raises(ValueError, match="has none"):
        freeze_for_stage(m, "stage2")

    m2 = _model(lora_rank=4)
    freeze_for_stage(m2, "stage2")
    counts = stage_parameter_counts(m2)
    assert counts["lm"] == 0 and counts["lm_lora"] == lora_parameter_count(_lm(), 4) and counts["bridge"] == bridge
    assert counts["trainable"] == count_parameters(m2, trainable_only=True)
    assert all("lora_" in n for n, p in m2.lm.named_parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="stage must be one of"):
        freeze_for_stage(m2, "stage3")
    with pytest.raises(ValueError, match="merge_lora"):
        freeze_for_stage(m2, "full")
