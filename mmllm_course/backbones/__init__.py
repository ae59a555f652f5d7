"""Part 3 of the map, the LLM backbone: unified embedding decoder and cross-modality attention.

- ``UnifiedEmbeddingMLLM`` (backbone A, chapter 5): image tokens from a bridge spliced into a causal
  LM's input embeddings at the ``<image>`` placeholders (LLaVA, arXiv:2304.08485).
- ``CrossAttentionMLLM`` (backbone B, chapter 6): the image stays outside the LM's sequence; gated
  cross-attention blocks (``GatedCrossAttentionBlock``, zero-initialised tanh gates) inserted before
  every k-th decoder layer of the frozen LM read it, each text token only the image(s) before it
  (``media_attention_mask``; Flamingo, arXiv:2204.14198; Llama 3.2 Vision).
"""

from mmllm_course.backbones.cross_attention import (
    CrossAttentionMLLM,
    GatedCrossAttentionBlock,
    GatedCrossAttentionConfig,
    gated_cross_attention_from_transformers,
    media_attention_mask,
)
from mmllm_course.backbones.unified import UnifiedEmbeddingMLLM

__all__ = ["CrossAttentionMLLM", "GatedCrossAttentionBlock", "GatedCrossAttentionConfig", "UnifiedEmbeddingMLLM",
           "gated_cross_attention_from_transformers", "media_attention_mask"]
