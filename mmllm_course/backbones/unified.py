"""Backbone A, the unified embedding decoder (LLaVA, arXiv:2304.08485; MiniGPT-4, BLIP-2's decoder side).

The image becomes K extra tokens *inside* the LM's input sequence. Dims: ``B`` prompts, ``T`` tokens
per (expanded, padded) prompt, ``N`` image features from the encoder, ``D_enc`` their width, ``K``
image tokens from the bridge, ``D`` the LM's width, ``V`` its vocabulary.

    prompt  "<image>Describe the image."  -- tokenizer, one <image> id expanded to K copies -->  ids (B, T)
    images (B_img, 3, H, W) -- encoder --> features (B_img, N, D_enc) -- bridge --> image tokens (B_img, K, D)
    inputs_embeds (B, T, D) = LM's token embeddings of ids, with the image tokens written over the K
                              placeholder positions (in order: the i-th image fills the i-th run of K)
    logits (B, T, V) = LM(inputs_embeds, attention_mask, position_ids)

Nothing in the LM changes: it reads image tokens like any other input vectors, through the same
self-attention (hence "unified"). Training data: a caption or answer follows the prompt, and only
its tokens take loss: labels are -100 on the image tokens (they are inputs, not something to
predict), the prompt and the padding. Batched generation pads on the LEFT, so that every row's last
token is real and the next token is appended right after it; position ids count real tokens only.

``transformers``' ``LlavaForConditionalGeneration`` does exactly this splice
(``inputs_embeds.masked_scatter``); ``tests/test_parity_llava.py`` checks that the logits agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmllm_course._checks import InputTypeError, check_int, check_str_sequence, check_tensor, describe, keep_mask
from mmllm_course.bridges.base import Bridge
from mmllm_course.language.corpus import IGNORE_INDEX
from mmllm_course.language.lm import IMAGE_TOKEN, lm_context_length, lm_width


def _encoder_num_features(encoder: nn.Module, drop_class_token: bool) -> int | None:
    """N for our ViT (or a CLIP's vision tower): 1 + patches, minus the class token when it is dropped."""
    config = getattr(encoder, "config", None)
    num_patches = getattr(config, "num_patches", None)
    if isinstance(num_patches, int):
        return num_patches + (0 if drop_class_token else 1)
    return None


class ImagePromptModel(nn.Module):
    """What backbones A and B share: the parts, their checks, images -> bridge tokens, prompts -> ids, masks, positions.

    Not used on its own. A subclass sets ``num_image_tokens``: how many LM positions one ``<image>``
    placeholder takes in :meth:`tokenize` (backbone A: the K bridge tokens; backbone B: 1 marker).
    ``num_bridge_tokens`` is K, the tokens the bridge makes per image.
    """

    num_image_tokens: int

    def __init__(
        self,
        encoder: nn.Module | None,
        bridge: Bridge,
        lm: nn.Module,
        tokenizer,
        *,
        image_token: str = IMAGE_TOKEN,
        feature_layer: int | None = None,
        drop_class_token: bool = False,
        num_image_features: int | None = None,
        add_bos: bool = True,
    ):
        super().__init__()
        if encoder is not None and not isinstance(encoder, nn.Module):
            raise InputTypeError(f"encoder must be a torch.nn.Module or None, got {describe(encoder)}")
        if not isinstance(bridge, Bridge):
            raise InputTypeError(f"bridge must be an mmllm_course Bridge (make_bridge(...)), got {describe(bridge)}")
        if not isinstance(lm, nn.Module) or not hasattr(lm, "get_input_embeddings"):
            raise InputTypeError(f"lm must be a transformers causal LM (e.g. LlamaForCausalLM), got {describe(lm)}")
        from transformers import PreTrainedTokenizerBase

        if not isinstance(tokenizer, PreTrainedTokenizerBase):
            raise InputTypeError(f"tokenizer must be a transformers tokenizer, got {describe(tokenizer)}")
        if not isinstance(image_token, str):
            raise InputTypeError(f"image_token must be a str, got {describe(image_token)}")
        if feature_layer is not None:
            check_int(feature_layer, "feature_layer", minimum=None)
        for name, flag in (("drop_class_token", drop_class_token), ("add_bos", add_bos)):
            if not isinstance(flag, bool):
                raise InputTypeError(f"{name} must be a bool, got {describe(flag)}")
        width = lm_width(lm)
        if bridge.out_dim != width:
            raise ValueError(f"the bridge's output width must be the LM's width: bridge out_dim = {bridge.out_dim}, "
                             f"LM hidden size = {width}; build the bridge with out_dim={width}")
        image_id = tokenizer.convert_tokens_to_ids(image_token)
        if image_id is None or image_id == tokenizer.unk_token_id or tokenizer.decode([image_id]) != image_token:
            raise ValueError(f"the tokenizer has no single token {image_token!r}: add it as a special token "
                             f"(course_lm_tokenizer() has it)")
        if image_id >= lm.get_input_embeddings().num_embeddings:
            raise ValueError(f"{image_token!r} has id {image_id}, outside the LM's vocabulary of "
                             f"{lm.get_input_embeddings().num_embeddings}")
        if isinstance(encoder, nn.Module) and hasattr(encoder, "vision") and hasattr(encoder, "encode_image"):
            encoder = encoder.vision  # a CLIP: its image tower
        inferred = _encoder_num_features(encoder, drop_class_token) if encoder is not None else None
        if num_image_features is None:
            num_image_features = inferred
        else:
            check_int(num_image_features, "num_image_features")
            if inferred is not None and inferred != num_image_features:
                raise ValueError(f"num_image_features={num_image_features} but the encoder gives {inferred} feature tokens")
        if num_image_features is None:
            raise ValueError("cannot tell how many feature tokens the encoder gives: pass num_image_features=N")
        encoder_width = getattr(getattr(encoder, "config", None), "dim", None)
        if isinstance(encoder_width, int) and encoder_width != bridge.in_dim:
            raise ValueError(f"the bridge's input width must be the encoder's: bridge in_dim = {bridge.in_dim}, encoder width = {encoder_width}")
        self.encoder, self.bridge, self.lm, self.tokenizer = encoder, bridge, lm, tokenizer
        self.image_token, self.image_token_id = image_token, int(image_id)
        self.feature_layer, self.drop_class_token, self.add_bos = feature_layer, drop_class_token, add_bos
        self.num_image_features = int(num_image_features)  # N
        self.num_bridge_tokens = int(bridge.num_output_tokens(self.num_image_features))  # K, per image
        self.context_length = lm_context_length(lm)

    # ------------------------------------------------------------------------------------ images

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """images (B_img, 3, H, W) -> encoder features (B_img, N, D_enc); no gradient through a frozen encoder."""
        if self.encoder is None:
            raise ValueError("this model has no encoder: pass image_features=(B_img, N, D_enc) instead of images")
        check_tensor(images, "images", "(B_img, C, H, W)", ndim=4, kind="float")
        frozen = not any(p.requires_grad for p in self.encoder.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            if self.feature_layer is None:
                out = self.encoder(images)
                feats = out if isinstance(out, torch.Tensor) else out.last_hidden_state
            else:
                out = self.encoder(images, output_hidden_states=True)
                feats = out.hidden_states[self.feature_layer]
        if self.drop_class_token:
            feats = feats[:, 1:]
        if feats.shape[1] != self.num_image_features:
            raise ValueError(f"the encoder gave {feats.shape[1]} feature tokens, expected num_image_features={self.num_image_features}")
        return feats

    def image_embeddings(self, images: torch.Tensor | None = None, image_features: torch.Tensor | None = None) -> torch.Tensor:
        """The K image tokens per image, (B_img, K, D): bridge(encoder(images)), or bridge(image_features)."""
        if (images is None) == (image_features is None):
            raise ValueError("pass exactly one of images (B_img, 3, H, W) and image_features (B_img, N, D_enc)")
        feats = self.image_features(images) if images is not None else image_features
        check_tensor(feats, "image_features", f"(B_img, N, D_enc) with N = {self.num_image_features}", ndim=3, kind="float")
        if feats.shape[1] != self.num_image_features:
            raise ValueError(f"image_features must be (B_img, N, D_enc) with N = {self.num_image_features}, got {tuple(feats.shape)}")
        return self.bridge(feats)  # (B_img, K, D)

    # ------------------------------------------------------------------------------------- text

    def tokenize(
        self,
        prompts: Sequence[str],
        targets: Sequence[str] | None = None,
        padding_side: str = "right",
    ) -> dict[str, torch.Tensor]:
        """Prompts (each with one or more ``<image>``) [+ targets] -> ``input_ids``, ``attention_mask`` [, ``labels``], all (B, T).

        Each ``<image>`` becomes ``num_image_tokens`` image-token ids (backbone A: K; backbone B: one
        marker); a target gets the eos token appended. Labels are
        the ids on the target tokens and -100 everywhere else (bos, image tokens, prompt, padding).
        ``padding_side="left"`` for generation (every row ends with a real token), ``"right"`` for training.
        """
        prompts = check_str_sequence(prompts, "prompts", allow_empty=False)
        if targets is not None:
            targets = check_str_sequence(targets, "targets")
            if len(targets) != len(prompts):
                raise ValueError(f"got {len(prompts)} prompts but {len(targets)} targets: one target per prompt")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        tok, k = self.tokenizer, self.num_image_tokens
        rows, label_rows = [], []
        for i, prompt in enumerate(prompts):
            if self.image_token not in prompt:
                raise ValueError(f"prompt {i} has no {self.image_token!r} placeholder: {prompt!r}; "
                                 f"put {self.image_token!r} where the image goes")
            ids = tok(prompt, add_special_tokens=False)["input_ids"]
            expanded = [tok.bos_token_id] if self.add_bos and tok.bos_token_id is not None else []
            for t in ids:
                expanded += [t] * k if t == self.image_token_id else [t]
            labels = [IGNORE_INDEX] * len(expanded)
            if targets is not None:
                target_ids = tok(targets[i], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                if self.image_token_id in target_ids:
                    raise ValueError(f"target {i} holds the {self.image_token!r} placeholder: {targets[i]!r}")
                expanded += target_ids
                labels += target_ids
            if self.context_length is not None and len(expanded) > self.context_length:
                raise ValueError(f"prompt {i} is {len(expanded)} tokens long with its {ids.count(self.image_token_id)} image(s) "
                                 f"expanded to K = {k} tokens each, longer than the LM's context of {self.context_length}")
            rows.append(expanded)
            label_rows.append(labels)
        length = max(len(r) for r in rows)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        out = {
            "input_ids": torch.full((len(rows), length), pad, dtype=torch.long),
            "attention_mask": torch.zeros(len(rows), length, dtype=torch.long),
        }
        if targets is not None:
            out["labels"] = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
        for i, (r, lab) in enumerate(zip(rows, label_rows)):
            span = slice(length - len(r), length) if padding_side == "left" else slice(0, len(r))
            out["input_ids"][i, span] = torch.tensor(r)
            out["attention_mask"][i, span] = 1
            if targets is not None:
                out["labels"][i, span] = torch.tensor(lab)
        return out

    def _check_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        check_tensor(input_ids, "input_ids", "(B, T)", ndim=2, kind="int")
        if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
            raise ValueError(f"input_ids must hold at least one token per row, got shape {tuple(input_ids.shape)}")
        vocab = self.lm.get_input_embeddings().num_embeddings
        if int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab:
            raise ValueError(f"input_ids must lie in [0, {vocab}), got values in [{int(input_ids.min())}, {int(input_ids.max())}]")
        if self.context_length is not None and input_ids.shape[1] > self.context_length:
            raise ValueError(f"input_ids has {input_ids.shape[1]} tokens, longer than the LM's context of {self.context_length}")
        if attention_mask is None:
            return torch.ones_like(input_ids, dtype=torch.bool)
        check_tensor(attention_mask, "attention_mask", "(B, T)", ndim=2)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, got {tuple(attention_mask.shape)}")
        if attention_mask.is_floating_point():
            raise InputTypeError(f"attention_mask must be bool or 0/1 integers, got dtype {attention_mask.dtype}")
        mask = keep_mask(attention_mask, "attention_mask")
        if not bool(mask.any(dim=1).all()):
            raise ValueError("every row of attention_mask must keep at least one token")
        return mask

    @staticmethod
    def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
        """Positions (B, T) that count real tokens only: 0, 1, 2... from each row's first real token (padding: 1).

        The same rule as ``transformers``' ``generate``: with left padding, a row's text starts at
        position 0 whatever its padding, so a batched row gives the same logits as the row alone.
        """
        check_tensor(attention_mask, "attention_mask", "(B, T)", ndim=2)
        if attention_mask.is_floating_point():
            raise InputTypeError(f"attention_mask must be bool or 0/1 integers, got dtype {attention_mask.dtype}")
        mask = keep_mask(attention_mask, "attention_mask").long()
        return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)

    def _check_forward_inputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor | None,
        position_ids: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """A forward's text inputs checked: ``(mask (B, T) bool, labels (B, T) int64 or None, position_ids (B, T) int64)``.

        ``position_ids`` default to :meth:`position_ids` of the mask (counting real tokens only).
        """
        mask = self._check_ids(input_ids, attention_mask)
        if labels is not None:
            check_tensor(labels, "labels", "(B, T)", ndim=2, kind="int")
            if labels.shape != input_ids.shape:
                raise ValueError(f"labels must have the shape of input_ids {tuple(input_ids.shape)}, got {tuple(labels.shape)}")
            labels = labels.long()  # token ids of any integer dtype (the loss wants int64)
        if position_ids is None:
            position_ids = self.position_ids(mask)
        else:
            check_tensor(position_ids, "position_ids", "(B, T)", ndim=2, kind="int")
            if position_ids.shape != input_ids.shape:
                raise ValueError(f"position_ids must have the shape of input_ids {tuple(input_ids.shape)}, got {tuple(position_ids.shape)}")
        return mask, labels, position_ids.long()

    def _generation_inputs(self, prompts: Sequence[str], max_new_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ``(input_ids, attention_mask)`` (B, T) of ``prompts`` on the LM's device, with room for the new tokens."""
        check_int(max_new_tokens, "max_new_tokens")
        batch = self.tokenize(prompts, padding_side="left")
        if self.context_length is not None and batch["input_ids"].shape[1] + max_new_tokens > self.context_length:
            raise ValueError(f"the prompts take {batch['input_ids'].shape[1]} tokens; with max_new_tokens={max_new_tokens} "
                             f"that exceeds the LM's context of {self.context_length}")
        device = self.lm.get_input_embeddings().weight.device
        return batch["input_ids"].to(device), batch["attention_mask"].to(device)

    def _generate_kwargs(self, max_new_tokens: int, generate_kwargs: dict) -> dict:
        """Greedy decoding with the tokenizer's pad, eos and bos ids, updated by the caller's ``generate_kwargs``."""
        tok = self.tokenizer
        kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
        kwargs.update(generate_kwargs)
        return kwargs


class UnifiedEmbeddingMLLM(ImagePromptModel):
    """encoder + bridge + causal LM + tokenizer: images and prompts -> logits, loss, or generated text.

    - ``encoder``: a module images (B, 3, H, W) -> features; our :class:`~mmllm_course.encoders.ViT`
      (or a :class:`~mmllm_course.encoders.CLIP`, whose ``vision`` tower is used), or any module
      returning a (B, N, D_enc) tensor or an output with ``last_hidden_state`` (then give
      ``num_image_features`` = N). None when you only pass precomputed ``image_features``.
    - ``bridge``: any :class:`~mmllm_course.bridges.Bridge` with ``out_dim`` = the LM's width.
    - ``lm``: a ``transformers`` causal LM (``LlamaForCausalLM``, ``GPT2LMHeadModel``...).
    - ``tokenizer``: its tokenizer, holding ``image_token`` as one special token.
    - ``feature_layer``: None = the encoder's last output; an int = that entry of its
      ``hidden_states`` (LLaVA uses -2, the second-to-last layer). ``drop_class_token``: keep only
      the patch tokens (LLaVA's ``vision_feature_select_strategy="default"``).
    - ``add_bos``: :meth:`tokenize` starts every prompt with the tokenizer's bos token.
    """

    def __init__(
        self,
        encoder: nn.Module | None,
        bridge: Bridge,
        lm: nn.Module,
        tokenizer,
        *,
        image_token: str = IMAGE_TOKEN,
        feature_layer: int | None = None,
        drop_class_token: bool = False,
        num_image_features: int | None = None,
        add_bos: bool = True,
    ):
        super().__init__(encoder, bridge, lm, tokenizer, image_token=image_token, feature_layer=feature_layer,
                         drop_class_token=drop_class_token, num_image_features=num_image_features, add_bos=add_bos)
        self.num_image_tokens = self.num_bridge_tokens  # K positions per placeholder

    # -------------------------------------------------------------------------------- the splice

    def embed(self, input_ids: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        """The spliced inputs_embeds (B, T, D): token embeddings, with image_embeds (B_img, K, D) over the placeholders.

        The image-token positions of ``input_ids`` must form B_img runs of exactly K (read row by
        row); the i-th image fills the i-th run. A ValueError names the counts otherwise.
        """
        check_tensor(input_ids, "input_ids", "(B, T)", ndim=2, kind="int")
        check_tensor(image_embeds, "image_embeds", "(B_img, K, D)", ndim=3, kind="float")
        vocab = self.lm.get_input_embeddings().num_embeddings
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab):
            raise ValueError(f"input_ids must lie in [0, {vocab}), got values in [{int(input_ids.min())}, {int(input_ids.max())}]")
        k, width = self.num_image_tokens, lm_width(self.lm)
        if image_embeds.shape[1:] != (k, width):
            raise ValueError(f"image_embeds must be (B_img, K, D) = (B_img, {k}, {width}), got {tuple(image_embeds.shape)}")
        is_image = input_ids == self.image_token_id  # (B, T)
        n_slots = int(is_image.sum())
        if n_slots % k:
            raise ValueError(f"input_ids hold {n_slots} image-token positions, not a multiple of K = {k}: "
                             f"expand each {self.image_token!r} to K tokens (use tokenize())")
        n_placeholders, n_images = n_slots // k, image_embeds.shape[0]
        if n_placeholders != n_images:
            more = "more placeholders than images" if n_placeholders > n_images else "more images than placeholders"
            raise ValueError(f"{more}: the prompts hold {n_placeholders} {self.image_token!r} placeholder(s) "
                             f"(K = {k} tokens each) but {n_images} image(s) came")
        safe_ids = input_ids.masked_fill(is_image, 0)  # any valid id: those rows are overwritten below
        embeds = self.lm.get_input_embeddings()(safe_ids)  # (B, T, D)
        image_embeds = image_embeds.to(embeds.dtype)
        # masked_scatter fills the True positions in row-major order: image 0's K tokens, then image 1's...
        return embeds.masked_scatter(is_image.unsqueeze(-1).expand_as(embeds), image_embeds.reshape(-1, width))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ):
        """input_ids (B, T) with K image-token ids per image [, attention_mask, labels (B, T)] + images or image_features.

        Returns the LM's output (``.logits`` (B, T, V); ``.loss`` when ``labels`` are given: the mean
        next-token cross entropy over the label positions that are not -100). ``position_ids``
        default to :meth:`position_ids` of the mask.
        """
        mask, labels, position_ids = self._check_forward_inputs(input_ids, attention_mask, labels, position_ids)
        image_embeds = self.image_embeddings(images, image_features)
        inputs_embeds = self.embed(input_ids.long(), image_embeds)
        return self.lm(inputs_embeds=inputs_embeds, attention_mask=mask.long(), position_ids=position_ids.long(), labels=labels)

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        images: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        max_new_tokens: int = 12,
        **generate_kwargs,
    ) -> list[str]:
        """Greedy continuation of each prompt with its image(s), through the LM's own ``generate(inputs_embeds=...)``.

        The prompts are left-padded. Returns the new text of each prompt (special tokens removed,
        surrounding spaces stripped). ``generate_kwargs`` go to ``lm.generate`` (e.g. ``do_sample``).
        """
        ids, mask = self._generation_inputs(prompts, max_new_tokens)
        was_training = self.training
        self.eval()
        try:
            inputs_embeds = self.embed(ids, self.image_embeddings(images, image_features))
            kwargs = self._generate_kwargs(max_new_tokens, generate_kwargs)
            out = self.lm.generate(inputs_embeds=inputs_embeds, attention_mask=mask, **kwargs)  # (B, new tokens)
        finally:
            self.train(was_training)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

    def extra_repr(self) -> str:
        return f"image_token={self.image_token!r} (id {self.image_token_id}), N={self.num_image_features}, K={self.num_image_tokens}"


