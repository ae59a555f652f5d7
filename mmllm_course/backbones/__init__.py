"""Part 3 of the map, the LLM backbone: unified embedding decoder and cross-modality attention.

- ``UnifiedEmbeddingMLLM`` (backbone A, chapter 5): image tokens from a bridge spliced into a causal
  LM's input embeddings at the ``<image>`` placeholders (LLaVA, arXiv:2304.08485).
"""

from mmllm_course.backbones.unified import UnifiedEmbeddingMLLM

__all__ = ["UnifiedEmbeddingMLLM"]
