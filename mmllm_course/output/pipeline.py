"""Chapter 9 end to end: a request -> the LM emits signal tokens -> their hidden states -> the output projector -> a frozen generator -> an image.

:class:`ImageGeneratingLM` holds the three parts NExT-GPT (Wu et al. 2023,
https://arxiv.org/abs/2309.05519) joins on its output side, in miniature:

1. chapter 5's LM (a ``transformers`` ``LlamaForCausalLM``) with ``k`` signal tokens
   ``[IMG0]..[IMGk-1]`` (:func:`~mmllm_course.output.add_signal_tokens`). The LM is frozen
   **except the k new rows of its embedding table**, which its output layer shares (tied): the
   rows are the only words the LM has never seen, and learning them is enough for the LM to say
   them after a drawing request (the decision reads the last hidden state through those rows),
   while everything the LM already knew stays bit-identical (:meth:`~ImageGeneratingLM.signal_rows_only`);
2. the :class:`~mmllm_course.output.OutputProjector` (trained): the hidden states (B, K, D) at the
   signal tokens -> the generator's conditioning (B, L, D_cond);
3. the frozen chapter-9 generator (:func:`~mmllm_course.generators.load_chapter9_generator`), which
   draws from any conditioning of shape (B, L, D_cond) = (B, 16, 64).

The sequence the LM reads and emits (right-padded in a batch)::

    <bos> draw a small red circle in the top left [IMG0] [IMG1] [IMG2] [IMG3] <eos>
    '------------------- prompt -----------------' '--- emitted (greedy) ---'

Requests (:func:`draw_request`, :data:`REQUEST_TEMPLATES`) are built from the synthetic world's
captions ("a small red circle in the top left"); :data:`HELD_OUT_TEMPLATES` are phrasings the
training never shows. Dims: ``B`` requests, ``T`` tokens, ``D`` the LM's width, ``K`` signal
tokens, ``L`` conditioning tokens, ``D_cond`` their width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mmllm_course._checks import InputTypeError, check_int, check_number, check_str_sequence, describe
from mmllm_course.output.projector import OutputProjector, OutputProjectorConfig
from mmllm_course.output.signal_tokens import add_signal_tokens, signal_hidden_states, signal_token_labels, signal_token_names

# Phrasings of a drawing request; "{}" is the caption, e.g. "a small red circle in the top left".
# Fourteen phrasings to train on: with four, the projector learned the phrasing along with the
# object, and one of the two held-out phrasings failed on some seeds (chapter 9's recipe docstring).
REQUEST_TEMPLATES: tuple[str, ...] = ("draw {}", "show me {}", "paint {}", "make a picture of {}", "create {}", "generate {}",
                                      "i want {}", "give me a picture of {}", "can you draw {}", "sketch {}", "kindly draw {}",
                                      "now show me {}", "hey paint {}", "a picture of {}")
HELD_OUT_TEMPLATES: tuple[str, ...] = ("please draw {}", "an image of {}")  # never seen in training


def draw_request(caption: str, template: str = REQUEST_TEMPLATES[0]) -> str:
    """The request that asks for ``caption``'s image: ``template.format(caption)``, e.g. "draw a small red circle in the top left"."""
    if not isinstance(caption, str) or not caption.strip():
        raise InputTypeError(f"caption must be a non-empty str such as 'a small red circle in the top left', got {describe(caption)}")
    if not isinstance(template, str) or template.count("{}") != 1:
        raise ValueError(f"template must be a str with one '{{}}' where the caption goes, e.g. 'draw {{}}', got {template!r}")
    return template.format(caption)


@dataclass
class ImageGeneration:
    """What :meth:`ImageGeneratingLM.generate_image` returns for one prompt.

    ``image``: (3, H, W) in [0, 1], or None when the LM did not emit its signal tokens (then
    ``message`` says so and what it emitted instead). ``emitted``: the LM's greedy continuation as text.
    """

    prompt: str
    emitted: str
    image: torch.Tensor | None
    message: str

    @property
    def ok(self) -> bool:
        return self.image is not None


class ImageGeneratingLM(nn.Module):
    """An LM with signal tokens, an output projector and a frozen generator: ``generate_image("draw a small red circle in the top left")``."""

    def __init__(self, lm, tokenizer, generator, num_signal_tokens: int = 4, projector: OutputProjectorConfig | None = None):
        super().__init__()
        from transformers import PreTrainedTokenizerBase

        from mmllm_course.generators.latent_diffusion import LatentDiffusionGenerator
        from mmllm_course.language.lm import lm_width

        if not isinstance(generator, LatentDiffusionGenerator):
            raise InputTypeError(f"generator must be a LatentDiffusionGenerator (load_chapter9_generator()), got {describe(generator)}")
        if not isinstance(tokenizer, PreTrainedTokenizerBase):
            raise InputTypeError(f"tokenizer must be a transformers tokenizer (load_chapter5_lm()[1]), got {describe(tokenizer)}")
        k = check_int(num_signal_tokens, "num_signal_tokens")
        width = lm_width(lm)
        gc = generator.config
        if projector is None:
            projector = OutputProjectorConfig(lm_dim=width, cond_dim=gc.cond_dim, num_queries=gc.cond_length)
        if not isinstance(projector, OutputProjectorConfig):
            raise InputTypeError(f"projector must be an OutputProjectorConfig or None, got {describe(projector)}")
        if (projector.lm_dim, projector.cond_dim, projector.num_queries) != (width, gc.cond_dim, gc.cond_length):
            raise ValueError(f"projector must map the LM's width {width} to the generator's conditioning (L, D_cond) = "
                             f"({gc.cond_length}, {gc.cond_dim}), got lm_dim={projector.lm_dim}, "
                             f"(num_queries, cond_dim) = ({projector.num_queries}, {projector.cond_dim})")
        self.lm, self.tokenizer = lm, tokenizer
        self.signal_tokens = signal_token_names("IMG", k)
        self.signal_ids = add_signal_tokens(lm, tokenizer, self.signal_tokens)
        self.projector = OutputProjector(projector)
        # Per-feature statistics of the signal hidden states (K, D), set from training requests by
        # set_signal_statistics: the projector reads (hidden - mean) / std. Identity until set.
        self.register_buffer("signal_mean", torch.zeros(k, width))
        self.register_buffer("signal_std", torch.ones(k, width))
        self.generator = generator.requires_grad_(False).eval()
        self._row_hook = None

    # ------------------------------------------------------------------ what trains
    def signal_rows_only(self) -> "ImageGeneratingLM":
        """Freeze the LM except the signal tokens' rows of its (tied) embedding table; the generator stays frozen. Returns self.

        The embedding weight gets ``requires_grad`` and a gradient hook that zeroes every other
        row's gradient, so an optimiser without weight decay on it (Adam's update of a zero
        gradient is exactly zero) leaves the LM's old vocabulary bit-identical.
        """
        self.lm.requires_grad_(False)
        self.generator.requires_grad_(False)
        weight = self.lm.get_input_embeddings().weight
        weight.requires_grad_(True)
        if self._row_hook is None:
            mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype)
            mask[self.signal_ids] = 1.0
            self._row_hook = weight.register_hook(lambda grad: grad * mask.to(grad.device, grad.dtype))
        return self

    def signal_embedding(self) -> nn.Parameter:
        """The LM's (tied) token-embedding weight (V, D); only its rows ``self.signal_ids`` train."""
        return self.lm.get_input_embeddings().weight

    # ------------------------------------------------------------------ batches
    def _prompt_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        prompts = check_str_sequence(prompts, "prompts", allow_empty=False)
        tok = self.tokenizer
        rows = [[tok.bos_token_id] + ids for ids in tok(prompts, add_special_tokens=False)["input_ids"]]
        limit = getattr(self.lm.config, "max_position_embeddings", None)
        k = len(self.signal_ids) + 1
        for p, r in zip(prompts, rows):
            if limit is not None and len(r) + k > limit:
                raise ValueError(f"prompt {p!r} is {len(r)} tokens with bos; with {k} more it exceeds the LM's context of {limit}")
        return rows

    def _pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return ids, mask

    def request_batch(self, requests: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forced rows ``<bos> request [IMG0]..[IMGk-1] <eos>``: ``(input_ids, attention_mask, labels)``, each (B, T).

        Right-padded; ``labels`` (:func:`~mmllm_course.output.signal_token_labels`) keep the signal
        tokens and the eos, -100 elsewhere (the prompt is given, not learned).
        """
        rows = [r + self.signal_ids + [self.tokenizer.eos_token_id] for r in self._prompt_ids(requests)]
        ids, mask = self._pad(rows)
        labels = signal_token_labels(ids, self.signal_ids, keep_ids=[self.tokenizer.eos_token_id])
        labels[mask == 0] = -100  # pad may equal eos in other tokenizers (GPT-2): never learn padding
        return ids, mask, labels

    def lm_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (B, T, V), signal hidden states (B, K, D))``: one LM pass, the last layer's states at the signal tokens.

        input_ids: (B, T) integers, each row holding each signal token once; attention_mask: (B, T)
        bool or 0/1 (1 = real token), or None.
        """
        from mmllm_course._checks import check_tensor, padding_mask

        check_tensor(input_ids, "input_ids", "(B, T)", ndim=2, kind="int")
        if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
            raise ValueError(f"input_ids must hold at least one row and one token, got shape {tuple(input_ids.shape)}")
        vocab = self.lm.get_input_embeddings().num_embeddings
        if int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab:
            raise ValueError(f"input_ids must be token ids in [0, {vocab}), got values in [{int(input_ids.min())}, {int(input_ids.max())}]")
        if attention_mask is not None:
            attention_mask = padding_mask(attention_mask, "attention_mask", tuple(input_ids.shape)).long()
        input_ids = input_ids.long()
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return out.logits, signal_hidden_states(out.hidden_states[-1], input_ids, self.signal_ids)

    def signal_hidden(self, requests: Sequence[str]) -> torch.Tensor:
        """The LM's hidden states (B, K, D) at the signal tokens appended to ``requests`` (teacher-forced, as in training).

        A public helper (the chapter's exercises build on it): the projector's input for these requests.
        Gradients flow to the signal rows when :meth:`signal_rows_only` is on and grad is enabled.
        """
        ids, mask, _ = self.request_batch(requests)
        return self.lm_forward(ids, mask)[1]

    @torch.no_grad()
    def set_signal_statistics(self, hidden: torch.Tensor) -> None:
        """Standardise the projector's input with the mean and spread over requests of ``hidden`` (N, K, D), signal hidden states.

        Why: the states at a signal token share a large common part (their mean is ~5x their spread
        across requests: the token's own row dominates), and the projector's first layers then see
        nearly the same vector for every request. Without this, on one seed in five the projector's
        training l2 stalled at 9-13 (against 0.1 standardised).
        """
        from mmllm_course._checks import check_tensor

        check_tensor(hidden, "hidden", f"(N >= 2, K={len(self.signal_ids)}, D={self.signal_mean.shape[1]})", ndim=3, kind="float")
        if tuple(hidden.shape[1:]) != tuple(self.signal_mean.shape) or hidden.shape[0] < 2:
            raise ValueError(f"hidden must be (N >= 2, K, D) = (N, {self.signal_mean.shape[0]}, {self.signal_mean.shape[1]}) signal "
                             f"hidden states, got {tuple(hidden.shape)}")
        self.signal_mean.copy_(hidden.mean(0))
        self.signal_std.copy_(hidden.std(0) + 1e-4)

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """Signal hidden states (B, K, D) -> standardised -> :attr:`projector` -> conditioning (B, L, D_cond)."""
        return self.projector((hidden - self.signal_mean) / self.signal_std)

    def conditioning(self, requests: Sequence[str]) -> torch.Tensor:
        """``project(signal_hidden(requests))``: the generator's conditioning (B, L, D_cond) for teacher-forced requests."""
        return self.project(self.signal_hidden(requests))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (B, T, V), conditioning (B, L, D_cond))`` for rows that hold each signal token once (:meth:`request_batch`)."""
        logits, hidden = self.lm_forward(input_ids, attention_mask)
        return logits, self.project(hidden)

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def emit(self, prompts: Sequence[str], max_new_tokens: int | None = None) -> list[list[int]]:
        """The LM's greedy continuation of each prompt (ids, up to and without eos); ``max_new_tokens`` defaults to K + 1.

        Prompts of equal length run as one batch (no padding, so nothing depends on the padding side).
        """
        rows = self._prompt_ids(prompts)
        n = len(self.signal_ids) + 1 if max_new_tokens is None else check_int(max_new_tokens, "max_new_tokens")
        out: list[list[int]] = [[] for _ in rows]
        groups: dict[int, list[int]] = {}
        for i, r in enumerate(rows):
            groups.setdefault(len(r), []).append(i)
        eos = self.tokenizer.eos_token_id
        for index in groups.values():
            ids = torch.tensor([rows[i] for i in index])
            done = torch.zeros(len(index), dtype=torch.bool)
            for _ in range(n):
                nxt = self.lm(input_ids=ids).logits[:, -1].argmax(-1)  # greedy
                for j, i in enumerate(index):
                    if not done[j]:
                        if int(nxt[j]) == eos:
                            done[j] = True
                        else:
                            out[i].append(int(nxt[j]))
                if bool(done.all()):
                    break
                ids = torch.cat([ids, nxt[:, None]], 1)
        return out

    def _emitted_signals(self, emitted: list[int]) -> bool:
        k = len(self.signal_ids)
        return emitted[:k] == self.signal_ids

    @torch.no_grad()
    def generate_images(self, prompts: Sequence[str], num_inference_steps: int = 10, guidance_scale: float = 3.0,
                        seed: int | None = 0) -> list[ImageGeneration]:
        """Each prompt -> the LM's greedy tokens -> if they are ``[IMG0]..[IMGk-1]``: their hidden states -> projector -> generator.

        A prompt after which the LM does not emit its signal tokens gets ``image=None`` and a
        message saying what it emitted (no error: deciding not to draw is the LM's answer).
        ``num_inference_steps`` / ``guidance_scale`` / ``seed``: the generator's DDIM sampling.
        """
        prompts = check_str_sequence(prompts, "prompts", allow_empty=False)
        check_int(num_inference_steps, "num_inference_steps")
        check_number(guidance_scale, "guidance_scale", low=0.0, high=50.0)
        if seed is not None:
            check_int(seed, "seed", minimum=0)
        emitted = self.emit(prompts)
        texts = [self.tokenizer.decode(e, skip_special_tokens=False) for e in emitted]
        good = [i for i, e in enumerate(emitted) if self._emitted_signals(e)]
        images: dict[int, torch.Tensor] = {}
        if good:
            rows = [self._prompt_ids([prompts[i]])[0] + self.signal_ids for i in good]
            ids, mask = self._pad(rows)
            was = self.training
            self.eval()
            try:
                cond = self.project(self.lm_forward(ids, mask)[1])
            finally:
                self.train(was)
            drawn = self.generator.sample(cond, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed)
            images = {i: drawn[j] for j, i in enumerate(good)}
        results = []
        names = "".join(self.signal_tokens)
        for i, p in enumerate(prompts):
            if i in images:
                results.append(ImageGeneration(p, texts[i], images[i], "ok"))
            else:
                results.append(ImageGeneration(p, texts[i], None, (
                    f"no image: the LM did not emit its signal tokens {names} after {p!r}; it emitted {texts[i]!r}. "
                    "Ask for a drawing (e.g. 'draw a small red circle in the top left'), or train the signal tokens first.")))
        return results

    def generate_image(self, prompt: str, num_inference_steps: int = 10, guidance_scale: float = 3.0,
                       seed: int | None = 0) -> ImageGeneration:
        """One prompt -> :class:`ImageGeneration` (its ``image`` (3, H, W), or None with a ``message``); see :meth:`generate_images`."""
        if not isinstance(prompt, str):
            raise InputTypeError(f"prompt must be a str such as 'draw a small red circle in the top left', got {describe(prompt)}")
        return self.generate_images([prompt], num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed)[0]
