"""ViT, the causal text tower and CLIP: shapes, where the LayerNorms sit, pooling, masks, losses, errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from mmllm_course.encoders.clip import (
    CLIP,
    CLIPConfig,
    clip_loss,
    retrieval_recall_at_k,
    zero_shot_classifier,
    zero_shot_predict,
)
from mmllm_course.encoders.text import TextTransformer, TextTransformerConfig
from mmllm_course.encoders.vit import ViT, ViTConfig

EOS = 1


def _ids(b=3, length=8, seed=0, eos_at=5):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 100, (b, length), generator=g)
    ids[:, eos_at] = EOS
    return ids


def _perturb_norms(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(1 + 0.5 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.5 * torch.randn(m.bias.shape, generator=g))


# --- ViT -----------------------------------------------------------------------------------------


def test_vit_shapes_hidden_states_and_attentions():
    torch.manual_seed(0)
    vit = ViT(ViTConfig()).eval()
    x = torch.rand(2, 3, 32, 32)
    out = vit(x, output_hidden_states=True, output_attentions=True)
    assert out.last_hidden_state.shape == (2, 17, 64) and out.pooled.shape == (2, 64)
    assert len(out.hidden_states) == 3 and all(h.shape == (2, 17, 64) for h in out.hidden_states)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 4, 17, 17)
    torch.testing.assert_close(out.attentions[1].sum(-1), torch.ones(2, 4, 17))
    fast = vit(x)
    assert fast.hidden_states is None and fast.attentions is None
    torch.testing.assert_close(fast.last_hidden_state, out.last_hidden_state, atol=1e-5, rtol=1e-5)
    # the last hidden state before the final LayerNorm is the output of the last block
    torch.testing.assert_close(out.last_hidden_state, vit.norm(out.hidden_states[-1]))


def test_final_norm_tokens_vs_pooled():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    vit = ViT(ViTConfig(final_norm="tokens")).eval()
    _perturb_norms(vit)
    out = vit(x, output_hidden_states=True)
    torch.testing.assert_close(out.pooled, out.last_hidden_state[:, 0])  # HF ViTModel: CLS of the normed tokens

    clip_like = ViT(ViTConfig(final_norm="pooled", pre_norm=True)).eval()
    _perturb_norms(clip_like)
    out = clip_like(x, output_hidden_states=True)
    torch.testing.assert_close(out.last_hidden_state, out.hidden_states[-1])  # NOT normalised
    torch.testing.assert_close(out.pooled, clip_like.norm(out.last_hidden_state[:, 0]))  # CLIP's pooler_output
    torch.testing.assert_close(out.hidden_states[0], clip_like.pre_norm(clip_like.embeddings(x)))

    mean = ViT(ViTConfig(pooling="mean")).eval()
    out = mean(x)
    torch.testing.assert_close(out.pooled, out.last_hidden_state[:, 1:].mean(1))


def test_vit_sincos_positions_and_gradients():
    vit = ViT(ViTConfig(position="sincos", activation="quick_gelu", depth=1))
    out = vit(torch.rand(2, 3, 32, 32))
    out.pooled.sum().backward()
    assert vit.embeddings.patch_embedding.proj.weight.grad is not None
    assert not any("position_embedding" in n for n, _ in vit.named_parameters())


def test_vit_rejects_wrong_images_and_configs():
    vit = ViT(ViTConfig())
    with pytest.raises(ValueError, match="expected 3 channels, got 1"):
        vit(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="expected images of size 32x32, got 64x64"):
        vit(torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match="dim=30 is not divisible by num_heads=4"):
        ViTConfig(dim=30)
    with pytest.raises(ValueError, match="image_size=30 is not divisible by patch_size=8"):
        ViTConfig(image_size=30)
    with pytest.raises(ValueError, match=r"pooling must be one of \('cls', 'mean'\), got 'max'"):
        ViTConfig(pooling="max")
    with pytest.raises(ValueError, match="final_norm must be one of"):
        ViTConfig(final_norm="none")


# --- text ----------------------------------------------------------------------------------------


def test_text_output_at_t_does_not_depend_on_later_tokens():
    torch.manual_seed(0)
    model = TextTransformer(TextTransformerConfig(eos_token_id=EOS)).eval()
    ids = _ids(eos_at=3)
    ids2 = ids.clone()
    ids2[:, 5:] = torch.randint(2, 100, (3, 3))
    a, b = model(ids), model(ids2)
    assert a.last_hidden_state.shape == (3, 8, 64) and a.pooled.shape == (3, 64)
    torch.testing.assert_close(a.last_hidden_state[:, :5], b.last_hidden_state[:, :5])
    assert not torch.allclose(a.last_hidden_state[:, 5:], b.last_hidden_state[:, 5:])
    torch.testing.assert_close(a.pooled, b.pooled)  # eos at 3 has read tokens 0..3 only
    out = model(ids, output_attentions=True, output_hidden_states=True)
    assert torch.all(out.attentions[0].triu(diagonal=1) == 0)
    assert len(out.hidden_states) == 3


def test_text_pools_at_first_eos():
    torch.manual_seed(0)
    model = TextTransformer(TextTransformerConfig(eos_token_id=EOS)).eval()
    ids = _ids(eos_at=6)
    ids[0, 2] = EOS  # row 0 has an earlier eos: that one counts
    ids[1, 7] = EOS
    out = model(ids)
    assert model.eos_positions(ids).tolist() == [2, 6, 6]
    torch.testing.assert_close(out.pooled, out.last_hidden_state[torch.arange(3), torch.tensor([2, 6, 6])])


def test_text_attention_mask_hides_padded_keys():
    torch.manual_seed(0)
    model = TextTransformer(TextTransformerConfig(eos_token_id=EOS)).eval()
    ids = _ids(eos_at=4)
    mask = torch.ones(3, 8, dtype=torch.long)
    mask[0, 1] = 0  # hide token 1 of row 0
    out = model(ids, attention_mask=mask, output_attentions=True)
    assert torch.all(out.attentions[0][0, :, :, 1] == 0) and torch.all(out.attentions[0][1, :, 1:, 1] > 0)
    ids2 = ids.clone()
    ids2[0, 1] = 50 if ids[0, 1] != 50 else 51
    out2 = model(ids2, attention_mask=mask)
    # token 1 is invisible to everyone else, so changing it changes only its own row
    torch.testing.assert_close(out.pooled[0], out2.pooled[0])
    fast = model(ids, attention_mask=mask)
    torch.testing.assert_close(fast.last_hidden_state, out.last_hidden_state, atol=1e-5, rtol=1e-5)


def test_text_rejects_bad_inputs_with_sizes():
    model = TextTransformer(TextTransformerConfig(eos_token_id=EOS))
    with pytest.raises(ValueError, match="text of 20 tokens is longer than context_length=16"):
        model(_ids(length=20))
    bad = _ids()
    bad[1, 0] = 100
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 100\).*got ids in \[\d+, 100\]"):
        model(bad)
    no_eos = _ids()
    no_eos[2, 5] = 7
    with pytest.raises(ValueError, match=r"eos_token_id=1.*rows \[2\] of 3 have none"):
        model(no_eos)
    with pytest.raises(ValueError, match=r"attention_mask must be \(B, L\) = \(3, 8\), got \(3, 7\)"):
        model(_ids(), attention_mask=torch.ones(3, 7))
    with pytest.raises(ValueError, match="integer token ids"):
        model(_ids().float())
    with pytest.raises(ValueError, match=r"eos_token_id=100 is outside the vocabulary \[0, 100\)"):
        TextTransformerConfig(eos_token_id=100)


# --- CLIP ----------------------------------------------------------------------------------------


def _clip(seed=0) -> CLIP:
    torch.manual_seed(seed)
    return CLIP(CLIPConfig(text=TextTransformerConfig(eos_token_id=EOS))).eval()


def test_clip_logits_are_scaled_cosine_similarities():
    model = _clip()
    images, ids = torch.rand(4, 3, 32, 32), _ids(b=3)
    logits = model(images, ids)
    assert logits.shape == (4, 3)
    img, txt = model.encode_image(images), model.encode_text(ids)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(4))
    raw = model.encode_image(images, normalize=False)
    torch.testing.assert_close(F.normalize(raw, dim=-1), img)
    torch.testing.assert_close(logits, (1 / 0.07) * img @ txt.T, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000.0))
    torch.testing.assert_close(model(images, ids), 100.0 * img @ txt.T, rtol=1e-5, atol=1e-5)  # capped like CLIP


def test_clip_loss_is_symmetric_infonce():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 5, generator=g)
    t = torch.arange(5)
    expected = (F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t)) / 2
    torch.testing.assert_close(clip_loss(logits), expected)
    assert not torch.allclose(clip_loss(logits), F.cross_entropy(logits, t))  # not one-sided
    assert clip_loss(20 * torch.eye(5)) < 1e-6 and clip_loss(torch.zeros(5, 5)) == pytest.approx(math.log(5))
    with pytest.raises(ValueError, match=r"square logits \(B, B\).*got shape \(4, 3\)"):
        clip_loss(torch.randn(4, 3))


def test_clip_training_step_lowers_the_loss():
    model = _clip().train()
    images, ids = torch.rand(4, 3, 32, 32), _ids(b=4)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(15):
        loss = clip_loss(model(images, ids, paired=True))
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 0.3
    assert model.logit_scale.grad is not None


def test_clip_rejects_mismatched_inputs():
    model = _clip()
    with pytest.raises(ValueError, match="paired batches must have the same size: got 4 images and 3 texts"):
        model(torch.rand(4, 3, 32, 32), _ids(b=3), paired=True)
    with pytest.raises(ValueError, match="expected 3 channels, got 1"):
        model.encode_image(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="expected images of size 32x32, got 16x16"):
        model.encode_image(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match="longer than context_length=16"):
        model.encode_text(_ids(length=17))


def test_zero_shot_with_prompt_ensembling():
    model = _clip()
    prompts = torch.stack([_ids(b=2, seed=s) for s in range(3)])  # (K=3, P=2, L=8)
    cls = zero_shot_classifier(model, prompts)
    assert cls.shape == (3, 32) and not cls.requires_grad
    manual = torch.stack([F.normalize(model.encode_text(p), dim=-1).mean(0) for p in prompts])
    torch.testing.assert_close(cls, F.normalize(manual, dim=-1))
    # a list with different numbers of prompts (and lengths) per class gives the same per-class result
    as_list = zero_shot_classifier(model, [prompts[0], prompts[1, :1], _ids(b=2, length=6, eos_at=4, seed=9)])
    torch.testing.assert_close(as_list[0], cls[0])
    torch.testing.assert_close(as_list[1], model.encode_text(prompts[1, :1])[0])
    one = zero_shot_classifier(model, prompts[:, 0])  # (K, L): one prompt per class
    torch.testing.assert_close(one, model.encode_text(prompts[:, 0]))

    # predicting: an image embedding equal to class 2's embedding is class 2
    img = torch.stack([cls[2], cls[0] * 3.0])
    assert zero_shot_predict(img, cls).tolist() == [2, 0]
    with pytest.raises(ValueError, match=r"image_embeds \(B, E\) and class_embeds \(K, E\).*\(2, 32\) and \(3, 16\)"):
        zero_shot_predict(img, cls[:, :16])


def test_retrieval_recall_at_k():
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.5, 0.1], [0.1, 0.2, 0.3]])  # query 1's match ranks 2nd
    assert retrieval_recall_at_k(sim, 1) == pytest.approx(2 / 3)
    assert retrieval_recall_at_k(sim, 2) == pytest.approx(1.0)
    assert retrieval_recall_at_k(sim, 1, targets=torch.tensor([0, 0, 2])) == pytest.approx(1.0)
    assert retrieval_recall_at_k(sim.T, 1) == pytest.approx(1.0)  # the other direction ranks differently
    with pytest.raises(ValueError, match=r"k must lie in \[1, 3\].*got k=4"):
        retrieval_recall_at_k(sim, 4)


def test_vit_pixel_normalisation_is_applied_first():
    cfg = ViTConfig(pixel_mean=(0.5, 0.4, 0.3), pixel_std=(0.25, 0.2, 0.5))
    with_norm = ViT(cfg).eval()
    plain = ViT(ViTConfig()).eval()
    plain.load_state_dict(with_norm.state_dict())  # the statistics are buffers, not weights
    x = torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor(cfg.pixel_mean).view(3, 1, 1), torch.tensor(cfg.pixel_std).view(3, 1, 1)
    torch.testing.assert_close(with_norm(x).pooled, plain((x - mean) / std).pooled)
    with pytest.raises(ValueError, match="one value per channel"):
        ViTConfig(pixel_mean=(0.5, 0.5), pixel_std=(0.2, 0.2))
    with pytest.raises(ValueError, match="channels"):
        with_norm(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="expected images of size 32x32, got 64x64"):
        with_norm(torch.rand(2, 3, 64, 64))
