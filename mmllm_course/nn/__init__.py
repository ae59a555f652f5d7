"""Building blocks shared by every part of the map: position embeddings, attention, transformer blocks."""

from mmllm_course.nn.attention import (
    MultiHeadAttention,
    attention_from_clip,
    causal_mask,
    merge_heads,
    scaled_dot_product_attention,
    split_heads,
)
from mmllm_course.nn.position import (
    LearnedPositionEmbedding,
    sincos_1d_position_embedding,
    sincos_2d_position_embedding,
)
from mmllm_course.nn.transformer import MLP, QuickGELU, TransformerBlock, make_activation

__all__ = [
    "LearnedPositionEmbedding",
    "MLP",
    "MultiHeadAttention",
    "QuickGELU",
    "TransformerBlock",
    "attention_from_clip",
    "causal_mask",
    "make_activation",
    "merge_heads",
    "scaled_dot_product_attention",
    "sincos_1d_position_embedding",
    "sincos_2d_position_embedding",
    "split_heads",
]
