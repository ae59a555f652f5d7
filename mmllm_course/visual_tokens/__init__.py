"""Part 4 of the map, the output side, the discrete route: images as words of a codebook (chapter 10).

``quantizer``: the VQ-VAE quantiser step (nearest code, straight-through estimator, codebook and
commitment losses), in parity with ``diffusers``' ``VectorQuantizer``.
"""

from mmllm_course.visual_tokens.quantizer import (
    CodebookQuantizer,
    QuantizerOutput,
    codes_to_vectors,
    nearest_code,
    perplexity_of,
    restart_dead_codes,
    straight_through,
    vq_losses,
)

__all__ = [
    "CodebookQuantizer", "QuantizerOutput", "codes_to_vectors", "nearest_code", "perplexity_of", "restart_dead_codes",
    "straight_through", "vq_losses",
]
