"""Our VisionEmbeddings equals transformers' ViTEmbeddings when it holds the same weights."""

import pytest
import torch

from mmllm_course.encoders.patches import PatchEmbedding, vision_embeddings_from_vit

transformers = pytest.importorskip("transformers")

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32, patch_size=8)


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Every parameter gets distinct random values (no zeros, no 0.02-std init that hides a mix-up)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g))


@pytest.fixture
def hf_vit_embeddings():
    from transformers import ViTConfig
    from transformers.models.vit.modeling_vit import ViTEmbeddings

    torch.manual_seed(0)
    emb = ViTEmbeddings(ViTConfig(**TINY)).eval()
    _randomise(emb, seed=1)
    return emb


def _images(batch: int = 3, size: int = 32, seed: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_vision_embeddings_equal_vit_embeddings(hf_vit_embeddings):
    ours = vision_embeddings_from_vit(hf_vit_embeddings).eval()
    assert ours.num_tokens == 1 + (32 // 8) ** 2
    x = _images()
    with torch.no_grad():
        expected = hf_vit_embeddings(x)
        got = ours(x)
    assert got.shape == expected.shape == (3, 17, 32)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_patch_tokens_alone_equal_vit_patch_embeddings(hf_vit_embeddings):
    """The patch projection on its own (no [CLS], no positions): catches a flatten-order mistake directly."""
    ours = vision_embeddings_from_vit(hf_vit_embeddings)
    x = _images(batch=2, seed=3)
    with torch.no_grad():
        expected = hf_vit_embeddings.patch_embeddings(x)  # (B, N, D)
        got = ours.patch_embedding(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_a_wrong_mapping_would_be_caught(hf_vit_embeddings):
    """The randomised weights make a plain reshape of the conv kernel (c p1 p2 order) visibly wrong."""
    sd = hf_vit_embeddings.state_dict()
    w = sd["patch_embeddings.projection.weight"]  # (D, C, p, p)
    wrong = PatchEmbedding(32, 8, 3, 32)
    with torch.no_grad():
        wrong.proj.weight.copy_(w.reshape(32, -1))  # (c p1 p2) columns, but patchify gives (p1 p2 c)
        wrong.proj.bias.copy_(sd["patch_embeddings.projection.bias"])
    x = _images(batch=1, seed=4)
    with torch.no_grad():
        assert not torch.allclose(wrong(x), hf_vit_embeddings.patch_embeddings(x), atol=1e-3)


def test_from_saved_vit_model_folder(tmp_path):
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    model = ViTModel(ViTConfig(**TINY), add_pooling_layer=False).eval()
    _randomise(model.embeddings, seed=5)
    model.save_pretrained(tmp_path)
    reloaded = ViTModel.from_pretrained(tmp_path).eval()
    ours = vision_embeddings_from_vit(reloaded.embeddings).eval()
    x = _images(batch=2, seed=6)
    with torch.no_grad():
        expected = model.embeddings(x)  # the original, before saving
        torch.testing.assert_close(reloaded.embeddings(x), expected, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)


def test_not_a_vit_state_dict_is_a_clear_error():
    with pytest.raises(ValueError, match="missing"):
        vision_embeddings_from_vit(torch.nn.Linear(2, 2))
