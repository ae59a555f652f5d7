"""The library's input checks, one test per cause (issue 6, section 2).

Every public entry point rejects bad input with a ValueError (a TypeError for the wrong type) that
names what was expected and what came; the dtype rule is the one of ``transformers``' ViT / CLIP:
modules cast floating-point inputs to their parameter dtype.
"""

import math

import numpy as np
import pytest
import torch

from mmllm_course import get_device
from mmllm_course._checks import InputTypeError
from mmllm_course.data import color_shape_index, caption_class_index, questions_for, scene_caption, train_bpe_tokenizer
from mmllm_course.data import shapes_tokenizer
from mmllm_course.encoders import (
    CLIP,
    CLIPConfig,
    PatchEmbedding,
    TextTransformer,
    TextTransformerConfig,
    ViT,
    ViTConfig,
    clip_loss,
    retrieval_recall_at_k,
    unpatchify,
    zero_shot_predict,
)
from mmllm_course.nn import (
    MLP,
    LearnedPositionEmbedding,
    MultiHeadAttention,
    TransformerBlock,
    merge_heads,
    scaled_dot_product_attention,
    sincos_1d_position_embedding,
    split_heads,
)


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _ids(b=3, length=8):
    ids = torch.randint(2, 100, (b, length), generator=torch.Generator().manual_seed(1))
    ids[:, -2] = 1  # eos
    return ids


# ------------------------------------------------------------------------------------------ dtype


def _first(out):
    if isinstance(out, tuple):
        return out[0]
    return getattr(out, "last_hidden_state", out)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
@pytest.mark.parametrize(
    "build, shape",
    [
        (lambda: ViT().eval(), (2, 3, 32, 32)),
        (lambda: PatchEmbedding(32, 8, 3, 16), (2, 3, 32, 32)),
        (lambda: MultiHeadAttention(16, 4).eval(), (2, 5, 16)),
        (lambda: TransformerBlock(16, 4).eval(), (2, 5, 16)),
        (lambda: MLP(16, 32), (2, 5, 16)),
        (lambda: LearnedPositionEmbedding(8, 16), (2, 5, 16)),
    ],
)
def test_modules_cast_floating_inputs_to_their_parameter_dtype(build, shape, dtype):
    torch.manual_seed(0)
    module = build()
    x = _rand(*shape)
    with torch.no_grad():
        expected = _first(module(x))
        got = _first(module(x.to(dtype)))  # was: "mat1 and mat2 must have the same dtype"
    assert got.dtype == torch.float32
    tol = 1e-5 if dtype == torch.float64 else 2e-2
    torch.testing.assert_close(got, expected, atol=tol, rtol=tol)


def test_clip_takes_float64_images_and_int32_ids():
    torch.manual_seed(0)
    model = CLIP().eval()
    images, ids = _rand(2, 3, 32, 32), _ids(3)
    with torch.no_grad():
        expected = model(images, ids)
        got = model(images.double(), ids.int())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_text_transformer_takes_every_integer_dtype():
    torch.manual_seed(0)
    model = TextTransformer().eval()
    ids = _ids(3)
    with torch.no_grad():
        expected = model(ids).pooled
        for dtype in (torch.int32, torch.int16, torch.uint8):
            torch.testing.assert_close(model(ids.to(dtype)).pooled, expected)
    with pytest.raises(TypeError, match="integer token ids.*torch.float32"):
        model(ids.float())


def test_attention_functions_refuse_mixed_dtypes_naming_both():
    q = _rand(1, 2, 3, 4)
    with pytest.raises(TypeError, match=r"q torch.float64, k torch.float32, v torch.float32"):
        scaled_dot_product_attention(q.double(), q, q)


def test_images_must_be_floats():
    with pytest.raises(TypeError, match="floating-point.*torch.uint8"):
        ViT()(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


# ------------------------------------------------------------------------------- order of checks


def test_width_is_checked_before_layer_norm():
    with pytest.raises(ValueError, match=r"x must be \(B, N, 16\), got shape \(2, 5, 12\)"):
        TransformerBlock(16, 4)(torch.rand(2, 5, 12))
    with pytest.raises(ValueError, match=r"x must be \(\.\.\., 16\).*got shape \(2, 5, 12\)"):
        MLP(16, 32)(torch.rand(2, 5, 12))


# ------------------------------------------------------------------------------------------ masks


@pytest.mark.parametrize("return_weights", [True, False])
def test_integer_01_mask_means_keep_in_attention(return_weights):
    q, k, v = _rand(2, 3, 4, 8, seed=1), _rand(2, 3, 5, 8, seed=2), _rand(2, 3, 5, 8, seed=3)
    keep = torch.tensor([[1, 1, 0, 1, 0]] * 4)  # (N, M), what a tokenizer's attention_mask looks like
    out_int, _ = scaled_dot_product_attention(q, k, v, attn_mask=keep, return_weights=return_weights)
    out_bool, _ = scaled_dot_product_attention(q, k, v, attn_mask=keep.bool(), return_weights=return_weights)
    torch.testing.assert_close(out_int, out_bool)
    _, weights = scaled_dot_product_attention(q, k, v, attn_mask=keep, return_weights=True)
    assert (weights[..., keep == 0] == 0).all()  # was: the 0/1 added to the scores, nothing masked


def test_integer_mask_with_other_values_is_refused():
    q = _rand(1, 1, 2, 4)
    for return_weights in (True, False):
        with pytest.raises(ValueError, match=r"only 0 and 1.*values \[0, 2\]"):
            scaled_dot_product_attention(q, q, q, attn_mask=torch.tensor([[2, 0], [2, 2]]), return_weights=return_weights)


def test_float_mask_stays_additive_and_combines_with_causal():
    q, k, v = _rand(1, 2, 4, 8, seed=1), _rand(1, 2, 4, 8, seed=2), _rand(1, 2, 4, 8, seed=3)
    bias = _rand(4, 4, seed=4)
    slow, _ = scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=True, return_weights=True)
    fast, _ = scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=True)
    torch.testing.assert_close(fast, slow, atol=1e-6, rtol=1e-6)
    dropped, _ = scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=True, dropout_p=0.5)  # was: RuntimeError in torch
    assert torch.isfinite(dropped).all()


def test_mha_padding_mask_accepts_int_and_refuses_additive_floats():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4).eval()
    x = _rand(2, 3, 16)
    keep = torch.tensor([[1, 1, 0], [1, 0, 0]])
    torch.testing.assert_close(mha(x, key_padding_mask=keep)[0], mha(x, key_padding_mask=keep.bool())[0])
    torch.testing.assert_close(mha(x, key_padding_mask=keep.float())[0], mha(x, key_padding_mask=keep.bool())[0])
    with pytest.raises(ValueError, match="only 0 and 1"):  # was: -inf read as True, i.e. keep
        mha(x, key_padding_mask=torch.tensor([[0.0, 0.0, -math.inf], [0.0, -math.inf, -math.inf]]))
    with pytest.raises(ValueError, match="only 0 and 1"):
        TextTransformer()(_ids(2), attention_mask=torch.full((2, 8), 2))


# ------------------------------------------------------------------------------------ non-tensors


@pytest.mark.parametrize("bad", [None, [[1.0, 2.0]], np.zeros((2, 3, 4), dtype=np.float32)], ids=["None", "list", "numpy"])
@pytest.mark.parametrize(
    "call",
    [
        lambda x: unpatchify(x, 2, 1),
        lambda x: split_heads(x, 2),
        lambda x: merge_heads(x),
        lambda x: scaled_dot_product_attention(x, x, x),
        lambda x: MultiHeadAttention(4, 2)(x),
        lambda x: LearnedPositionEmbedding(4, 4)(x),
        lambda x: sincos_1d_position_embedding(x, 4),
        lambda x: clip_loss(x),
        lambda x: zero_shot_predict(x, torch.rand(3, 4)),
        lambda x: zero_shot_predict(torch.rand(3, 4), x),
        lambda x: retrieval_recall_at_k(x, 1),
        lambda x: TextTransformer()(x),
        lambda x: ViT()(x),
    ],
)
def test_non_tensors_raise_a_type_error_naming_the_expected_type(call, bad):
    with pytest.raises(TypeError, match="must be a torch.Tensor") as info:
        call(bad)
    assert isinstance(info.value, ValueError)  # InputTypeError: also caught by code written for the old ValueError
    assert type(bad).__name__ in str(info.value) or "None" in str(info.value)


def test_clip_config_takes_dict_sub_configs():
    config = CLIPConfig(vision=dict(dim=32, mlp_dim=64), text=dict(dim=32, mlp_dim=64, vocab_size=50))
    assert isinstance(config.vision, ViTConfig) and config.vision.dim == 32
    assert config.vision.pre_norm and config.vision.final_norm == "pooled"  # CLIP's layout stays the default
    assert isinstance(config.text, TextTransformerConfig) and config.text.vocab_size == 50
    assert CLIP(config).vision.config.dim == 32
    with pytest.raises(TypeError, match="vision must be a ViTConfig or a dict"):
        CLIPConfig(vision=5)
    with pytest.raises(TypeError, match="width"):
        CLIPConfig(vision=dict(width=32))


# ------------------------------------------------------------------------------------------ sizes


@pytest.mark.parametrize(
    "build, words",
    [
        (lambda: MultiHeadAttention(16, 0), ["num_heads", "positive", "got 0"]),
        (lambda: TransformerBlock(16, 0), ["num_heads", "got 0"]),
        (lambda: ViTConfig(num_heads=0), ["num_heads", "got 0"]),
        (lambda: PatchEmbedding(32, 0), ["patch_size", "got 0"]),
        (lambda: ViTConfig(patch_size=0), ["patch_size", "got 0"]),
        (lambda: ViTConfig(depth=-1), ["depth", "non-negative", "got -1"]),
        (lambda: TextTransformerConfig(depth=-1), ["depth", "got -1"]),
        (lambda: ViTConfig(image_size=-32), ["image_size", "got -32"]),
        (lambda: ViTConfig(dim=0), ["dim", "got 0"]),
        (lambda: PatchEmbedding(dim=0), ["dim", "got 0"]),
        (lambda: ViTConfig(in_channels=0), ["in_channels", "got 0"]),
        (lambda: ViTConfig(pixel_mean=(0.5, 0.5, 0.5), pixel_std=(0, 0, 0)), ["pixel_std", "positive"]),
        (lambda: TextTransformerConfig(context_length=0), ["context_length", "got 0"]),
        (lambda: ViTConfig(dropout=1.5), ["dropout", "[0, 1)", "1.5"]),
        (lambda: TextTransformerConfig(dropout=1.5), ["dropout", "1.5"]),
        (lambda: MLP(16, 32, dropout=-0.1), ["dropout", "-0.1"]),
        (lambda: ViTConfig(attention_dropout=1.0), ["attention_dropout"]),
        (lambda: CLIPConfig(embed_dim=0), ["embed_dim", "got 0"]),
        (lambda: ViTConfig(image_size=(32, 48)), ["square", "(32, 48)"]),
        (lambda: PatchEmbedding(image_size=(32, 48)), ["square", "(32, 48)"]),
        (lambda: split_heads(torch.rand(2, 3, 8), 0), ["num_heads", "got 0"]),
    ],
)
def test_bad_sizes_raise_value_errors_naming_the_value(build, words):
    with pytest.raises(ValueError) as info:
        build()
    for word in words:
        assert word in str(info.value), f"{word!r} not in {info.value}"


def test_a_square_image_size_pair_is_read_as_one_int():
    assert ViTConfig(image_size=(32, 32)).image_size == 32
    assert PatchEmbedding(image_size=(16, 16), patch_size=4).num_patches == 16


def test_empty_batches_raise_instead_of_nan():
    with pytest.raises(ValueError, match="at least one pair"):
        clip_loss(torch.zeros(0, 0))  # was: nan
    with pytest.raises(ValueError, match="at least one query"):
        retrieval_recall_at_k(torch.zeros(0, 5), 1)  # was: nan
    with pytest.raises(ValueError, match="at least one image, one class"):
        zero_shot_predict(torch.rand(3, 4), torch.zeros(0, 4))


# ------------------------------------------------------------------------------------ data helpers


def test_color_shape_index_refuses_out_of_range_labels():
    assert color_shape_index(color=3, shape=4) == 19
    with pytest.raises(ValueError, match=r"color must be an index in \[0, 4\).*got 4"):
        color_shape_index(color=4, shape=0)  # was: 20, outside the 20 classes
    with pytest.raises(ValueError, match=r"shape labels must lie in \[0, 5\).*\[0, 5\]"):
        color_shape_index(color=torch.tensor([0, 1]), shape=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"position"):
        caption_class_index(shape=0, color=0, size=0, position=-1)


def test_questions_for_refuses_out_of_range_labels():
    with pytest.raises(ValueError, match=r"position index must be in \[0, 4\), got -1"):
        questions_for([[0, 0, 0, -1]])  # was: answered for "bottom right"
    with pytest.raises(ValueError, match=r"shape index must be in \[0, 5\), got 9"):
        questions_for([[9, 0, 0, 0]])  # was: IndexError
    with pytest.raises(ValueError, match="4 labels"):
        scene_caption([[0, 0, 0]])


def test_tokenizer_refuses_a_bare_string():
    with pytest.raises(TypeError, match=r"texts must be a list of strings, got the single str 'a str'.*\['a str'\]"):
        train_bpe_tokenizer("a str")  # was: trained on the characters
    with pytest.raises(TypeError, match=r"extra_special_tokens must be a list.*'\[IMG\]'"):
        train_bpe_tokenizer(extra_special_tokens="[IMG]")  # was: "[", "I", "M", "G", "]" as 5 special tokens
    with pytest.raises(TypeError, match="extra_special_tokens"):
        shapes_tokenizer(extra_special_tokens="[IMG]")


def test_get_device_lists_the_choices():
    with pytest.raises(ValueError, match=r"'gpu' is not a device: expected one of \('cpu', 'cuda'"):
        get_device("gpu")  # was: RuntimeError inside torch
    with pytest.raises(TypeError, match="device name"):
        get_device(0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="does not have"):
            get_device("cuda")


def test_input_type_error_is_both_kinds():
    assert issubclass(InputTypeError, TypeError) and issubclass(InputTypeError, ValueError)
