"""Tiny causal language models through ``transformers``' public API: LLaMA and GPT-2 architectures.

The course's "pretrained LLM" is a real ``transformers`` model (``LlamaForCausalLM`` or
``GPT2LMHeadModel``) of a few hundred thousand parameters, with the course's offline tokenizer, so
the same code runs unchanged with a real checkpoint (``HuggingFaceTB/SmolLM2-135M``, ``gpt2``) once
one can be downloaded. Dims: ``V`` vocabulary, ``D`` width (``dim``), ``L`` layers (``depth``),
``T`` the longest sequence it takes (``context_length``).

    ids (B, T) -> token embeddings (B, T, D) -> L decoder blocks -> logits (B, T, V)

The tokenizer is :func:`course_lm_tokenizer`: the shapes-world BPE with one extra special token,
``<image>`` (:data:`IMAGE_TOKEN`), the placeholder a multimodal prompt holds where the image goes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mmllm_course._checks import InputTypeError, check_choice, check_int, check_str_sequence, describe

IMAGE_TOKEN = "<image>"
ARCHITECTURES = ("llama", "gpt2")


def course_lm_tokenizer():
    """The course tokenizer with the ``<image>`` placeholder as a special token (id 3): pad 0, eos 1, bos 2."""
    from mmllm_course.data import shapes_tokenizer

    return shapes_tokenizer(extra_special_tokens=(IMAGE_TOKEN,))


@dataclass
class CausalLMConfig:
    """Size of a tiny causal LM. ``arch``: ``"llama"`` (RoPE, RMSNorm, SwiGLU) or ``"gpt2"`` (learned positions, LayerNorm, GELU)."""

    arch: str = "llama"
    dim: int = 128  # D
    depth: int = 2  # L
    num_heads: int = 4
    num_kv_heads: int = 2  # grouped-query attention (LLaMA only; GPT-2 has num_heads)
    mlp_dim: int = 256  # hidden width of each block's MLP
    context_length: int = 64  # T: the longest sequence (LLaMA: max_position_embeddings; GPT-2: n_positions)
    tie_embeddings: bool = True  # the output layer reuses the token embedding table (GPT-2, SmolLM2)

    def __post_init__(self) -> None:
        check_choice(self.arch, "arch", ARCHITECTURES)
        for name in ("dim", "depth", "num_heads", "num_kv_heads", "mlp_dim", "context_length"):
            check_int(getattr(self, name), name)
        if not isinstance(self.tie_embeddings, bool):
            raise InputTypeError(f"tie_embeddings must be a bool, got {describe(self.tie_embeddings)}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} must be divisible by num_heads={self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")

    def to_transformers(self, tokenizer):
        """The ``transformers`` config (``LlamaConfig`` / ``GPT2Config``) with ``tokenizer``'s vocabulary and special ids."""
        import transformers

        vocab = len(tokenizer)
        ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        if self.arch == "llama":
            return transformers.LlamaConfig(
                vocab_size=vocab, hidden_size=self.dim, intermediate_size=self.mlp_dim, num_hidden_layers=self.depth,
                num_attention_heads=self.num_heads, num_key_value_heads=self.num_kv_heads,
                max_position_embeddings=self.context_length, tie_word_embeddings=self.tie_embeddings, **ids)
        return transformers.GPT2Config(
            vocab_size=vocab, n_embd=self.dim, n_layer=self.depth, n_head=self.num_heads, n_inner=self.mlp_dim,
            n_positions=self.context_length, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            tie_word_embeddings=self.tie_embeddings, **ids)


def make_causal_lm(config: CausalLMConfig | None = None, tokenizer=None, seed: int | None = None):
    """A randomly initialised ``LlamaForCausalLM`` / ``GPT2LMHeadModel`` sized by ``config`` for ``tokenizer``.

    ``tokenizer`` defaults to :func:`course_lm_tokenizer`; ``seed`` (if given) seeds the initial
    weights. Dropout is off (0.0) in both architectures: the runs are deterministic. Returns the
    model in eval mode.
    """
    import torch
    import transformers

    if config is None:
        config = CausalLMConfig()
    if not isinstance(config, CausalLMConfig):
        raise InputTypeError(f"config must be a CausalLMConfig or None, got {describe(config)}")
    if tokenizer is None:
        tokenizer = course_lm_tokenizer()
    if not isinstance(tokenizer, transformers.PreTrainedTokenizerBase):
        raise InputTypeError(f"tokenizer must be a transformers tokenizer (course_lm_tokenizer()), got {describe(tokenizer)}")
    if seed is not None:
        check_int(seed, "seed", minimum=0)
    hf_config = config.to_transformers(tokenizer)
    cls = transformers.LlamaForCausalLM if config.arch == "llama" else transformers.GPT2LMHeadModel
    with torch.random.fork_rng():
        if seed is not None:
            torch.manual_seed(seed)
        model = cls(hf_config)
    return model.eval()


def lm_width(lm) -> int:
    """D, the width of ``lm``'s input token embeddings."""
    embeddings = lm.get_input_embeddings() if hasattr(lm, "get_input_embeddings") else None
    if embeddings is None or not hasattr(embeddings, "embedding_dim"):
        raise InputTypeError(f"lm must be a transformers causal LM with input embeddings, got {describe(lm)}")
    return int(embeddings.embedding_dim)


def lm_context_length(lm) -> int | None:
    """T, the longest sequence ``lm`` takes (``max_position_embeddings`` or ``n_positions``); None if it has no limit."""
    config = getattr(lm, "config", None)
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def add_special_tokens_to_lm(lm, tokenizer, tokens: Sequence[str]) -> list[int]:
    """Add ``tokens`` to ``tokenizer`` as special tokens (never split) and grow ``lm``'s embeddings to fit; their ids, in order.

    The shared step of every chapter that gives an LM new vocabulary: the ``<image>`` placeholder
    (chapter 5, :func:`~mmllm_course.training.recipes.add_image_token`) and the signal tokens
    ``[IMG0]..`` of the output side (chapter 9, :func:`~mmllm_course.output.add_signal_tokens`).
    The embedding table (and a tied output layer) grows to ``len(tokenizer)`` with
    ``resize_token_embeddings(len(tokenizer), mean_resizing=False)``: the new rows start at the
    model's own random initialisation (std ``initializer_range``), not at the mean of the old rows.
    A tokenizer without a pad token gets its eos token as pad (GPT-2's has none). Idempotent: tokens
    already in the vocabulary are not added again and nothing is resized if the table holds them.
    Changes ``lm`` and ``tokenizer`` in place.
    """
    import torch
    from transformers import PreTrainedTokenizerBase

    if not isinstance(lm, torch.nn.Module) or not hasattr(lm, "resize_token_embeddings"):
        raise InputTypeError(f"lm must be a transformers causal LM (e.g. LlamaForCausalLM), got {describe(lm)}")
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise InputTypeError(f"tokenizer must be a transformers tokenizer, got {describe(tokenizer)}")
    tokens = check_str_sequence(tokens, "tokens", allow_empty=False)
    blank = [t for t in tokens if not t.strip()]
    if blank:
        raise ValueError(f"tokens must be non-empty strings without only whitespace, got {blank[0]!r} among {tokens!r}")
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"tokens must be distinct, got {tokens!r}")
    vocab = tokenizer.get_vocab()
    new = [t for t in tokens if t not in vocab]
    if new:
        tokenizer.add_special_tokens({"extra_special_tokens": new}, replace_extra_special_tokens=False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if len(tokenizer) > lm.get_input_embeddings().num_embeddings:
        lm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    return [int(i) for i in tokenizer.convert_tokens_to_ids(tokens)]
