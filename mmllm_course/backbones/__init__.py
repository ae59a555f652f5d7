"""Part 3 of the map, the LLM backbone: unified embedding decoder and cross-modality attention.

Filled by the backbone chapters.
"""
