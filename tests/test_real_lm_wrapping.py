"""A real checkpoint's LM under UnifiedEmbeddingMLLM, without the network: the image token added, the table resized.

A real tokenizer (SmolLM2's, GPT-2's) has no ``<image>`` token. ``add_image_token`` adds it and grows
the LM's embedding table; ``load_real_lm`` does that after ``from_pretrained``. Here tiny random
``LlamaForCausalLM`` / ``GPT2LMHeadModel`` models with a tokenizer that lacks ``<image>`` (and, for
GPT-2, a pad token) stand in for the downloads, and chapter 5's online cell runs as written.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from mmllm_course.backbones import UnifiedEmbeddingMLLM  # noqa: E402
from mmllm_course.bridges import make_bridge  # noqa: E402
from mmllm_course.data import shapes_tokenizer  # noqa: E402
from mmllm_course.training.recipes import CHAPTER5, add_image_token, build_captioner, load_real_lm  # noqa: E402

NOTEBOOK = Path(__file__).resolve().parents[1] / "sources" / "notebooks" / "05_unified_embedding.py"
WIDTH = 48  # not the mini-CLIP's 64 nor the course LM's: the bridge must take the LM's width


def _tokenizer(pad: bool = True):
    """A 'downloaded' tokenizer: the course BPE without <image>; without a pad token like GPT-2's when ``pad=False``."""
    tok = shapes_tokenizer()
    if pad:
        return tok
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, bos_token=tok.bos_token,
                                                eos_token=tok.eos_token)


def _lm(tok, arch: str = "llama", seed: int = 0):
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    if arch == "llama":  # SmolLM2-like: tied embeddings, grouped-query attention
        config = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=WIDTH, intermediate_size=64, num_hidden_layers=1,
                                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                          tie_word_embeddings=True, **ids)
        cls = transformers.LlamaForCausalLM
    else:
        config = transformers.GPT2Config(vocab_size=len(tok), n_embd=WIDTH, n_layer=1, n_head=4, n_positions=128, **ids)
        cls = transformers.GPT2LMHeadModel
    torch.manual_seed(seed)
    return cls(config).eval()


def test_a_tokenizer_without_the_image_token_is_refused_with_the_fix_named():
    tok = _tokenizer()
    lm = _lm(tok)
    with pytest.raises(ValueError, match="no single token '<image>'"):
        UnifiedEmbeddingMLLM(None, make_bridge("mlp", in_dim=64, out_dim=WIDTH), lm, tok, num_image_features=17)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_add_image_token_grows_the_vocabulary_and_keeps_the_old_rows(arch, monkeypatch):
    tok = _tokenizer(pad=arch == "llama")
    lm = _lm(tok, arch)
    old = lm.get_input_embeddings().weight.detach().clone()
    n = len(tok)
    calls = []
    resize = lm.resize_token_embeddings
    monkeypatch.setattr(lm, "resize_token_embeddings", lambda *a, **k: calls.append(k) or resize(*a, **k))
    image_id = add_image_token(lm, tok)
    assert image_id == n and len(tok) == n + 1
    assert calls == [{"mean_resizing": False}]
    table = lm.get_input_embeddings().weight
    assert table.shape == (n + 1, WIDTH) and torch.equal(table[:n], old)
    assert lm.get_output_embeddings().weight.shape[0] == n + 1  # the output layer grew with it (tied in both)
    assert tok("<image>Describe the image.", add_special_tokens=False)["input_ids"][0] == image_id  # one token, never split
    assert tok.decode([image_id]) == "<image>" and tok.decode([image_id], skip_special_tokens=True) == ""
    assert tok.pad_token_id is not None  # GPT-2's tokenizer has none: eos stands in
    # a second call changes nothing
    assert add_image_token(lm, tok) == image_id and len(tok) == n + 1 and len(calls) == 1


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_the_chapter5_captioner_runs_on_the_wrapped_lm(arch):
    tok = _tokenizer(pad=arch == "llama")
    lm = _lm(tok, arch)
    add_image_token(lm, tok)
    model = build_captioner(lm, tok, recipe=CHAPTER5, seed=0)
    assert model.bridge.out_dim == WIDTH and model.num_image_tokens == 8
    assert not any(p.requires_grad for p in model.lm.parameters())
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    batch = model.tokenize([CHAPTER5.prompt] * 2, [" a small red circle in the top left", " red"])
    out = model(**batch, images=images)
    assert out.logits.shape == (*batch["input_ids"].shape, len(tok)) and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.bridge.parameters())
    texts = model.generate([CHAPTER5.prompt] * 2, images=images, max_new_tokens=3)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_add_image_token_refuses_bad_input():
    tok = _tokenizer()
    with pytest.raises(TypeError, match="transformers causal LM"):
        add_image_token(torch.nn.Linear(2, 2), tok)
    with pytest.raises(TypeError, match="transformers tokenizer"):
        add_image_token(_lm(tok), "gpt2")
    with pytest.raises(TypeError, match="image_token"):
        add_image_token(_lm(tok), tok, image_token="")
    with pytest.raises(TypeError, match="name must be"):
        load_real_lm(3)


def _fake_hub(monkeypatch, arch: str) -> list[dict]:
    """from_pretrained of AutoTokenizer / AutoModelForCausalLM return tiny random models; returns the recorded calls."""
    calls: list[dict] = []
    tok = _tokenizer(pad=arch == "llama")

    def fake_tokenizer(name, **kwargs):
        calls.append({"tokenizer": name, **kwargs})
        return tok

    def fake_lm(name, **kwargs):
        calls.append({"lm": name, **kwargs})
        return _lm(tok, arch)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake_tokenizer)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_lm)
    return calls


def test_load_real_lm_wraps_the_download_and_names_the_offline_failure(monkeypatch):
    calls = _fake_hub(monkeypatch, "llama")
    lm, tok = load_real_lm("HuggingFaceTB/SmolLM2-135M")
    assert calls == [{"tokenizer": "HuggingFaceTB/SmolLM2-135M"}, {"lm": "HuggingFaceTB/SmolLM2-135M", "dtype": torch.float32}]
    assert not lm.training and not any(p.requires_grad for p in lm.parameters())
    assert lm.get_input_embeddings().num_embeddings == len(tok) and "<image>" in tok.get_vocab()

    def offline(name, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", offline)
    with pytest.raises(OSError, match="needs network access.*load_chapter5_lm"):
        load_real_lm("gpt2")


def _cells(source: str) -> list[str]:
    return [c for c in re.split(r"^# %%.*$", source, flags=re.M) if c.strip()]


def _import_cell(cells: list[str]) -> str:
    """The notebook's first code cell: its imports."""
    return next(c for c in cells if "from mmllm_course.training.recipes import (" in c)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_the_notebooks_online_cell_runs_as_written_on_a_stand_in_lm(arch, monkeypatch, capsys):
    """Chapter 5's real-LM cell, USE_REAL_LM switched on, the download replaced by a tiny random LM."""
    cells = _cells(NOTEBOOK.read_text())
    online = [c for c in cells if "USE_REAL_LM = False" in c]
    assert len(online) == 1 and "# NBVAL_SKIP" in online[0]
    code = online[0].replace("USE_REAL_LM = False", "USE_REAL_LM = True").replace("REAL_STEPS = 100", "REAL_STEPS = 20")
    assert "REAL_STEPS = 20" in code
    calls = _fake_hub(monkeypatch, arch)
    namespace: dict = {}
    exec(compile(_import_cell(cells), "imports", "exec"), namespace)
    exec("import dataclasses", namespace)  # imported by an earlier cell of the notebook
    exec(compile(code, str(NOTEBOOK), "exec"), namespace)
    out = capsys.readouterr().out
    assert "Skipped" not in out
    assert calls[0]["tokenizer"] == namespace["REAL_LM_NAME"]
    run = namespace["real_run"]
    assert len(run.history.loss) == 20 and run.model.lm is namespace["real_lm"] and run.model.bridge.out_dim == WIDTH
    assert set(namespace["real_metrics"]) == {"exact", "shape", "color", "size", "position"}
    assert "said " in out and f"width {WIDTH}" in out


def test_the_notebooks_online_cell_is_off_by_default(capsys):
    cells = _cells(NOTEBOOK.read_text())
    online = next(c for c in cells if "USE_REAL_LM = False" in c)
    namespace: dict = {}
    exec(compile(_import_cell(cells), "imports", "exec"), namespace)
    exec(compile(online, str(NOTEBOOK), "exec"), namespace)
    assert "Skipped: set USE_REAL_LM = True" in capsys.readouterr().out and namespace["real_lm"] is None
