"""Building blocks shared by every part of the map: position embeddings, attention, transformer blocks."""

from mmllm_course.nn.position import (
    LearnedPositionEmbedding,
    sincos_1d_position_embedding,
    sincos_2d_position_embedding,
)

__all__ = ["LearnedPositionEmbedding", "sincos_1d_position_embedding", "sincos_2d_position_embedding"]
