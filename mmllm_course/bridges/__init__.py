"""Part 2 of the map, input projectors ("bridges"): encoder features -> LLM token embeddings.

Filled by the bridge chapters (linear, MLP, Q-Former, Perceiver Resampler).
"""
