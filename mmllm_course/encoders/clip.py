"""CLIP: an image tower and a text tower trained so that matching pairs land close together.

Dims: ``B_img`` images, ``B_txt`` texts, ``E`` the shared embedding width, ``K`` classes,
``P`` prompts per class.

    images (B_img, C, H, W) -> ViT -> pooled (B_img, D_v) -> visual_projection -> (B_img, E) -> L2-normalise
    input_ids (B_txt, L)    -> TextTransformer -> pooled (B_txt, D_t) -> text_projection -> (B_txt, E) -> L2-normalise
    logits_per_image = exp(logit_scale) * image_embeds @ text_embeds.T          (B_img, B_txt)

Training pushes the diagonal (the true pairs of a batch) up and everything else down with
:func:`clip_loss`. ``scale()`` is ``exp(logit_scale)``, capped at ``CLIPConfig.max_logit_scale``
(100, as OpenAI's training keeps it) for models built here; converted checkpoints get no cap
(``max_logit_scale=None``), so their logits equal ``transformers``' ``CLIPModel``, which applies none. The same similarity then classifies images with no training at all
(:func:`zero_shot_classifier`, :func:`zero_shot_predict`) and ranks them for retrieval
(:func:`retrieval_recall_at_k`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mmllm_course._checks import (
    InputTypeError,
    check_int,
    check_number,
    check_same_float_dtype,
    check_tensor,
    describe,
)
from mmllm_course._convert import apply_plan as _apply_plan
from mmllm_course._convert import folder_model_type as _folder_model_type
from mmllm_course._convert import load_exact as _load_exact
from mmllm_course._convert import refuse_model_type as _refuse_model_type
from mmllm_course._convert import resolve_hf_model as _resolve_hf_model
from mmllm_course.encoders.text import (
    TextTransformer,
    TextTransformerConfig,
    clip_text_config_from_hf,
    clip_text_plan,
)
from mmllm_course.encoders.vit import ViT, ViTConfig, clip_vision_config_from_hf, clip_vision_plan


def _clip_vision_default() -> ViTConfig:
    return ViTConfig(pre_norm=True, final_norm="pooled")  # CLIP's layout: pre_layrnorm, LayerNorm on pooled only


@dataclass
class CLIPConfig:
    """Both towers, the shared width and the temperature; defaults give a tiny CPU-fast CLIP.

    ``vision`` and ``text`` take a config object or a dict of its fields; a ``vision`` dict
    overrides the CLIP layout defaults (``pre_norm=True, final_norm="pooled"``).
    """

    vision: ViTConfig = field(default_factory=_clip_vision_default)
    text: TextTransformerConfig = field(default_factory=TextTransformerConfig)
    embed_dim: int = 32
    init_logit_scale: float = math.log(1 / 0.07)  # the temperature 0.07 of the CLIP paper, learned in log space
    # Cap on exp(logit_scale) so training stays stable (OpenAI clamps at 100); None = no cap, as in
    # transformers' CLIPModel (converted checkpoints use None so their logits match exactly).
    max_logit_scale: float | None = 100.0

    def __post_init__(self) -> None:
        if isinstance(self.vision, dict):
            defaults = _clip_vision_default().__dict__
            self.vision = ViTConfig(**{**defaults, **self.vision})
        if isinstance(self.text, dict):
            self.text = TextTransformerConfig(**self.text)
        if not isinstance(self.vision, ViTConfig):
            raise InputTypeError(f"vision must be a ViTConfig or a dict of its fields, got {describe(self.vision)}")
        if not isinstance(self.text, TextTransformerConfig):
            raise InputTypeError(f"text must be a TextTransformerConfig or a dict of its fields, got {describe(self.text)}")
        check_int(self.embed_dim, "embed_dim")
        check_number(self.init_logit_scale, "init_logit_scale")
        if self.max_logit_scale is not None:
            check_number(self.max_logit_scale, "max_logit_scale", low=0.0, low_open=True)


class CLIP(nn.Module):
    """Dual encoder: :meth:`encode_image`, :meth:`encode_text`, and ``forward`` -> logits_per_image."""

    def __init__(self, config: CLIPConfig | None = None):
        super().__init__()
        if config is not None and not isinstance(config, CLIPConfig):
            raise InputTypeError(f"config must be a CLIPConfig or None, got {describe(config)}")
        self.config = config = config or CLIPConfig()
        self.vision = ViT(config.vision)
        self.text = TextTransformer(config.text)
        self.visual_projection = nn.Linear(config.vision.dim, config.embed_dim, bias=False)
        self.text_projection = nn.Linear(config.text.dim, config.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.init_logit_scale)))

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """images (B_img, C, H, W) -> embeddings (B_img, E), unit length when ``normalize``."""
        z = self.visual_projection(self.vision(images).pooled)
        return F.normalize(z, dim=-1) if normalize else z

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, normalize: bool = True) -> torch.Tensor:
        """input_ids (B_txt, L) (an eos in every row) -> embeddings (B_txt, E), unit length when ``normalize``."""
        z = self.text_projection(self.text(input_ids, attention_mask=attention_mask).pooled)
        return F.normalize(z, dim=-1) if normalize else z

    def scale(self) -> torch.Tensor:
        """exp(logit_scale), capped at ``config.max_logit_scale`` unless that is None (no gradient pushes it further once capped)."""
        scale = self.logit_scale.exp()
        return scale if self.config.max_logit_scale is None else scale.clamp(max=self.config.max_logit_scale)

    def forward(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        paired: bool = False,
    ) -> torch.Tensor:
        """Scaled cosine similarities ``logits_per_image`` (B_img, B_txt); ``.T`` gives logits_per_text.

        ``paired=True`` says row i of the images goes with row i of the texts (training with
        :func:`clip_loss`): then both batches must have the same size.
        """
        check_tensor(images, "images", "(B_img, C, H, W)")
        check_tensor(input_ids, "input_ids", "(B_txt, L)")
        if paired and images.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"paired batches must have the same size: got {images.shape[0]} images and {input_ids.shape[0]} texts"
            )
        image_embeds = self.encode_image(images)  # (B_img, E)
        text_embeds = self.encode_text(input_ids, attention_mask)  # (B_txt, E)
        return self.scale() * image_embeds @ text_embeds.T  # (B_img, B_txt)


def clip_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: the mean of the image->text and the text->image cross-entropies.

    logits_per_image: (B, B) where pair i is (image i, text i), so the targets are the diagonal.
    """
    check_tensor(logits_per_image, "logits_per_image", "(B, B)", kind="float")
    if logits_per_image.dim() != 2 or logits_per_image.shape[0] != logits_per_image.shape[1]:
        raise ValueError(
            f"clip_loss needs square logits (B, B) of paired images and texts, got shape {tuple(logits_per_image.shape)}"
        )
    if logits_per_image.shape[0] == 0:
        raise ValueError("clip_loss needs at least one pair, got empty logits of shape (0, 0)")
    targets = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    return (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_image.T, targets)) / 2


@torch.no_grad()
def zero_shot_classifier(
    model: CLIP,
    class_prompt_ids: torch.Tensor | Sequence[torch.Tensor],
    attention_mask: torch.Tensor | Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Class embeddings (K, E) from prompts such as "a photo of a {class}", for zero-shot classification.

    ``class_prompt_ids``: (K, L) one prompt per class, (K, P, L) P prompts per class, or a list of
    K tensors (P_k, L). Prompt ensembling: each prompt is embedded and normalised, the prompts of a
    class are averaged, and the mean is normalised again (as in the CLIP paper). ``attention_mask``
    follows the same layout. Runs without gradients.
    """
    if not isinstance(model, CLIP):
        raise InputTypeError(f"model must be a CLIP, got {describe(model)}")
    if isinstance(class_prompt_ids, (str, bytes)) or not isinstance(class_prompt_ids, (torch.Tensor, Sequence)):
        raise InputTypeError(
            f"class_prompt_ids must be a tensor (K, L) or (K, P, L) of token ids, or a list of K tensors, got {describe(class_prompt_ids)}"
        )
    if attention_mask is not None and (
        isinstance(attention_mask, (str, bytes)) or not isinstance(attention_mask, (torch.Tensor, Sequence))
    ):
        raise InputTypeError(f"attention_mask must be laid out like class_prompt_ids, got {describe(attention_mask)}")
    if isinstance(class_prompt_ids, torch.Tensor):
        if class_prompt_ids.dim() == 2:
            class_prompt_ids = class_prompt_ids[:, None]  # (K, 1, L)
        if class_prompt_ids.dim() != 3:
            raise ValueError(f"class_prompt_ids must be (K, L) or (K, P, L), got shape {tuple(class_prompt_ids.shape)}")
        groups = list(class_prompt_ids)
        if isinstance(attention_mask, torch.Tensor):
            masks = list(attention_mask if attention_mask.dim() == 3 else attention_mask[:, None])
        else:
            masks = attention_mask
    else:
        for i, g in enumerate(class_prompt_ids):
            check_tensor(g, f"class_prompt_ids[{i}]", "(P, L) or (L,)", ndim=(1, 2))
        groups = [g if g.dim() == 2 else g[None] for g in class_prompt_ids]
        if attention_mask is not None:
            for i, m in enumerate(attention_mask):
                check_tensor(m, f"attention_mask[{i}]", "(P, L) or (L,)", ndim=(1, 2))
        masks = None if attention_mask is None else [m if m.dim() == 2 else m[None] for m in attention_mask]
    if not groups:
        raise ValueError("class_prompt_ids holds no classes")
    if masks is not None and len(masks) != len(groups):
        raise ValueError(f"attention_mask has {len(masks)} classes, class_prompt_ids has {len(groups)}")

    counts = [g.shape[0] for g in groups]
    if len({g.shape[1] for g in groups}) == 1:  # one batch for all prompts
        ids = torch.cat(groups)
        mask = None if masks is None else torch.cat(list(masks))
        prompts = model.encode_text(ids, mask).split(counts)  # K tensors (P_k, E), unit length
    else:
        prompts = [model.encode_text(g, None if masks is None else masks[i]) for i, g in enumerate(groups)]
    return F.normalize(torch.stack([p.mean(dim=0) for p in prompts]), dim=-1)  # (K, E)


def zero_shot_predict(image_embeds: torch.Tensor, class_embeds: torch.Tensor) -> torch.Tensor:
    """Predicted class (B,) = the class embedding (K, E) most similar (cosine) to each image (B, E)."""
    check_tensor(image_embeds, "image_embeds", "(B, E)", kind="float")
    check_tensor(class_embeds, "class_embeds", "(K, E)", kind="float")
    if image_embeds.dim() != 2 or class_embeds.dim() != 2 or image_embeds.shape[1] != class_embeds.shape[1]:
        raise ValueError(
            f"expected image_embeds (B, E) and class_embeds (K, E) with the same E, "
            f"got {tuple(image_embeds.shape)} and {tuple(class_embeds.shape)}"
        )
    if class_embeds.shape[0] == 0 or image_embeds.shape[0] == 0 or image_embeds.shape[1] == 0:
        raise ValueError(
            f"zero_shot_predict needs at least one image, one class and E >= 1, got image_embeds "
            f"{tuple(image_embeds.shape)} and class_embeds {tuple(class_embeds.shape)}"
        )
    check_same_float_dtype({"image_embeds": image_embeds, "class_embeds": class_embeds})
    return (F.normalize(image_embeds, dim=-1) @ F.normalize(class_embeds, dim=-1).T).argmax(dim=-1)


def retrieval_recall_at_k(similarity: torch.Tensor, k: int, targets: torch.Tensor | None = None) -> float:
    """Fraction of queries whose correct item is among their ``k`` most similar items.

    similarity: (Q, G) queries x gallery (``logits_per_image`` for image->text retrieval, its ``.T``
    for text->image). ``targets`` (Q,) gives the correct gallery index of each query; by default
    query i matches item i (paired batches).
    """
    check_tensor(similarity, "similarity", "(Q, G)")
    if similarity.dim() != 2:
        raise ValueError(f"similarity must be (Q, G), got shape {tuple(similarity.shape)}")
    if similarity.dtype == torch.bool or similarity.is_complex():
        raise InputTypeError(f"similarity must hold real numbers, got dtype {similarity.dtype}")
    q, g = similarity.shape
    if q == 0 or g == 0:
        raise ValueError(f"retrieval_recall_at_k needs at least one query and one gallery item, got similarity of shape {(q, g)}")
    k = check_int(k, "k")
    if not 1 <= k <= g:
        raise ValueError(f"k must lie in [1, {g}] (the gallery size), got k={k}")
    if targets is None:
        if q > g:
            raise ValueError(f"with {q} queries and {g} gallery items, pass targets: query i has no item i")
        targets = torch.arange(q, device=similarity.device)
    elif check_tensor(targets, "targets", f"(Q,) = ({q},)", kind="int") is not None and tuple(targets.shape) != (q,):
        raise ValueError(f"targets must be (Q,) = ({q},), got shape {tuple(targets.shape)}")
    elif targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= g):
        raise ValueError(f"targets must index the gallery [0, {g}), got values in [{int(targets.min())}, {int(targets.max())}]")
    topk = similarity.topk(k, dim=1).indices  # (Q, k)
    return (topk == targets[:, None]).any(dim=1).float().mean().item()


# --- weights from transformers -------------------------------------------------------------------


def clip_from_transformers(model_or_path: object) -> CLIP:
    """Our :class:`CLIP` holding the weights of a ``transformers`` ``CLIPModel`` (object or saved folder).

    Maps both towers (see :func:`~mmllm_course.encoders.vit.clip_vision_from_transformers` and
    :func:`~mmllm_course.encoders.text.clip_text_from_transformers`), ``visual_projection``,
    ``text_projection`` and ``logit_scale``; the activation follows the HF config (``quick_gelu``
    for CLIP checkpoints) and so does ``attention_dropout``. Only ``model_type == "clip"`` is
    accepted (a one-tower or another model raises a ``ValueError`` listing what is supported), and
    every weight must map one to one. The result has ``max_logit_scale=None``: no cap on
    ``exp(logit_scale)``, exactly as ``CLIPModel`` computes its logits.
    """
    hf = _resolve_hf_model(model_or_path, "clip_from_transformers", {"clip": "CLIPModel"})
    c = hf.config
    sd = hf.state_dict()
    vision, text = clip_vision_config_from_hf(c.vision_config), clip_text_config_from_hf(c.text_config)
    plan = {f"vision.{k}": v for k, v in clip_vision_plan(vision.depth, "vision_model.").items()}
    plan.update({f"text.{k}": v for k, v in clip_text_plan(text.depth, "text_model.").items()})
    plan["visual_projection.weight"] = ("visual_projection.weight", None)
    plan["text_projection.weight"] = ("text_projection.weight", None)
    plan["logit_scale"] = ("logit_scale", None)
    source = f"a {type(hf).__name__} (model_type 'clip')"
    new = _apply_plan(sd, plan, source)
    config = CLIPConfig(vision=vision, text=text, embed_dim=c.projection_dim,
                        init_logit_scale=float(new["logit_scale"]), max_logit_scale=None)
    return _load_exact(CLIP(config), new, source).train(hf.training)


def load_pretrained_clip(name: str = "openai/clip-vit-base-patch32") -> CLIP:
    """Download a CLIP checkpoint with ``transformers`` and return our :class:`CLIP` holding its weights.

    ONLINE ONLY (or from the local Hugging Face cache / a local folder): this is the one call here
    that may reach the network. Its tokenizer: ``transformers.CLIPTokenizer.from_pretrained(name)``.
    Returns the model in eval mode.
    """
    if not isinstance(name, (str, os.PathLike)):
        raise InputTypeError(f"name must be a hub model name or a folder path, got {describe(name)}")
    offline_help = (
        f"could not load the CLIP checkpoint {name!r}: it downloads from the Hugging Face Hub the first time, "
        "so it needs network access (or a copy in the local cache, or a local folder saved with "
        "save_pretrained). The course itself runs offline: build a tiny CLIP with CLIP(CLIPConfig()) instead."
    )
    try:
        model_type = _folder_model_type(os.fspath(name))  # read first: a checkpoint of another kind is refused, not loaded
    except ValueError as err:
        if isinstance(err.__cause__, OSError):
            raise OSError(f"{offline_help} Original error: {err.__cause__}") from err
        raise
    _refuse_model_type(model_type, "load_pretrained_clip", {"clip": "CLIPModel"}, f"the checkpoint {name!r}")
    try:
        return clip_from_transformers(os.fspath(name)).eval()
    except OSError as err:
        raise OSError(f"{offline_help} Original error: {err}") from err
