"""Part 1 of the map, modality encoders: images, text, (later) audio and 3-D points -> feature vectors."""

from mmllm_course.encoders.clip import (
    CLIP,
    CLIPConfig,
    clip_from_transformers,
    clip_loss,
    load_pretrained_clip,
    retrieval_recall_at_k,
    zero_shot_classifier,
    zero_shot_predict,
)
from mmllm_course.encoders.patches import (
    PatchEmbedding,
    VisionEmbeddings,
    patchify,
    unpatchify,
    vision_embeddings_from_vit,
)
from mmllm_course.encoders.text import (
    TextTransformer,
    TextTransformerConfig,
    TextTransformerOutput,
    clip_text_from_transformers,
)
from mmllm_course.encoders.vit import ViT, ViTConfig, ViTOutput, clip_vision_from_transformers, vit_from_transformers

__all__ = [
    "CLIP",
    "CLIPConfig",
    "PatchEmbedding",
    "TextTransformer",
    "TextTransformerConfig",
    "TextTransformerOutput",
    "ViT",
    "ViTConfig",
    "ViTOutput",
    "VisionEmbeddings",
    "clip_from_transformers",
    "clip_loss",
    "clip_text_from_transformers",
    "clip_vision_from_transformers",
    "load_pretrained_clip",
    "patchify",
    "retrieval_recall_at_k",
    "unpatchify",
    "vision_embeddings_from_vit",
    "vit_from_transformers",
    "zero_shot_classifier",
    "zero_shot_predict",
]
