"""UnifiedEmbeddingMLLM: placeholder expansion, labels, masks, left padding, generation, any bridge, bad input."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from mmllm_course.backbones import UnifiedEmbeddingMLLM  # noqa: E402
from mmllm_course.bridges import BRIDGES, make_bridge  # noqa: E402
from mmllm_course.encoders import ViT, ViTConfig  # noqa: E402
from mmllm_course.language import CausalLMConfig, course_lm_tokenizer, make_causal_lm  # noqa: E402

D = 32


@pytest.fixture(scope="module")
def tok():
    return course_lm_tokenizer()


def _model(tok, bridge="mlp", arch="llama", context_length=64, **kwargs):
    torch.manual_seed(0)
    encoder = ViT(ViTConfig(image_size=32, patch_size=8, dim=16, depth=1, num_heads=2, mlp_dim=32)).eval()
    extra = {"num_queries": 4} if bridge == "qformer" else {"num_latents": 4} if bridge == "resampler" else {}
    lm = make_causal_lm(CausalLMConfig(arch=arch, dim=D, depth=1, num_heads=4, num_kv_heads=2, mlp_dim=64,
                                       context_length=context_length), tok, seed=0)
    drop = bridge == "token_merge"  # pixel shuffle needs a square grid: the 16 patch tokens
    return UnifiedEmbeddingMLLM(encoder, make_bridge(bridge, in_dim=16, out_dim=D, **extra), lm, tok,
                                drop_class_token=drop, **kwargs).eval()


def _images(n, seed=0):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_tokenize_expands_placeholder_and_masks_labels(tok):
    model = _model(tok)
    k = model.num_image_tokens
    assert k == 17
    batch = model.tokenize(["<image>Describe the image.", "<image>What colour is the circle?"], [" a small red circle in the top left", " red"])
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    prompt_ids = tok("Describe the image.", add_special_tokens=False)["input_ids"]
    target_ids = tok(" a small red circle in the top left", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    row = ids[0].tolist()
    assert row[0] == tok.bos_token_id
    assert row[1:1 + k] == [model.image_token_id] * k
    assert row[1 + k:1 + k + len(prompt_ids)] == prompt_ids
    assert row[1 + k + len(prompt_ids):] == target_ids  # row 0 is the longest: no padding
    # labels: -100 on bos, the K image tokens and the prompt; the target and its eos take loss
    assert labels[0, : 1 + k + len(prompt_ids)].eq(-100).all()
    assert labels[0, 1 + k + len(prompt_ids):].tolist() == target_ids
    # row 1 is shorter: right padding with mask 0 and label -100
    n1 = int(mask[1].sum())
    assert mask[1, :n1].eq(1).all() and mask[1, n1:].eq(0).all()
    assert ids[1, n1:].eq(tok.pad_token_id).all() and labels[1, n1:].eq(-100).all()
    assert labels[1, n1 - 2:n1].tolist() == [tok(" red", add_special_tokens=False)["input_ids"][0], tok.eos_token_id]
    # every label that is not -100 is a target token
    assert int((labels != -100).sum()) == len(target_ids) + 2


def test_left_padding_for_generation(tok):
    model = _model(tok)
    batch = model.tokenize(["<image>Describe the image.", "<image>?"], padding_side="left")
    mask = batch["attention_mask"]
    assert mask[:, -1].eq(1).all(), "with left padding every row ends with a real token"
    n1 = int(mask[1].sum())
    assert mask[1, : mask.shape[1] - n1].eq(0).all()
    pos = model.position_ids(mask)
    assert pos[1, -n1:].tolist() == list(range(n1)), "positions count real tokens only"
    assert "labels" not in batch


def test_splice_puts_image_tokens_at_the_placeholders(tok):
    model = _model(tok)
    batch = model.tokenize(["<image>Describe the image.", "Describe <image> the <image> image."], padding_side="left")
    images = _images(3)
    with torch.no_grad():
        image_embeds = model.image_embeddings(images)  # (3, K, D)
        embeds = model.embed(batch["input_ids"], image_embeds)
        table = model.lm.get_input_embeddings().weight
    is_image = batch["input_ids"] == model.image_token_id
    rows, cols = is_image.nonzero(as_tuple=True)
    got = embeds[rows, cols].reshape(3, model.num_image_tokens, D)
    assert torch.equal(got, image_embeds)  # images in order: row 0's, then row 1's two
    text = ~is_image
    assert torch.equal(embeds[text], table[batch["input_ids"][text]])
    # an off-by-one splice would change the logits: the parity test would see it
    shifted = torch.roll(embeds, 1, dims=1)
    with torch.no_grad():
        a = model.lm(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits
        b = model.lm(inputs_embeds=shifted, attention_mask=batch["attention_mask"]).logits
    assert (a - b).abs().max() > 1e-3


def test_loss_ignores_image_prompt_and_padding(tok):
    model = _model(tok)
    batch = model.tokenize(["<image>Describe the image.", "<image>?"], [" a small red circle in the top left", " red"])
    images = _images(2)
    with torch.no_grad():
        out = model(**batch, images=images)
        logits = out.logits[:, :-1]
        labels = batch["labels"][:, 1:]
        keep = labels != -100
        expected = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    assert torch.allclose(out.loss, expected, atol=1e-6)
    # the loss does not depend on what the image tokens or the padding would have been as labels
    assert not keep[batch["input_ids"][:, 1:] == model.image_token_id].any()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_batched_left_padded_generation_equals_one_by_one(tok, arch):
    model = _model(tok, arch=arch)
    prompts = ["<image>Describe the image.", "<image>?", "<image>What colour is the circle?"]
    images = _images(3)
    batched = model.generate(prompts, images=images, max_new_tokens=5, eos_token_id=None)
    alone = [model.generate([p], images=images[i:i + 1], max_new_tokens=5, eos_token_id=None)[0] for i, p in enumerate(prompts)]
    assert batched == alone
    assert all(len(tok(" " + t, add_special_tokens=False)["input_ids"]) >= 1 for t in batched)


def test_generate_matches_greedy_by_hand(tok):
    """Three greedy steps by hand (argmax of the last logits, append) give the tokens generate() gives."""
    model = _model(tok)
    images = _images(1)
    batch = model.tokenize(["<image>Describe the image."])
    ids = batch["input_ids"]
    with torch.no_grad():
        image_embeds = model.image_embeddings(images)
        embeds = model.embed(ids, image_embeds)
        new = []
        for _ in range(3):
            logits = model.lm(inputs_embeds=embeds).logits[:, -1]
            nxt = logits.argmax(-1)
            new.append(int(nxt))
            embeds = torch.cat([embeds, model.lm.get_input_embeddings()(nxt)[:, None]], dim=1)
    text = model.generate(["<image>Describe the image."], images=images, max_new_tokens=3, eos_token_id=None)[0]
    assert text == tok.decode(new, skip_special_tokens=True).strip()


@pytest.mark.parametrize("name", sorted(BRIDGES))
def test_every_bridge_trains_through_the_frozen_lm(tok, name):
    model = _model(tok, bridge=name)
    model.lm.requires_grad_(False)
    model.encoder.requires_grad_(False)
    batch = model.tokenize(["<image>Describe the image."] * 2, [" a small red circle in the top left", " a large blue star in the top right"])
    out = model(**batch, images=_images(2))
    out.loss.backward()
    grads = [p.grad for p in model.bridge.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in model.lm.parameters())
    assert out.logits.shape[1] == batch["input_ids"].shape[1]
    assert len(model.generate(["<image>?"], images=_images(1), max_new_tokens=2)) == 1


def test_image_features_path_equals_images_path(tok):
    model = _model(tok)
    images = _images(2)
    batch = model.tokenize(["<image>Describe the image."] * 2)
    with torch.no_grad():
        a = model(**batch, images=images).logits
        b = model(**batch, image_features=model.image_features(images)).logits
    assert torch.equal(a, b)


def test_bad_input_raises_value_errors_naming_sizes(tok):
    model = _model(tok)
    images = _images(2)
    with pytest.raises(ValueError, match="no '<image>' placeholder"):
        model.tokenize(["Describe the image."])
    batch = model.tokenize(["<image> and <image>", "<image>"])  # 3 placeholders
    with pytest.raises(ValueError, match="more placeholders than images: .*3 .*2 image"):
        model(**batch, images=images)
    with pytest.raises(ValueError, match="more images than placeholders: .*1 .*2 image"):
        model(**model.tokenize(["<image>"]), images=images)
    with pytest.raises(ValueError, match="more placeholders than images"):
        model.generate(["<image>", "<image>"], images=images[:1])
    with pytest.raises(ValueError, match=r"shape \(2, 3, 16, 16\)|32"):
        model(**model.tokenize(["<image>", "<image>"]), images=torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match="2 prompts but 1 targets"):
        model.tokenize(["<image>", "<image>"], ["a"])
    long = _model(tok, context_length=24)
    with pytest.raises(ValueError, match="longer than the LM's context of 24"):
        long.tokenize(["<image>Describe the image. Describe the image."])
    with pytest.raises(ValueError, match="context of 24"):
        long.generate(["<image>Describe"], images=images[:1], max_new_tokens=10)
    lm = make_causal_lm(CausalLMConfig(dim=D, depth=1, num_heads=4, mlp_dim=64), tok)
    with pytest.raises(ValueError, match="out_dim = 48.*hidden size = 32"):
        UnifiedEmbeddingMLLM(model.encoder, make_bridge("mlp", in_dim=16, out_dim=48), lm, tok)
    with pytest.raises(ValueError, match="in_dim = 64, encoder width = 16"):
        UnifiedEmbeddingMLLM(model.encoder, make_bridge("mlp", in_dim=64, out_dim=D), lm, tok)
    with pytest.raises(ValueError, match="K = 17"):
        ids = model.tokenize(["<image>"])["input_ids"][:, :-3]  # a cut run of image tokens
        model(ids, images=images[:1])
    with pytest.raises(ValueError, match="attention_mask"):
        b = model.tokenize(["<image>"])
        model(b["input_ids"], attention_mask=b["attention_mask"][:, :-1], images=images[:1])
    with pytest.raises(TypeError):
        model(**model.tokenize(["<image>"]), images=images[:1].numpy())
    with pytest.raises(TypeError):
        model.tokenize("<image>")
    from mmllm_course.data import shapes_tokenizer
    with pytest.raises(ValueError, match="no single token '<image>'"):
        UnifiedEmbeddingMLLM(model.encoder, model.bridge, lm, shapes_tokenizer())
