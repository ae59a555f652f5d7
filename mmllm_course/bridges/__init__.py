"""Part 2 of the map, input projectors ("bridges"): encoder features -> LLM token embeddings.

Every bridge maps features (B, N, D_in) [+ a padding mask (B, N), True/1 = real] to (B, K, D_llm)
and says its K for a given N (``num_output_tokens``):

- ``LinearBridge``: MiniGPT-4 (arXiv:2304.10592), K = N;
- ``MLPBridge``: LLaVA-1.5 (arXiv:2310.03744), K = N;
- ``QFormerBridge``: BLIP-2 (arXiv:2301.12597), K = ``num_queries`` whatever N is;
- ``PerceiverResamplerBridge``: Flamingo (arXiv:2204.14198), Idefics2, K = ``num_latents``;
- ``TokenMergeBridge``: Idefics3 (arXiv:2408.12637), SmolVLM, K = N / ``ratio``^2.

``make_bridge("mlp", in_dim=64, out_dim=128)`` builds any of them from one word.
"""

from __future__ import annotations

from dataclasses import fields

from mmllm_course.bridges.base import Bridge
from mmllm_course.bridges.linear import LinearBridge, LinearBridgeConfig
from mmllm_course.bridges.mlp import MLPBridge, MLPBridgeConfig, mlp_bridge_from_transformers
from mmllm_course.bridges.qformer import QFormerBridge, QFormerBridgeConfig, qformer_bridge_from_transformers
from mmllm_course.bridges.resampler import (
    PerceiverResamplerBridge,
    PerceiverResamplerBridgeConfig,
    perceiver_resampler_bridge_from_transformers,
)
from mmllm_course.bridges.token_merge import (
    TokenMergeBridge,
    TokenMergeBridgeConfig,
    pixel_shuffle,
    token_merge_bridge_from_transformers,
)

BRIDGES: dict[str, tuple[type[Bridge], type]] = {
    "linear": (LinearBridge, LinearBridgeConfig),
    "mlp": (MLPBridge, MLPBridgeConfig),
    "qformer": (QFormerBridge, QFormerBridgeConfig),
    "resampler": (PerceiverResamplerBridge, PerceiverResamplerBridgeConfig),
    "token_merge": (TokenMergeBridge, TokenMergeBridgeConfig),
}
ALIASES = {"q-former": "qformer", "perceiver": "resampler", "perceiver_resampler": "resampler",
           "pixel_shuffle": "token_merge", "token-merge": "token_merge"}


def make_bridge(name: str, **config: object) -> Bridge:
    """Build a bridge from one word and its config fields: ``make_bridge("qformer", in_dim=64, num_queries=8)``.

    Names: ``"linear"``, ``"mlp"``, ``"qformer"``, ``"resampler"`` (or ``"perceiver"``),
    ``"token_merge"`` (or ``"pixel_shuffle"``). Keyword arguments are the fields of that bridge's
    config dataclass (``LinearBridgeConfig``, ...); an unknown field raises a TypeError naming the valid ones.
    """
    if not isinstance(name, str):
        raise TypeError(f"bridge name must be a str, one of {sorted(BRIDGES)}, got {type(name).__name__}")
    key = ALIASES.get(name.lower(), name.lower())
    if key not in BRIDGES:
        raise ValueError(f"unknown bridge {name!r}: expected one of {sorted(BRIDGES)} (aliases {sorted(ALIASES)})")
    cls, config_cls = BRIDGES[key]
    valid = [f.name for f in fields(config_cls)]
    unknown = sorted(set(config) - set(valid))
    if unknown:
        raise TypeError(f"{config_cls.__name__} has no field(s) {unknown}; valid fields: {valid}")
    return cls(config_cls(**config))


__all__ = [
    "BRIDGES",
    "Bridge",
    "LinearBridge",
    "LinearBridgeConfig",
    "MLPBridge",
    "MLPBridgeConfig",
    "PerceiverResamplerBridge",
    "PerceiverResamplerBridgeConfig",
    "QFormerBridge",
    "QFormerBridgeConfig",
    "TokenMergeBridge",
    "TokenMergeBridgeConfig",
    "make_bridge",
    "mlp_bridge_from_transformers",
    "perceiver_resampler_bridge_from_transformers",
    "pixel_shuffle",
    "qformer_bridge_from_transformers",
    "token_merge_bridge_from_transformers",
]
