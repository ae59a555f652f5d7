"""Part 1 of the map, modality encoders: images, text, (later) audio and 3-D points -> feature vectors."""

from mmllm_course.encoders.patches import (
    PatchEmbedding,
    VisionEmbeddings,
    patchify,
    unpatchify,
    vision_embeddings_from_vit,
)

__all__ = ["PatchEmbedding", "VisionEmbeddings", "patchify", "unpatchify", "vision_embeddings_from_vit"]
