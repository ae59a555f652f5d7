"""Chapter 9's output side, the API: signal tokens, the output projector and two of NExT-GPT's losses."""

from __future__ import annotations

import pytest
import torch

from mmllm_course.language import add_special_tokens_to_lm, course_lm_tokenizer, make_causal_lm
from mmllm_course.language.lm import CausalLMConfig
from mmllm_course.output import (
    OutputProjector,
    OutputProjectorConfig,
    add_signal_tokens,
    conditioning_l2_loss,
    signal_hidden_states,
    signal_token_labels,
    signal_token_names,
    signal_token_nll,
)
from mmllm_course.training.recipes import add_image_token


def tiny_lm():
    tok = course_lm_tokenizer()
    lm = make_causal_lm(CausalLMConfig(dim=32, depth=1, num_heads=2, num_kv_heads=1, mlp_dim=64), tok, seed=0)
    return lm, tok


def test_signal_token_names():
    assert signal_token_names() == ["[IMG0]", "[IMG1]", "[IMG2]", "[IMG3]"]
    assert signal_token_names("3D", 2) == ["[3D0]", "[3D1]"]
    with pytest.raises(ValueError, match="count"):
        signal_token_names(count=0)
    with pytest.raises(ValueError, match="prefix"):
        signal_token_names("IMG]")


def test_add_signal_tokens_grows_the_embeddings_and_never_splits():
    lm, tok = tiny_lm()
    before = lm.get_input_embeddings().weight.detach().clone()
    names = signal_token_names()
    ids = add_signal_tokens(lm, tok, names)
    assert ids == list(range(len(before), len(before) + 4))
    weight = lm.get_input_embeddings().weight
    assert weight.shape == (len(tok), before.shape[1])
    assert torch.equal(weight[: len(before)], before)  # the old rows are untouched
    assert lm.get_output_embeddings().weight is weight  # still tied: the new rows are the output head's too
    text = "draw a small red circle in the top left" + "".join(names)
    assert tok(text, add_special_tokens=False)["input_ids"][-4:] == ids  # one id each, never split
    assert add_signal_tokens(lm, tok, names) == ids and lm.get_input_embeddings().weight is weight  # idempotent
    assert add_special_tokens_to_lm(lm, tok, names[:2]) == ids[:2]
    with pytest.raises(ValueError, match="distinct"):
        add_signal_tokens(lm, tok, ["[A]", "[A]"])
    with pytest.raises(TypeError, match="single str"):
        add_signal_tokens(lm, tok, "[IMG0]")


def test_add_image_token_delegates_and_keeps_working():
    lm, tok = tiny_lm()
    assert add_image_token(lm, tok) == tok.convert_tokens_to_ids("<image>") == 3  # already in the course tokenizer
    n = len(tok)
    assert add_image_token(lm, tok, "<video>") == n and lm.get_input_embeddings().num_embeddings == n + 1
    with pytest.raises(TypeError, match="image_token"):
        add_image_token(lm, tok, "")


def test_signal_token_labels_keep_only_signal_tokens_and_keep_ids():
    ids = torch.tensor([[2, 10, 11, 40, 41, 1, 0], [2, 12, 40, 41, 1, 0, 0]])
    labels = signal_token_labels(ids, [40, 41], keep_ids=[1])
    assert labels.tolist() == [[-100, -100, -100, 40, 41, 1, -100], [-100, -100, 40, 41, 1, -100, -100]]
    assert signal_token_labels(ids, [40, 41]).tolist()[0] == [-100, -100, -100, 40, 41, -100, -100]
    assert labels.dtype == torch.long and signal_token_labels(ids.int(), [40]).dtype == torch.long
    with pytest.raises(ValueError, match="distinct"):
        signal_token_labels(ids, [40, 40])
    with pytest.raises(TypeError, match="integers"):
        signal_token_labels(ids.float(), [40])


def test_signal_hidden_states_gathers_in_the_order_of_the_ids():
    ids = torch.tensor([[5, 40, 41, 1], [41, 5, 6, 40]])
    hidden = torch.randn(2, 4, 3)
    out = signal_hidden_states(hidden, ids, [40, 41])
    assert out.shape == (2, 2, 3)
    assert torch.equal(out[0], hidden[0, [1, 2]]) and torch.equal(out[1], hidden[1, [3, 0]])
    with pytest.raises(ValueError, match="row 1 .*exactly once"):
        signal_hidden_states(hidden, torch.tensor([[5, 40, 41, 1], [5, 40, 6, 7]]), [40, 41])
    with pytest.raises(ValueError, match="row 0 .*exactly once"):
        signal_hidden_states(hidden, torch.tensor([[40, 40, 41, 1], [5, 40, 41, 7]]), [40, 41])
    with pytest.raises(ValueError, match="agree"):
        signal_hidden_states(hidden, ids[:, :3], [40, 41])


def test_signal_hidden_states_passes_gradients():
    hidden = torch.randn(1, 3, 4, requires_grad=True)
    signal_hidden_states(hidden, torch.tensor([[7, 40, 41]]), [41, 40]).sum().backward()
    assert hidden.grad[0, 0].abs().sum() == 0 and hidden.grad[0, 1:].abs().sum() > 0


def test_output_projector_shapes_names_and_formula():
    config = OutputProjectorConfig(lm_dim=48, cond_dim=64, num_queries=16, width=32, heads=4, layers=1, dropout=0.0)
    torch.manual_seed(0)
    proj = OutputProjector(config).eval()
    names = {n for n, _ in proj.named_children()} | {n for n, _ in proj.named_parameters(recurse=False)}
    assert names == {"in_proj", "queries", "transformer", "out_proj"}
    assert proj.queries.shape == (1, 16, 32) and isinstance(proj.transformer, torch.nn.Transformer)
    x = torch.randn(3, 4, 48)
    y = proj(x)
    assert y.shape == (3, 16, 64)
    expected = proj.out_proj(proj.transformer(src=proj.in_proj(x), tgt=proj.queries.expand(3, -1, -1)))
    torch.testing.assert_close(y, expected)
    assert proj(x.double()).dtype == torch.float32  # the dtype rule
    assert torch.allclose(proj(x[:1]), y[:1], atol=1e-5)  # rows are independent
    assert not torch.allclose(y[0], y[1])  # the output reads the input
    with pytest.raises(ValueError, match="lm_dim=48"):
        proj(torch.randn(3, 4, 32))
    with pytest.raises(ValueError, match="divisible"):
        OutputProjectorConfig(lm_dim=8, cond_dim=8, num_queries=2, width=30, heads=4)


def test_output_projector_learns_a_mapping():
    torch.manual_seed(0)
    proj = OutputProjector(OutputProjectorConfig(lm_dim=8, cond_dim=6, num_queries=3, width=16, heads=2, layers=1, dropout=0.0))
    x = torch.randn(8, 2, 8)
    target = torch.randn(8, 3, 6)
    opt = torch.optim.Adam(proj.parameters(), lr=3e-3)
    first = conditioning_l2_loss(proj(x), target).item()
    for _ in range(300):
        loss = conditioning_l2_loss(proj(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first


def test_conditioning_l2_loss_sums_the_feature_axis():
    pred, target = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    torch.testing.assert_close(conditioning_l2_loss(pred, target), ((pred - target) ** 2).sum(-1).mean())
    torch.testing.assert_close(conditioning_l2_loss(pred, target), torch.nn.functional.mse_loss(pred, target) * 7)
    assert float(conditioning_l2_loss(target, target)) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        conditioning_l2_loss(pred, target[:, :4])
    with pytest.raises(TypeError, match="dtype"):
        conditioning_l2_loss(pred, target.double())


def test_signal_token_nll_matches_transformers_causal_lm_loss():
    lm, tok = tiny_lm()
    sig = add_signal_tokens(lm, tok, signal_token_names(count=2))
    ids = torch.tensor([[2, 10, 11, sig[0], sig[1], 1], [2, 12, sig[0], sig[1], 1, 0]])
    labels = signal_token_labels(ids, sig, keep_ids=[tok.eos_token_id])
    labels[1, 4] = tok.eos_token_id  # the second row's eos is label too; its pad is not
    out = lm(ids, labels=labels)
    torch.testing.assert_close(signal_token_nll(out.logits, labels), out.loss)  # parity with transformers
    with pytest.raises(ValueError, match="nothing to learn"):
        signal_token_nll(out.logits, torch.full_like(labels, -100))
    with pytest.raises(ValueError, match="match logits"):
        signal_token_nll(out.logits, labels[:, :3])
    with pytest.raises(ValueError, match="token ids in"):
        signal_token_nll(out.logits, torch.where(labels == -100, labels, 10_000))
