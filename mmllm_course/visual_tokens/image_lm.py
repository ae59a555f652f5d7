"""The LM that writes image tokens: a request, then the image as 64 words of the codebook (Chameleon / Emu3 style).

Dims: ``B`` requests, ``K`` codes (``num_codes``), ``G x G`` the token grid (``N = G * G`` tokens),
``V`` the LM's vocabulary (text tokens + ``K`` image tokens + ``<boi>``, ``<eoi>``), ``T`` the length
of one sequence.

One interleaved sequence, one loss, one softmax over text and image tokens alike:

    <bos> draw a small red circle in the top left <boi> <img_17> <img_3> ... <img_90> <eoi>
    '------------- request (text) ------------'     '------ N = 64 image tokens ------'

The LM is chapter 5's architecture (a ``transformers`` ``LlamaForCausalLM`` from
:func:`~mmllm_course.language.make_causal_lm`), its vocabulary extended with one token per code
(:func:`~mmllm_course.language.add_special_tokens_to_lm`, the step chapter 5 used for ``<image>``).
Training is next-token prediction; the loss counts the image tokens and ``<eoi>`` only (the
request is given at sampling time, so predicting it would spend capacity on nothing we use).
Sampling is ``transformers``' own ``generate`` (temperature, top-k), with a logits processor that
allows only image tokens for the N positions after ``<boi>``, so every sample is a full grid that
the tokenizer's decoder turns into an image. Chameleon (https://arxiv.org/abs/2405.09818) and Emu3
(https://arxiv.org/abs/2409.18869) do this at scale with 8,192 and 32,768 codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mmllm_course._checks import InputTypeError, check_int, check_number, check_str_sequence, check_tensor, describe

BOI, EOI = "<boi>", "<eoi>"
REQUEST_TEMPLATE = "draw {}"


def image_token(k: int) -> str:
    """The vocabulary entry of code ``k``: ``<img_k>``."""
    return f"<img_{check_int(k, 'k', minimum=0)}>"


def request_for(caption: str) -> str:
    """A one-object caption -> the request the LM is trained on: ``"draw a small red circle in the top left"``."""
    if not isinstance(caption, str):
        raise InputTypeError(f"caption must be a str, got {describe(caption)}")
    return REQUEST_TEMPLATE.format(caption)


@dataclass
class ImageLMConfig:
    """Sizes of the image-token LM (a LLaMA, chapter 5's architecture) and of the token grid it writes."""

    num_codes: int = 128  # K: the tokenizer's codebook
    grid_size: int = 8  # G: the tokenizer's grid side
    dim: int = 96
    depth: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    mlp_dim: int = 256
    context_length: int = 96  # request (<= 14 tokens) + <boi> + 64 + <eoi>

    def __post_init__(self) -> None:
        for name in ("num_codes", "grid_size", "dim", "depth", "num_heads", "num_kv_heads", "mlp_dim", "context_length"):
            check_int(getattr(self, name), name)
        if self.context_length < self.grid_size ** 2 + 4:
            raise ValueError(f"context_length={self.context_length} must hold the {self.grid_size ** 2} image tokens, <boi>, "
                             f"<eoi> and a request: at least {self.grid_size ** 2 + 4}")
        self.lm_config()  # the LM's own checks (heads dividing the width...)

    def lm_config(self):
        from mmllm_course.language import CausalLMConfig

        return CausalLMConfig(arch="llama", dim=self.dim, depth=self.depth, num_heads=self.num_heads, num_kv_heads=self.num_kv_heads,
                              mlp_dim=self.mlp_dim, context_length=self.context_length)


class _OnlyImageTokens:
    """A ``transformers`` logits processor: after ``<boi>``, only the K image tokens may come, then ``<eoi>``."""

    def __init__(self, code_ids: torch.Tensor, eoi_id: int, prompt_length: int, n: int):
        self.code_ids, self.eoi_id, self.prompt_length, self.n = code_ids, eoi_id, prompt_length, n

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        done = input_ids.shape[1] - self.prompt_length  # image tokens written so far
        allowed = self.code_ids if done < self.n else torch.tensor([self.eoi_id])
        mask = torch.full_like(scores, float("-inf"))
        mask[:, allowed.to(scores.device)] = 0.0
        return scores + mask


class ImageTokenLM(nn.Module):
    """``lm`` (a ``transformers`` causal LM) + its tokenizer, extended with ``<boi>``, ``<eoi>`` and ``<img_0>..<img_{K-1}>``.

    ``code_ids`` (K,) maps code k to its vocabulary id. :meth:`loss` trains it, :meth:`generate`
    samples token grids (B, G, G) for requests.
    """

    def __init__(self, config: ImageLMConfig | None = None, seed: int | None = 0):
        super().__init__()
        from mmllm_course.language import add_special_tokens_to_lm, course_lm_tokenizer, make_causal_lm

        if config is not None and not isinstance(config, ImageLMConfig):
            raise InputTypeError(f"config must be an ImageLMConfig or None, got {describe(config)}")
        self.config = c = config or ImageLMConfig()
        self.tokenizer = course_lm_tokenizer()
        self.lm = make_causal_lm(c.lm_config(), self.tokenizer, seed=seed)
        text_vocab = len(self.tokenizer)
        with torch.random.fork_rng():
            if seed is not None:
                torch.manual_seed(seed + 1)
            ids = add_special_tokens_to_lm(self.lm, self.tokenizer, [BOI, EOI] + [image_token(k) for k in range(c.num_codes)])
        self.text_vocab_size = text_vocab
        self.boi_id, self.eoi_id = ids[0], ids[1]
        self.register_buffer("code_ids", torch.tensor(ids[2:], dtype=torch.long), persistent=False)

    @property
    def tokens_per_image(self) -> int:
        return self.config.grid_size ** 2

    def _check_codes(self, codes: torch.Tensor, b: int) -> torch.Tensor:
        g, k = self.config.grid_size, self.config.num_codes
        check_tensor(codes, "codes", f"(B, {g}, {g})", ndim=3, kind="int")
        if tuple(codes.shape) != (b, g, g):
            raise ValueError(f"codes must be ({b}, {g}, {g}) (one {g}x{g} token grid per request), got {tuple(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= k):
            raise ValueError(f"token ids must lie in [0, {k}) (a codebook of {k} codes), got values in [{int(codes.min())}, {int(codes.max())}]")
        return codes.long()

    def _prompts(self, requests: Sequence[str]) -> list[list[int]]:
        requests = check_str_sequence(requests, "requests", allow_empty=False)
        prompts = [[self.tokenizer.bos_token_id] + self.tokenizer(r).input_ids + [self.boi_id] for r in requests]
        longest = max(len(p) for p in prompts)
        if longest + self.tokens_per_image + 1 > self.config.context_length:
            raise ValueError(f"a request of {longest - 2} tokens leaves no room for {self.tokens_per_image} image tokens in "
                             f"context_length={self.config.context_length}")
        return prompts

    def sequences(self, requests: Sequence[str], codes: torch.Tensor) -> dict[str, torch.Tensor]:
        """The interleaved training batch: ``input_ids``, ``attention_mask``, ``labels`` (B, T), right-padded.

        ``labels`` is -100 on the request, ``<boi>`` and the padding: the loss counts image tokens and ``<eoi>``.
        """
        prompts = self._prompts(requests)
        codes = self._check_codes(codes, len(prompts))
        image = self.code_ids[codes.flatten(1)]  # (B, N) vocabulary ids
        rows = [torch.cat([torch.tensor(p), image[i], torch.tensor([self.eoi_id])]) for i, p in enumerate(prompts)]
        t = max(len(r) for r in rows)
        ids = torch.full((len(rows), t), self.tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), t), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), t), dtype=torch.long)
        for i, (p, r) in enumerate(zip(prompts, rows)):
            ids[i, :len(r)] = r
            mask[i, :len(r)] = 1
            labels[i, len(p):len(r)] = r[len(p):]
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def loss(self, requests: Sequence[str], codes: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy over the image tokens and ``<eoi>`` of the requests' sequences."""
        batch = self.sequences(requests, codes)
        logits = self.lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, T, V)
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), ignore_index=-100)

    @torch.no_grad()
    def generate(self, requests: Sequence[str], temperature: float = 1.0, top_k: int | None = None, seed: int = 0,
                 batch_size: int = 256) -> torch.Tensor:
        """Sample one token grid per request: codes (B, G, G) in [0, K). ``temperature`` 0 = greedy; ``top_k`` None = all K."""
        from transformers import LogitsProcessorList

        temperature = check_number(temperature, "temperature", low=0.0)
        if top_k is not None:
            top_k = check_int(top_k, "top_k")
        check_int(seed, "seed", minimum=0)
        check_int(batch_size, "batch_size")
        prompts = self._prompts(requests)
        n, g = self.tokens_per_image, self.config.grid_size
        out = []
        was = self.lm.training
        self.lm.eval()
        try:
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                for start in range(0, len(prompts), batch_size):
                    chunk = prompts[start:start + batch_size]
                    t = max(len(p) for p in chunk)
                    ids = torch.full((len(chunk), t), self.tokenizer.pad_token_id, dtype=torch.long)
                    mask = torch.zeros((len(chunk), t), dtype=torch.long)
                    for i, p in enumerate(chunk):  # left padding: every prompt ends at the last column, where sampling starts
                        ids[i, t - len(p):] = torch.tensor(p)
                        mask[i, t - len(p):] = 1
                    processor = _OnlyImageTokens(self.code_ids, self.eoi_id, t, n)
                    sample = dict(do_sample=True, temperature=temperature, top_k=top_k if top_k is not None else 0) if temperature > 0 \
                        else dict(do_sample=False)
                    seq = self.lm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                           logits_processor=LogitsProcessorList([processor]), pad_token_id=self.tokenizer.pad_token_id,
                                           eos_token_id=self.eoi_id, top_p=1.0, **sample)
                    vocab = seq[:, t:t + n]  # (b, N) vocabulary ids of image tokens
                    lookup = torch.full((int(self.code_ids.max()) + 1,), -1, dtype=torch.long)
                    lookup[self.code_ids] = torch.arange(len(self.code_ids))
                    out.append(lookup[vocab].view(-1, g, g))
        finally:
            self.lm.train(was)
        return torch.cat(out)


@dataclass
class ImageLMTrainConfig:
    """How :func:`train_image_lm` trains: AdamW, linear warmup then cosine decay to 0."""

    steps: int = 1500
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup: int = 50

    def __post_init__(self) -> None:
        check_int(self.steps, "steps", minimum=0)
        check_int(self.batch_size, "batch_size")
        check_int(self.warmup, "warmup")
        check_number(self.lr, "lr", low=0.0, low_open=True)
        check_number(self.weight_decay, "weight_decay", low=0.0)


def train_image_lm(model: ImageTokenLM, requests: Sequence[str], codes: torch.Tensor, train: ImageLMTrainConfig | None = None,
                   seed: int = 0, progress: bool = False) -> dict[str, list[float]]:
    """Next-token training of ``model`` in place on (request, token grid) pairs; codes (n, G, G). Returns ``{"loss": [...]}``.

    ``seed`` draws the batch order (the weights' init is the model's).
    """
    import math

    from tqdm.auto import tqdm

    if not isinstance(model, ImageTokenLM):
        raise InputTypeError(f"model must be an ImageTokenLM, got {describe(model)}")
    requests = check_str_sequence(requests, "requests", allow_empty=False)
    codes = model._check_codes(codes, len(requests))
    train = train or ImageLMTrainConfig()
    if not isinstance(train, ImageLMTrainConfig):
        raise InputTypeError(f"train must be an ImageLMTrainConfig or None, got {describe(train)}")
    check_int(seed, "seed", minimum=0)
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / train.warmup)
                                              * 0.5 * (1 + math.cos(math.pi * min(s, train.steps) / max(train.steps, 1))))
    history: dict[str, list[float]] = {"loss": []}
    model.lm.train()
    for _ in tqdm(range(train.steps), desc="image-token LM", disable=not progress):
        idx = torch.randint(0, len(requests), (train.batch_size,), generator=gen)
        loss = model.loss([requests[i] for i in idx.tolist()], codes[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        history["loss"].append(float(loss.detach()))
    model.lm.eval()
    return history
