"""Grader cases for chapter 6: correct versions written several ways, and the mistakes learners make.

``diagnoses``: ``{label: (answer, words)}``, a wrong answer whose ``fail`` message must contain ``words``
(the check names that mistake, not another).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from mmllm_course.backbones import CrossAttentionMLLM
from mmllm_course.bridges.resampler import RMSNorm, SwiGLU
from mmllm_course.grading.checks.ch06 import (
    CAPTION_PROMPT,
    freeze_stage1_reference,
    gated_cross_attention_reference,
    media_mask_at_reference,
    media_mask_reference,
    train_captioner_eval_data,
)

# ------------------------------------------------------------------------------------------- media mask


def media_mask_library(input_ids, image_token_id, attend="last"):
    return media_mask_reference(input_ids, image_token_id, attend)


def media_mask_cumsum(input_ids, image_token_id, attend="last"):
    """Correct: the exercise's solution, a cumsum of the markers compared with the image numbers."""
    is_marker = input_ids == image_token_id
    seen = is_marker.long().cumsum(dim=1)
    images = torch.arange(int(is_marker.sum(dim=1).max()))
    return images == seen[:, :, None] - 1 if attend == "last" else images < seen[:, :, None]


def media_mask_loops(input_ids, image_token_id, attend="last"):
    """Correct, written with loops over rows and tokens."""
    b, t = input_ids.shape
    rows = [[j for j in range(t) if int(input_ids[i, j]) == image_token_id] for i in range(b)]
    m = max(len(r) for r in rows)
    mask = torch.zeros(b, t, m, dtype=torch.bool)
    for i, markers in enumerate(rows):
        for j in range(t):
            before = [n for n, p in enumerate(markers) if p <= j]
            for n in (before[-1:] if attend == "last" else before):
                mask[i, j, n] = True
    return mask


def _mask(input_ids, image_token_id, attend, *, shift=0, exclusive=False, clamp=False, swap=False, everything=False):
    is_marker = input_ids == image_token_id
    seen = is_marker.long().cumsum(dim=1) + shift
    if exclusive:
        seen = seen - is_marker.long()
    if clamp:
        seen = seen.clamp(min=1)
    images = torch.arange(int(is_marker.sum(dim=1).max()))
    mode = {"last": "all", "all": "last"}[attend] if swap else attend
    if everything:
        return (images < is_marker.sum(dim=1)[:, None, None]).expand(-1, input_ids.shape[1], -1)
    return images == seen[:, :, None] - 1 if mode == "last" else images < seen[:, :, None]


def media_mask_sees_later(input_ids, image_token_id, attend="last"):
    """Wrong: every image of the row visible to every token (a token sees a later image)."""
    return _mask(input_ids, image_token_id, attend, everything=True)


def media_mask_cumsum_no_minus_one(input_ids, image_token_id, attend="last"):
    """Wrong: off by one, each token reads the next image."""
    return _mask(input_ids, image_token_id, attend, shift=1)


def media_mask_marker_excluded(input_ids, image_token_id, attend="last"):
    """Wrong: off by one the other way, an exclusive cumsum (the marker does not read its own image)."""
    return _mask(input_ids, image_token_id, attend, exclusive=True)


def media_mask_clamped(input_ids, image_token_id, attend="last"):
    """Wrong: the index -1 clamped to 0, so the tokens before the first image read image 0."""
    return _mask(input_ids, image_token_id, attend, clamp=True)


def media_mask_modes_swapped(input_ids, image_token_id, attend="last"):
    return _mask(input_ids, image_token_id, attend, swap=True)


def media_mask_transposed(input_ids, image_token_id, attend="last"):
    """Wrong: (B, M, T)."""
    return media_mask_cumsum(input_ids, image_token_id, attend).transpose(1, 2)


def media_mask_global_images(input_ids, image_token_id, attend="last"):
    """Wrong: images numbered over the whole batch (M = every image of the batch)."""
    is_marker = input_ids == image_token_id
    offset = torch.cat([torch.zeros(1, dtype=torch.long), is_marker.sum(dim=1).cumsum(0)[:-1]])
    seen = is_marker.long().cumsum(dim=1) + offset[:, None] * (is_marker.long().cumsum(dim=1) > 0)
    images = torch.arange(int(is_marker.sum()))
    return images == seen[:, :, None] - 1


def media_mask_as_floats(input_ids, image_token_id, attend="last"):
    return media_mask_cumsum(input_ids, image_token_id, attend).float()


# ------------------------------------------------------------------------------------------- one gated block


def _heads(t, n, d):
    b, length, _ = t.shape
    return t.view(b, length, n, d).transpose(1, 2)


def gated_cross_attention_sdpa(block, x, media, media_mask):
    """Correct: the exercise's solution (torch's fused attention, rows that see nothing attend anywhere)."""
    c = block.config
    sees = media_mask.any(dim=-1, keepdim=True)
    h = block.attn_norm(x)
    q = block.q_norm(_heads(block.q_proj(h), c.num_heads, c.head_dim))
    k = block.k_norm(_heads(block.k_proj(media), c.kv_heads, c.head_dim))
    v = _heads(block.v_proj(media), c.kv_heads, c.head_dim)
    g = c.num_heads // c.kv_heads
    k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=(media_mask | ~sees)[:, None])
    out = block.o_proj(out.transpose(1, 2).flatten(2))
    x = x + block.attn_gate.tanh() * out * sees
    return x + block.mlp_gate.tanh() * block.mlp(block.mlp_norm(x)) * sees


def gated_cross_attention_loops(block, x, media, media_mask):
    """Correct, written differently: heads in a loop, NaN rows replaced by 0 with torch.where, einsum."""
    c = block.config
    h = block.attn_norm(x)
    q, k, v = block.q_proj(h), block.k_proj(media), block.v_proj(media)
    outs = []
    for head in range(c.num_heads):
        j = head // (c.num_heads // c.kv_heads)
        qh = block.q_norm(q[..., head * c.head_dim:(head + 1) * c.head_dim])
        kh = block.k_norm(k[..., j * c.head_dim:(j + 1) * c.head_dim])
        vh = v[..., j * c.head_dim:(j + 1) * c.head_dim]
        s = torch.einsum("btd,bsd->bts", qh, kh) / math.sqrt(c.head_dim)
        w = s.masked_fill(~media_mask, float("-inf")).softmax(dim=-1)
        w = torch.where(torch.isnan(w), torch.zeros_like(w), w)  # rows that see nothing: weights 0
        outs.append(w @ vh)
    x = x + torch.tanh(block.attn_gate) * block.o_proj(torch.cat(outs, dim=-1))
    sees = media_mask.any(dim=-1, keepdim=True).to(x.dtype)
    return x + torch.tanh(block.mlp_gate) * block.mlp(block.mlp_norm(x)) * sees


def gated_cross_attention_calls_the_block(block, x, media, media_mask):
    """Wrong: calls the library's block instead of writing it."""
    return gated_cross_attention_reference(block, x, media, media_mask)


def _gca(block, x, media, media_mask, *, gate=torch.tanh, attn_res=True, mlp_res=True, post=False, parallel=False,
         shared_norm=False, use_mask=True, zero="both", qk_norm=True, scale=None, gqa="interleave", self_attn=False,
         nan_rows=False, detach=False):
    c = block.config
    mask = media_mask if use_mask else torch.ones_like(media_mask)
    sees = mask.any(dim=-1, keepdim=True)
    h = x if post else block.attn_norm(x)
    src = h if self_attn else media
    q = _heads(block.q_proj(h), c.num_heads, c.head_dim)
    k = _heads(block.k_proj(src), c.kv_heads, c.head_dim)
    v = _heads(block.v_proj(src), c.kv_heads, c.head_dim)
    if qk_norm:
        q, k = block.q_norm(q), block.k_norm(k)
    g = c.num_heads // c.kv_heads
    rep = (lambda t: t.repeat_interleave(g, dim=1)) if gqa == "interleave" else (lambda t: t.repeat(1, g, 1, 1))
    k, v = rep(k), rep(v)
    s = q @ k.transpose(-2, -1) * (c.head_dim ** -0.5 if scale is None else scale)
    if not self_attn:
        allowed = mask if nan_rows else (mask | ~sees)
        s = s.masked_fill(~allowed[:, None], float("-inf"))
    out = block.o_proj((s.softmax(-1) @ v).transpose(1, 2).flatten(2))
    attn = gate(block.attn_gate) * (out * sees if zero in ("both", "attn") else out)
    start = x
    if post:
        x = block.attn_norm(x + attn)
    else:
        x = x + attn if attn_res else attn
    ffn_in = start if parallel else x
    ffn = block.mlp((block.attn_norm if shared_norm else block.mlp_norm)(ffn_in) if not post else ffn_in)
    mlp = gate(block.mlp_gate) * (ffn * sees if zero in ("both", "mlp") else ffn)
    out = block.mlp_norm(x + mlp) if post else (x + mlp if mlp_res else mlp)
    return out.detach() if detach else out


def gca_no_tanh(block, x, media, media_mask):
    """Wrong: the gate not tanh'd."""
    return _gca(block, x, media, media_mask, gate=lambda a: a)


def gca_sigmoid(block, x, media, media_mask):
    return _gca(block, x, media, media_mask, gate=torch.sigmoid)


def gca_no_gates(block, x, media, media_mask):
    return _gca(block, x, media, media_mask, gate=lambda a: torch.ones_like(a))


def gca_no_attention_residual(block, x, media, media_mask):
    """Wrong: the residual forgotten."""
    return _gca(block, x, media, media_mask, attn_res=False)


def gca_no_mlp_residual(block, x, media, media_mask):
    return _gca(block, x, media, media_mask, mlp_res=False)


def gca_post_norm(block, x, media, media_mask):
    return _gca(block, x, media, media_mask, post=True)


def gca_parallel(block, x, media, media_mask):
    return _gca(block, x, media, media_mask, parallel=True)


def gca_shared_norm(block, x, media, media_mask):
    return _gca(block, x, media, media_mask, shared_norm=True)


def gca_mask_ignored(block, x, media, media_mask):
    return _gca(block, x, media, media_mask, use_mask=False)


def gca_mlp_on_imageless_rows(block, x, media, media_mask):
    """Wrong: only the attention branch zeroed on the tokens that see no image."""
    return _gca(block, x, media, media_mask, zero="attn")


def gca_mllama_rows(block, x, media, media_mask):
    """Wrong here: Mllama's rule (attention over every media token on the rows that see no image)."""
    return _gca(block, x, media, media_mask, zero="mlp")


def gca_nan_rows(block, x, media, media_mask):
    """Wrong: a softmax over a row of only -inf (NaN) multiplied by 0."""
    return _gca(block, x, media, media_mask, nan_rows=True)


def gca_no_qk_norm(block, x, media, media_mask):
    return _gca(block, x, media, media_mask, qk_norm=False)


def gca_no_scale(block, x, media, media_mask):
    return _gca(block, x, media, media_mask, scale=1.0)


def gca_scale_by_width(block, x, media, media_mask):
    return _gca(block, x, media, media_mask, scale=block.config.dim ** -0.5)


def gca_kv_tiled(block, x, media, media_mask):
    return _gca(block, x, media, media_mask, gqa="tile")


def gca_self_attention(block, x, media, media_mask):
    """Wrong: keys and values from the text (the check's first block has media of the text's width)."""
    return _gca(block, x, media, media_mask, self_attn=True)


def gca_detached(block, x, media, media_mask):
    return _gca(block, x, media, media_mask, detach=True)


# ------------------------------------------------------------------------------------------- freezing


def freeze_by_module(model):
    """Correct: the exercise's solution, requires_grad_ on whole submodules."""
    for part in (model.encoder, model.lm):
        if part is not None:
            part.requires_grad_(False)
    model.bridge.requires_grad_(True)
    model.blocks.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def freeze_by_name(model):
    """Correct, by parameter names, counting with a float sum turned to an int."""
    for name, p in model.named_parameters():
        p.requires_grad = name.split(".")[0] in ("bridge", "blocks")
    return int(sum(float(p.numel()) for p in model.parameters() if p.requires_grad))


def freeze_reference_copy(model):
    return freeze_stage1_reference(model)


def _freeze(model, trainable):
    for name, p in model.named_parameters():
        p.requires_grad_(trainable(name))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def freeze_lm_left_trainable(model):
    """Wrong: the whole LM left trainable."""
    return _freeze(model, lambda n: not n.startswith("encoder."))


def freeze_blocks_too(model):
    """Wrong: backbone A's stage 1 (only the bridge)."""
    return _freeze(model, lambda n: n.startswith("bridge."))


def freeze_only_gates(model):
    return _freeze(model, lambda n: n.startswith("bridge.") or n.endswith(("attn_gate", "mlp_gate")))


def freeze_bridge_frozen(model):
    return _freeze(model, lambda n: n.startswith("blocks."))


def freeze_encoder_trainable(model):
    return _freeze(model, lambda n: not n.startswith("lm."))


def freeze_only_freezes(model):
    """Wrong: freezes the encoder and the LM but never turns the bridge and blocks on (fails when all start frozen)."""
    model.encoder.requires_grad_(False)
    model.lm.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def freeze_counts_tensors(model):
    freeze_stage1_reference(model)
    return sum(1 for p in model.parameters() if p.requires_grad)


def freeze_counts_everything(model):
    freeze_stage1_reference(model)
    return sum(p.numel() for p in model.parameters())


def freeze_resets_gates(model):
    """Wrong: also sets the gates (to 1, "so that the blocks learn"): only requires_grad may change."""
    freeze_stage1_reference(model)
    with torch.no_grad():
        for block in model.blocks:
            block.attn_gate.fill_(1.0)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------------------- build: the block


class GatedBlockSolution(nn.Module):
    """Correct: the library's RMSNorm and SwiGLU, a hand-written masked softmax. ``variant`` plants one mistake."""

    variant = "right"

    def __init__(self, dim, num_heads, num_kv_heads, mlp_dim, media_dim=None):
        super().__init__()
        media_dim = media_dim or dim
        self.h, self.hkv, self.d = num_heads, num_kv_heads, dim // num_heads
        self.attn_norm = RMSNorm(dim, eps=1e-5)
        self.q_proj = nn.Linear(dim, num_heads * self.d, bias=False)
        self.k_proj = nn.Linear(media_dim, num_kv_heads * self.d, bias=False)
        self.v_proj = nn.Linear(media_dim, num_kv_heads * self.d, bias=False)
        self.o_proj = nn.Linear(num_heads * self.d, dim, bias=False)
        self.q_norm, self.k_norm = RMSNorm(self.d, eps=1e-5), RMSNorm(self.d, eps=1e-5)
        start = 1.0 if self.variant == "gates_at_one" else 0.0
        self.attn_gate = nn.Parameter(torch.full((1,), start))
        self.mlp_norm = RMSNorm(dim, eps=1e-5)
        self.mlp = SwiGLU(dim, mlp_dim, dim)
        self.mlp_gate = nn.Parameter(torch.full((1,), start))

    def forward(self, x, media, media_mask=None):
        v = self.variant
        b, t, s = x.shape[0], x.shape[1], media.shape[1]
        mask = torch.ones(b, t, s, dtype=torch.bool) if media_mask is None else media_mask
        sees = mask.any(-1, keepdim=True)
        gate = {"no_tanh": lambda a: a, "sigmoid": torch.sigmoid}.get(v, torch.tanh)
        h = x if v == "post_norm" else self.attn_norm(x)
        q = self.q_norm(_heads(self.q_proj(h), self.h, self.d))
        k = self.k_norm(_heads(self.k_proj(media), self.hkv, self.d)).repeat_interleave(self.h // self.hkv, dim=1)
        val = _heads(self.v_proj(media), self.hkv, self.d).repeat_interleave(self.h // self.hkv, dim=1)
        allowed = mask if v == "nan_rows" else (mask | ~sees)
        w = (q @ k.transpose(-2, -1) / math.sqrt(self.d)).masked_fill(~allowed[:, None], float("-inf")).softmax(-1)
        out = self.o_proj((w @ val).transpose(1, 2).flatten(2))
        if v == "post_norm":
            x = self.attn_norm(x + gate(self.attn_gate) * out * sees)
            return self.mlp_norm(x + gate(self.mlp_gate) * self.mlp(x) * sees)
        x = (0 if v == "no_residual" else x) + gate(self.attn_gate) * out * sees
        mlp_rows = 1.0 if v == "mlp_everywhere" else sees
        return x + gate(self.mlp_gate) * self.mlp(self.mlp_norm(x)) * mlp_rows


def _block_variant(name):
    return type(f"GatedBlock_{name}", (GatedBlockSolution,), {"variant": name})


class GatedBlockWithConfig(nn.Module):
    """Correct, written differently: a small config, the exercise-2 function reused, mlp as its own Linear layers."""

    def __init__(self, dim, num_heads, num_kv_heads, mlp_dim, media_dim=None):
        super().__init__()
        from types import SimpleNamespace

        self.config = SimpleNamespace(num_heads=num_heads, kv_heads=num_kv_heads, head_dim=dim // num_heads, dim=dim)
        d, m = dim // num_heads, media_dim or dim
        self.attn_norm = RMSNorm(dim, eps=1e-5)
        self.q_proj, self.o_proj = nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim, bias=False)
        self.k_proj, self.v_proj = nn.Linear(m, num_kv_heads * d, bias=False), nn.Linear(m, num_kv_heads * d, bias=False)
        self.q_norm, self.k_norm = RMSNorm(d, eps=1e-5), RMSNorm(d, eps=1e-5)
        self.attn_gate, self.mlp_gate = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
        self.mlp_norm = RMSNorm(dim, eps=1e-5)
        self.mlp = nn.Module()
        self.mlp.gate_proj, self.mlp.up_proj = nn.Linear(dim, mlp_dim, bias=False), nn.Linear(dim, mlp_dim, bias=False)
        self.mlp.down_proj = nn.Linear(mlp_dim, dim, bias=False)
        self.mlp.forward = lambda y: self.mlp.down_proj(F.silu(self.mlp.gate_proj(y)) * self.mlp.up_proj(y))

    def forward(self, x, media, media_mask=None):
        if media_mask is None:
            media_mask = torch.ones(x.shape[0], x.shape[1], media.shape[1], dtype=torch.bool)
        return gated_cross_attention_sdpa(self, x, media, media_mask)


class GatedBlockWrongNames(GatedBlockSolution):
    """Wrong: the output projection called `out_proj` (the resampler's name) instead of `o_proj`."""

    def __init__(self, *args):
        super().__init__(*args)
        self.out_proj = self.o_proj
        del self.o_proj

    def forward(self, x, media, media_mask=None):
        self.o_proj = self.out_proj
        try:
            return super().forward(x, media, media_mask)
        finally:
            del self.o_proj


class GatedBlockWithBiases(GatedBlockSolution):
    """Wrong: nn.Linear's default bias=True on the projections (Llama 3.2 Vision's have none)."""

    def __init__(self, dim, num_heads, num_kv_heads, mlp_dim, media_dim=None):
        super().__init__(dim, num_heads, num_kv_heads, mlp_dim, media_dim)
        self.q_proj = nn.Linear(dim, num_heads * self.d)
        self.o_proj = nn.Linear(num_heads * self.d, dim)


class GatedBlockPlainTensorGate(GatedBlockSolution):
    """Wrong: the gates are plain tensors (never trained), not nn.Parameters."""

    def __init__(self, *args):
        super().__init__(*args)
        del self.attn_gate, self.mlp_gate
        self.attn_gate, self.mlp_gate = torch.zeros(1), torch.zeros(1)


# ------------------------------------------------------------------------------------------- train: a trained B


class OracleBackboneB(CrossAttentionMLLM):
    """A stand-in for a trained backbone B of known accuracy: it recognises the check's held-out features.

    Training a real one takes about a minute (the solution notebook does it and must pass); here the test
    needs models of a chosen accuracy in milliseconds. It is a real ``CrossAttentionMLLM`` on the shipped
    LM (whose weights the check compares); only ``generate`` looks the answer up. ``wrong_every``: every
    n-th image gets another caption.
    """

    def __init__(self, wrong_every=0, train_lm=False):
        from mmllm_course.bridges import make_bridge
        from mmllm_course.pretrained import load_chapter5_lm

        lm, tok = load_chapter5_lm()
        super().__init__(None, make_bridge("mlp", in_dim=64, out_dim=64), lm, tok, num_image_features=17)
        if train_lm:
            with torch.no_grad():
                self.lm.get_input_embeddings().weight.add_(0.01)
        self.wrong_every, self.known = wrong_every, None

    def generate(self, prompts, images=None, image_features=None, max_new_tokens=12, **kwargs):
        from mmllm_course.data import caption_for

        if self.known is None:
            features, objects = train_captioner_eval_data()
            self.known = {f.numpy().tobytes(): (i, caption_for(*[int(v) for v in o])) for i, (f, o) in enumerate(zip(features, objects))}
        out = []
        for prompt, f in zip(prompts, image_features):
            assert prompt == CAPTION_PROMPT
            i, caption = self.known.get(f.numpy().tobytes(), (0, "a dog"))
            out.append("a large red circle in the top left" if self.wrong_every and i % self.wrong_every == 0 else caption)
        return out


def _untrained_backbone_b():
    from mmllm_course.bridges import make_bridge
    from mmllm_course.pretrained import load_chapter5_lm

    lm, tok = load_chapter5_lm()
    torch.manual_seed(0)
    return CrossAttentionMLLM(None, make_bridge("qformer", in_dim=64, out_dim=64, num_queries=8), lm, tok,
                              num_image_features=17)


def trained_model_function():
    """Correct: a function of no arguments that returns the trained model."""
    return OracleBackboneB()


def train_with_arguments(model, steps=400):
    """Wrong: the training function itself, not what it returned."""
    return model


def the_bridge_only():
    """Wrong: the model's bridge instead of the whole model."""
    return OracleBackboneB().bridge


# ------------------------------------------------------------------------------------------- stretch: any positions


def media_mask_at_library(query_positions, marker_positions, valid, attend="last"):
    return media_mask_at_reference(query_positions, marker_positions, valid, attend)


def media_mask_at_loops(query_positions, marker_positions, valid, attend="last"):
    """Correct, with loops: walk each row's images left to right."""
    b, t = query_positions.shape
    m = marker_positions.shape[1]
    out = torch.zeros(b, t, m, dtype=torch.bool)
    for i in range(b):
        for j in range(t):
            visible = [n for n in range(m) if valid[i, n] and marker_positions[i, n] <= query_positions[i, j]]
            for n in visible[-1:] if attend == "last" else visible:
                out[i, j, n] = True
    return out


def _at(q, pos, valid, attend, *, strict=False, ignore_valid=False, swap=False):
    after = (pos[:, None, :] < q[:, :, None]) if strict else (pos[:, None, :] <= q[:, :, None])
    if not ignore_valid:
        after = after & valid[:, None, :]
    mode = {"last": "all", "all": "last"}[attend] if swap else attend
    if mode == "all":
        return after
    count = after.sum(-1, keepdim=True)
    return after & (torch.arange(pos.shape[1]) == count - 1)


def media_mask_at_strict(q, pos, valid, attend="last"):
    """Wrong: marker < query (off by one)."""
    return _at(q, pos, valid, attend, strict=True)


def media_mask_at_ignores_valid(q, pos, valid, attend="last"):
    return _at(q, pos, valid, attend, ignore_valid=True)


def media_mask_at_swapped(q, pos, valid, attend="last"):
    return _at(q, pos, valid, attend, swap=True)


CASES = {
    "ch06.media_mask": {
        "correct": [media_mask_library, media_mask_cumsum, media_mask_loops],
        "wrong": {
            "sees a later image": media_mask_sees_later,
            "cumsum without -1": media_mask_cumsum_no_minus_one,
            "marker excluded": media_mask_marker_excluded,
            "clamped to image 0": media_mask_clamped,
            "modes swapped": media_mask_modes_swapped,
            "transposed": media_mask_transposed,
            "images numbered over the batch": media_mask_global_images,
            "floats": media_mask_as_floats,
        },
        "diagnoses": {
            "sees a later image": (media_mask_sees_later, "at or BEFORE it"),
            "cumsum without -1": (media_mask_cumsum_no_minus_one, "see a later image"),
            "marker excluded": (media_mask_marker_excluded, "marker's own position excluded"),
            "clamped to image 0": (media_mask_clamped, "reading image 0"),
            "modes swapped": (media_mask_modes_swapped, "computed instead of"),
            "transposed": (media_mask_transposed, "one row per IMAGE"),
            "images numbered over the batch": (media_mask_global_images, "the most images in ONE row"),
            "floats": (media_mask_as_floats, "expected a bool mask"),
        },
    },
    "ch06.gated_cross_attention": {
        "correct": [gated_cross_attention_sdpa, gated_cross_attention_loops],
        "wrong": {
            "calls the block": gated_cross_attention_calls_the_block,
            "gate not tanh'd": gca_no_tanh,
            "sigmoid gate": gca_sigmoid,
            "no gates": gca_no_gates,
            "no attention residual": gca_no_attention_residual,
            "no mlp residual": gca_no_mlp_residual,
            "post-norm": gca_post_norm,
            "parallel branches": gca_parallel,
            "one norm for both": gca_shared_norm,
            "mask ignored": gca_mask_ignored,
            "feed-forward on image-less rows": gca_mlp_on_imageless_rows,
            "Mllama's rows": gca_mllama_rows,
            "NaN rows": gca_nan_rows,
            "no q/k norm": gca_no_qk_norm,
            "no scale": gca_no_scale,
            "scaled by the width": gca_scale_by_width,
            "kv heads tiled": gca_kv_tiled,
            "self-attention": gca_self_attention,
            "detached": gca_detached,
        },
        "diagnoses": {
            "calls the block": (gated_cross_attention_calls_the_block, "not call block(...)"),
            "gate not tanh'd": (gca_no_tanh, "without tanh"),
            "sigmoid gate": (gca_sigmoid, "sigmoid"),
            "no gates": (gca_no_gates, "no gate at all"),
            "no attention residual": (gca_no_attention_residual, "without the attention's residual"),
            "no mlp residual": (gca_no_mlp_residual, "without the feed-forward's residual"),
            "post-norm": (gca_post_norm, "POST-norm"),
            "parallel branches": (gca_parallel, "block's INPUT"),
            "one norm for both": (gca_shared_norm, "its own norm"),
            "mask ignored": (gca_mask_ignored, "media mask ignored"),
            "feed-forward on image-less rows": (gca_mlp_on_imageless_rows, "given the feed-forward branch"),
            "Mllama's rows": (gca_mllama_rows, "Mllama does that"),
            "NaN rows": (gca_nan_rows, "NaN on the tokens that see no image"),
            "no q/k norm": (gca_no_qk_norm, "q_norm and k_norm skipped"),
            "no scale": (gca_no_scale, "without the 1/sqrt(head_dim) scale"),
            "scaled by the width": (gca_scale_by_width, "1/sqrt(D)"),
            "kv heads tiled": (gca_kv_tiled, "repeat_interleave"),
            "self-attention": (gca_self_attention, "from the TEXT"),
            "detached": (gca_detached, "cut off from the graph"),
        },
    },
    "ch06.freeze_stage1": {
        "correct": [freeze_by_module, freeze_by_name, freeze_reference_copy],
        "wrong": {
            "whole LM trainable": freeze_lm_left_trainable,
            "only the bridge": freeze_blocks_too,
            "only the gates": freeze_only_gates,
            "bridge frozen": freeze_bridge_frozen,
            "encoder trainable": freeze_encoder_trainable,
            "never unfreezes": freeze_only_freezes,
            "counts tensors": freeze_counts_tensors,
            "counts everything": freeze_counts_everything,
            "changes the gates": freeze_resets_gates,
        },
        "diagnoses": {
            "whole LM trainable": (freeze_lm_left_trainable, "whole LM left trainable"),
            "only the bridge": (freeze_blocks_too, "backbone A's stage 1"),
            "only the gates": (freeze_only_gates, "only the gates trainable"),
            "bridge frozen": (freeze_bridge_frozen, "bridge frozen"),
            "encoder trainable": (freeze_encoder_trainable, "encoder trainable too"),
            "never unfreezes": (freeze_only_freezes, "nothing trainable"),
            "counts tensors": (freeze_counts_tensors, "TENSORS"),
            "counts everything": (freeze_counts_everything, "frozen ones included"),
            "changes the gates": (freeze_resets_gates, "changed the model's parameters"),
        },
    },
    "ch06.gated_block": {
        "correct": [GatedBlockSolution, GatedBlockWithConfig],
        "wrong": {
            "gates at one": _block_variant("gates_at_one"),
            "gate not tanh'd": _block_variant("no_tanh"),
            "sigmoid gate": _block_variant("sigmoid"),
            "residual forgotten": _block_variant("no_residual"),
            "post-norm": _block_variant("post_norm"),
            "NaN rows": _block_variant("nan_rows"),
            "feed-forward on image-less rows": _block_variant("mlp_everywhere"),
            "wrong names": GatedBlockWrongNames,
            "biases": GatedBlockWithBiases,
            "plain tensor gates": GatedBlockPlainTensorGate,
        },
        "diagnoses": {
            "gates at one": (_block_variant("gates_at_one"), "not zero-initialised"),
            "gate not tanh'd": (_block_variant("no_tanh"), "without tanh"),
            "sigmoid gate": (_block_variant("sigmoid"), "sigmoid"),
            "residual forgotten": (_block_variant("no_residual"), "without the attention's residual"),
            "post-norm": (_block_variant("post_norm"), "POST-norm"),
            "NaN rows": (_block_variant("nan_rows"), "NaN on the tokens that see no image"),
            "feed-forward on image-less rows": (_block_variant("mlp_everywhere"), "given the feed-forward branch"),
            "wrong names": (GatedBlockWrongNames, "missing: o_proj.weight"),
            "biases": (GatedBlockWithBiases, "unexpected: q_proj.bias, o_proj.bias"),
            "plain tensor gates": (GatedBlockPlainTensorGate, "plain tensors"),
        },
    },
    "ch06.train_captioner": {
        "correct": [OracleBackboneB(), OracleBackboneB(wrong_every=14), trained_model_function],
        "wrong": {
            "85% right": OracleBackboneB(wrong_every=7),
            "untrained": _untrained_backbone_b(),
            "the LM trained too": OracleBackboneB(train_lm=True),
            "the class": OracleBackboneB,
            "the training function": train_with_arguments,
            "the bridge only": the_bridge_only,
        },
        "diagnoses": {
            "85% right": (OracleBackboneB(wrong_every=7), "below the 90% bar"),
            "the LM trained too": (OracleBackboneB(train_lm=True), "whole LM was left trainable"),
            "the class": (OracleBackboneB, "pass your TRAINED model"),
            "the training function": (train_with_arguments, "pass your TRAINED model"),
            "the bridge only": (the_bridge_only, "expected your trained backbone B"),
        },
    },
    "ch06.media_mask_at": {
        "correct": [media_mask_at_library, media_mask_at_loops],
        "wrong": {
            "marker excluded": media_mask_at_strict,
            "padding columns visible": media_mask_at_ignores_valid,
            "modes swapped": media_mask_at_swapped,
        },
        "diagnoses": {
            "marker excluded": (media_mask_at_strict, "marker's own position excluded"),
            "padding columns visible": (media_mask_at_ignores_valid, "padding columns"),
            "modes swapped": (media_mask_at_swapped, "computed instead of"),
        },
    },
    "ch06.q1": {"answer": "b", "wrong": ["a", "c", "d"]},
    "ch06.q2": {"answer": "c", "wrong": ["a", "b", "d"]},
    "ch06.q3": {"answer": "a", "wrong": ["b", "c", "d"]},
    "ch06.q4": {"answer": "d", "wrong": ["a", "b", "c"]},
}
