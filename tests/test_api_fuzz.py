"""Fuzz the public API: every name exported by the package's ``__init__`` files, fed bad input.

The library's rule: a public entry point rejects bad input with a ``ValueError`` (a ``TypeError``
for the wrong type) raised by OUR code, naming what was expected and what came. Never an
``AttributeError``, ``RuntimeError``, ``ZeroDivisionError``, ``IndexError`` or ``KeyError``, never
an error raised deep inside torch, and never silent success on input that is clearly wrong.

``REGISTRY`` says, for every exported name, how to call it correctly (one or more :class:`Call`)
and which extra bad calls must fail. From each good call the fuzzer derives bad ones by itself:

* a tensor argument becomes None (unless None is its default), a list, a numpy array, a str
  (a ``TypeError`` is required), gets one dim more or one less (an error is required unless the
  argument is ``rank_free``), another dtype or an empty batch (an error or a result without NaN);
* an int argument becomes 0 and -1 (a ``ValueError`` unless ``zero_ok`` / ``negative_ok``),
  2.5 and "3" (a ``TypeError`` unless the argument also takes names, ``str_ok``);
* a float argument becomes NaN and "abc" (an error is required) and -1.0 (unless ``negative_ok``);
* any other argument (a model, a config, a list) becomes None, "abc" (or ``str_value``) and 5.

A new exported name without an entry here fails ``test_every_exported_name_has_a_fuzz_spec``:
each chapter that exports something adds how to call it.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
import math
import os
import pkgutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch

import mmllm_course
from mmllm_course import get_device, seed_everything
from mmllm_course.bridges import (
    Bridge,
    LinearBridge,
    LinearBridgeConfig,
    MLPBridge,
    MLPBridgeConfig,
    PerceiverResamplerBridge,
    PerceiverResamplerBridgeConfig,
    QFormerBridge,
    QFormerBridgeConfig,
    TokenMergeBridge,
    TokenMergeBridgeConfig,
    make_bridge,
    mlp_bridge_from_transformers,
    perceiver_resampler_bridge_from_transformers,
    pixel_shuffle,
    qformer_bridge_from_transformers,
    token_merge_bridge_from_transformers,
)
from mmllm_course.data import (
    PointCloudBatch,
    PointCloudConfig,
    PointCloudDataset,
    ShapesBatch,
    ShapesDataset,
    ShapesWorldConfig,
    SpokenBatch,
    SpokenConfig,
    SpokenDescriptions,
    all_caption_classes,
    caption_class_index,
    caption_for,
    collate_shapes,
    color_shape_classes,
    color_shape_index,
    default_corpus,
    generate_shapes,
    load_sample_image,
    make_point_clouds,
    make_spoken_descriptions,
    questions_for,
    random_rotations,
    sample_surface,
    scene_caption,
    shapes_tokenizer,
    synthesize_word,
    train_bpe_tokenizer,
)
from mmllm_course.encoders import (
    AudioEncoder,
    AudioEncoderConfig,
    BindingHead,
    BindingHistory,
    BoundEncoder,
    CLIP,
    CLIPConfig,
    LogMelConfig,
    LogMelSpectrogram,
    MiniPointNet,
    PairedClouds,
    PatchEmbedding,
    PointEncoder,
    PointEncoderConfig,
    PointEncoderOutput,
    RetrievalResult,
    TextTransformer,
    TextTransformerConfig,
    TextTransformerOutput,
    ViT,
    ViTConfig,
    ViTOutput,
    VisionEmbeddings,
    WaveformEncoderConfig,
    WaveformFeatureEncoder,
    caption_embeddings,
    clip_from_transformers,
    clip_loss,
    clip_text_from_transformers,
    clip_vision_from_transformers,
    embed_in_batches,
    emergent_retrieval,
    farthest_point_sampling,
    gather_points,
    hertz_to_mel,
    hubert_feature_encoder_from_transformers,
    info_nce,
    knn_group,
    load_pretrained_clip,
    log_mel_spectrogram,
    make_paired_clouds,
    mel_filter_bank,
    mel_to_hertz,
    patchify,
    retrieval_recall_at_k,
    train_binding,
    unpatchify,
    vision_embeddings_from_vit,
    vit_from_transformers,
    whisper_encoder_from_transformers,
    whisper_sinusoids,
    zero_shot_classifier,
    zero_shot_predict,
)
from mmllm_course.nn import (
    MLP,
    LearnedPositionEmbedding,
    MultiHeadAttention,
    QuickGELU,
    TransformerBlock,
    attention_from_clip,
    causal_mask,
    make_activation,
    merge_heads,
    scaled_dot_product_attention,
    sincos_1d_position_embedding,
    sincos_2d_position_embedding,
    split_heads,
)

LIBRARY_DIR = os.path.dirname(os.path.abspath(mmllm_course.__file__)) + os.sep
NOT_LIBRARY_API = ("mmllm_course.grading", "mmllm_course.viz")  # the checker and the figures, not model code
CONSTANT = "constant"  # a registry value for exported data (tuples, dicts, strings)
MISSING_FOLDER = "/no/such/folder/anywhere"


@dataclass
class Call:
    """One correct call of ``fn``; the fuzzer derives the bad calls from it."""

    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    zero_ok: frozenset = frozenset()  # int arguments for which 0 is valid
    negative_ok: frozenset = frozenset()  # int / float arguments for which -1 is valid
    rank_free: frozenset = frozenset()  # tensor arguments whose number of dims may vary
    str_ok: frozenset = frozenset()  # int arguments that also take names (a wrong str is then a ValueError)
    fixed: frozenset = frozenset()  # arguments the fuzzer leaves alone
    str_value: str = "abc"  # the str that replaces an object argument (a converter gets a missing folder)
    run_good: bool = True  # False when the correct call is slow or needs the network


@dataclass
class Spec:
    calls: Callable[[], list[Call]]  # built lazily: fresh modules per test
    bad: Callable[[], list[tuple[str, Callable[[], Any]]]] = lambda: []  # extra calls that must fail
    mutate: bool = True  # False for plain output containers (dataclasses that hold tensors)
    allowed: tuple[type[BaseException], ...] = ()  # extra exception types the bad list may raise (IndexError for __getitem__)


def _fs(*names: str) -> frozenset:
    return frozenset(names)


# --------------------------------------------------------------------------------------- inputs


def _g() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _rand(*shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=_g())


def _ids(b: int = 2, length: int = 8, vocab: int = 100, eos: int = 1) -> torch.Tensor:
    ids = torch.randint(2, vocab, (b, length), generator=_g())
    ids[:, length - 2] = eos
    return ids


def _mask(b: int = 2, length: int = 8) -> torch.Tensor:
    mask = torch.ones(b, length, dtype=torch.long)
    mask[:, -1] = 0
    return mask


@functools.lru_cache(maxsize=None)
def _hf() -> dict[str, torch.nn.Module]:
    """Tiny random transformers models (built once; transformers is imported only by the cases that need it)."""
    transformers = pytest.importorskip("transformers")
    t = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)
    i = dict(image_size=32, patch_size=8)
    text = dict(t, vocab_size=100, max_position_embeddings=16, eos_token_id=99)
    torch.manual_seed(0)
    clip = transformers.CLIPModel(transformers.CLIPConfig(vision_config=dict(t, **i), text_config=text, projection_dim=16))
    return {
        "vit": transformers.ViTModel(transformers.ViTConfig(**t, **i), add_pooling_layer=False).eval(),
        "clip": clip.eval(),
        "clip_vision": transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**t, **i)).eval(),
        "clip_text": transformers.CLIPTextModel(transformers.CLIPTextConfig(**text)).eval(),
    }


def _clip_attention() -> torch.nn.Module:
    from transformers import CLIPVisionConfig
    from transformers.models.clip.modeling_clip import CLIPAttention

    return CLIPAttention(CLIPVisionConfig(hidden_size=32, num_attention_heads=4)).eval()


def _clip() -> CLIP:
    torch.manual_seed(0)
    return CLIP().eval()


def _batch() -> ShapesBatch:
    return generate_shapes(4, seed=0)


# ------------------------------------------------------------------------------------- registry

REGISTRY: dict[str, Spec | str] = {
    # ---- mmllm_course
    "__version__": CONSTANT,
    "get_device": Spec(
        lambda: [Call(get_device, ("cpu",))],
        lambda: [("gpu", lambda: get_device("gpu")), ("int", lambda: get_device(5)), ("cuda:x", lambda: get_device("cuda:x"))],
    ),
    "seed_everything": Spec(
        lambda: [Call(seed_everything, (3,), zero_ok=_fs("seed"))],
        lambda: [("2**40", lambda: seed_everything(2**40))],
    ),
    # ---- mmllm_course.nn
    "LearnedPositionEmbedding": Spec(
        lambda: [
            Call(LearnedPositionEmbedding, kwargs=dict(num_positions=8, dim=16, init_std=0.02), zero_ok=_fs("init_std")),
            Call(LearnedPositionEmbedding(8, 16), (_rand(2, 5, 16),)),
        ],
        lambda: [("9 tokens for 8 positions", lambda: LearnedPositionEmbedding(8, 16)(_rand(2, 9, 16))),
                 ("width 12", lambda: LearnedPositionEmbedding(8, 16)(_rand(2, 5, 12)))],
    ),
    "MLP": Spec(
        lambda: [
            Call(MLP, kwargs=dict(dim=16, hidden_dim=32, activation="gelu", dropout=0.1), zero_ok=_fs("dropout")),
            Call(MLP(16, 32), (_rand(2, 5, 16),), rank_free=_fs("x")),
        ],
        lambda: [("width 12", lambda: MLP(16, 32)(_rand(2, 5, 12))), ("activation", lambda: MLP(16, 32, activation="relu6"))],
    ),
    "MultiHeadAttention": Spec(
        lambda: [
            Call(MultiHeadAttention, kwargs=dict(dim=16, num_heads=4, kv_dim=8, dropout=0.1), zero_ok=_fs("dropout")),
            Call(MultiHeadAttention(16, 4, kv_dim=8), (_rand(2, 5, 16),),
                 dict(context=_rand(2, 3, 8), key_padding_mask=_mask(2, 3), return_weights=True)),
            Call(MultiHeadAttention(16, 4), (_rand(2, 5, 16),), dict(causal=True)),
        ],
        lambda: [
            ("mask with a 2", lambda: MultiHeadAttention(16, 4)(_rand(2, 3, 16), key_padding_mask=torch.tensor([[1, 2, 1], [1, 1, 0]]))),
            ("additive float padding mask", lambda: MultiHeadAttention(16, 4)(
                _rand(2, 3, 16), key_padding_mask=torch.tensor([[0.0, -math.inf, 0.0], [0.0, 0.0, 0.0]]))),
            ("width 12", lambda: MultiHeadAttention(16, 4)(_rand(2, 5, 12))),
            ("dim not divisible", lambda: MultiHeadAttention(10, 4)),
        ],
    ),
    "QuickGELU": Spec(lambda: [Call(QuickGELU(), (_rand(2, 3),), rank_free=_fs("x"))]),
    "TransformerBlock": Spec(
        lambda: [
            Call(TransformerBlock, kwargs=dict(dim=16, num_heads=4, mlp_ratio=2.0, layer_norm_eps=1e-5, dropout=0.1,
                                               attention_dropout=0.1), zero_ok=_fs("dropout", "attention_dropout")),
            Call(TransformerBlock(16, 4), (_rand(2, 5, 16),), dict(key_padding_mask=_mask(2, 5), causal=True, return_weights=True)),
        ],
        lambda: [("width 12", lambda: TransformerBlock(16, 4)(_rand(2, 5, 12))),
                 ("hidden_dim 0", lambda: TransformerBlock(16, 4, hidden_dim=0))],
    ),
    "attention_from_clip": Spec(
        lambda: [Call(attention_from_clip, (_clip_attention(),))],
        lambda: [("a Linear", lambda: attention_from_clip(torch.nn.Linear(2, 2))),
                 ("a ViT attention", lambda: attention_from_clip(_hf()["vit"].layers[0].attention))],
    ),
    "causal_mask": Spec(lambda: [Call(causal_mask, (4, 6))]),
    "make_activation": Spec(
        lambda: [Call(make_activation, ("quick_gelu",))],
        lambda: [("relu6", lambda: make_activation("relu6")), ("None", lambda: make_activation(None))],
    ),
    "merge_heads": Spec(lambda: [Call(merge_heads, (_rand(2, 4, 5, 3),))]),
    "scaled_dot_product_attention": Spec(
        lambda: [
            Call(scaled_dot_product_attention, (_rand(2, 3, 5, 4), _rand(2, 3, 6, 4), _rand(2, 3, 6, 4)),
                 dict(attn_mask=torch.ones(5, 6, dtype=torch.long), return_weights=True), rank_free=_fs("attn_mask")),
            Call(scaled_dot_product_attention, (_rand(2, 3, 5, 4), _rand(2, 3, 6, 4), _rand(2, 3, 6, 4)),
                 dict(attn_mask=torch.zeros(5, 6), is_causal=True, dropout_p=0.1), rank_free=_fs("attn_mask"), zero_ok=_fs("dropout_p")),
        ],
        lambda: [
            ("int mask with a 2", lambda: scaled_dot_product_attention(
                _rand(1, 1, 2, 4), _rand(1, 1, 2, 4), _rand(1, 1, 2, 4), attn_mask=torch.tensor([[1, 2], [1, 1]]), return_weights=True)),
            ("int mask with a 2, fast path", lambda: scaled_dot_product_attention(
                _rand(1, 1, 2, 4), _rand(1, 1, 2, 4), _rand(1, 1, 2, 4), attn_mask=torch.tensor([[1, 2], [1, 1]]))),
            ("mixed dtypes", lambda: scaled_dot_product_attention(_rand(1, 1, 2, 4).double(), _rand(1, 1, 2, 4), _rand(1, 1, 2, 4))),
            ("dropout 1.5", lambda: scaled_dot_product_attention(_rand(1, 1, 2, 4), _rand(1, 1, 2, 4), _rand(1, 1, 2, 4), dropout_p=1.5)),
        ],
    ),
    "sincos_1d_position_embedding": Spec(
        lambda: [Call(sincos_1d_position_embedding, (torch.arange(5), 8), dict(temperature=100.0))],
        lambda: [("odd dim", lambda: sincos_1d_position_embedding(torch.arange(5), 7))],
    ),
    "sincos_2d_position_embedding": Spec(
        lambda: [Call(sincos_2d_position_embedding, (2, 3, 8), dict(temperature=100.0))],
        lambda: [("dim 6", lambda: sincos_2d_position_embedding(2, 2, 6))],
    ),
    "split_heads": Spec(
        lambda: [Call(split_heads, (_rand(2, 5, 12), 4))],
        lambda: [("5 heads for 12", lambda: split_heads(_rand(2, 5, 12), 5))],
    ),
    # ---- mmllm_course.encoders
    "CLIP": Spec(
        lambda: [
            Call(CLIP, (CLIPConfig(),)),
            Call(_clip(), (_rand(2, 3, 32, 32), _ids(2)), dict(attention_mask=_mask(2), paired=True)),
            Call(_clip().encode_image, (_rand(2, 3, 32, 32),)),
            Call(_clip().encode_text, (_ids(3),), dict(attention_mask=_mask(3))),
        ],
        lambda: [("paired 2 vs 3", lambda: _clip()(_rand(2, 3, 32, 32), _ids(3), paired=True)),
                 ("a dict config", lambda: CLIP({"embed_dim": 8}))],
    ),
    "CLIPConfig": Spec(
        lambda: [
            Call(CLIPConfig, kwargs=dict(embed_dim=16, init_logit_scale=2.0, max_logit_scale=100.0), negative_ok=_fs("init_logit_scale")),
            Call(CLIPConfig, kwargs=dict(vision=dict(dim=32, mlp_dim=64), text=dict(dim=32, mlp_dim=64))),
        ],
        lambda: [("a bad key in the vision dict", lambda: CLIPConfig(vision=dict(width=32))),
                 ("dim 0 in the text dict", lambda: CLIPConfig(text=dict(dim=0)))],
    ),
    "PatchEmbedding": Spec(
        lambda: [
            Call(PatchEmbedding, kwargs=dict(image_size=16, patch_size=4, in_channels=3, dim=8)),
            Call(PatchEmbedding, kwargs=dict(image_size=(16, 16), patch_size=4), fixed=_fs("image_size")),
            Call(PatchEmbedding(16, 4, 3, 8), (_rand(2, 3, 16, 16),)),
        ],
        lambda: [("non-square", lambda: PatchEmbedding(image_size=(16, 24), patch_size=4)),
                 ("uint8 images", lambda: PatchEmbedding(16, 4, 3, 8)(torch.zeros(1, 3, 16, 16, dtype=torch.uint8)))],
    ),
    "TextTransformer": Spec(
        lambda: [
            Call(TextTransformer, (TextTransformerConfig(),)),
            Call(TextTransformer().eval(), (_ids(2),), dict(attention_mask=_mask(2), output_hidden_states=True, output_attentions=True)),
        ],
        lambda: [("mask with a 2", lambda: TextTransformer()(_ids(2), attention_mask=2 * _mask(2))),
                 ("id 100", lambda: TextTransformer()(_ids(2) * 0 + 100))],
    ),
    "TextTransformerConfig": Spec(
        lambda: [Call(TextTransformerConfig, kwargs=dict(
            vocab_size=100, context_length=16, dim=32, depth=1, num_heads=4, mlp_dim=64, layer_norm_eps=1e-5,
            eos_token_id=1, pad_token_id=0, dropout=0.1, attention_dropout=0.1),
            zero_ok=_fs("depth", "eos_token_id", "pad_token_id", "dropout", "attention_dropout"))],
        lambda: [("eos outside the vocabulary", lambda: TextTransformerConfig(eos_token_id=100)),
                 ("dropout 1.5", lambda: TextTransformerConfig(dropout=1.5))],
    ),
    "TextTransformerOutput": Spec(lambda: [Call(TextTransformerOutput, (_rand(1, 2, 4), _rand(1, 4)))], mutate=False),
    "ViT": Spec(
        lambda: [
            Call(ViT, (ViTConfig(dim=32, mlp_dim=64),)),
            Call(ViT().eval(), (_rand(2, 3, 32, 32),), dict(output_hidden_states=True, output_attentions=True)),
            Call(ViT(ViTConfig(pixel_mean=(0.5, 0.5, 0.5), pixel_std=(0.2, 0.2, 0.2))).eval(), (_rand(2, 3, 32, 32),)),
        ],
        lambda: [("16x16 images", lambda: ViT()(_rand(1, 3, 16, 16))), ("a dict config", lambda: ViT({"dim": 32}))],
    ),
    "ViTConfig": Spec(
        lambda: [Call(ViTConfig, kwargs=dict(
            image_size=32, patch_size=8, in_channels=3, dim=32, depth=1, num_heads=4, mlp_dim=64, layer_norm_eps=1e-5,
            dropout=0.1, attention_dropout=0.1), zero_ok=_fs("depth", "dropout", "attention_dropout"))],
        lambda: [
            ("pixel_std with zeros", lambda: ViTConfig(pixel_mean=(0.0, 0.0, 0.0), pixel_std=(0.0, 0.0, 0.0))),
            ("pixel_std of 2 channels", lambda: ViTConfig(pixel_mean=(0.0, 0.0), pixel_std=(1.0, 1.0))),
            ("non-square image_size", lambda: ViTConfig(image_size=(32, 48))),
            ("image_size not divisible", lambda: ViTConfig(image_size=30)),
            ("sincos with dim 6", lambda: ViTConfig(dim=6, num_heads=2, position="sincos")),
            ("pooling", lambda: ViTConfig(pooling="max")),
        ],
    ),
    "ViTOutput": Spec(lambda: [Call(ViTOutput, (_rand(1, 5, 4), _rand(1, 4)))], mutate=False),
    "VisionEmbeddings": Spec(
        lambda: [
            Call(VisionEmbeddings, kwargs=dict(image_size=16, patch_size=4, in_channels=3, dim=8)),
            Call(VisionEmbeddings(16, 4, 3, 8, position="sincos"), (_rand(2, 3, 16, 16),)),
        ],
        lambda: [("position", lambda: VisionEmbeddings(position="rope")),
                 ("sincos with dim 6", lambda: VisionEmbeddings(16, 4, 3, 6, position="sincos"))],
    ),
    "clip_from_transformers": Spec(
        lambda: [Call(clip_from_transformers, (_hf()["clip"],), str_value=MISSING_FOLDER)],
        lambda: [("a ViTModel", lambda: clip_from_transformers(_hf()["vit"])),
                 ("a CLIPVisionModel", lambda: clip_from_transformers(_hf()["clip_vision"]))],
    ),
    "clip_loss": Spec(
        lambda: [Call(clip_loss, (_rand(3, 3),))],
        lambda: [("empty batch", lambda: clip_loss(torch.zeros(0, 0))), ("3x4", lambda: clip_loss(_rand(3, 4))),
                 ("int logits", lambda: clip_loss(torch.ones(3, 3, dtype=torch.long)))],
    ),
    "clip_text_from_transformers": Spec(
        lambda: [Call(clip_text_from_transformers, (_hf()["clip_text"],), str_value=MISSING_FOLDER),
                 Call(clip_text_from_transformers, (_hf()["clip"],), str_value=MISSING_FOLDER)],
        lambda: [("a ViTModel", lambda: clip_text_from_transformers(_hf()["vit"])),
                 ("a CLIPVisionModel", lambda: clip_text_from_transformers(_hf()["clip_vision"]))],
    ),
    "clip_vision_from_transformers": Spec(
        lambda: [Call(clip_vision_from_transformers, (_hf()["clip_vision"],), str_value=MISSING_FOLDER),
                 Call(clip_vision_from_transformers, (_hf()["clip"],), str_value=MISSING_FOLDER)],
        lambda: [("a ViTModel", lambda: clip_vision_from_transformers(_hf()["vit"])),
                 ("a CLIPTextModel", lambda: clip_vision_from_transformers(_hf()["clip_text"]))],
    ),
    "load_pretrained_clip": Spec(
        lambda: [Call(load_pretrained_clip, (MISSING_FOLDER,), run_good=False)],
        lambda: [("None", lambda: load_pretrained_clip(None)), ("int", lambda: load_pretrained_clip(5)),
                 ("missing folder", lambda: load_pretrained_clip(MISSING_FOLDER))],
    ),
    "patchify": Spec(
        lambda: [Call(patchify, (_rand(2, 3, 8, 8), 4))],
        lambda: [("10x8 image", lambda: patchify(_rand(1, 3, 10, 8), 4))],
    ),
    "retrieval_recall_at_k": Spec(
        lambda: [Call(retrieval_recall_at_k, (_rand(4, 5), 2), dict(targets=torch.tensor([0, 1, 2, 4])))],
        lambda: [("no queries", lambda: retrieval_recall_at_k(torch.zeros(0, 5), 1)),
                 ("empty gallery", lambda: retrieval_recall_at_k(torch.zeros(3, 0), 1)),
                 ("k > gallery", lambda: retrieval_recall_at_k(_rand(4, 5), 6)),
                 ("target 5", lambda: retrieval_recall_at_k(_rand(4, 5), 1, torch.tensor([0, 1, 2, 5]))),
                 ("float targets", lambda: retrieval_recall_at_k(_rand(4, 5), 1, torch.tensor([0.0, 1, 2, 3])))],
    ),
    "unpatchify": Spec(
        lambda: [Call(unpatchify, (_rand(2, 6, 48), 4, 2, 3))],
        lambda: [("5 patches for 2x3", lambda: unpatchify(_rand(2, 5, 48), 4, 2, 3))],
    ),
    "vision_embeddings_from_vit": Spec(
        lambda: [Call(vision_embeddings_from_vit, (_hf()["vit"].embeddings,))],
        lambda: [("a Linear", lambda: vision_embeddings_from_vit(torch.nn.Linear(2, 2))),
                 ("a whole ViTModel", lambda: vision_embeddings_from_vit(_hf()["vit"])),
                 ("CLIP's embeddings", lambda: vision_embeddings_from_vit(_hf()["clip"].vision_model.embeddings))],
    ),
    "vit_from_transformers": Spec(
        lambda: [Call(vit_from_transformers, (_hf()["vit"],), str_value=MISSING_FOLDER)],
        lambda: [("a CLIPModel", lambda: vit_from_transformers(_hf()["clip"])),
                 ("a CLIPVisionModel", lambda: vit_from_transformers(_hf()["clip_vision"]))],
    ),
    "zero_shot_classifier": Spec(
        lambda: [
            Call(zero_shot_classifier, (_clip(), _ids(3)), dict(attention_mask=_mask(3))),
            Call(zero_shot_classifier, (_clip(), _ids(6).view(3, 2, 8)), rank_free=_fs("class_prompt_ids")),  # (K, L) is valid too
            Call(zero_shot_classifier, (_clip(), [_ids(2), _ids(1)[0]])),
        ],
        lambda: [("a list of ints", lambda: zero_shot_classifier(_clip(), [[1, 2], [3, 4]])),
                 ("no classes", lambda: zero_shot_classifier(_clip(), [])),
                 ("a ViT as model", lambda: zero_shot_classifier(ViT(), _ids(3)))],
    ),
    "zero_shot_predict": Spec(
        lambda: [Call(zero_shot_predict, (_rand(4, 8), _rand(3, 8)))],
        lambda: [("no classes", lambda: zero_shot_predict(_rand(4, 8), torch.zeros(0, 8))),
                 ("E differs", lambda: zero_shot_predict(_rand(4, 8), _rand(3, 7)))],
    ),
    # ---- mmllm_course.data
    "ANSWERS": CONSTANT, "ATTRIBUTES": CONSTANT, "BOS_TOKEN": CONSTANT, "COLORS": CONSTANT, "COLOR_RGB": CONSTANT,
    "EOS_TOKEN": CONSTANT, "PAD_TOKEN": CONSTANT, "POSITIONS": CONSTANT, "SAMPLE_IMAGES": CONSTANT, "SHAPES": CONSTANT,
    "SIZES": CONSTANT,
    "ShapesBatch": Spec(
        lambda: [
            Call(_batch().__getitem__, (1,), zero_ok=_fs("index"), negative_ok=_fs("index")),
            Call(_batch().__getitem__, ([0, 2],)),
            Call(_batch().__getitem__, (slice(0, 2),)),
            Call(_batch().color_shape_labels),
        ],
        lambda: [("index 4 of 4", lambda: _batch()[4]), ("index list with 9", lambda: _batch()[[0, 9]]),
                 ("index list of str", lambda: _batch()[["a"]]), ("float index", lambda: _batch()[1.0])],
        allowed=(IndexError,),  # the sequence protocol: an index out of range is an IndexError
    ),
    "ShapesDataset": Spec(
        lambda: [
            Call(ShapesDataset, (4,), dict(seed=0), zero_ok=_fs("seed")),
            Call(ShapesDataset(4).__getitem__, (1,), zero_ok=_fs("i"), negative_ok=_fs("i")),
        ],
        lambda: [("index 4 of 4", lambda: ShapesDataset(4)[4]), ("str data", lambda: ShapesDataset("ten"))],
        allowed=(IndexError,),
    ),
    "ShapesWorldConfig": Spec(
        lambda: [Call(ShapesWorldConfig, kwargs=dict(
            image_size=32, num_shapes=2, noise=0.04, background=0.5, background_jitter=0.05, color_jitter=0.06,
            size_jitter=0.08, position_jitter=1.0),
            zero_ok=_fs("noise", "background", "background_jitter", "color_jitter", "size_jitter", "position_jitter"))],
        lambda: [("num_shapes 3", lambda: ShapesWorldConfig(num_shapes=3)), ("image size 33", lambda: ShapesWorldConfig(image_size=33))],
    ),
    "all_caption_classes": Spec(
        lambda: [Call(all_caption_classes, ("a photo of {}",))],
        lambda: [("int template", lambda: all_caption_classes(5)), ("no placeholder", lambda: all_caption_classes("x")),
                 ("named placeholder", lambda: all_caption_classes("{name}"))],
    ),
    "caption_class_index": Spec(
        lambda: [
            Call(caption_class_index, kwargs=dict(shape=1, color=2, size=0, position=3), zero_ok=_fs("shape", "color", "size", "position")),
            Call(caption_class_index, kwargs=dict(shape=torch.tensor([0, 4]), color=torch.tensor([3, 0]), size=torch.tensor([1, 0]),
                                                  position=torch.tensor([0, 3])), rank_free=_fs("shape", "color", "size", "position")),
        ],
        lambda: [("shape 5", lambda: caption_class_index(shape=5, color=0, size=0, position=0)),
                 ("position tensor with 4", lambda: caption_class_index(shape=0, color=0, size=0, position=torch.tensor([4])))],
    ),
    "caption_for": Spec(
        lambda: [Call(caption_for, (0, 1, 1, 2), zero_ok=_fs("shape", "color", "size", "position"),
                      str_ok=_fs("shape", "color", "size", "position"))],
        lambda: [("hexagon", lambda: caption_for("hexagon", 0, 0, 0)), ("color 4", lambda: caption_for(0, 4, 0, 0))],
    ),
    "collate_shapes": Spec(
        lambda: [Call(collate_shapes, ([ShapesDataset(2)[0], ShapesDataset(2)[1]],))],
        lambda: [("empty", lambda: collate_shapes([])), ("list of ints", lambda: collate_shapes([1, 2]))],
    ),
    "color_shape_classes": Spec(
        lambda: [Call(color_shape_classes, ("a photo of a {}",))],
        lambda: [("int template", lambda: color_shape_classes(5)), ("no placeholder", lambda: color_shape_classes("x"))],
    ),
    "color_shape_index": Spec(
        lambda: [
            Call(color_shape_index, kwargs=dict(color=3, shape=4), zero_ok=_fs("color", "shape")),
            Call(color_shape_index, kwargs=dict(color=torch.tensor([0, 3]), shape=torch.tensor([4, 0])), rank_free=_fs("color", "shape")),
        ],
        lambda: [("color 4", lambda: color_shape_index(color=4, shape=0)), ("shape 5", lambda: color_shape_index(color=0, shape=5)),
                 ("color tensor with -1", lambda: color_shape_index(color=torch.tensor([-1]), shape=torch.tensor([0])))],
    ),
    "default_corpus": Spec(lambda: [Call(default_corpus)]),
    "generate_shapes": Spec(
        lambda: [Call(generate_shapes, (2,), dict(seed=0, config=ShapesWorldConfig()), zero_ok=_fs("seed"))],
        lambda: [("dict config", lambda: generate_shapes(2, config={"image_size": 32}))],
    ),
    "load_sample_image": Spec(
        lambda: [Call(load_sample_image, ("astronaut", 8), run_good=False)],  # skimage is slow to import
        lambda: [("unknown name", lambda: load_sample_image("nope")), ("int name", lambda: load_sample_image(5))],
    ),
    "questions_for": Spec(
        lambda: [Call(questions_for, ([[0, 1, 1, 2], [3, 0, 0, 1]],))],
        lambda: [("position -1", lambda: questions_for([[0, 1, 1, -1]])), ("shape 9", lambda: questions_for([[9, 0, 0, 0]])),
                 ("3 labels", lambda: questions_for([[0, 1, 1]]))],
    ),
    "scene_caption": Spec(
        lambda: [Call(scene_caption, ([[0, 1, 1, 2]],))],
        lambda: [("color 7", lambda: scene_caption([[0, 7, 0, 0]]))],
    ),
    "shapes_tokenizer": Spec(
        lambda: [Call(shapes_tokenizer, (300,), dict(extra_special_tokens=["[IMG]"]), run_good=False)],  # trains a tokenizer
        lambda: [("one str as extra tokens", lambda: shapes_tokenizer(300, extra_special_tokens="[IMG]"))],
    ),
    "train_bpe_tokenizer": Spec(
        lambda: [Call(train_bpe_tokenizer, (["a b c", "a b"], 300), dict(min_frequency=2), run_good=False)],
        lambda: [("one str as texts", lambda: train_bpe_tokenizer("a str")),
                 ("one str as extra tokens", lambda: train_bpe_tokenizer(["a b"], 300, extra_special_tokens="[IMG]")),
                 ("vocab too small", lambda: train_bpe_tokenizer(["a b"], 100))],
    ),
}


# ---- mmllm_course.encoders and mmllm_course.data, chapter 8: audio and 3-D point clouds

@functools.lru_cache(maxsize=None)
def _hf_audio() -> dict[str, torch.nn.Module]:
    """Tiny random Whisper and HuBERT references (built once)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    whisper = transformers.WhisperModel(transformers.WhisperConfig(
        vocab_size=100, num_mel_bins=80, d_model=32, encoder_layers=1, encoder_attention_heads=4, encoder_ffn_dim=64,
        decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=64, max_source_positions=50, max_target_positions=32,
        pad_token_id=1, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1))
    hubert = transformers.HubertModel(transformers.HubertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, conv_dim=(16, 16, 16),
        conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4))
    return {"whisper": whisper.eval(), "hubert": hubert.eval()}


def _mel_module() -> LogMelSpectrogram:
    return LogMelSpectrogram(LogMelConfig(chunk_length=1.0))


def _audio_encoder() -> AudioEncoder:
    torch.manual_seed(0)
    return AudioEncoder(AudioEncoderConfig(dim=32, depth=1)).eval()


def _waveform_encoder() -> WaveformFeatureEncoder:
    torch.manual_seed(0)
    return WaveformFeatureEncoder(WaveformEncoderConfig()).eval()


def _point_encoder() -> PointEncoder:
    torch.manual_seed(0)
    return PointEncoder(PointEncoderConfig(num_groups=8, group_size=8)).eval()


def _nan(*shape: int) -> torch.Tensor:
    x = _rand(*shape)
    x.view(-1)[0] = math.nan
    return x


@functools.lru_cache(maxsize=None)
def _spoken() -> SpokenDescriptions:
    return SpokenDescriptions(2)


@functools.lru_cache(maxsize=None)
def _clouds() -> PointCloudDataset:
    return PointCloudDataset(3, PointCloudConfig(num_points=32))


AUDIO_POINTS_REGISTRY: dict[str, Spec | str] = {
    # ---- encoders.audio
    "LogMelConfig": Spec(
        lambda: [Call(LogMelConfig, kwargs=dict(sample_rate=16000, n_fft=400, hop_length=160, n_mels=80, chunk_length=1.0,
                                                min_frequency=0.0, max_frequency=8000.0))],
        lambda: [("max_frequency above Nyquist", lambda: LogMelConfig(max_frequency=9000.0)),
                 ("chunk shorter than n_fft", lambda: LogMelConfig(chunk_length=0.01)),
                 ("min_frequency above max", lambda: LogMelConfig(min_frequency=5000.0, max_frequency=4000.0))],
    ),
    "LogMelSpectrogram": Spec(
        lambda: [
            Call(LogMelSpectrogram, (LogMelConfig(chunk_length=1.0),)),
            # (T,), (B, T) and (B, 1, T) are all valid
            Call(_mel_module(), (_rand(2, 8000),), dict(sample_rate=16000), rank_free=_fs("waveform")),
        ],
        lambda: [("stereo (B, 2, T)", lambda: _mel_module()(torch.randn(2, 2, 8000))),
                 ("stereo channels last (T, 2)", lambda: _mel_module()(torch.randn(8000, 2))),
                 ("no samples", lambda: _mel_module()(torch.zeros(0))),
                 ("100 samples < n_fft", lambda: _mel_module()(torch.randn(1, 100))),
                 ("NaN sample", lambda: _mel_module()(_nan(1, 8000))),
                 ("44.1 kHz", lambda: _mel_module()(_rand(1, 8000), sample_rate=44100)),
                 ("4-D waveform", lambda: _mel_module()(_rand(1, 1, 1, 8000))),
                 ("a dict config", lambda: LogMelSpectrogram({"n_mels": 80}))],
    ),
    "log_mel_spectrogram": Spec(
        lambda: [Call(log_mel_spectrogram, (_rand(2, 8000),), dict(sample_rate=16000, n_mels=40, chunk_length=1.0),
                      rank_free=_fs("waveform"))],
        lambda: [("8 kHz", lambda: log_mel_spectrogram(_rand(2, 8000), sample_rate=8000, chunk_length=1.0)),
                 ("stereo", lambda: log_mel_spectrogram(_rand(2, 2, 8000), chunk_length=1.0))],
    ),
    "mel_filter_bank": Spec(
        lambda: [Call(mel_filter_bank, (201, 40), dict(sample_rate=16000, min_frequency=0.0, max_frequency=8000.0))],
        lambda: [("200 filters for 65 bins", lambda: mel_filter_bank(65, 200)),
                 ("max_frequency above Nyquist", lambda: mel_filter_bank(201, 40, max_frequency=9000.0)),
                 ("min = max", lambda: mel_filter_bank(201, 40, min_frequency=1000.0, max_frequency=1000.0))],
    ),
    "hertz_to_mel": Spec(
        lambda: [Call(hertz_to_mel, (torch.tensor([100.0, 2000.0]),), rank_free=_fs("freq")), Call(hertz_to_mel, (440.0,))],
        lambda: [("NaN", lambda: hertz_to_mel(torch.tensor([100.0, math.nan]))), ("-3 Hz", lambda: hertz_to_mel(-3.0)),
                 ("numpy", lambda: hertz_to_mel(np.array([100.0]))), ("a bool", lambda: hertz_to_mel(True)),
                 ("complex", lambda: hertz_to_mel(torch.tensor([1j])))],
    ),
    "mel_to_hertz": Spec(
        lambda: [Call(mel_to_hertz, (torch.tensor([10.0, 30.0]),), rank_free=_fs("mels")), Call(mel_to_hertz, (20.0,))],
        lambda: [("NaN", lambda: mel_to_hertz(torch.tensor([math.nan]))), ("-3 mels", lambda: mel_to_hertz(-3.0)),
                 ("numpy", lambda: mel_to_hertz(np.array([10.0]))), ("inf", lambda: mel_to_hertz(math.inf))],
    ),
    "whisper_sinusoids": Spec(
        lambda: [Call(whisper_sinusoids, (10, 8))],
        lambda: [("dim 7", lambda: whisper_sinusoids(10, 7)), ("dim 2", lambda: whisper_sinusoids(10, 2))],
    ),
    "AudioEncoderConfig": Spec(
        lambda: [Call(AudioEncoderConfig, kwargs=dict(
            n_mels=80, dim=32, depth=1, num_heads=4, mlp_dim=64, max_positions=50, layer_norm_eps=1e-5, dropout=0.1,
            attention_dropout=0.1, exact_frames=False), zero_ok=_fs("dropout", "attention_dropout"))],
        lambda: [("dim 30 for 4 heads", lambda: AudioEncoderConfig(dim=30, num_heads=4)),
                 ("odd dim", lambda: AudioEncoderConfig(dim=7, num_heads=1)),
                 ("dim 2", lambda: AudioEncoderConfig(dim=2, num_heads=1)),
                 ("activation relu6", lambda: AudioEncoderConfig(activation="relu6")),
                 ("exact_frames 'yes'", lambda: AudioEncoderConfig(exact_frames="yes")),
                 ("dropout 1", lambda: AudioEncoderConfig(dropout=1.0))],
    ),
    "AudioEncoder": Spec(
        lambda: [
            Call(AudioEncoder, (AudioEncoderConfig(dim=32, depth=1),)),
            Call(_audio_encoder(), (_rand(2, 80, 100),)),
            Call(_audio_encoder().pooled, (_rand(2, 80, 100),)),
        ],
        lambda: [("102 frames for 50 positions", lambda: _audio_encoder()(torch.randn(1, 80, 102))),
                 ("64 mels for 80", lambda: _audio_encoder()(torch.randn(1, 64, 100))),
                 ("NaN mel", lambda: _audio_encoder()(_nan(1, 80, 100))),
                 ("no frames", lambda: _audio_encoder()(torch.zeros(1, 80, 0))),
                 ("empty batch", lambda: _audio_encoder()(torch.zeros(0, 80, 100))),
                 ("exact_frames with 60 frames", lambda: AudioEncoder(AudioEncoderConfig(exact_frames=True))(_rand(1, 80, 60))),
                 ("a dict config", lambda: AudioEncoder({"dim": 32}))],
    ),
    "whisper_encoder_from_transformers": Spec(
        lambda: [Call(whisper_encoder_from_transformers, (_hf_audio()["whisper"],), str_value=MISSING_FOLDER),
                 Call(whisper_encoder_from_transformers, (_hf_audio()["whisper"].get_encoder(),), str_value=MISSING_FOLDER)],
        lambda: [("a ViTModel", lambda: whisper_encoder_from_transformers(_hf()["vit"])),
                 ("a HubertModel", lambda: whisper_encoder_from_transformers(_hf_audio()["hubert"])),
                 ("a Linear", lambda: whisper_encoder_from_transformers(torch.nn.Linear(2, 2)))],
    ),
    "WaveformEncoderConfig": Spec(
        lambda: [
            Call(WaveformEncoderConfig, kwargs=dict(
                conv_dim=(8, 8), conv_kernel=(4, 3), conv_stride=(2, 2), conv_bias=True, norm="layer", hidden_size=16,
                projection_layer_norm=True, layer_norm_eps=1e-5, dropout=0.1, sample_rate=16000), zero_ok=_fs("dropout")),
            Call(WaveformEncoderConfig().num_frames, (1600,), zero_ok=_fs("num_samples")),
        ],
        lambda: [("one kernel for two convs", lambda: WaveformEncoderConfig(conv_dim=(8, 8), conv_kernel=(4,), conv_stride=(2,))),
                 ("norm batch", lambda: WaveformEncoderConfig(norm="batch")),
                 ("conv_bias 'yes'", lambda: WaveformEncoderConfig(conv_bias="yes")),
                 ("no convs", lambda: WaveformEncoderConfig(conv_dim=(), conv_kernel=(), conv_stride=())),
                 ("a stride 0", lambda: WaveformEncoderConfig(conv_stride=(5, 0, 2))),
                 ("a float kernel", lambda: WaveformEncoderConfig(conv_kernel=(10, 3.0, 3)))],
    ),
    "WaveformFeatureEncoder": Spec(
        lambda: [
            Call(WaveformFeatureEncoder, (WaveformEncoderConfig(),)),
            Call(_waveform_encoder(), (_rand(2, 1600),), dict(sample_rate=16000), rank_free=_fs("waveform")),
            Call(_waveform_encoder().features, (_rand(2, 1600),), dict(sample_rate=16000), rank_free=_fs("waveform")),
        ],
        lambda: [("39 samples (receptive field 40)", lambda: _waveform_encoder()(torch.randn(1, 39))),
                 ("8 kHz", lambda: _waveform_encoder()(_rand(1, 1600), sample_rate=8000)),
                 ("stereo (B, 2, T)", lambda: _waveform_encoder()(torch.randn(1, 2, 1600))),
                 ("NaN sample", lambda: _waveform_encoder()(_nan(1, 1600))),
                 ("a dict config", lambda: WaveformFeatureEncoder({"hidden_size": 16}))],
    ),
    "hubert_feature_encoder_from_transformers": Spec(
        lambda: [Call(hubert_feature_encoder_from_transformers, (_hf_audio()["hubert"],), str_value=MISSING_FOLDER)],
        lambda: [("a WhisperModel", lambda: hubert_feature_encoder_from_transformers(_hf_audio()["whisper"])),
                 ("a ViTModel", lambda: hubert_feature_encoder_from_transformers(_hf()["vit"])),
                 ("a Linear", lambda: hubert_feature_encoder_from_transformers(torch.nn.Linear(2, 2)))],
    ),
    # ---- encoders.points
    "PointEncoderConfig": Spec(
        lambda: [Call(PointEncoderConfig, kwargs=dict(
            num_groups=8, group_size=8, dim=32, depth=1, num_heads=4, mlp_dim=64, pointnet_dim=16, pooling="mean",
            fps_start="random", layer_norm_eps=1e-5, dropout=0.1, attention_dropout=0.1),
            zero_ok=_fs("dropout", "attention_dropout"))],
        lambda: [("pooling max", lambda: PointEncoderConfig(pooling="max")),
                 ("fps_start middle", lambda: PointEncoderConfig(fps_start="middle")),
                 ("dim 30 for 4 heads", lambda: PointEncoderConfig(dim=30, num_heads=4))],
    ),
    "PointEncoder": Spec(
        lambda: [
            Call(PointEncoder, (PointEncoderConfig(num_groups=8, group_size=8),)),
            Call(_point_encoder(), (_rand(2, 64, 3),)),
            Call(_point_encoder().tokenize, (_rand(2, 64, 3),)),
            Call(_point_encoder().train(), (_rand(2, 64, 3),)),
        ],
        lambda: [("NaN cloud", lambda: _point_encoder()(_nan(1, 64, 3))),
                 ("5 points for 8 groups", lambda: _point_encoder()(torch.randn(1, 5, 3))),
                 ("xy only", lambda: _point_encoder()(torch.randn(1, 64, 2))),
                 ("a dict config", lambda: PointEncoder({"dim": 32}))],
    ),
    "PointEncoderOutput": Spec(
        lambda: [Call(PointEncoderOutput, (_rand(2, 9, 32), _rand(2, 32), _rand(2, 8, 3), _rand(2, 8, 8, 3)))], mutate=False),
    "MiniPointNet": Spec(
        lambda: [Call(MiniPointNet, (32, 16), dict(eps=1e-5)), Call(MiniPointNet(32, 16), (_rand(2, 4, 8, 3),))],
        lambda: [("xy groups", lambda: MiniPointNet(32, 16)(_rand(2, 4, 8, 2))),
                 ("NaN group", lambda: MiniPointNet(32, 16)(_nan(2, 4, 8, 3))),
                 ("empty groups", lambda: MiniPointNet(32, 16)(torch.zeros(2, 4, 0, 3)))],
    ),
    "farthest_point_sampling": Spec(
        lambda: [Call(farthest_point_sampling, (_rand(2, 30, 3), 5), dict(start=3), zero_ok=_fs("start")),
                 Call(farthest_point_sampling, (_rand(2, 30, 3), 5), dict(start=torch.tensor([1, 2])))],
        lambda: [("31 of 30 points", lambda: farthest_point_sampling(_rand(2, 30, 3), 31)),
                 ("start 30", lambda: farthest_point_sampling(_rand(2, 30, 3), 5, start=30)),
                 ("start tensor with 30", lambda: farthest_point_sampling(_rand(2, 30, 3), 5, start=torch.tensor([0, 30]))),
                 ("start tensor with -1", lambda: farthest_point_sampling(_rand(2, 30, 3), 5, start=torch.tensor([0, -1]))),
                 ("long cloud", lambda: farthest_point_sampling(torch.zeros(2, 30, 3, dtype=torch.long), 5)),
                 ("NaN cloud", lambda: farthest_point_sampling(_nan(2, 30, 3), 5))],
    ),
    "knn_group": Spec(
        lambda: [Call(knn_group, (_rand(2, 30, 3), _rand(2, 4, 3), 5))],
        lambda: [("k 31 of 30", lambda: knn_group(_rand(2, 30, 3), _rand(2, 4, 3), 31)),
                 ("centres of B=1", lambda: knn_group(_rand(2, 30, 3), _rand(1, 4, 3), 5)),
                 ("float64 centres", lambda: knn_group(_rand(2, 30, 3), _rand(2, 4, 3).double(), 5)),
                 ("2-D centres", lambda: knn_group(_rand(2, 30, 3), _rand(2, 4, 2), 5))],
    ),
    "gather_points": Spec(
        lambda: [Call(gather_points, (_rand(2, 30, 3), torch.tensor([[1, 2], [3, 4]])), rank_free=_fs("indices"))],
        lambda: [("index 30", lambda: gather_points(_rand(2, 30, 3), torch.tensor([[1, 2], [3, 30]]))),
                 ("index -1", lambda: gather_points(_rand(2, 30, 3), torch.tensor([[1, 2], [3, -1]]))),
                 ("indices of B=1", lambda: gather_points(_rand(2, 30, 3), torch.tensor([[1, 2]]))),
                 ("float indices", lambda: gather_points(_rand(2, 30, 3), torch.tensor([[1.0, 2.0], [3.0, 4.0]]))),
                 ("scalar index", lambda: gather_points(_rand(2, 30, 3), torch.tensor(1)))],
    ),
    # ---- data.audio
    "SPOKEN_WORDS": CONSTANT, "WORD_SEGMENTS": CONSTANT,
    "SpokenConfig": Spec(
        lambda: [Call(SpokenConfig, kwargs=dict(sample_rate=16000, clip_seconds=1.0, word_seconds=0.2, speed_range=(0.9, 1.1),
                                                snr_db_range=(0.0, 10.0), shapes=("circle", "star")))],
        lambda: [("clip too short for 3 words", lambda: SpokenConfig(clip_seconds=0.5)),
                 ("colour purple", lambda: SpokenConfig(colors=("purple",))),
                 ("no sizes", lambda: SpokenConfig(sizes=())),
                 ("snr range reversed", lambda: SpokenConfig(snr_db_range=(10.0, 0.0))),
                 ("speed range of 3", lambda: SpokenConfig(speed_range=(0.9, 1.0, 1.1))),
                 ("8 kHz", lambda: SpokenConfig(sample_rate=8000))],
    ),
    "SpokenBatch": Spec(
        lambda: [Call(SpokenBatch, (_rand(2, 160), torch.zeros(2, 3, dtype=torch.long), ["small red circle"] * 2, _rand(2))),
                 Call(_spoken().batch.__len__)],
        mutate=False,
    ),
    "make_spoken_descriptions": Spec(
        lambda: [Call(make_spoken_descriptions, (3,), dict(config=SpokenConfig(), seed=1), zero_ok=_fs("seed"))],
        lambda: [("a dict config", lambda: make_spoken_descriptions(2, config={"clip_seconds": 1.0})),
                 ("n '2'", lambda: make_spoken_descriptions("2"))],
    ),
    "SpokenDescriptions": Spec(
        lambda: [Call(SpokenDescriptions, (3,), dict(config=SpokenConfig(), seed=1), zero_ok=_fs("seed")),
                 Call(_spoken().__getitem__, (1,), zero_ok=_fs("i"), negative_ok=_fs("i"))],
        lambda: [("index 5 of 2", lambda: _spoken()[5]), ("index -3 of 2", lambda: _spoken()[-3]),
                 ("index 1.5", lambda: _spoken()[1.5]), ("a dict config", lambda: SpokenDescriptions(2, {"clip_seconds": 1.0}))],
        allowed=(IndexError,),
    ),
    "synthesize_word": Spec(
        lambda: [Call(synthesize_word, ("red",), dict(f0=120.0, formant_scale=1.0, duration=0.2, sample_rate=16000, seed=1),
                      zero_ok=_fs("seed"))],
        lambda: [("purple", lambda: synthesize_word("purple")), ("int word", lambda: synthesize_word(3)),
                 ("f0 1000 Hz", lambda: synthesize_word("red", f0=1000.0)),
                 ("8 kHz", lambda: synthesize_word("red", sample_rate=8000))],
    ),
    # ---- data.points
    "SOLIDS": CONSTANT, "SOLID_FOR_SHAPE": CONSTANT,
    "PointCloudConfig": Spec(
        lambda: [Call(PointCloudConfig, kwargs=dict(num_points=64, solids=("cube", "torus"), rotate=False, scale_range=(0.5, 0.9),
                                                    stretch=0.1, noise=0.02), zero_ok=_fs("stretch", "noise"))],
        lambda: [("solid pyramid", lambda: PointCloudConfig(solids=("pyramid",))),
                 ("no solids", lambda: PointCloudConfig(solids=())),
                 ("scale range reversed", lambda: PointCloudConfig(scale_range=(1.0, 0.5))),
                 ("stretch 1", lambda: PointCloudConfig(stretch=1.0)),
                 ("rotate 'yes'", lambda: PointCloudConfig(rotate="yes"))],
    ),
    "PointCloudBatch": Spec(
        lambda: [Call(PointCloudBatch, (_rand(2, 16, 3), torch.tensor([0, 1]), ("cube", "torus"))),
                 Call(_clouds().batch.__len__)],
        mutate=False,
    ),
    "make_point_clouds": Spec(
        lambda: [Call(make_point_clouds, (6,), dict(config=PointCloudConfig(num_points=32), seed=1, labels=[0, 1, 2, 3, 4, 0]),
                      zero_ok=_fs("seed")),
                 Call(make_point_clouds, (4,), dict(config=PointCloudConfig(num_points=32, solids=("cube", "cone")), labels=None))],
        lambda: [("label 9 of 5 solids", lambda: make_point_clouds(6, PointCloudConfig(num_points=32), labels=[0, 1, 9, 0, 0, 0])),
                 ("label -1", lambda: make_point_clouds(2, PointCloudConfig(num_points=32), labels=[0, -1])),
                 ("2 labels for 6 clouds", lambda: make_point_clouds(6, PointCloudConfig(num_points=32), labels=[0, 1])),
                 ("float labels", lambda: make_point_clouds(2, PointCloudConfig(num_points=32), labels=[0.0, 1.0])),
                 ("a dict config", lambda: make_point_clouds(2, config={"num_points": 32}))],
    ),
    "PointCloudDataset": Spec(
        lambda: [Call(PointCloudDataset, (6,), dict(config=PointCloudConfig(num_points=32), seed=1), zero_ok=_fs("seed")),
                 Call(_clouds().__getitem__, (1,), zero_ok=_fs("i"), negative_ok=_fs("i"))],
        lambda: [("index 3 of 3", lambda: _clouds()[3]), ("index 1.5", lambda: _clouds()[1.5]),
                 ("a dict config", lambda: PointCloudDataset(2, {"num_points": 32}))],
        allowed=(IndexError,),
    ),
    "sample_surface": Spec(
        lambda: [Call(sample_surface, ("torus", 32), dict(count=2, seed=1), zero_ok=_fs("seed")),
                 Call(sample_surface, ("cube", 16), dict(seed=np.random.default_rng(0)), fixed=_fs("seed"))],
        lambda: [("pyramid", lambda: sample_surface("pyramid", 32)), ("int solid", lambda: sample_surface(1, 32))],
    ),
    "random_rotations": Spec(
        lambda: [Call(random_rotations, (4,), dict(seed=1), zero_ok=_fs("seed"))],
        lambda: [("seed 'x'", lambda: random_rotations(2, seed="x"))],
    ),
}
REGISTRY.update(AUDIO_POINTS_REGISTRY)


# ---- mmllm_course.bridges

@functools.lru_cache(maxsize=None)
def _hf_bridges() -> dict[str, torch.nn.Module]:
    """Tiny random references of the bridges (built once)."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.idefics2.modeling_idefics2 import Idefics2PerceiverResampler

    t = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)
    i = dict(image_size=32, patch_size=8)
    llama = dict(model_type="llama", vocab_size=100, hidden_size=48, intermediate_size=64, num_hidden_layers=1,
                 num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    llava = transformers.LlavaForConditionalGeneration(transformers.LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", **t, **i), text_config=llama, image_token_index=99))
    blip2 = transformers.Blip2ForConditionalGeneration(transformers.Blip2Config(
        vision_config=dict(t, **i), qformer_config=dict(t, vocab_size=100, cross_attention_frequency=1, encoder_hidden_size=32),
        text_config=dict(model_type="opt", vocab_size=100, hidden_size=48, num_hidden_layers=1, ffn_dim=64,
                         num_attention_heads=4, word_embed_proj_dim=48), num_query_tokens=8))
    resampler = Idefics2PerceiverResampler(transformers.Idefics2PerceiverConfig(
        hidden_size=32, resampler_n_latents=8, resampler_depth=1, resampler_n_heads=4, resampler_head_dim=8, num_key_value_heads=2))
    idefics3 = transformers.Idefics3ForConditionalGeneration(transformers.Idefics3Config(
        vision_config=dict(t, **i), text_config=llama, scale_factor=2))
    return {"llava": llava.eval(), "blip2": blip2.eval(), "resampler": resampler.eval(), "idefics3": idefics3.eval()}


def _bridge_calls(cls, config_cls, config_kwargs, config_zero_ok=frozenset()):
    """A bridge's constructor, forward (with a padding mask), num_output_tokens and output_mask."""
    def calls():
        bridge = cls(config_cls()).eval()
        return [
            Call(cls, (config_cls(),)),
            Call(config_cls, kwargs=config_kwargs, zero_ok=config_zero_ok),
            Call(bridge, (_rand(2, 16, 64),), dict(mask=_mask(2, 16))),
            Call(bridge.num_output_tokens, (16,)),
            Call(bridge.output_mask, (_mask(2, 16),)),
        ]
    return calls


def _bridge_bad(cls):
    def bad():
        bridge = cls().eval()
        return [
            ("width 32", lambda: bridge(_rand(2, 16, 32))),
            ("mask with a 2", lambda: bridge(_rand(2, 3 * 3 * 4 // 4 * 4, 64), torch.full((2, 36), 2))),
            ("mask (2, 15) for N=16", lambda: bridge(_rand(2, 16, 64), _mask(2, 15))),
            ("float mask", lambda: bridge(_rand(2, 16, 64), torch.ones(2, 16))),
            ("no tokens", lambda: bridge(_rand(2, 0, 64))),
            ("a dict config", lambda: cls({"in_dim": 64})),
        ]
    return bad


BRIDGE_REGISTRY: dict[str, Spec | str] = {
    "BRIDGES": CONSTANT,
    "Bridge": Spec(lambda: [Call(make_bridge("linear").num_output_tokens, (16,))]),
    "LinearBridge": Spec(_bridge_calls(LinearBridge, LinearBridgeConfig, dict(in_dim=64, out_dim=32)), _bridge_bad(LinearBridge)),
    "LinearBridgeConfig": Spec(lambda: [Call(LinearBridgeConfig, kwargs=dict(in_dim=64, out_dim=32, bias=False))],
                               lambda: [("in_dim 64.0", lambda: LinearBridgeConfig(in_dim=64.0))]),
    "MLPBridge": Spec(_bridge_calls(MLPBridge, MLPBridgeConfig, dict(in_dim=64, out_dim=32, hidden_dim=48, depth=3)),
                      _bridge_bad(MLPBridge)),
    "MLPBridgeConfig": Spec(lambda: [Call(MLPBridgeConfig, kwargs=dict(in_dim=64, out_dim=32, hidden_dim=48, depth=2))],
                            lambda: [("relu", lambda: MLPBridgeConfig(activation="relu"))]),
    "QFormerBridge": Spec(
        lambda: _bridge_calls(QFormerBridge, QFormerBridgeConfig, dict(
            in_dim=64, out_dim=32, dim=32, num_queries=4, depth=2, num_heads=4, mlp_dim=64, cross_attention_frequency=2,
            layer_norm_eps=1e-6, dropout=0.1), frozenset({"dropout"}))()
        + [Call(QFormerBridge().cross_attention_maps, (_rand(2, 16, 64),), dict(mask=_mask(2, 16)))],
        _bridge_bad(QFormerBridge)),
    "QFormerBridgeConfig": Spec(
        lambda: [Call(QFormerBridgeConfig, kwargs=dict(num_queries=4, dropout=0.1, layer_norm_eps=1e-6), zero_ok=frozenset({"dropout"}))],
        lambda: [("dim 30 for 4 heads", lambda: QFormerBridgeConfig(dim=30)), ("dropout 1", lambda: QFormerBridgeConfig(dropout=1.0))]),
    "PerceiverResamplerBridge": Spec(
        lambda: _bridge_calls(PerceiverResamplerBridge, PerceiverResamplerBridgeConfig, dict(
            in_dim=64, out_dim=32, num_latents=4, depth=2, num_heads=4, head_dim=8, num_kv_heads=2, mlp_dim=64,
            norm_eps=1e-6, dropout=0.1, input_mlp_dim=40), frozenset({"dropout"}))()
        + [Call(PerceiverResamplerBridge().cross_attention_maps, (_rand(2, 16, 64),), dict(mask=_mask(2, 16)))],
        _bridge_bad(PerceiverResamplerBridge)),
    "PerceiverResamplerBridgeConfig": Spec(
        lambda: [Call(PerceiverResamplerBridgeConfig, kwargs=dict(num_latents=4, num_kv_heads=2, norm_eps=1e-6))],
        lambda: [("kv heads 3 of 4", lambda: PerceiverResamplerBridgeConfig(num_kv_heads=3)),
                 ("norm batchnorm", lambda: PerceiverResamplerBridgeConfig(norm="batchnorm")),
                 ("no projection 64 -> 128", lambda: PerceiverResamplerBridgeConfig(input_projection="none"))]),
    "TokenMergeBridge": Spec(_bridge_calls(TokenMergeBridge, TokenMergeBridgeConfig, dict(in_dim=64, out_dim=32, ratio=2, depth=2, hidden_dim=40)),
                             lambda: _bridge_bad(TokenMergeBridge)() + [
                                 ("17 tokens", lambda: TokenMergeBridge()(_rand(2, 17, 64))),
                                 ("5x5 grid, r=2", lambda: TokenMergeBridge()(_rand(2, 25, 64))),
                                 ("K for N=12", lambda: TokenMergeBridge().num_output_tokens(12))]),
    "TokenMergeBridgeConfig": Spec(lambda: [Call(TokenMergeBridgeConfig, kwargs=dict(in_dim=64, out_dim=32, ratio=3))]),
    "make_bridge": Spec(
        # **config is one dict to the fuzzer: left alone, its bad values are listed below
        lambda: [Call(make_bridge, ("qformer",), dict(in_dim=32, num_queries=4), fixed=_fs("config")),
                 Call(make_bridge, ("mlp",), dict(depth=3), fixed=_fs("config"))],
        lambda: [("conv", lambda: make_bridge("conv")), ("int name", lambda: make_bridge(3)),
                 ("unknown field", lambda: make_bridge("mlp", num_queries=4)), ("depth 0", lambda: make_bridge("mlp", depth=0)),
                 ("in_dim 2.5", lambda: make_bridge("linear", in_dim=2.5)), ("ratio '2'", lambda: make_bridge("token_merge", ratio="2")),
                 ("dropout nan", lambda: make_bridge("qformer", dropout=float("nan")))]),
    "pixel_shuffle": Spec(
        lambda: [Call(pixel_shuffle, (_rand(2, 16, 8), 2))],
        lambda: [("N=12", lambda: pixel_shuffle(_rand(2, 12, 8), 2)), ("S=3, r=2", lambda: pixel_shuffle(_rand(2, 9, 8), 2))]),
    "mlp_bridge_from_transformers": Spec(
        lambda: [Call(mlp_bridge_from_transformers, (_hf_bridges()["llava"],), str_value=MISSING_FOLDER)],
        lambda: [("a BLIP-2", lambda: mlp_bridge_from_transformers(_hf_bridges()["blip2"])),
                 ("a Linear", lambda: mlp_bridge_from_transformers(torch.nn.Linear(2, 2)))]),
    "qformer_bridge_from_transformers": Spec(
        lambda: [Call(qformer_bridge_from_transformers, (_hf_bridges()["blip2"],), str_value=MISSING_FOLDER)],
        lambda: [("a LLaVA", lambda: qformer_bridge_from_transformers(_hf_bridges()["llava"])),
                 ("the bare Q-Former", lambda: qformer_bridge_from_transformers(_hf_bridges()["blip2"].qformer))]),
    "perceiver_resampler_bridge_from_transformers": Spec(
        lambda: [Call(perceiver_resampler_bridge_from_transformers, (_hf_bridges()["resampler"],), str_value=MISSING_FOLDER)],
        lambda: [("an Idefics3", lambda: perceiver_resampler_bridge_from_transformers(_hf_bridges()["idefics3"]))]),
    "token_merge_bridge_from_transformers": Spec(
        lambda: [Call(token_merge_bridge_from_transformers, (_hf_bridges()["idefics3"],), str_value=MISSING_FOLDER),
                 Call(token_merge_bridge_from_transformers, (_hf_bridges()["idefics3"].model.connector,), str_value=MISSING_FOLDER)],
        lambda: [("a LLaVA", lambda: token_merge_bridge_from_transformers(_hf_bridges()["llava"])),
                 ("a Linear", lambda: token_merge_bridge_from_transformers(torch.nn.Linear(2, 2)))]),
}
REGISTRY.update(BRIDGE_REGISTRY)


# ---- mmllm_course.language, mmllm_course.backbones, mmllm_course.training (chapter 5)
from mmllm_course.backbones import UnifiedEmbeddingMLLM  # noqa: E402
from mmllm_course.language import (  # noqa: E402
    CorpusConfig,
    CausalLMConfig,
    TextCorpus,
    course_lm_tokenizer,
    make_causal_lm,
    make_text_corpus,
)
from mmllm_course.training import (  # noqa: E402
    TrainConfig,
    TrainHistory,
    caption_metrics,
    count_parameters,
    freeze,
    load_trainable,
    save_trainable,
    train,
)


@functools.lru_cache(maxsize=None)
def _lm_tok():
    return course_lm_tokenizer()


def _tiny_lm(arch: str = "llama"):
    return make_causal_lm(CausalLMConfig(arch=arch, dim=32, depth=1, num_heads=4, num_kv_heads=2, mlp_dim=64, context_length=48),
                          _lm_tok(), seed=0)


def _mllm(bridge: str = "mlp") -> UnifiedEmbeddingMLLM:
    torch.manual_seed(0)
    encoder = ViT(ViTConfig(image_size=32, patch_size=8, dim=16, depth=1, num_heads=2, mlp_dim=32)).eval()
    return UnifiedEmbeddingMLLM(encoder, make_bridge(bridge, in_dim=16, out_dim=32), _tiny_lm(), _lm_tok()).eval()


def _mllm_batch(targets: bool = True) -> dict:
    return _mllm().tokenize(["<image>Describe the image.", "<image>?"], [" a red circle", " red"] if targets else None)


class _ToyLoss(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(4, 1)

    def forward(self, x, y):
        from types import SimpleNamespace
        return SimpleNamespace(loss=((self.head(x).squeeze(-1) - y) ** 2).mean())


def _toy_data() -> dict:
    return {"x": _rand(16, 4), "y": _rand(16)}


def _saved_toy() -> str:
    import tempfile
    path = os.path.join(tempfile.gettempdir(), f"mmllm_fuzz_toy_{os.getpid()}.safetensors")
    torch.manual_seed(0)
    save_trainable(_ToyLoss(), path)
    return path


CHAPTER5_REGISTRY: dict[str, Spec | str] = {
    "CAPTION_PROMPT": CONSTANT,
    "IMAGE_TOKEN": CONSTANT,
    "CausalLMConfig": Spec(
        lambda: [Call(CausalLMConfig, kwargs=dict(arch="gpt2", dim=32, depth=1, num_heads=4, num_kv_heads=2, mlp_dim=64,
                                                  context_length=48, tie_embeddings=False))],
        lambda: [("arch mamba", lambda: CausalLMConfig(arch="mamba")), ("dim 30 for 4 heads", lambda: CausalLMConfig(dim=30)),
                 ("kv heads 3 of 4", lambda: CausalLMConfig(num_kv_heads=3)), ("tie 1", lambda: CausalLMConfig(tie_embeddings=1))]),
    "CorpusConfig": Spec(
        lambda: [Call(CorpusConfig, kwargs=dict(context_reading=True, min_slots=6, max_slots=12, max_repeats=2, qa_fraction=0.5),
                      zero_ok=_fs("qa_fraction"))],
        lambda: [("min_slots 3", lambda: CorpusConfig(min_slots=3)), ("max < min", lambda: CorpusConfig(min_slots=10, max_slots=8)),
                 ("qa 1.5", lambda: CorpusConfig(qa_fraction=1.5)), ("prompt 5", lambda: CorpusConfig(prompt=5))]),
    "TextCorpus": Spec(lambda: [Call(TextCorpus, (torch.zeros(1, 2, dtype=torch.long),) * 3 + (torch.zeros(1, 4, dtype=torch.long), ["a"]))],
                       mutate=False),
    "course_lm_tokenizer": Spec(lambda: [Call(course_lm_tokenizer)]),
    "make_causal_lm": Spec(
        lambda: [Call(make_causal_lm, (CausalLMConfig(dim=32, depth=1, mlp_dim=64),), dict(tokenizer=_lm_tok(), seed=1),
                      zero_ok=_fs("seed"))],
        lambda: [("a dict config", lambda: make_causal_lm({"dim": 32})), ("tokenizer 'abc'", lambda: make_causal_lm(None, "abc"))]),
    "make_text_corpus": Spec(
        lambda: [Call(make_text_corpus, (8,), dict(seed=1, config=CorpusConfig(qa_fraction=0.5), tokenizer=_lm_tok()), zero_ok=_fs("seed"))],
        lambda: [("a dict config", lambda: make_text_corpus(4, config={"min_slots": 6}))]),
    "UnifiedEmbeddingMLLM": Spec(
        lambda: [
            Call(UnifiedEmbeddingMLLM, (_mllm().encoder, make_bridge("mlp", in_dim=16, out_dim=32), _tiny_lm(), _lm_tok()),
                 dict(feature_layer=-2, drop_class_token=True), negative_ok=_fs("feature_layer"), zero_ok=_fs("feature_layer")),
            Call(_mllm(), kwargs=dict(**_mllm_batch(), images=_rand(2, 3, 32, 32))),
            Call(_mllm(), kwargs=dict(**_mllm_batch(False), image_features=_rand(2, 17, 16))),
            Call(_mllm().generate, (["<image>Describe the image.", "<image>?"],), dict(images=_rand(2, 3, 32, 32), max_new_tokens=3)),
            Call(_mllm().tokenize, (["<image>Describe the image.", "<image>?"], [" a red circle", " red"])),
            Call(_mllm().image_embeddings, (_rand(2, 3, 32, 32),)),
            Call(_mllm().embed, (_mllm_batch()["input_ids"], _rand(2, 17, 32))),
            Call(_mllm().position_ids, (_mask(2, 5),)),
        ],
        lambda: [
            ("no placeholder", lambda: _mllm().tokenize(["Describe the image."])),
            ("more placeholders than images", lambda: _mllm()(**_mllm_batch(), images=_rand(1, 3, 32, 32))),
            ("more images than placeholders", lambda: _mllm()(**_mllm_batch(), images=_rand(3, 3, 32, 32))),
            ("16x16 images", lambda: _mllm()(**_mllm_batch(), images=_rand(2, 3, 16, 16))),
            ("both images and features", lambda: _mllm()(**_mllm_batch(), images=_rand(2, 3, 32, 32), image_features=_rand(2, 17, 16))),
            ("neither images nor features", lambda: _mllm()(**_mllm_batch())),
            ("features of 16 tokens", lambda: _mllm()(**_mllm_batch(), image_features=_rand(2, 16, 16))),
            ("prompt longer than the context", lambda: _mllm().tokenize(["<image>" + " red" * 40])),
            ("generate past the context", lambda: _mllm().generate(["<image>"], images=_rand(1, 3, 32, 32), max_new_tokens=40)),
            ("bridge width 48 for an LM of 32", lambda: UnifiedEmbeddingMLLM(
                _mllm().encoder, make_bridge("mlp", in_dim=16, out_dim=48), _tiny_lm(), _lm_tok())),
            ("bridge in_dim 64 for an encoder of 16", lambda: UnifiedEmbeddingMLLM(
                _mllm().encoder, make_bridge("mlp", in_dim=64, out_dim=32), _tiny_lm(), _lm_tok())),
            ("tokenizer without <image>", lambda: UnifiedEmbeddingMLLM(
                _mllm().encoder, make_bridge("mlp", in_dim=16, out_dim=32), _tiny_lm(), shapes_tokenizer())),
            ("no encoder and no N", lambda: UnifiedEmbeddingMLLM(None, make_bridge("mlp", in_dim=16, out_dim=32), _tiny_lm(), _lm_tok())),
            ("2 prompts, 1 target", lambda: _mllm().tokenize(["<image>", "<image>"], ["a"])),
            ("padding_side middle", lambda: _mllm().tokenize(["<image>"], padding_side="middle")),
            ("id 600", lambda: _mllm()(_mllm_batch()["input_ids"] * 0 + 600, images=_rand(2, 3, 32, 32))),
            ("mask with a 2", lambda: _mllm()(_mllm_batch()["input_ids"], attention_mask=2 * _mllm_batch()["attention_mask"],
                                              images=_rand(2, 3, 32, 32))),
            ("labels (2, 3)", lambda: _mllm()(_mllm_batch()["input_ids"], labels=torch.zeros(2, 3, dtype=torch.long),
                                              images=_rand(2, 3, 32, 32))),
        ]),
    "TrainConfig": Spec(
        lambda: [Call(TrainConfig, kwargs=dict(steps=10, batch_size=4, lr=1e-3, warmup_steps=2, weight_decay=0.1, grad_clip=1.0,
                                               min_lr_ratio=0.1, seed=1), zero_ok=_fs("warmup_steps", "seed", "weight_decay", "min_lr_ratio"))],
        lambda: [("lr 0", lambda: TrainConfig(lr=0.0)), ("grad_clip 0", lambda: TrainConfig(grad_clip=0.0))]),
    "TrainHistory": Spec(lambda: [Call(TrainHistory, ([1.0], [0.1], 1.0))], mutate=False),
    "caption_metrics": Spec(
        lambda: [Call(caption_metrics, (list(_batch().captions), _batch().objects[:, 0]))],
        lambda: [("3 objects for 4 texts", lambda: caption_metrics(list(_batch().captions), _batch().objects[:3, 0])),
                 ("label 9", lambda: caption_metrics(["a"], torch.tensor([[9, 0, 0, 0]])))]),
    "count_parameters": Spec(lambda: [Call(count_parameters, (torch.nn.Linear(2, 3),), dict(trainable_only=True))]),
    "freeze": Spec(lambda: [Call(freeze, (torch.nn.Linear(2, 3),))]),
    "save_trainable": Spec(
        lambda: [Call(save_trainable, (_ToyLoss(), os.path.join(__import__("tempfile").gettempdir(), f"mmllm_fuzz_{os.getpid()}.safetensors")))],
        lambda: [("frozen model", lambda: save_trainable(freeze(_ToyLoss()), "/tmp/x.safetensors")),
                 ("metadata of ints", lambda: save_trainable(_ToyLoss(), "/tmp/x.safetensors", metadata={"a": 1}))]),
    "load_trainable": Spec(
        lambda: [Call(load_trainable, (_ToyLoss(), _saved_toy()), str_value=MISSING_FOLDER)],
        lambda: [("missing file", lambda: load_trainable(_ToyLoss(), MISSING_FOLDER)),
                 ("wrong model", lambda: load_trainable(torch.nn.Linear(4, 2), _saved_toy()))]),
    "train": Spec(
        lambda: [Call(train, (_ToyLoss(), _toy_data(), TrainConfig(steps=3, batch_size=4)), dict(progress=False))],
        lambda: [("frozen model", lambda: train(freeze(_ToyLoss()), _toy_data(), progress=False)),
                 ("batch 64 of 16 rows", lambda: train(_ToyLoss(), _toy_data(), TrainConfig(batch_size=64), progress=False)),
                 ("rows 16 and 3", lambda: train(_ToyLoss(), {"x": _rand(16, 4), "y": _rand(3)}, progress=False)),
                 ("a list of data", lambda: train(_ToyLoss(), [1, 2], progress=False)),
                 ("nan data", lambda: train(_ToyLoss(), {"x": _rand(16, 4) * float("nan"), "y": _rand(16)},
                                            TrainConfig(steps=2, batch_size=4), progress=False))]),
}
REGISTRY.update(CHAPTER5_REGISTRY)


# ---- mmllm_course.encoders.binding (chapter 8: binding modalities into one space)

def _bound_points() -> BoundEncoder:
    torch.manual_seed(0)
    return BoundEncoder(PointEncoder(PointEncoderConfig(num_groups=8, group_size=8, dim=32, depth=1)), BindingHead(32, 16))


@functools.lru_cache(maxsize=None)
def _chapter2():
    from mmllm_course.pretrained import load_chapter2_clip

    return load_chapter2_clip()


BINDING_REGISTRY: dict[str, Spec | str] = {
    "info_nce": Spec(
        lambda: [Call(info_nce, (_rand(4, 8), _rand(4, 8)), dict(temperature=0.07, groups=torch.tensor([0, 0, 1, 2]), symmetric=True)),
                 Call(info_nce, (_rand(3, 8), _rand(3, 8)), dict(symmetric=False))],
        lambda: [("keys of another width", lambda: info_nce(_rand(4, 8), _rand(4, 6))),
                 ("one pair", lambda: info_nce(_rand(1, 8), _rand(1, 8))),
                 ("temperature 0", lambda: info_nce(_rand(4, 8), _rand(4, 8), 0.0)),
                 ("3 groups for 4 rows", lambda: info_nce(_rand(4, 8), _rand(4, 8), groups=torch.tensor([0, 1, 2]))),
                 ("float groups", lambda: info_nce(_rand(4, 8), _rand(4, 8), groups=torch.zeros(4))),
                 ("symmetric 'yes'", lambda: info_nce(_rand(4, 8), _rand(4, 8), symmetric="yes"))],
    ),
    "BindingHead": Spec(
        lambda: [Call(BindingHead, (32, 16), dict(hidden_dim=8)), Call(BindingHead(32, 16), (_rand(2, 32),)),
                 Call(BindingHead(32, 16, hidden_dim=8), (_rand(2, 32),))],
        lambda: [("features of width 12", lambda: BindingHead(32, 16)(_rand(2, 12))),
                 ("3-D features", lambda: BindingHead(32, 16)(_rand(2, 5, 32))),
                 ("long features", lambda: BindingHead(32, 16)(torch.zeros(2, 32, dtype=torch.long)))],
    ),
    "BoundEncoder": Spec(
        lambda: [Call(BoundEncoder, (torch.nn.Linear(4, 32), BindingHead(32, 16))), Call(_bound_points(), (_rand(2, 64, 3),)),
                 Call(_bound_points().features, (_rand(2, 64, 3),))],
        lambda: [("a function as encoder", lambda: BoundEncoder(lambda x: x, BindingHead(4, 4))),
                 ("an nn.Linear as head", lambda: BoundEncoder(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))),
                 ("fewer points than groups", lambda: _bound_points()(_rand(1, 5, 3))),
                 ("NaN cloud", lambda: _bound_points()(_nan(1, 64, 3))),
                 ("features of the wrong width", lambda: BoundEncoder(torch.nn.Linear(4, 8), BindingHead(32, 16))(_rand(2, 4)))],
    ),
    "embed_in_batches": Spec(
        lambda: [Call(embed_in_batches, (_bound_points(), _rand(5, 64, 3)), dict(batch_size=2))],
        lambda: [("no inputs", lambda: embed_in_batches(_bound_points(), _rand(0, 64, 3))),
                 ("a function as model", lambda: embed_in_batches(lambda x: x, _rand(5, 64, 3)))],
    ),
    "train_binding": Spec(
        lambda: [Call(train_binding, (BoundEncoder(torch.nn.Linear(4, 8), BindingHead(8, 16)), _rand(10, 4), _rand(10, 16)),
                      dict(groups=torch.tensor([0, 1, 2, 3, 4] * 2), steps=2, batch_size=4, lr=1e-3, warmup_steps=1,
                           weight_decay=0.01, temperature=0.1, freeze_encoder=False, seed=1, progress=False),
                      zero_ok=_fs("warmup_steps", "seed"), rank_free=_fs("inputs")),
                 Call(train_binding, (_bound_points(), _rand(6, 64, 3), _rand(6, 16)),
                      dict(steps=2, batch_size=3, freeze_encoder=True, progress=False), rank_free=_fs("inputs"))],
        lambda: [("9 targets for 10 inputs", lambda: train_binding(BoundEncoder(torch.nn.Linear(4, 8), BindingHead(8, 16)),
                                                                  _rand(10, 4), _rand(9, 16), progress=False)),
                 ("targets of width 12", lambda: train_binding(BoundEncoder(torch.nn.Linear(4, 8), BindingHead(8, 16)),
                                                              _rand(10, 4), _rand(10, 12), progress=False)),
                 ("batch of 32 from 10", lambda: train_binding(BoundEncoder(torch.nn.Linear(4, 8), BindingHead(8, 16)),
                                                              _rand(10, 4), _rand(10, 16), batch_size=32, progress=False)),
                 ("batch of 1", lambda: train_binding(BoundEncoder(torch.nn.Linear(4, 8), BindingHead(8, 16)),
                                                     _rand(10, 4), _rand(10, 16), batch_size=1, progress=False)),
                 ("a bare module", lambda: train_binding(torch.nn.Linear(4, 16), _rand(10, 4), _rand(10, 16), progress=False))],
    ),
    "BindingHistory": Spec(lambda: [Call(BindingHistory, ([1.0, 0.5], 2.0))], mutate=False),
    "RetrievalResult": Spec(lambda: [Call(RetrievalResult, (0.5, 0.25)), Call(lambda: RetrievalResult(0.5, 0.25).times_chance)],
                            mutate=False),
    "emergent_retrieval": Spec(
        lambda: [Call(emergent_retrieval, (_rand(4, 8), _rand(6, 8), torch.tensor([0, 1, 2, 0]), torch.tensor([0, 1, 2, 0, 1, 2])))],
        lambda: [("a query label missing from the gallery", lambda: emergent_retrieval(_rand(2, 8), _rand(3, 8), torch.tensor([0, 5]),
                                                                                       torch.tensor([0, 1, 2]))),
                 ("gallery of another width", lambda: emergent_retrieval(_rand(2, 8), _rand(3, 6), torch.tensor([0, 1]),
                                                                          torch.tensor([0, 1, 2]))),
                 ("3 labels for 2 queries", lambda: emergent_retrieval(_rand(2, 8), _rand(3, 8), torch.tensor([0, 1, 1]),
                                                                        torch.tensor([0, 1, 2])))],
    ),
    "caption_embeddings": Spec(
        lambda: [Call(caption_embeddings, (*_chapter2(), ["small red circle", "large blue square"]), dict(template="a {}"))],
        lambda: [("one str, not a list", lambda: caption_embeddings(*_chapter2(), "small red circle")),
                 ("no captions", lambda: caption_embeddings(*_chapter2(), [])),
                 ("template without {}", lambda: caption_embeddings(*_chapter2(), ["small red circle"], template="a circle")),
                 ("a caption too long for the text tower", lambda: caption_embeddings(*_chapter2(), ["red " * 40]))],
    ),
    "PairedClouds": Spec(lambda: [Call(PairedClouds, (_rand(2, 16, 3), torch.tensor([0, 1]), torch.tensor([1, 0]), _rand(2, 3, 32, 32))),
                                  Call(make_paired_clouds(4, num_points=16).__len__)], mutate=False),
    "make_paired_clouds": Spec(
        lambda: [Call(make_paired_clouds, (6,), dict(seed=1, num_points=32), zero_ok=_fs("seed"))],
        lambda: [("n '2'", lambda: make_paired_clouds("2")), ("0 points", lambda: make_paired_clouds(2, num_points=0))],
    ),
}
REGISTRY.update(BINDING_REGISTRY)


def _chapter_registries() -> dict[str, Spec | str]:
    """Specs of later chapters, one file each in ``tests/fuzz_specs/chNN.py``: ``specs(fuzz) -> {name: Spec}``.

    ``fuzz`` is this module, so a chapter's file uses ``fuzz.Spec``, ``fuzz.Call``, ``fuzz._rand``... without
    importing a test module by name (pytest imports it under its own). A name given twice is an error.
    """
    import importlib.util
    import sys
    from pathlib import Path

    found: dict[str, Spec | str] = {}
    for path in sorted((Path(__file__).parent / "fuzz_specs").glob("ch*.py")):
        spec = importlib.util.spec_from_file_location(f"fuzz_specs_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        specs = module.specs(sys.modules[__name__])
        twice = sorted((set(specs) & set(found)) | (set(specs) & set(REGISTRY)))
        if twice:
            raise AssertionError(f"{path.name} gives fuzz specs that another registry gives too: {twice}")
        found.update(specs)
    return found


REGISTRY.update(_chapter_registries())


# ---------------------------------------------------------------------------------------- engine


def exported() -> dict[str, object]:
    """Every name in ``__all__`` of mmllm_course and each of its subpackages (grading and viz aside)."""
    names: dict[str, object] = {}
    packages = ["mmllm_course"] + [
        m.name for m in pkgutil.walk_packages(mmllm_course.__path__, "mmllm_course.")
        if m.ispkg and not m.name.startswith(NOT_LIBRARY_API)
    ]
    for package in packages:
        module = importlib.import_module(package)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if name in names and names[name] is not obj:
                raise AssertionError(f"two different objects are exported as {name!r}: give them distinct names")
            names[name] = obj
    return names


def _outcome(fn: Callable[[], Any]) -> tuple[str, BaseException | Any]:
    try:
        return "ok", fn()
    except BaseException as err:  # noqa: BLE001 - classified by the caller
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        return "error", err


def _raised_in_library(err: BaseException) -> tuple[bool, str]:
    frames = traceback.extract_tb(err.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
    return bool(frames) and os.path.abspath(frames[-1].filename).startswith(LIBRARY_DIR), where


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if hasattr(value, "__dataclass_fields__"):
        return [t for k in value.__dataclass_fields__ for t in _tensors(getattr(value, k))]
    return []


def _judge(label: str, fn: Callable[[], Any], must_fail: bool, want: type | None = None,
           allowed: tuple[type[BaseException], ...] = ()) -> str | None:
    """None when the call behaves; otherwise a line saying what went wrong."""
    kind, result = _outcome(fn)
    if kind == "ok":
        if must_fail:
            return f"{label}: no error (silent success on invalid input)"
        bad = [t for t in _tensors(result) if t.is_floating_point() and not torch.isfinite(t).all()]
        return f"{label}: returned NaN/inf instead of an error" if bad else None
    err = result
    if not isinstance(err, (ValueError, TypeError) + allowed):
        return f"{label}: {type(err).__name__}: {str(err)[:200]}"
    inside, where = _raised_in_library(err)
    if not inside:
        return f"{label}: {type(err).__name__} raised outside mmllm_course at {where}: {str(err)[:200]}"
    if want is not None and not isinstance(err, want + allowed if isinstance(want, tuple) else (want, *allowed)):
        return f"{label}: expected a {want.__name__}, got {type(err).__name__}: {str(err)[:200]}"
    return None


def _signature(fn: Callable) -> inspect.Signature:
    target = fn.forward if isinstance(fn, torch.nn.Module) else fn
    return inspect.signature(target)


def _variants(call: Call):
    """(label, fn, must_fail, wanted type) for every automatic mutation of a good call."""
    sig = _signature(call.fn)
    bound = sig.bind(*call.args, **call.kwargs)

    def with_value(name: str, value: Any) -> Callable[[], Any]:
        def run():
            b = copy.copy(bound)
            b.arguments = dict(bound.arguments)
            b.arguments[name] = value
            return call.fn(*b.args, **b.kwargs)
        return run

    for name, value in bound.arguments.items():
        if name in call.fixed:
            continue
        default = sig.parameters[name].default
        if isinstance(value, torch.Tensor):
            if default is not None:
                yield f"{name}=None", with_value(name, None), True, TypeError
            yield f"{name}=list", with_value(name, value.tolist()), True, TypeError
            yield f"{name}=numpy", with_value(name, value.numpy()), True, TypeError
            yield f"{name}='abc'", with_value(name, "abc"), True, TypeError
            if name not in call.rank_free:
                yield f"{name} with one more dim", with_value(name, value[None]), True, None
                if value.dim() > 0:
                    yield f"{name} with one dim less", with_value(name, value[0]), True, None
            others = (torch.float64, torch.float16, torch.int64) if value.is_floating_point() else (torch.float32, torch.int32, torch.bool)
            for dtype in others:
                yield f"{name} as {dtype}", with_value(name, value.to(dtype)), False, None
            if value.dim() > 0 and value.shape[0] > 0:
                yield f"{name} with an empty batch", with_value(name, value[:0]), False, None
        elif isinstance(value, bool) or value is None or isinstance(value, slice):
            continue
        elif isinstance(value, (int, np.integer)):
            if name not in call.zero_ok:
                yield f"{name}=0", with_value(name, 0), True, None
            if name not in call.negative_ok:
                yield f"{name}=-1", with_value(name, -1), True, None
            yield f"{name}=2.5", with_value(name, 2.5), True, TypeError
            yield f"{name}='3'", with_value(name, "3"), True, None if name in call.str_ok else TypeError
        elif isinstance(value, float):
            yield f"{name}=nan", with_value(name, math.nan), True, None
            yield f"{name}='abc'", with_value(name, "abc"), True, TypeError
            if name not in call.negative_ok:
                yield f"{name}=-1.0", with_value(name, -1.0), True, None
        elif isinstance(value, str):
            continue  # names and templates: their bad values are in the spec's bad list
        else:  # a model, a config, a list of items...
            if default is not None:
                yield f"{name}=None", with_value(name, None), True, None
            yield f"{name}={call.str_value!r}", with_value(name, call.str_value), True, None
            yield f"{name}=5", with_value(name, 5), True, TypeError


def test_every_exported_name_has_a_fuzz_spec():
    names = exported()
    missing = sorted(set(names) - set(REGISTRY))
    assert not missing, f"exported names without a fuzz spec in tests/test_api_fuzz.py REGISTRY: {missing}"
    stale = sorted(set(REGISTRY) - set(names))
    assert not stale, f"REGISTRY names that are no longer exported: {stale}"
    for name, spec in REGISTRY.items():
        if spec == CONSTANT:
            assert not callable(names[name]) or isinstance(names[name], dict), f"{name} is callable: give it a Spec"


@pytest.mark.parametrize("name", sorted(n for n, s in REGISTRY.items() if s != CONSTANT))
def test_fuzz(name):
    spec = REGISTRY[name]
    problems = []
    torch.manual_seed(0)
    with torch.random.fork_rng():
        for i, call in enumerate(spec.calls()):
            if call.run_good:
                kind, result = _outcome(lambda: call.fn(*call.args, **call.kwargs))
                assert kind == "ok", f"{name}: good call {i} failed, the spec is wrong: {result!r}"
            if spec.mutate:
                for label, fn, must_fail, want in _variants(call):
                    problem = _judge(f"{name} call {i}, {label}", fn, must_fail, want, spec.allowed)
                    if problem:
                        problems.append(problem)
        for label, fn in spec.bad():
            problem = _judge(f"{name}, {label}", fn, True, None, spec.allowed)
            if problem:
                problems.append(problem)
    assert not problems, "\n".join(problems)


def test_the_fuzzer_catches_what_it_should():
    """The judge itself: an AttributeError, an error from torch, silent success and NaN are reported; ours passes."""
    def from_torch():
        return torch.ones(2, 3) @ torch.ones(2, 3)

    def ours():
        return patchify(torch.rand(1, 3, 5, 5), 2)

    assert "AttributeError" in _judge("x", lambda: None.shape, True)
    assert "outside mmllm_course" in _judge("x", lambda: torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 2)), True) \
        or "RuntimeError" in _judge("x", from_torch, True)
    assert "no error" in _judge("x", lambda: 1, True)
    assert "NaN" in _judge("x", lambda: torch.tensor(float("nan")), False)
    assert _judge("x", ours, True) is None
    assert "expected a TypeError" in _judge("x", ours, True, TypeError)
