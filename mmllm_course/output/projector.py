"""The output projector of NExT-GPT (Wu et al. 2023, https://arxiv.org/abs/2309.05519) and GILL (Koh et al. 2023, https://arxiv.org/abs/2305.17216).

The LM's hidden states at its K signal tokens are in the LM's space (width ``lm_dim``); the frozen
generator's cross-attention reads a conditioning sequence of its own shape ``(L, D_cond)`` (here
the chapter-2 text tower's ``(16, 64)``). The projector translates, with a small encoder-decoder
transformer whose decoder input is ``L`` learned query embeddings (GILL's "GILLMapper", NExT-GPT's
"transformer-based output projector")::

    signal_hidden (B, K, lm_dim) -> in_proj -> x (B, K, width)            the memory (encoder input)
    queries (1, L, width) expanded to (B, L, width)                        the decoder's input
    y = transformer(src=x, tgt=queries) (B, L, width) -> out_proj -> (B, L, D_cond)

The queries fix the output length L whatever K is, as a Q-Former's queries do on the input side
(chapter 4). NExT-GPT uses width 512, 4 heads, dropout 0.1; ours is 64 wide on a CPU.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from mmllm_course._checks import check_dropout, check_int, check_tensor, to_module_dtype


@dataclass
class OutputProjectorConfig:
    """Sizes of :class:`OutputProjector`: ``lm_dim`` in, ``(num_queries, cond_dim)`` out, a transformer of ``width`` between."""

    lm_dim: int  # width of the LM's hidden states (input)
    cond_dim: int  # width the generator's cross-attention expects (D_cond)
    num_queries: int  # length L of the conditioning sequence it produces
    width: int = 64  # NExT-GPT uses 512
    heads: int = 4  # NExT-GPT uses 4
    layers: int = 2  # encoder and decoder layers of the transformer
    dropout: float = 0.1  # NExT-GPT uses 0.1

    def __post_init__(self) -> None:
        for name in ("lm_dim", "cond_dim", "num_queries", "width", "heads", "layers"):
            check_int(getattr(self, name), name)
        check_dropout(self.dropout)
        if self.width % self.heads:
            raise ValueError(f"width={self.width} must be divisible by heads={self.heads}")


class OutputProjector(nn.Module):
    """Signal-token hidden states (B, K, lm_dim) -> conditioning (B, num_queries, cond_dim) for a frozen generator."""

    def __init__(self, config: OutputProjectorConfig):
        super().__init__()
        if not isinstance(config, OutputProjectorConfig):
            from mmllm_course._checks import InputTypeError, describe

            raise InputTypeError(f"config must be an OutputProjectorConfig, got {describe(config)}")
        self.config = c = config
        self.in_proj = nn.Linear(c.lm_dim, c.width)
        # learned query embeddings, one per output token; small init as the transformer's own weights
        self.queries = nn.Parameter(torch.randn(1, c.num_queries, c.width) * 0.02)
        with warnings.catch_warnings():  # norm_first disables the encoder's nested-tensor fast path: expected, not a problem
            warnings.filterwarnings("ignore", message=".*enable_nested_tensor.*")
            self.transformer = nn.Transformer(d_model=c.width, nhead=c.heads, num_encoder_layers=c.layers,
                                              num_decoder_layers=c.layers, dim_feedforward=4 * c.width,
                                              dropout=c.dropout, batch_first=True, norm_first=True)
        self.out_proj = nn.Linear(c.width, c.cond_dim)

    def forward(self, signal_hidden: torch.Tensor) -> torch.Tensor:
        """signal_hidden (B, K, lm_dim) -> (B, num_queries, cond_dim); floating inputs are cast to the parameters' dtype."""
        c = self.config
        check_tensor(signal_hidden, "signal_hidden", f"(B, K, lm_dim={c.lm_dim})", ndim=3, kind="float")
        if signal_hidden.shape[-1] != c.lm_dim or signal_hidden.shape[0] == 0 or signal_hidden.shape[1] == 0:
            raise ValueError(f"signal_hidden must be (B >= 1, K >= 1, lm_dim={c.lm_dim}) (the LM's hidden states at its "
                             f"signal tokens), got {tuple(signal_hidden.shape)}")
        x = self.in_proj(to_module_dtype(signal_hidden, self))  # (B, K, width)
        queries = self.queries.expand(x.shape[0], -1, -1)  # (B, L, width)
        y = self.transformer(src=x, tgt=queries)  # (B, L, width): the queries read the signal tokens by cross-attention
        return self.out_proj(y)  # (B, L, cond_dim)
