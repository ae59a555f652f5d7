"""The capstone: an LLM that listens to a spoken request and builds the 3-D object it describes.

Dims: ``B`` clips, ``T`` samples (16,000 = 1 s at 16 kHz), ``M`` mel bands, ``F`` mel frames,
``N_a`` audio tokens, ``K_a`` bridge tokens, ``P`` prompt tokens, ``D`` the LM's width, ``K``
signal tokens, ``L`` conditioning tokens of width ``C``, ``N`` points.

The five-part map of the course, end to end (``AudioTo3D.describe()`` lists every stage's shapes)::

    waveform (B, T) -> log-mel (B, M, F) -> audio encoder (Whisper-style, ch. 8) -> (B, N_a, D_a)      1. encoder
      -> bridge (MLP or Perceiver resampler, ch. 3-4) -> audio tokens (B, K_a, D)                       2. projection
      -> LM (ch. 5, frozen) reads [audio tokens] "<bos>Make the shape." and emits [3D0] [3D1] <eos>
      -> hidden states at [3D0] [3D1] (B, K, D) -> output projector (ch. 9) -> conditioning (B, L, C)  3. generate
      -> frozen point diffusion decoder (this chapter, DDIM) -> point cloud (B, N, 3)                      and decode

What trains, and how (GILL, Koh et al. 2023, arXiv:2305.17216; NExT-GPT, Wu et al. 2023,
arXiv:2309.05519): the audio encoder first learns to recognise the words of the requests
(:func:`pretrain_audio_encoder`, a few hundred steps of classification, as Whisper's encoder was
trained on transcripts), then is frozen. Then the bridge, the rows of the two signal tokens in the
LM's embedding table and the output projector train together on two losses: the signal-token NLL
(the LM must *say* ``[3D0] [3D1]`` after an object request and ``<eos>`` straight away after a
request for something that has no 3-D form, a star or a cross), and the l2 distance between the
projector's output and the conditioning the frozen decoder was pretrained with for the described
solid and size (:meth:`~mmllm_course.generators.PointDiffusionDecoder.condition`). The LM and the
decoder never change.

Bad input: a clip too short (under :data:`MIN_SECONDS`), longer than the encoder's 1 s window,
silent, at another sample rate, stereo or NaN raises a ``ValueError`` saying what came and what is
expected; a clip for which the LM emits no signal tokens raises :class:`NoObjectError` (a
``ValueError``) quoting what the LM said instead (or, with ``strict=False``, is marked unmapped).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mmllm_course._checks import InputTypeError, check_choice, check_int, describe

SIGNAL_PREFIX = "3D"
PROMPT = "Make the shape."
REJECT_SHAPES = ("star", "cross")  # 2-D shapes of the spoken world with no solid: "no object", the LM says <eos>
MIN_SECONDS = 0.3  # three words at the fastest speed take ~0.5 s; under 0.3 s a clip cannot hold a request
SILENCE_PEAK = 1e-3  # peak amplitude under which a clip counts as silent (the speech's peak is 0.2-1.0)
BRIDGE_CHOICES = ("mlp", "resampler")


class NoObjectError(ValueError):
    """The LM emitted no ``[3D0] .. [3Dk]`` signal tokens for a clip: there is nothing to decode into an object."""


# ----------------------------------------------------------------------------------------------
# The recipe
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioTo3DRecipe:
    """Data, parts and optimisation of the capstone's trainable parts (all plain values, hashable).

    Run ``s``: training clips from seed ``3s``, the rejected-request clips from ``3s + 1``, held-out
    clips from ``3s + 2`` (:func:`held_out_speech`: new speakers, speeds and noise); initial weights from ``torch.manual_seed(s)``; batches from a generator seeded ``s``.
    """

    train_size: int = 1200  # spoken objects, balanced over the 5 solids x 2 sizes
    reject_size: int = 240  # spoken 2-D stars and crosses: the LM learns to emit no signal tokens
    held_out_size: int = 100
    held_out_reject_size: int = 40
    # 1. the audio encoder (chapter 8's sizes) and its short pre-training on the words
    n_mels: int = 40
    audio_dim: int = 64
    audio_depth: int = 2
    audio_heads: int = 4
    audio_mlp_dim: int = 128
    encoder_steps: int = 500
    encoder_batch_size: int = 64
    encoder_lr: float = 3e-3
    # 2. the bridge
    # measured on seed 0 (600 steps, lr 1e-2): the MLP bridge (LLaVA's, all 50 audio tokens) gave 99% of held-out
    # requests the right conditioning (99% mapped, 100% of stars and crosses refused); the resampler (8 latents) 56%
    # (78% mapped, 50% refused): the frozen LM reads the words better from the tokens where they were heard
    bridge: str = "mlp"
    num_queries: int = 8  # K_a of the resampler (the MLP keeps all N_a = 50 tokens)
    # 3. the LM's signal tokens and the output projector
    num_signal_tokens: int = 2
    prompt: str = PROMPT
    projector_width: int = 64
    projector_heads: int = 4
    projector_layers: int = 2
    projector_dropout: float = 0.1
    steps: int = 600
    batch_size: int = 64
    lr: float = 1e-2  # at 3e-3 (400 steps) the projector's l2 loss was still at 15 and 48% of the objects right
    # the signal tokens' rows start as random rows of a frozen LM that says " a large blue ..." after the prompt; at
    # 3e-3 (400 steps) it never said them (NLL 1.56, no clip mapped)
    signal_lr: float = 1e-2
    warmup_steps: int = 30
    weight_decay: float = 0.01
    nll_weight: float = 1.0
    # evaluation: DDIM steps and guidance of the frozen decoder
    sample_steps: int = 25
    guidance_scale: float = 2.0

    def __post_init__(self) -> None:
        check_choice(self.bridge, "bridge", BRIDGE_CHOICES)

    def encoder_config(self):
        from mmllm_course.encoders.audio import AudioEncoderConfig

        return AudioEncoderConfig(n_mels=self.n_mels, dim=self.audio_dim, depth=self.audio_depth, num_heads=self.audio_heads,
                                  mlp_dim=self.audio_mlp_dim, max_positions=50)

    def log_mel_config(self):
        from mmllm_course.encoders.audio import LogMelConfig

        return LogMelConfig(n_mels=self.n_mels, chunk_length=1.0)

    def make_bridge(self, lm_dim: int, name: str | None = None):
        """A fresh bridge ``name`` (default ``self.bridge``) from the audio encoder's width to ``lm_dim``."""
        from mmllm_course.bridges import make_bridge

        name = self.bridge if name is None else check_choice(name, "bridge", BRIDGE_CHOICES)
        extra = {"num_latents": self.num_queries} if name == "resampler" else {}
        return make_bridge(name, in_dim=self.audio_dim, out_dim=lm_dim, **extra)


CHAPTER11 = AudioTo3DRecipe()
# Measured (run_capstone, one thread, held-out: 100 object requests + 40 stars/crosses, DDIM 25, guidance 2;
# 2026-12-03, an AVX-512 CPU, two runs at once on 2 cores), seeds 0 / 1 / 2 / 3 / 4:
#   signal tokens said for 100 / 100 / 99 / 100 / 100% of objects; stars and crosses refused 100 / 97.5 / 92.5 / 95 / 97.5%;
#   class 100 / 99 / 99 / 98 / 100%; size 100 / 100 / 96 / 100 / 99%; Chamfer ratio 0.24 / 0.25 / 0.29 / 0.25 / 0.25;
#   true conditioning: class 98-100%; random: 17-21%; judge on real clouds 100%; training (encoder pre-training
#   included) 62-66 s a seed.
# Earlier (the previous session, a loaded machine, possibly another CPU's rounding path) seed 1 said the signal
# tokens for only 80%, and the seed-0 recipe inside a notebook whose bridge comparison had consumed the global
# random stream (the projector's dropout draws from it) reached 89% class. The chapter notebook now runs that
# comparison inside torch.random.fork_rng(), so its run is the seed-0 run above; the dropout stream's effect is the
# recipe's remaining fragility (train_audio_to_3d does not seed it itself).


def held_out_speech():
    """The held-out clips' speech: the training ranges (``SpokenConfig()``: pitch 85-260 Hz, speed 0.85-1.25, formants
    x0.88-1.15, SNR 0-20 dB), drawn anew: new speakers, speeds, rooms and noise (a seed no training clip uses)."""
    from mmllm_course.data.audio import SpokenConfig

    return SpokenConfig()


# ----------------------------------------------------------------------------------------------
# Data: object requests, and requests for things that have no 3-D form
# ----------------------------------------------------------------------------------------------


@dataclass
class SpokenRequests:
    """Clips for the pipeline: ``waveforms`` (n, T); ``solid`` (n,) index into SOLIDS, or -1 for "no object";
    ``size`` (n,) index into SIZES; ``captions`` what each clip says."""

    waveforms: torch.Tensor
    solid: torch.Tensor
    size: torch.Tensor
    captions: list[str]

    def __len__(self) -> int:
        return int(self.solid.shape[0])

    @property
    def is_object(self) -> torch.Tensor:
        """(n,) bool: the clip asks for one of the solids."""
        return self.solid >= 0

    def subset(self, rows: torch.Tensor) -> "SpokenRequests":
        rows = torch.as_tensor(rows)
        idx = rows.nonzero().flatten() if rows.dtype == torch.bool else rows
        return SpokenRequests(self.waveforms[idx], self.solid[idx], self.size[idx], [self.captions[int(i)] for i in idx])


def make_spoken_requests(objects: int, rejects: int = 0, seed: int = 0, config=None) -> SpokenRequests:
    """``objects`` clips asking for a solid ("large red cone") and ``rejects`` asking for a 2-D star or cross, shuffled.

    ``config``: a :class:`~mmllm_course.data.audio.SpokenConfig` (speakers, speeds, noise). Deterministic in ``seed``.
    """
    import numpy as np

    from mmllm_course.data.audio import SpokenConfig, make_spoken_descriptions, make_spoken_objects
    from mmllm_course.data.shapes import SHAPES

    objects, rejects = check_int(objects, "objects", minimum=0), check_int(rejects, "rejects", minimum=0)
    seed = check_int(seed, "seed", minimum=0)
    if objects + rejects == 0:
        raise ValueError("make_spoken_requests needs at least one clip: objects + rejects >= 1")
    config = SpokenConfig() if config is None else config
    parts = []
    if objects:
        o = make_spoken_objects(objects, config, seed=seed)
        parts.append((o.waveforms, o.solid, o.size, o.captions))
    if rejects:
        import dataclasses

        r = make_spoken_descriptions(rejects, dataclasses.replace(config, shapes=REJECT_SHAPES), seed=seed + 10_000)
        parts.append((r.waveforms, torch.full((rejects,), -1, dtype=torch.long), r.labels[:, 2].clone(), r.captions))
    waves = torch.cat([p[0] for p in parts])
    solid, size = torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts])
    captions = [c for p in parts for c in p[3]]
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(captions)))
    assert all(s in SHAPES for s in REJECT_SHAPES)
    return SpokenRequests(waves[order], solid[order], size[order], [captions[int(i)] for i in order])


# ----------------------------------------------------------------------------------------------
# 1. The encoder's pre-training: recognise the words
# ----------------------------------------------------------------------------------------------


class AudioWordHeads(nn.Module):
    """The audio encoder with two linear heads on its mean-pooled tokens: which solid (5, or 5 = "no object") and which size.

    mel (B, M, F) -> encoder tokens (B, N_a, D_a) -> mean (B, D_a) -> (solid logits (B, 6), size logits (B, 2)).
    """

    def __init__(self, encoder: nn.Module, num_solids: int = 5, num_sizes: int = 2):
        super().__init__()
        self.encoder = encoder
        dim = encoder.config.dim
        self.solid = nn.Linear(dim, check_int(num_solids, "num_solids") + 1)
        self.size = nn.Linear(dim, check_int(num_sizes, "num_sizes"))

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.encoder(mel).mean(dim=1)  # (B, D_a)
        return self.solid(pooled), self.size(pooled)


def _solid_targets(solid: torch.Tensor, num_solids: int = 5) -> torch.Tensor:
    return torch.where(solid >= 0, solid, torch.full_like(solid, num_solids))


def pretrain_audio_encoder(mel: torch.Tensor, requests: SpokenRequests, recipe: AudioTo3DRecipe = CHAPTER11, seed: int = 0,
                           progress: bool = False) -> tuple[nn.Module, list[float]]:
    """Train chapter 8's Whisper-style :class:`~mmllm_course.encoders.audio.AudioEncoder` to recognise the solid and size words.

    mel (n, M, F) log-mel features of ``requests``' clips. Returns ``(encoder frozen in eval mode, losses)``.
    """
    from mmllm_course.encoders.audio import AudioEncoder
    from mmllm_course.nn.optim import adamw_with_schedule
    from mmllm_course.utils import one_thread

    _check_recipe(recipe)
    seed = check_int(seed, "seed", minimum=0)
    _check_requests(requests, "requests")
    if not isinstance(mel, torch.Tensor) or mel.dim() != 3 or mel.shape[0] != len(requests):
        raise ValueError(f"mel must be (n={len(requests)}, M, F) log-mel features of the requests, got {describe(mel)}")
    torch.manual_seed(seed)
    model = AudioWordHeads(AudioEncoder(recipe.encoder_config()))
    optimizer, scheduler = adamw_with_schedule(model, recipe.encoder_lr, recipe.encoder_steps, recipe.warmup_steps, recipe.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    solid, size = _solid_targets(requests.solid), requests.size
    losses: list[float] = []
    model.train()
    with one_thread():
        for _ in tqdm(range(recipe.encoder_steps), desc="1. audio encoder: recognising the words", disable=not progress):
            idx = torch.randint(0, len(requests), (recipe.encoder_batch_size,), generator=generator)
            solid_logits, size_logits = model(mel[idx])
            loss = F.cross_entropy(solid_logits, solid[idx]) + F.cross_entropy(size_logits, size[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
    model.eval()
    model.requires_grad_(False)
    return model, losses


@torch.no_grad()
def word_accuracy(heads: AudioWordHeads, mel: torch.Tensor, requests: SpokenRequests) -> dict[str, float]:
    """The pre-trained encoder's heads on held-out clips: ``solid`` (6 classes with "no object") and ``size`` accuracy."""
    if not isinstance(heads, AudioWordHeads):
        raise InputTypeError(f"heads must be AudioWordHeads (from pretrain_audio_encoder), got {describe(heads)}")
    _check_requests(requests, "requests")
    solid_logits, size_logits = heads(mel)
    return {"solid": (solid_logits.argmax(1) == _solid_targets(requests.solid)).float().mean().item(),
            "size": (size_logits.argmax(1) == requests.size).float().mean().item()}


# ----------------------------------------------------------------------------------------------
# The pipeline
# ----------------------------------------------------------------------------------------------


@dataclass
class AudioTo3DResult:
    """What :meth:`AudioTo3D.generate` returns for B clips.

    ``points`` (B, N, 3): the generated clouds (zeros for unmapped clips); ``mapped`` (B,) bool: the
    LM emitted every signal token; ``emitted``: what the LM said after the prompt, per clip;
    ``conditioning`` (B, L, C): the projector's output (zeros for unmapped clips); ``messages``:
    "" or why a clip gave no object.
    """

    points: torch.Tensor
    mapped: torch.Tensor
    emitted: list[str]
    conditioning: torch.Tensor
    messages: list[str] = field(default_factory=list)


class AudioTo3D(nn.Module):
    """Waveform (B, T) -> point cloud (B, N, 3): audio encoder -> bridge -> LM emitting [3D] tokens -> output projector -> decoder.

    Parts: ``log_mel`` (:class:`~mmllm_course.encoders.audio.LogMelSpectrogram`), ``encoder`` (a
    frozen :class:`~mmllm_course.encoders.audio.AudioEncoder`), ``bridge`` (any course bridge from
    the encoder's width to the LM's), ``lm`` and ``tokenizer`` (chapter 5's; the signal tokens
    ``[3D0]..`` are added to them), ``projector`` (:class:`~mmllm_course.output.OutputProjector`) and
    ``decoder`` (the frozen :class:`~mmllm_course.generators.PointDiffusionDecoder`).

    ``model(waveform)`` is the one call from a waveform to clouds (B, N, 3); :meth:`generate` returns
    the details (:class:`AudioTo3DResult`); :meth:`describe` every stage's tensor shapes.
    """

    def __init__(self, log_mel: nn.Module, encoder: nn.Module, bridge: nn.Module, lm, tokenizer, decoder: nn.Module,
                 num_signal_tokens: int = 2, prompt: str = PROMPT, projector_width: int = 64, projector_heads: int = 4,
                 projector_layers: int = 2, projector_dropout: float = 0.1):
        from mmllm_course.bridges.base import Bridge
        from mmllm_course.encoders.audio import AudioEncoder, LogMelSpectrogram
        from mmllm_course.generators.point_diffusion import PointDiffusionDecoder
        from mmllm_course.language.lm import lm_width
        from mmllm_course.output import OutputProjector, OutputProjectorConfig, add_signal_tokens, signal_token_names

        super().__init__()
        for value, name, cls in ((log_mel, "log_mel", LogMelSpectrogram), (encoder, "encoder", AudioEncoder),
                                 (bridge, "bridge", Bridge), (decoder, "decoder", PointDiffusionDecoder)):
            if not isinstance(value, cls):
                raise InputTypeError(f"{name} must be a {cls.__name__}, got {describe(value)}")
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputTypeError(f"prompt must be a non-empty str, got {describe(prompt)}")
        if log_mel.config.n_mels != encoder.config.n_mels:
            raise ValueError(f"log_mel gives {log_mel.config.n_mels} mel bands but the encoder reads {encoder.config.n_mels}")
        if log_mel.config.num_frames() > encoder.config.max_frames:
            raise ValueError(f"log_mel gives {log_mel.config.num_frames()} frames, more than the encoder's {encoder.config.max_frames}")
        dim = lm_width(lm)
        if bridge.in_dim != encoder.config.dim or bridge.out_dim != dim:
            raise ValueError(f"bridge must map the encoder's width {encoder.config.dim} to the LM's width {dim}, "
                             f"got in_dim={bridge.in_dim}, out_dim={bridge.out_dim}")
        self.log_mel, self.encoder, self.bridge, self.decoder = log_mel, encoder, bridge, decoder
        self.lm, self.tokenizer = lm, tokenizer
        self.encoder.requires_grad_(False).eval()
        self.decoder.requires_grad_(False).eval()
        self.lm.requires_grad_(False).eval()
        self.signal_tokens = signal_token_names(SIGNAL_PREFIX, check_int(num_signal_tokens, "num_signal_tokens"))
        self.signal_ids = add_signal_tokens(lm, tokenizer, self.signal_tokens)
        self.prompt = prompt
        self.prompt_ids = [tokenizer.bos_token_id] + tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = decoder.config
        self.projector = OutputProjector(OutputProjectorConfig(lm_dim=dim, cond_dim=c.cond_dim, num_queries=c.cond_len,
                                                               width=projector_width, heads=projector_heads,
                                                               layers=projector_layers, dropout=projector_dropout))
        self._row_hook = None
        self._signal_rows_only()
        context = getattr(lm.config, "max_position_embeddings", None)
        longest = self.num_audio_tokens + len(self.prompt_ids) + len(self.signal_ids) + 1
        if isinstance(context, int) and longest > context:
            raise ValueError(f"the sequence ({self.num_audio_tokens} audio tokens + {len(self.prompt_ids)} prompt tokens + "
                             f"{len(self.signal_ids)} signal tokens + eos = {longest}) exceeds the LM's context of {context}: "
                             "use a bridge with fewer output tokens (a resampler)")

    # ------------------------------------------------------------------ what trains
    def _signal_rows_only(self) -> None:
        """The LM stays frozen except the signal tokens' rows of its (tied) embedding table (a gradient mask)."""
        weight = self.lm.get_input_embeddings().weight
        weight.requires_grad_(True)
        mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype)
        mask[self.signal_ids] = 1.0
        self._row_hook = weight.register_hook(lambda grad: grad * mask.to(grad.device, grad.dtype))

    def trainable_groups(self, lr: float, signal_lr: float, weight_decay: float = 0.01) -> list[dict]:
        """Parameter groups for AdamW: the bridge and projector (``lr``, ``weight_decay``) and the embedding table
        (``signal_lr``, no weight decay, so that only its signal rows move: Adam's step on a zero gradient is zero)."""
        return [{"params": list(self.bridge.parameters()) + list(self.projector.parameters()), "lr": lr,
                 "weight_decay": weight_decay},
                {"params": [self.lm.get_input_embeddings().weight], "lr": signal_lr, "weight_decay": 0.0}]

    # ------------------------------------------------------------------ shapes
    @property
    def num_audio_tokens(self) -> int:
        """K_a: the tokens the bridge puts into the LM's sequence for one clip."""
        return int(self.bridge.num_output_tokens(self.num_encoder_tokens))

    @property
    def num_encoder_tokens(self) -> int:
        """N_a: the encoder's tokens for one clip (one per 20 ms)."""
        return (self.log_mel.config.num_frames() + 1) // 2

    # ------------------------------------------------------------------ steps of the flow
    def check_waveform(self, waveform: object, sample_rate: int | None = None) -> torch.Tensor:
        """Mono clips (B, T) at the model's rate, padded to its 1 s window; a ValueError for short, long, silent or wrong-rate audio."""
        from mmllm_course.encoders.audio import check_sample_rate, check_waveform

        c = self.log_mel.config
        check_sample_rate(sample_rate, c.sample_rate)
        x = check_waveform(waveform, "waveform")
        shortest = int(MIN_SECONDS * c.sample_rate)
        if x.shape[-1] < shortest:
            raise ValueError(f"waveform is too short: {x.shape[-1]} samples = {x.shape[-1] / c.sample_rate:.3f} s at "
                             f"{c.sample_rate} Hz; a spoken request needs at least {MIN_SECONDS} s ({shortest} samples)")
        if x.shape[-1] > c.num_samples:
            raise ValueError(f"waveform is too long: {x.shape[-1]} samples = {x.shape[-1] / c.sample_rate:.2f} s; the audio "
                             f"encoder reads at most {c.num_samples / c.sample_rate:g} s ({c.num_samples} samples) per clip")
        peak = x.abs().amax(dim=-1)
        silent = (peak < SILENCE_PEAK).nonzero().flatten().tolist()
        if silent:
            raise ValueError(f"clip(s) {silent} of the waveform batch are silent (peak amplitude "
                             f"{float(peak[silent[0]]):.2g} < {SILENCE_PEAK:g}): there is no request to hear")
        return F.pad(x.float(), (0, c.num_samples - x.shape[-1]))

    @torch.no_grad()
    def audio_features(self, waveform: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """Waveform (B, T) -> log-mel (B, M, F) -> the frozen encoder's tokens (B, N_a, D_a)."""
        x = self.check_waveform(waveform, sample_rate)
        return self.encoder(self.log_mel(x))

    def _sequence(self, features: torch.Tensor, answers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs_embeds (B, K_a + P + A, D) and input_ids (B, K_a + P + A) (pad ids at the audio positions).

        features (B, N_a, D_a); answers (B, A): the ids after the prompt (signal tokens, eos, pads).
        """
        b = features.shape[0]
        audio = self.bridge(features)  # (B, K_a, D)
        prompt = torch.tensor(self.prompt_ids, dtype=torch.long).expand(b, -1)
        text = torch.cat([prompt, answers], dim=1)  # (B, P + A)
        embeds = torch.cat([audio, self.lm.get_input_embeddings()(text).to(audio.dtype)], dim=1)
        pad = torch.full((b, audio.shape[1]), self.tokenizer.pad_token_id, dtype=torch.long)
        return embeds, torch.cat([pad, text], dim=1)

    def _lm(self, embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.lm(inputs_embeds=embeds, output_hidden_states=True)
        return out.logits, out.hidden_states[-1]  # (B, T, V), (B, T, D)

    def answers(self, is_object: torch.Tensor) -> torch.Tensor:
        """The target ids after the prompt (B, K + 1): ``[3D0] .. [3DK-1] <eos>`` for objects, ``<eos> <pad> ..`` otherwise."""
        tok = self.tokenizer
        yes = torch.tensor(self.signal_ids + [tok.eos_token_id])
        no = torch.tensor([tok.eos_token_id] + [tok.pad_token_id] * len(self.signal_ids))
        return torch.where(is_object[:, None], yes, no)

    def losses(self, features: torch.Tensor, is_object: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Teacher-forced training losses on encoder features (B, N_a, D_a).

        ``nll``: the signal-token NLL (the signal tokens and eos after the prompt, :func:`~mmllm_course.output.signal_token_nll`);
        ``cond``: :func:`~mmllm_course.output.conditioning_l2_loss` between the projector's output on the object rows'
        signal hidden states and ``target`` (n_objects, L, C), the decoder's true conditioning of those rows.
        """
        from mmllm_course.output import conditioning_l2_loss, signal_hidden_states, signal_token_labels, signal_token_nll

        answers = self.answers(is_object)
        embeds, ids = self._sequence(features, answers)
        logits, hidden = self._lm(embeds)
        labels = signal_token_labels(ids, self.signal_ids, keep_ids=[self.tokenizer.eos_token_id])
        out = {"nll": signal_token_nll(logits, labels)}
        if bool(is_object.any()):
            sig = signal_hidden_states(hidden[is_object], ids[is_object], self.signal_ids)  # (n_obj, K, D)
            out["cond"] = conditioning_l2_loss(self.projector(sig), target)
        else:
            out["cond"] = logits.sum() * 0.0
        return out

    @torch.no_grad()
    def emit(self, features: torch.Tensor, max_new_tokens: int | None = None) -> torch.Tensor:
        """Greedy decoding after the prompt: the ids (B, max_new_tokens) the LM says (pad after its eos)."""
        tok = self.tokenizer
        steps = len(self.signal_ids) + 1 if max_new_tokens is None else check_int(max_new_tokens, "max_new_tokens")
        b = features.shape[0]
        out = torch.full((b, 0), tok.pad_token_id, dtype=torch.long)
        done = torch.zeros(b, dtype=torch.bool)
        for _ in range(steps):
            embeds, _ = self._sequence(features, out)
            nxt = self._lm(embeds)[0][:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, tok.pad_token_id), nxt)
            out = torch.cat([out, nxt[:, None]], dim=1)
            done |= nxt == tok.eos_token_id
            if bool(done.all()):
                break
        return out

    @torch.no_grad()
    def conditioning(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """Encoder features (B, N_a, D_a) -> (conditioning (B, L, C), mapped (B,) bool, what the LM said per clip).

        The LM speaks first (:meth:`emit`); for each clip that said every signal token exactly once,
        the sequence it said is read once more and the hidden states at its signal tokens go through
        the projector. Other clips get zeros and ``mapped = False``.
        """
        from mmllm_course.output import signal_hidden_states

        emitted = self.emit(features)
        counts = torch.stack([(emitted == i).sum(1) for i in self.signal_ids], dim=1)  # (B, K)
        mapped = (counts == 1).all(dim=1)
        c = self.decoder.config
        cond = torch.zeros(features.shape[0], c.cond_len, c.cond_dim)
        if bool(mapped.any()):
            embeds, ids = self._sequence(features[mapped], emitted[mapped])
            hidden = self._lm(embeds)[1]
            cond[mapped] = self.projector(signal_hidden_states(hidden, ids, self.signal_ids)).to(cond.dtype)
        said = [self.tokenizer.decode([t for t in row if t != self.tokenizer.pad_token_id]) for row in emitted.tolist()]
        return cond, mapped, said

    @torch.no_grad()
    def generate(self, waveform: torch.Tensor, sample_rate: int | None = None, steps: int | None = None,
                 guidance_scale: float | None = None, generator: torch.Generator | None = None,
                 strict: bool = True) -> AudioTo3DResult:
        """Clips (T,) or (B, T) at 16 kHz -> :class:`AudioTo3DResult` with clouds (B, N, 3).

        ``steps``, ``guidance_scale``: the decoder's DDIM steps and classifier-free guidance (default:
        its config's). ``strict``: raise :class:`NoObjectError` when the LM emits no signal tokens for
        a clip (else mark it unmapped).
        """
        _check_sampling(steps, guidance_scale, generator)
        if not isinstance(strict, bool):
            raise InputTypeError(f"strict must be True or False, got {describe(strict)}")
        was_training = self.training
        self.eval()
        try:
            features = self.audio_features(waveform, sample_rate)
            cond, mapped, said = self.conditioning(features)
        finally:
            self.train(was_training)
        messages = ["" if ok else f"the LM said {s!r} and no signal tokens {' '.join(self.signal_tokens)}: the request names "
                    "no object this pipeline can build (it knows sphere, cube, cylinder, cone, torus)"
                    for ok, s in zip(mapped.tolist(), said)]
        if strict and not bool(mapped.all()):
            bad = (~mapped).nonzero().flatten().tolist()
            raise NoObjectError(f"no object for clip(s) {bad}: {messages[bad[0]]}")
        c = self.decoder.config
        points = torch.zeros(len(said), c.num_points, 3)
        if bool(mapped.any()):
            points[mapped] = self.decoder.sample(cond[mapped], steps=steps, guidance_scale=guidance_scale, generator=generator)
        return AudioTo3DResult(points, mapped, said, cond, messages)

    def forward(self, waveform: torch.Tensor, sample_rate: int | None = None, steps: int | None = None,
                guidance_scale: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """The one call: clips (T,) or (B, T) at 16 kHz -> point clouds (B, N, 3); :class:`NoObjectError` if a clip names no object."""
        return self.generate(waveform, sample_rate, steps, guidance_scale, generator, strict=True).points

    def describe(self, batch: str = "B") -> list:
        """Every stage from waveform to cloud as :class:`~mmllm_course.viz.FlowStage` s (checked by ``check_flow``)."""
        from mmllm_course.language.lm import lm_width
        from mmllm_course.viz import FlowStage, check_flow

        b = batch
        lc, ec, dc = self.log_mel.config, self.encoder.config, self.decoder.config
        t, m, f = lc.num_samples, lc.n_mels, lc.num_frames()
        n_a, k_a, d = self.num_encoder_tokens, self.num_audio_tokens, lm_width(self.lm)
        seq = k_a + len(self.prompt_ids) + len(self.signal_ids)
        k = len(self.signal_ids)
        bridge = type(self.bridge).__name__
        stages = [
            FlowStage("waveform", "input", (b, t), (b, t), f"{lc.sample_rate} Hz mono"),
            FlowStage("log-mel", "encoder", (b, t), (b, m, f), "Whisper's front end"),
            FlowStage("audio encoder", "encoder", (b, m, f), (b, n_a, ec.dim), "Whisper-style, frozen"),
            FlowStage(bridge, "input bridge", (b, n_a, ec.dim), (b, k_a, d), "trained"),
            FlowStage("LM + prompt", "LLM backbone", (b, k_a, d), (b, seq, d),
                      f"frozen; emits {' '.join(self.signal_tokens)} after the prompt"),
            FlowStage("[3D] hidden states", "LLM backbone", (b, seq, d), (b, k, d), "gathered at the signal tokens"),
            FlowStage("output projector", "output projector", (b, k, d), (b, dc.cond_len, dc.cond_dim), "trained"),
            FlowStage("point diffusion decoder", "generator", (b, dc.cond_len, dc.cond_dim), (b, dc.num_points, 3),
                      f"frozen; DDIM {dc.sample_steps} steps"),
            FlowStage("point cloud", "output", (b, dc.num_points, 3), (b, dc.num_points, 3)),
        ]
        return check_flow(stages)


# ----------------------------------------------------------------------------------------------
# Building and training
# ----------------------------------------------------------------------------------------------


def _check_sampling(steps: object, guidance_scale: object, generator: object) -> None:
    from mmllm_course._checks import check_number

    if steps is not None:
        check_int(steps, "steps")
    if guidance_scale is not None:
        check_number(guidance_scale, "guidance_scale", low=0.0)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InputTypeError(f"generator must be a torch.Generator or None, got {describe(generator)}")


def _check_recipe(recipe: object) -> AudioTo3DRecipe:
    if not isinstance(recipe, AudioTo3DRecipe):
        raise InputTypeError(f"recipe must be an AudioTo3DRecipe, got {describe(recipe)}")
    return recipe


def _check_requests(requests: object, name: str) -> SpokenRequests:
    if not isinstance(requests, SpokenRequests):
        raise InputTypeError(f"{name} must be SpokenRequests (from make_spoken_requests), got {describe(requests)}")
    return requests


def build_audio_to_3d(encoder: nn.Module, recipe: AudioTo3DRecipe = CHAPTER11, seed: int = 0, decoder=None, lm=None,
                      tokenizer=None, bridge: str | None = None) -> AudioTo3D:
    """An :class:`AudioTo3D` around a (pre-trained, frozen) ``encoder``: chapter 5's LM, the shipped decoder, fresh bridge and projector.

    ``bridge``: ``"mlp"`` or ``"resampler"`` (default ``recipe.bridge``); fresh weights follow ``seed``.
    """
    from mmllm_course.encoders.audio import LogMelSpectrogram
    from mmllm_course.generators.point_diffusion import load_point_decoder
    from mmllm_course.language.lm import lm_width
    from mmllm_course.pretrained import load_chapter5_lm

    recipe = _check_recipe(recipe)
    seed = check_int(seed, "seed", minimum=0)
    if (lm is None) != (tokenizer is None):
        raise ValueError("give both lm and tokenizer (from load_chapter5_lm()) or neither")
    if lm is None:
        lm, tokenizer = load_chapter5_lm()
    decoder = load_point_decoder() if decoder is None else decoder
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        made = recipe.make_bridge(lm_width(lm), bridge)
        model = AudioTo3D(LogMelSpectrogram(recipe.log_mel_config()), encoder, made, lm, tokenizer, decoder,
                          recipe.num_signal_tokens, recipe.prompt, recipe.projector_width, recipe.projector_heads,
                          recipe.projector_layers, recipe.projector_dropout)
    return model


@dataclass
class AudioTo3DRun:
    """A trained pipeline, its losses per step (``nll``, ``cond``), training seconds (both stages) and data."""

    model: AudioTo3D
    losses: dict[str, list[float]]
    seconds: float
    encoder_losses: list[float]
    train: SpokenRequests
    seed: int
    bridge_seconds: float = 0.0


def train_audio_to_3d(model: AudioTo3D, features: torch.Tensor, requests: SpokenRequests, recipe: AudioTo3DRecipe = CHAPTER11,
                      seed: int = 0, progress: bool = False) -> dict[str, list[float]]:
    """Stage 2-3: train the bridge, the signal tokens' rows and the projector on encoder features (n, N_a, D_a) of ``requests``.

    Loss = ``nll_weight * nll + cond`` (:meth:`AudioTo3D.losses`). Returns the losses per step.
    """
    from mmllm_course.nn.optim import warmup_cosine
    from mmllm_course.utils import one_thread

    if not isinstance(model, AudioTo3D):
        raise InputTypeError(f"model must be an AudioTo3D, got {describe(model)}")
    recipe = _check_recipe(recipe)
    seed = check_int(seed, "seed", minimum=0)
    _check_requests(requests, "requests")
    if not isinstance(features, torch.Tensor) or features.dim() != 3 or features.shape[0] != len(requests):
        raise ValueError(f"features must be (n={len(requests)}, N_a, D_a) encoder features of the requests, got {describe(features)}")
    optimizer = torch.optim.AdamW(model.trainable_groups(recipe.lr, recipe.signal_lr, recipe.weight_decay))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, recipe.steps, recipe.warmup_steps))
    generator = torch.Generator().manual_seed(seed)
    is_object = requests.is_object
    solid, size = requests.solid.clamp(min=0), requests.size
    with torch.no_grad():
        table = model.decoder.condition(solid, size)  # (n, L, C): the targets
    log: dict[str, list[float]] = {"nll": [], "cond": []}
    model.train()
    model.encoder.eval()
    model.lm.eval()
    model.decoder.eval()
    with one_thread():
        bar = tqdm(range(recipe.steps), desc="2-3. bridge, signal tokens, output projector", disable=not progress)
        for step in bar:
            idx = torch.randint(0, len(requests), (recipe.batch_size,), generator=generator)
            obj = is_object[idx]
            parts = model.losses(features[idx], obj, table[idx][obj])
            loss = recipe.nll_weight * parts["nll"] + parts["cond"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            for k in log:
                log[k].append(parts[k].item())
            if step % 25 == 0:
                bar.set_postfix(nll=f"{parts['nll'].item():.3f}", cond=f"{parts['cond'].item():.3f}")
    model.eval()
    return log


def encode_requests(model_or_log_mel: nn.Module, encoder: nn.Module | None, waveforms: torch.Tensor,
                    batch_size: int = 500) -> torch.Tensor:
    """Log-mel features (n, M, F) when ``encoder`` is None, else the encoder's tokens (n, N_a, D_a), in batches."""
    from mmllm_course.utils import one_thread

    out = []
    with torch.no_grad(), one_thread():
        for i in range(0, waveforms.shape[0], batch_size):
            x = model_or_log_mel(waveforms[i:i + batch_size])
            out.append(x if encoder is None else encoder(x))
    return torch.cat(out)


@dataclass
class CapstoneData:
    """The clips of one run and their features: ``train`` / ``held_out`` requests, log-mel ``*_mel`` (n, M, F)."""

    train: SpokenRequests
    held_out: SpokenRequests
    train_mel: torch.Tensor
    held_out_mel: torch.Tensor
    seconds: float


def make_capstone_data(seed: int = 0, recipe: AudioTo3DRecipe = CHAPTER11) -> CapstoneData:
    """Run ``seed``'s training clips (default speech) and held-out clips (:func:`held_out_speech`), with their log-mels."""
    from mmllm_course.encoders.audio import LogMelSpectrogram

    recipe = _check_recipe(recipe)
    seed = check_int(seed, "seed", minimum=0)
    start = time.perf_counter()
    train = make_spoken_requests(recipe.train_size, recipe.reject_size, seed=3 * seed)
    held = make_spoken_requests(recipe.held_out_size, recipe.held_out_reject_size, seed=3 * seed + 2, config=held_out_speech())
    log_mel = LogMelSpectrogram(recipe.log_mel_config())
    return CapstoneData(train, held, encode_requests(log_mel, None, train.waveforms), encode_requests(log_mel, None, held.waveforms),
                        time.perf_counter() - start)


def train_capstone(seed: int = 0, recipe: AudioTo3DRecipe = CHAPTER11, data: CapstoneData | None = None, decoder=None,
                   bridge: str | None = None, encoder: nn.Module | None = None, progress: bool = False) -> AudioTo3DRun:
    """Both trainings of run ``seed``: the audio encoder's pre-training (unless ``encoder`` is given), then the pipeline's."""
    recipe = _check_recipe(recipe)
    seed = check_int(seed, "seed", minimum=0)
    data = make_capstone_data(seed, recipe) if data is None else data
    if not isinstance(data, CapstoneData):
        raise InputTypeError(f"data must be CapstoneData (from make_capstone_data), got {describe(data)}")
    start = time.perf_counter()
    encoder_losses: list[float] = []
    if encoder is None:
        heads, encoder_losses = pretrain_audio_encoder(data.train_mel, data.train, recipe, seed, progress)
        encoder = heads.encoder
    encoder_seconds = time.perf_counter() - start
    model = build_audio_to_3d(encoder, recipe, seed, decoder=decoder, bridge=bridge)
    features = encode_requests(lambda x: x, model.encoder, data.train_mel)
    losses = train_audio_to_3d(model, features, data.train, recipe, seed, progress)
    seconds = time.perf_counter() - start
    return AudioTo3DRun(model, losses, seconds, encoder_losses, data.train, seed, seconds - encoder_seconds)


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------

CAPSTONE_BARS: dict[str, float] = {"class_accuracy": 0.95, "size_accuracy": 0.90}
CAPSTONE_CHAMFER_RATIO = 1 / 3


def _chamfer_scores(clouds: torch.Tensor, solid: torch.Tensor, size: torch.Tensor, ref) -> tuple[float, float]:
    from mmllm_course.generators.point_diffusion import pairwise_chamfer

    dist = pairwise_chamfer(clouds, ref.points)  # (G, R)
    same = (solid[:, None] == ref.solid[None]) & (size[:, None] == ref.size[None])
    other = (solid[:, None] != ref.solid[None]) & (size[:, None] == ref.size[None])
    return ((dist * same).sum(1) / same.sum(1)).mean().item(), ((dist * other).sum(1) / other.sum(1)).mean().item()


@torch.no_grad()
def evaluate_audio_to_3d(model: AudioTo3D, judge, held_out: SpokenRequests, steps: int | None = 25,
                         guidance_scale: float | None = None, seed: int = 0, reference_per_pair: int = 20) -> dict[str, float]:
    """The capstone's numbers on held-out clips, beside the two baselines, judged on the same described objects.

    ``mapped``: object requests for which the LM emitted the signal tokens; ``rejected``: star/cross
    requests for which it emitted none; ``class_accuracy`` / ``size_accuracy``: the judge reads the
    described solid / size on the clouds generated from the audio (unmapped requests count as wrong);
    ``chamfer_same`` / ``chamfer_other`` / ``chamfer_ratio``: mean Chamfer distance to real clouds of
    the described (solid, size) / of the other solids at that size; ``true_*``: the decoder driven
    by the true description's conditioning (the upper bound); ``random_*``: random conditioning
    (chance: 20% and 50%); ``judge_real``: the judge on real clouds; ``cond_accuracy``: the
    projected conditioning's nearest true conditioning is the described one; ``seconds_per_object``:
    audio -> object time.
    """
    from mmllm_course.generators.point_diffusion import (
        AttributedClouds,
        PointJudge,
        make_attributed_clouds,
        random_conditioning,
    )

    if not isinstance(model, AudioTo3D):
        raise InputTypeError(f"model must be an AudioTo3D, got {describe(model)}")
    if not isinstance(judge, PointJudge):
        raise InputTypeError(f"judge must be a PointJudge (from load_point_judge), got {describe(judge)}")
    _check_requests(held_out, "held_out")
    seed = check_int(seed, "seed", minimum=0)
    reference_per_pair = check_int(reference_per_pair, "reference_per_pair")
    _check_sampling(steps, guidance_scale, None)
    model.eval()
    obj = held_out.subset(held_out.is_object)
    rej = held_out.subset(~held_out.is_object)
    if len(obj) == 0:
        raise ValueError("held_out holds no object request: nothing to generate")
    generator = torch.Generator().manual_seed(seed)
    dec = model.decoder
    start = time.perf_counter()
    result = model.generate(obj.waveforms, steps=steps, guidance_scale=guidance_scale, generator=generator, strict=False)
    seconds = (time.perf_counter() - start) / len(obj)
    solid, size = obj.solid, obj.size
    true_clouds = dec.generate(solid, size, steps=steps, guidance_scale=guidance_scale, generator=generator)
    random_clouds = dec.sample(random_conditioning(dec, len(obj), generator), steps=steps, guidance_scale=guidance_scale,
                               generator=generator)
    ref_set = make_attributed_clouds(10 * reference_per_pair, seed=10_000 + seed, num_points=dec.config.num_points)
    metrics: dict[str, float] = {"mapped": result.mapped.float().mean().item()}
    if len(rej):
        _, mapped_rej, _ = model.conditioning(model.audio_features(rej.waveforms))
        metrics["rejected"] = (~mapped_rej).float().mean().item()
    table = dec.condition(*_all_pairs(dec))  # (10, L, C)
    nearest = ((result.conditioning[:, None] - table[None]) ** 2).sum((-1, -2)).argmin(1)
    metrics["cond_accuracy"] = ((nearest == solid * dec.config.num_sizes + size) & result.mapped).float().mean().item()
    for prefix, clouds, ok in (("", result.points, result.mapped), ("true_", true_clouds, None), ("random_", random_clouds, None)):
        ok = torch.ones(len(obj), dtype=torch.bool) if ok is None else ok
        metrics[prefix + "class_accuracy"] = ((judge.solids(clouds) == solid) & ok).float().mean().item()
        metrics[prefix + "size_accuracy"] = ((judge.sizes(clouds, solid) == size) & ok).float().mean().item()
        same, other = _chamfer_scores(clouds[ok], solid[ok], size[ok], ref_set) if bool(ok.any()) else (float("nan"),) * 2
        metrics[prefix + "chamfer_same"], metrics[prefix + "chamfer_other"] = same, other
        metrics[prefix + "chamfer_ratio"] = same / other
    metrics["judge_real"] = (judge.solids(ref_set.points) == ref_set.solid).float().mean().item()
    metrics["seconds_per_object"] = seconds
    assert isinstance(ref_set, AttributedClouds)
    return metrics


def _all_pairs(decoder) -> tuple[torch.Tensor, torch.Tensor]:
    c = decoder.config
    cls = torch.arange(c.num_solids * c.num_sizes)
    return cls // c.num_sizes, cls % c.num_sizes


def capstone_failures(metrics: dict[str, float]) -> list[str]:
    """The capstone notebook's assertions that ``metrics`` (from :func:`evaluate_audio_to_3d`) would fail; empty if none."""
    if not isinstance(metrics, dict):
        raise InputTypeError(f"metrics must be a dict from evaluate_audio_to_3d, got {describe(metrics)}")
    missing = [k for k in (*CAPSTONE_BARS, "chamfer_ratio") if k not in metrics]
    if missing:
        raise ValueError(f"metrics lacks {missing}: expected the dict evaluate_audio_to_3d returns")
    failed = [f"{k} {metrics[k]:.1%} < {bar:.0%}" for k, bar in CAPSTONE_BARS.items() if not metrics[k] >= bar]
    if not metrics["chamfer_ratio"] <= CAPSTONE_CHAMFER_RATIO:
        failed.append(f"chamfer_ratio {metrics['chamfer_ratio']:.3f} > {CAPSTONE_CHAMFER_RATIO:.3f}")
    return failed


def run_capstone(seed: int = 0, recipe: AudioTo3DRecipe = CHAPTER11, progress: bool = False) -> dict[str, float]:
    """Run ``seed`` of the capstone: data, both trainings, evaluation with the shipped judge (for ``bench --seeds``)."""
    from mmllm_course.generators.point_diffusion import load_point_judge

    recipe = _check_recipe(recipe)
    seed = check_int(seed, "seed", minimum=0)
    data = make_capstone_data(seed, recipe)
    run = train_capstone(seed, recipe, data, progress=progress)
    metrics = evaluate_audio_to_3d(run.model, load_point_judge(), data.held_out, steps=recipe.sample_steps,
                                   guidance_scale=recipe.guidance_scale, seed=seed)
    metrics["train_seconds"] = run.seconds
    metrics["final_cond_loss"] = sum(run.losses["cond"][-50:]) / len(run.losses["cond"][-50:])
    return metrics


def audio_to_object_seconds(model: AudioTo3D | None = None, count: int = 20, steps: int | None = 25) -> float:
    """Seconds from a waveform to a point cloud, per object (a batch of ``count`` clips), for the benchmark.

    Every stage runs: log-mel, encoder, bridge, the LM's greedy decoding of the signal tokens, the
    second read of their hidden states, the projector and ``steps`` DDIM steps of the decoder. With
    ``model=None`` an untrained pipeline is timed (its LM says words, not signal tokens, so the
    hidden states at the last positions stand in for them: the same amount of work).
    """
    from mmllm_course.encoders.audio import AudioEncoder
    from mmllm_course.utils import one_thread

    count = check_int(count, "count")
    _check_sampling(steps, None, None)
    if model is None:
        torch.manual_seed(0)
        model = build_audio_to_3d(AudioEncoder(CHAPTER11.encoder_config()), CHAPTER11)
    if not isinstance(model, AudioTo3D):
        raise InputTypeError(f"model must be an AudioTo3D or None, got {describe(model)}")
    clips = make_spoken_requests(count, 0, seed=123)
    model.eval()
    with torch.no_grad(), one_thread():
        start = time.perf_counter()
        features = model.audio_features(clips.waveforms)
        emitted = model.emit(features)
        embeds, _ = model._sequence(features, emitted)
        hidden = model._lm(embeds)[1][:, -len(model.signal_ids):]  # (B, K, D): where the signal tokens would be
        model.decoder.sample(model.projector(hidden), steps=steps, generator=torch.Generator().manual_seed(0))
        return (time.perf_counter() - start) / count
