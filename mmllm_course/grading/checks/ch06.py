"""Checks for chapter 6, backbone B: gated cross-attention inside a frozen LM (Flamingo, Llama 3.2 Vision).

Tiers, as in every chapter:

- **core** functions: Flamingo's media mask for an interleaved sequence (which image each text token
  may read), one gated cross-attention block's forward written from the library block's parts (pre-norm,
  zero-init ``tanh`` gates, residuals, the rows that see no image left exactly as they were), and
  freezing exactly what backbone B trains in stage 1 (the bridge and the blocks, never the LM). Each runs
  next to the library's reference on several inputs and the first difference is explained, naming the
  usual mistake when the output equals what that mistake gives;
- **build**: the learner's ``MyGatedCrossAttentionBlock`` class must be the identity when built (gates
  at zero: ``torch.equal``), then gets the library's weights loaded into it and must give the library's
  outputs and gradients, with and without a media mask, with grouped-query attention and a media width
  different from the text's;
- **train**: the learner's stage 1 with backbone B (their own blocks inside the frozen chapter-5 LM) is
  measured, never trained here: exact captions of held-out images the check draws with its own seed,
  and the LM must be exactly the shipped one (frozen).

Every named mistake gives, on at least one case, a result different from the right answer (guards
raise ``RuntimeError`` when a case stops telling a named mistake apart). Questions store only hashes.
"""

from __future__ import annotations

import copy
import inspect
import math
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from mmllm_course.backbones import CrossAttentionMLLM, GatedCrossAttentionBlock, GatedCrossAttentionConfig
from mmllm_course.backbones import media_attention_mask as _ref_media_attention_mask
from mmllm_course.grading.compare import expect_tensor_or_diagnose, record_distinct_mistakes
from mmllm_course.grading.core import CheckFailed, LearnerError, a_or_an, answer_hash, call, exercise, question
from mmllm_course.grading.modules import build_learner_module, expect_same_forward, load_reference_weights


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _one_thread() -> None:
    """Checks here run tiny tensors: one thread (the grader restores the learner's thread count afterwards)."""
    torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------------
# ch06.media_mask: which image each text token of an interleaved sequence may read
# --------------------------------------------------------------------------------------------------
# Each case: the image token id and the marker positions of every row, (T, [[positions of row 0], ...]).
_MASK_CASES = [
    (3, 10, [[1, 5], [2, 3], [0, 8]]),  # two images: apart, side by side, first and near the end
    (7, 8, [[1], [0], [3]]),  # one image per row; a row whose image is its very first token
    (50, 12, [[1, 4, 9], [6], [], [0, 1, 2]]),  # up to three; a row with no image at all (M = 3 columns)
    (11, 9, [[2, 6], [4]]),  # rows with fewer images than M
]


def media_mask_reference(input_ids: torch.Tensor, image_token_id: int, attend: str = "last") -> torch.Tensor:
    """(B, T, M) bool, True where token t may read image m of its row (the library's ``media_attention_mask``)."""
    return _ref_media_attention_mask(input_ids, image_token_id, attend=attend)


def _mask_ids(case: tuple, seed: int) -> torch.Tensor:
    image_id, t, rows = case
    g = _gen(seed)
    ids = torch.randint(0, 60, (len(rows), t), generator=g)
    ids[ids == image_id] = image_id + 1  # no marker except where the case puts one
    for i, positions in enumerate(rows):
        ids[i, positions] = image_id
    return ids


def _mask_mistakes(ids: torch.Tensor, image_id: int, attend: str) -> dict[str, torch.Tensor]:
    is_marker = ids == image_id  # (B, T)
    count = is_marker.long().cumsum(dim=1)  # (B, T): images at or before each token
    m = int(is_marker.sum(dim=1).max())
    cols = torch.arange(m)

    def rule(seen: torch.Tensor, mode: str) -> torch.Tensor:  # seen (B, T): the number of images a token counts
        idx = seen[:, :, None]
        return (cols == idx - 1) if mode == "last" else (cols < idx)

    other = "all" if attend == "last" else "last"
    out = {
        "every image of the row visible to every token, whatever its position: a token may read only the image(s) "
        "whose <image> marker is at or BEFORE it": (cols < is_marker.sum(dim=1)[:, None, None]).expand(-1, ids.shape[1], -1).clone(),
        "each token reading the image AFTER the one it should (an off-by-one, e.g. cumsum of the markers used as the "
        "index without the - 1): that lets a token see a later image": rule(count + 1, attend),
        "the marker's own position excluded (a token sees an image only strictly after its marker): the <image> "
        "token itself already reads its image": rule(count - is_marker.long(), attend),
        "the tokens before the first image reading image 0 (an index of -1 clamped to 0?): a token with no image "
        "before it reads nothing, its mask row is all False": rule(count.clamp(min=1), attend),
        f'attend="{other}" computed instead of attend="{attend}"': rule(count, other),
    }
    return out


@exercise(
    "ch06.media_mask",
    "Flamingo's media mask for an interleaved sequence",
    hint="count the markers at or before each token: seen = (input_ids == image_token_id).cumsum(dim=1) (B, T); "
    "image m (0-based) is the most recent one where seen - 1 == m (attend='last'), an earlier one where m < seen "
    "(attend='all'); M = the most markers in one row.",
)
def _check_media_mask(fn) -> str:
    _one_thread()
    seen: set[str] = set()
    names: set[str] = set()
    for i, case in enumerate(_MASK_CASES):
        image_id = case[0]
        ids = _mask_ids(case, seed=6000 + i)
        for attend in ("last", "all"):
            what = f"media_mask(input_ids {tuple(ids.shape)} with markers at {case[2]}, image_token_id={image_id}, attend={attend!r})"
            expected = media_mask_reference(ids, image_id, attend)
            mistakes = _mask_mistakes(ids, image_id, attend)
            names |= set(mistakes)
            record_distinct_mistakes(expected, mistakes, seen)
            got = call(fn, ids.clone(), image_id, attend)
            if isinstance(got, tuple):
                raise CheckFailed(f"{what} returned a tuple; return only the mask (B, T, M)")
            if isinstance(got, torch.Tensor) and got.dim() == 3:
                b, t, m = expected.shape
                total = int((ids == image_id).sum())
                if got.shape == (b, m, t) and m != t:
                    raise CheckFailed(f"{what} returned shape {tuple(got.shape)}, one row per IMAGE; expected (B, T, M) = "
                                      f"{tuple(expected.shape)}: one row per text token, one column per image")
                if got.shape == (b, t, total) and total != m:
                    raise CheckFailed(f"{what} returned shape {tuple(got.shape)}: M counted every image of the batch "
                                      f"({total}); M is the most images in ONE row ({m}), and image m of a row is its "
                                      "m-th marker from the left")
                if got.shape == expected.shape and got.dtype != torch.bool:
                    raise CheckFailed(f"{what} returned dtype {got.dtype}; expected a bool mask (True = may read): "
                                      "compare, don't compute (e.g. (cols == idx - 1), not a 0/1 product)")
            expect_tensor_or_diagnose(got, expected, what, mistakes)
    if seen != names:
        raise RuntimeError(f"the media-mask cases never tell these apart from the right answer: {names - seen}")
    return ("your media mask is Flamingo's: each text token reads the image(s) whose marker is at or before it "
            "(only the most recent with attend='last'), and the tokens before any image read nothing.")


# --------------------------------------------------------------------------------------------------
# ch06.gated_cross_attention: one block's forward from the library block's parts
# --------------------------------------------------------------------------------------------------
# (dim, heads, kv heads, mlp width, media width, gates (attn, mlp), [(T, image markers of each row, K)], seed)
_BLOCK_CASES = [
    (16, 2, 2, 32, None, (0.7, -0.5), [(6, [[1], [0]], 3), (8, [[1, 5], [2]], 2)], 6100),
    (24, 4, 2, 40, 12, (-0.9, 1.3), [(7, [[0, 4], [3]], 2)], 6101),
]


def _randomize(module: nn.Module, seed: int, std: float = 0.3) -> nn.Module:
    g = _gen(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g) * std
            if name.endswith("norm.weight"):
                noise = noise + 1.0
            p.copy_(noise)
    return module


def _block(case: tuple, gates: tuple[float, float] | None = None) -> GatedCrossAttentionBlock:
    d, h, kv, mlp, media_dim, default_gates, _, seed = case
    block = GatedCrossAttentionBlock(GatedCrossAttentionConfig(dim=d, num_heads=h, num_kv_heads=kv, mlp_dim=mlp,
                                                               media_dim=media_dim))
    _randomize(block, seed)
    a, m = default_gates if gates is None else gates
    with torch.no_grad():
        block.attn_gate.fill_(a)
        block.mlp_gate.fill_(m)
    return block.eval()


def _block_inputs(case: tuple, t: int, rows: list[list[int]], k: int, seed: int):
    """x (B, T, D), media (B, M * K, D_media) and the bool mask (B, T, M * K) of the interleaved rows."""
    d, media_dim = case[0], case[4] or case[0]
    g = _gen(seed)
    image_id = 99
    ids = torch.zeros(len(rows), t, dtype=torch.long)
    for i, positions in enumerate(rows):
        ids[i, positions] = image_id
    mask = _ref_media_attention_mask(ids, image_id).repeat_interleave(k, dim=-1)  # (B, T, M * K)
    x = 1.5 * torch.randn(len(rows), t, d, generator=g) + 0.2
    media = 2.0 * torch.randn(len(rows), mask.shape[-1], media_dim, generator=g) - 0.3
    return x, media, mask


def gated_cross_attention_reference(block: GatedCrossAttentionBlock, x: torch.Tensor, media: torch.Tensor,
                                    media_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The library's block: x + tanh(a) CrossAttn(attn_norm(x), media), then + tanh(m) MLP(mlp_norm(x)); no-image rows unchanged."""
    return block(x, media, media_mask)


def _block_variant(block: GatedCrossAttentionBlock, x: torch.Tensor, media: torch.Tensor, mask: torch.Tensor | None, *,
                   gate: str = "tanh", attn_res: bool = True, mlp_res: bool = True, norm: str = "pre",
                   mlp_input: str = "after", mlp_norm: str = "own", use_mask: bool = True, zero_rows: str = "both",
                   qk_norm: bool = True, scale: str = "sqrt", kv_from: str = "media", gqa: str = "interleave") -> torch.Tensor:
    """The library's block with one thing done differently (for naming a learner's mistake)."""
    c = block.config
    b, t, s = x.shape[0], x.shape[1], media.shape[1]
    sees = torch.ones(b, t, s, dtype=torch.bool) if (mask is None or not use_mask) else mask
    row = sees.any(dim=-1, keepdim=True)  # (B, T, 1)
    g_fn = {"tanh": torch.tanh, "raw": lambda v: v, "none": lambda v: torch.ones_like(v), "sigmoid": torch.sigmoid}[gate]
    h = block.attn_norm(x) if norm == "pre" else x
    q = block.q_proj(h).view(b, t, c.num_heads, c.head_dim).transpose(1, 2)
    source = h if kv_from == "text" else media
    n = source.shape[1]
    k = block.k_proj(source).view(b, n, c.kv_heads, c.head_dim).transpose(1, 2)
    v = block.v_proj(source).view(b, n, c.kv_heads, c.head_dim).transpose(1, 2)
    if qk_norm:
        q, k = block.q_norm(q), block.k_norm(k)
    group = c.num_heads // c.kv_heads
    if gqa == "tile":
        k, v = k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1)
    else:
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    divisor = {"sqrt": math.sqrt(c.head_dim), "none": 1.0, "dim": math.sqrt(c.dim)}[scale]
    scores = q @ k.transpose(-2, -1) / divisor  # (B, H, T, S or T)
    if kv_from == "media":
        scores = scores.masked_fill(~(sees | ~row)[:, None], float("-inf"))
    out = block.o_proj((scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, t, -1))
    zero_attn = zero_rows in ("both", "attn_only")
    zero_mlp = zero_rows in ("both", "mlp_only")
    attn_branch = g_fn(block.attn_gate) * (out * row if zero_attn else out)
    start = x
    if norm == "post":
        x = block.attn_norm(x + attn_branch)
    else:
        x = x + attn_branch if attn_res else attn_branch
    ffn_in = start if mlp_input == "before" else x
    normed = (block.attn_norm if mlp_norm == "attn" else block.mlp_norm)(ffn_in) if norm == "pre" else ffn_in
    ffn = block.mlp(normed)
    mlp_branch = g_fn(block.mlp_gate) * (ffn * row if zero_mlp else ffn)
    if norm == "post":
        return block.mlp_norm(x + mlp_branch)
    return x + mlp_branch if mlp_res else mlp_branch


_BLOCK_MISTAKES: dict[str, dict] = {
    "the gates used without tanh (x + attn_gate * branch); each branch is scaled by tanh(gate), which keeps the "
    "scale in (-1, 1)": dict(gate="raw"),
    "the branches added with no gate at all: each is multiplied by tanh(attn_gate) and tanh(mlp_gate)": dict(gate="none"),
    "the gates squashed by a sigmoid: Flamingo's and Llama 3.2 Vision's gates are tanh(gate), 0 at gate = 0 "
    "(sigmoid(0) = 0.5 would change the frozen LM from the start)": dict(gate="sigmoid"),
    "a block without the attention's residual: x = x + tanh(attn_gate) * attention(...), not x = tanh(attn_gate) * ...":
        dict(attn_res=False),
    "a block without the feed-forward's residual: x = x + tanh(mlp_gate) * mlp(mlp_norm(x))": dict(mlp_res=False),
    "a POST-norm block (norm(x + branch)); the block is pre-norm: the norms sit inside the branches and x itself "
    "is never normalised, so that closed gates give x back": dict(norm="post"),
    "the feed-forward reading the block's INPUT (two parallel branches); it reads x after the attention's residual": dict(
        mlp_input="before"),
    "attn_norm used before the feed-forward too; the feed-forward has its own norm, block.mlp_norm": dict(mlp_norm="attn"),
    "the media mask ignored: every token read every image (and the tokens that see no image were changed)": dict(use_mask=False),
    "the tokens that see NO image given the feed-forward branch: a token whose mask row is all False gets x back "
    "exactly (multiply BOTH branches by sees = media_mask.any(-1, keepdim=True))": dict(zero_rows="attn_only"),
    "the tokens that see NO image given the attention branch (over every media token): Mllama does that, the "
    "library and Flamingo do not; multiply both branches by sees = media_mask.any(-1, keepdim=True)": dict(zero_rows="mlp_only"),
    "q_norm and k_norm skipped: the queries and keys are RMS-normalised per head (block.q_norm, block.k_norm) "
    "after splitting into heads": dict(qk_norm=False),
    "attention without the 1/sqrt(head_dim) scale": dict(scale="none"),
    "scores scaled by 1/sqrt(D), the model's width; the scale is 1/sqrt(head_dim)": dict(scale="dim"),
    "key/value heads repeated as a block (.repeat: kv heads 0, 1, 0, 1, ...); each key/value head serves "
    "num_heads / num_kv_heads CONSECUTIVE query heads: repeat_interleave (0, 0, 1, 1, ...)": dict(gqa="tile"),
}


def _block_diagnose(block: GatedCrossAttentionBlock, x, media, mask) -> dict[str, torch.Tensor]:
    out = {text: _block_variant(block, x, media, mask, **kw) for text, kw in _BLOCK_MISTAKES.items()}
    if (block.config.media_dim or block.config.dim) == block.config.dim:
        out["the keys and values computed from the TEXT (self-attention): in cross-attention the queries come from "
            "the text and the keys and values from the media"] = _block_variant(block, x, media, mask, kv_from="text")
    return out


_WHOLE_BLOCK = ("gated_cross_attention must compute the block from its parts (block.attn_norm, q_proj, k_proj, v_proj, "
                "o_proj, q_norm, k_norm, attn_gate, mlp_norm, mlp, mlp_gate), not call block(...)")


class _Refused:
    """Stands in for ``block.forward`` in the learner's copy: the exercise is to write it."""

    def __init__(self) -> None:
        self.called = False

    def __call__(self, *args, **kwargs):
        self.called = True
        raise RuntimeError(_WHOLE_BLOCK)


def _no_image_rows_message(got: Any, x: torch.Tensor, mask: torch.Tensor, what: str) -> None:
    """Tokens that see no image must come back exactly: name a NaN or a change there before anything else."""
    if not isinstance(got, torch.Tensor) or got.shape != x.shape or not got.is_floating_point():
        return
    none = ~mask.any(dim=-1)  # (B, T)
    if not none.any():
        return
    g = got.detach().cpu().double()
    if torch.isnan(g[none]).any() and torch.isfinite(g[~none]).all():
        raise CheckFailed(f"{what}: NaN on the tokens that see no image (their mask row is all False, so a softmax over "
                          "only -inf gives NaN, and NaN * 0 is still NaN). Let those rows attend anywhere "
                          "(allowed = media_mask | ~sees) and then zero their branches with sees")


@exercise(
    "ch06.gated_cross_attention",
    "One gated cross-attention block from its parts",
    hint="h = attn_norm(x); q from h, k and v from media (split into heads, q_norm / k_norm per head, kv heads "
    "repeat_interleave'd); masked softmax(q k^T / sqrt(head_dim)) v; o_proj; x = x + tanh(attn_gate) * out * sees; "
    "then x = x + tanh(mlp_gate) * mlp(mlp_norm(x)) * sees, with sees = media_mask.any(-1, keepdim=True).",
)
def _check_gated_cross_attention(fn) -> str:
    _one_thread()
    seen: set[str] = set()
    names: set[str] = set()
    for case in _BLOCK_CASES:
        block = _block(case)
        d, h, kv = case[:3]
        for j, (t, rows, k) in enumerate(case[6]):
            x, media, mask = _block_inputs(case, t, rows, k, seed=case[7] * 10 + j)
            what = (f"gated_cross_attention(block (D={d}, {h} heads, {kv} key/value heads, media width {case[4] or d}, "
                    f"tanh gates {math.tanh(case[5][0]):.2f} and {math.tanh(case[5][1]):.2f}), x {tuple(x.shape)}, "
                    f"media {tuple(media.shape)}, media_mask {tuple(mask.shape)} for images at {rows})")
            with torch.no_grad():
                expected = gated_cross_attention_reference(block, x, media, mask)
                mistakes = _block_diagnose(block, x, media, mask)
            names |= set(mistakes)
            record_distinct_mistakes(expected, mistakes, seen)
            leaf = x.clone().requires_grad_(True)
            mine = copy.deepcopy(block)
            mine.forward = refused = _Refused()
            try:
                got = call(fn, mine, leaf, media.clone(), mask.clone())
            except LearnerError:
                if refused.called:
                    raise CheckFailed(f"{what}: {_WHOLE_BLOCK}") from None
                raise
            if isinstance(got, tuple):
                raise CheckFailed(f"{what} returned a tuple; return only the new text states (B, T, D)")
            _no_image_rows_message(got, x, mask, what)
            expect_tensor_or_diagnose(got, expected, what, mistakes)
            if not got.requires_grad:
                raise CheckFailed(f"{what}: your output is cut off from the graph (torch.no_grad(), .detach()?): "
                                  "the block could not be trained")
    if seen != names:
        raise RuntimeError(f"the block cases never tell these apart from the right answer: {names - seen}")
    return ("your block is the library's (and Llama 3.2 Vision's): pre-norm cross-attention and feed-forward, each "
            "behind tanh(gate), residuals, and the tokens that see no image left exactly as they were.")


# --------------------------------------------------------------------------------------------------
# ch06.freeze_stage1: what backbone B trains in stage 1
# --------------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _tiny_parts_state() -> tuple:
    """A tiny LM, tokenizer, encoder and bridge for the freezing check (built once; each case deep-copies them)."""
    from mmllm_course.bridges import make_bridge
    from mmllm_course.encoders.vit import ViT, ViTConfig
    from mmllm_course.language import CausalLMConfig, course_lm_tokenizer, make_causal_lm

    tok = course_lm_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(6200)
        lm = make_causal_lm(CausalLMConfig(dim=32, depth=4, num_heads=4, num_kv_heads=2, mlp_dim=64, context_length=64), tok)
        encoder = ViT(ViTConfig(image_size=16, patch_size=8, dim=32, depth=1, num_heads=2, mlp_dim=64))
        bridge = make_bridge("mlp", in_dim=32, out_dim=32)
    return lm, tok, encoder, bridge


def _freeze_model(every: int, start: bool) -> CrossAttentionMLLM:
    lm, tok, encoder, bridge = _tiny_parts_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(6201)
        model = CrossAttentionMLLM(copy.deepcopy(encoder), copy.deepcopy(bridge), copy.deepcopy(lm), tok, every=every)
    return model.requires_grad_(start)


def _stage1_trainable(name: str) -> bool:
    return name.startswith(("bridge.", "blocks."))


def freeze_stage1_reference(model: CrossAttentionMLLM) -> int:
    """Backbone B's stage 1: the bridge and the gated blocks train, the encoder and the LM are frozen; returns the count."""
    for name, p in model.named_parameters():
        p.requires_grad_(_stage1_trainable(name))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _freeze_mistakes(model: CrossAttentionMLLM) -> dict[str, set[str]]:
    names = [n for n, _ in model.named_parameters()]
    pick = lambda rule: {n for n in names if rule(n)}  # noqa: E731
    return {
        "the whole LM left trainable: backbone B keeps the LM frozen (that is what keeps its text ability and "
        "makes the untrained model exactly the LM); only the bridge and the blocks learn": pick(
            lambda n: n.startswith(("bridge.", "blocks.", "lm."))),
        "only the bridge trainable, the blocks frozen: that is backbone A's stage 1; in B the new cross-attention "
        "blocks must learn too (frozen at init their gates stay at 0 and the LM never reads the image)": pick(
            lambda n: n.startswith("bridge.")),
        "only the gates trainable: the blocks' projections, norms and feed-forward must learn too": pick(
            lambda n: n.startswith("bridge.") or n.endswith(("attn_gate", "mlp_gate"))),
        "the blocks trainable but the bridge frozen: the bridge must learn to turn the encoder's features into "
        "media the blocks can read": pick(lambda n: n.startswith("blocks.")),
        "nothing trainable: set requires_grad=True on the bridge and the blocks as well (the model may come with "
        "everything frozen), and False on the encoder and the LM": set(),
        "the encoder trainable too: in stage 1 the encoder stays frozen (its features are even computed once, "
        "before training)": pick(lambda n: n.startswith(("bridge.", "blocks.", "encoder."))),
    }


@exercise(
    "ch06.freeze_stage1",
    "Freeze exactly what backbone B does not train in stage 1",
    hint="for name, p in model.named_parameters(): p.requires_grad_(name.startswith(('bridge.', 'blocks.'))); then "
    "return sum(p.numel() for p in model.parameters() if p.requires_grad).",
    timeout=60.0,  # builds tiny transformers LMs; the first check of a session imports transformers' LLaMA (10 s on a busy CPU)
)
def _check_freeze_stage1(fn) -> str:
    _one_thread()
    seen: set[str] = set()
    for every, start in ((1, True), (2, False), (3, True)):
        model = _freeze_model(every, start)
        expected_names = {n for n, _ in model.named_parameters() if _stage1_trainable(n)}
        expected_count = sum(p.numel() for n, p in model.named_parameters() if n in expected_names)
        mistakes = _freeze_mistakes(model)
        seen |= {k for k, v in mistakes.items() if v != expected_names}
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        what = (f"freeze_stage1(a CrossAttentionMLLM with every={every}, blocks before layers {list(model.block_layers)}, "
                f"every parameter starting with requires_grad={start})")
        got = call(fn, model)
        if any(not torch.equal(p.detach(), before[n]) for n, p in model.named_parameters() if n in before) or \
                {n for n, _ in model.named_parameters()} != set(before):
            raise CheckFailed(f"{what}: your function changed the model's parameters; only set requires_grad")
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        if trainable != expected_names:
            for explanation, wrong in mistakes.items():
                if wrong == trainable and wrong != expected_names:
                    raise CheckFailed(f"{what}: the wrong parameters are trainable. That is {explanation}.")
            extra = sorted(trainable - expected_names)[:4]
            missing = sorted(expected_names - trainable)[:4]
            raise CheckFailed(f"{what}: the wrong parameters are trainable" + (f"; should be frozen: {extra}" if extra else "")
                              + (f"; should train: {missing}" if missing else "")
                              + ". Stage 1 of backbone B trains the bridge and the blocks only.")
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if got is None:
            raise CheckFailed(f"{what}: the right parameters train, but it returned None: return the number of "
                              f"trainable parameters ({expected_count})")
        if not isinstance(got, int) or isinstance(got, bool):
            raise CheckFailed(f"{what} returned {a_or_an(type(got).__name__)}; expected an int, the number of trainable parameters")
        if got != expected_count:
            tensors = len(expected_names)
            total = sum(p.numel() for p in model.parameters())
            why = ""
            if got == tensors:
                why = f" That is the number of trainable TENSORS ({tensors}); count their elements (p.numel())."
            elif got == total:
                why = f" That is every parameter of the model ({total}), frozen ones included."
            raise CheckFailed(f"{what} returned {got}; the trainable parameters are {expected_count}.{why}")
    if seen != set(_freeze_mistakes(_freeze_model(1, True))):
        raise RuntimeError("the freezing cases never tell some named mistakes apart")
    return ("the bridge and the gated blocks train, the encoder and the LM stay frozen: the LM's text ability is "
            "untouched, and at init the model is exactly the LM.")


# --------------------------------------------------------------------------------------------------
# ch06.gated_block (build): the learner's MyGatedCrossAttentionBlock with the library's weights
# --------------------------------------------------------------------------------------------------
_BUILD_CASES = [  # (dim, num_heads, num_kv_heads, mlp_dim, media_dim, gates, seed)
    (32, 4, 2, 48, None, (0.6, -0.8), 6300),
    (16, 2, 1, 24, 24, (-1.1, 0.4), 6301),
]
_BUILD_ARGS = ("dim", "num_heads", "num_kv_heads", "mlp_dim", "media_dim")


def _build_inputs(case: tuple, seed: int) -> list[tuple]:
    d, media_dim = case[0], case[4] or case[0]
    g = _gen(seed)
    out = []
    for t, rows, k in ((5, [[0], [2]], 3), (7, [[1, 4], [0], [5]], 2)):
        ids = torch.zeros(len(rows), t, dtype=torch.long)
        for i, positions in enumerate(rows):
            ids[i, positions] = 9
        mask = _ref_media_attention_mask(ids, 9).repeat_interleave(k, dim=-1)
        x = 1.5 * torch.randn(len(rows), t, d, generator=g) + 0.2
        media = 2.0 * torch.randn(len(rows), mask.shape[-1], media_dim, generator=g) - 0.3
        out.append((x, media, mask))
    x = torch.randn(2, 4, d, generator=g)
    out.append((x, torch.randn(2, 3, media_dim, generator=g), None))  # no mask: every token reads every media token
    return out


def _learner_gates(module: nn.Module) -> dict[str, torch.Tensor]:
    params = dict(module.named_parameters())
    return {name: params[name].detach() for name in ("attn_gate", "mlp_gate") if name in params}


@exercise(
    "ch06.gated_block",
    "Build a gated cross-attention block that takes the library's weights",
    hint="the names of the table (attn_norm, q_proj, k_proj, v_proj, o_proj, q_norm, k_norm, attn_gate, mlp_norm, "
    "mlp.gate_proj / up_proj / down_proj, mlp_gate), both gates nn.Parameter(torch.zeros(1)); forward as in exercise 2.",
)
def _check_gated_block(cls) -> str:
    _one_thread()
    seen: set[str] = set()
    names: set[str] = set()
    for case in _BUILD_CASES:
        ctor = case[:5]
        what = "MyGatedCrossAttentionBlock(" + ", ".join(f"{k}={v}" for k, v in zip(_BUILD_ARGS, ctor)) + ")"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(case[6])
            mine = build_learner_module(cls, what, *ctor)
        inputs = _build_inputs(case, case[6])
        # 1. closed gates: the learner's own fresh block must give x back exactly
        gates = _learner_gates(mine)
        opened = {n: v for n, v in gates.items() if v.numel() and bool((v != 0).any())}
        if opened:
            values = ", ".join(f"{n} = {v.flatten()[:2].tolist()}" for n, v in opened.items())
            raise CheckFailed(f"{what}: the gates are not zero-initialised ({values}): with tanh(0) = 0 the new block "
                              "starts as the identity and the model starts as the frozen LM; use nn.Parameter(torch.zeros(1))")
        identity = None
        if len(gates) == 2:
            x, media, mask = inputs[1]
            with torch.no_grad():
                fresh = call(mine, x.clone(), media.clone(), mask.clone())
            identity = isinstance(fresh, torch.Tensor) and fresh.shape == x.shape and torch.equal(fresh, x)
        # 2. the library's weights (gates opened): outputs and gradients
        ref = _block((*case[:5], case[5], [], case[6]))
        load_reference_weights(mine, ref, what)
        for x, media, mask in inputs:
            with torch.no_grad():
                diagnosed = _block_diagnose(ref, x, media, mask)
                names |= set(diagnosed)
                record_distinct_mistakes(ref(x, media, mask), diagnosed, seen)
        x, media, mask = inputs[1]
        with torch.no_grad():
            got = call(mine, x.clone(), media.clone(), mask.clone())
        if isinstance(got, tuple):
            raise CheckFailed(f"{what}(x, media, media_mask) returned a tuple; return only the new text states (B, T, D)")
        _no_image_rows_message(got, x, mask, f"{what} with the library's weights")
        expect_same_forward(mine, ref, inputs, what, forward=lambda module, x, media, mask: module(x, media, mask),
                            diagnose=lambda x, media, mask: _block_diagnose(ref, x, media, mask))
        if identity is False:
            raise CheckFailed(f"{what}: with the library's weights your block is right, but freshly built, with both gates "
                              "at 0, it does not give x back exactly (torch.equal): closed gates must make the block the identity")
    if seen != names:
        raise RuntimeError(f"the build cases never tell these apart: {names - seen}")
    return ("your block starts as the identity (gates at 0) and, with the library's weights, gives its outputs and "
            "gradients: Llama 3.2 Vision's gated cross-attention layer, written by you.")


# --------------------------------------------------------------------------------------------------
# ch06.train_captioner (train tier): the learner's stage 1 with backbone B
# --------------------------------------------------------------------------------------------------
TRAIN_B_THRESHOLD = 0.90  # exact captions on the check's held-out images
TRAIN_B_EVAL_SEED = 60_606
TRAIN_B_EVAL_SIZE = 200
CAPTION_PROMPT = "<image>Describe the image."


@lru_cache(maxsize=1)
def train_captioner_eval_data() -> tuple[torch.Tensor, torch.Tensor]:
    """The check's held-out data: the frozen chapter-2 encoder's features (n, 17, 64) and the objects (n, 4)."""
    from mmllm_course.data import generate_shapes
    from mmllm_course.grading.checks.ch05 import chapter5_image_features

    shapes = generate_shapes(TRAIN_B_EVAL_SIZE, seed=TRAIN_B_EVAL_SEED)
    return chapter5_image_features(shapes.images), shapes.objects[:, 0]


@lru_cache(maxsize=1)
def _shipped_lm_state() -> dict[str, torch.Tensor]:
    from mmllm_course.pretrained import load_chapter5_lm

    lm, _ = load_chapter5_lm()
    return {k: v.detach().clone() for k, v in lm.state_dict().items()}


def _learner_model(answer: Any) -> nn.Module:
    if isinstance(answer, type):
        raise CheckFailed(f"got the class {answer.__name__}; pass your TRAINED model (the object), not its class")
    if callable(answer) and not isinstance(answer, nn.Module):
        try:
            params = inspect.signature(answer).parameters.values()
        except (TypeError, ValueError):
            params = []
        required = [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if required:
            raise CheckFailed(f"got a function that needs arguments ({', '.join(required)}); pass your TRAINED model "
                              "(the CrossAttentionMLLM you trained), e.g. check('ch06.train_captioner', my_model)")
        answer = call(answer)
    if answer is None:
        raise CheckFailed("got None instead of a trained model: did your training function forget to return it?")
    if not isinstance(answer, CrossAttentionMLLM):
        raise CheckFailed(f"expected your trained backbone B (a CrossAttentionMLLM with your blocks), got "
                          f"{a_or_an(type(answer).__name__)}")
    return answer


def _caption(obj: torch.Tensor) -> str:
    from mmllm_course.data import caption_for

    return caption_for(*[int(v) for v in obj])


@exercise(
    "ch06.train_captioner",
    "Train backbone B's bridge and blocks until the frozen LM captions new images",
    hint="train longer (a few hundred steps of 64 images, AdamW at 3e-3 with a warmup), check that the bridge and the "
    "blocks train and the LM stays frozen, and that the prompt is '<image>Describe the image.' with ' ' + caption as "
    "the target.",
    timeout=90.0,  # loads the shipped encoder and LM, encodes 200 images, generates 200 captions
)
def _check_train_captioner(answer) -> str:
    _one_thread()
    from mmllm_course.training import caption_metrics

    model = _learner_model(answer)
    shipped = _shipped_lm_state()
    lm_state = model.lm.state_dict()
    changed = [k for k, v in shipped.items() if k not in lm_state or not torch.equal(lm_state[k].detach().cpu(), v)]
    if changed:
        raise CheckFailed(f"your model's LM is not the shipped chapter-5 LM any more ({len(changed)} of its tensors changed, "
                          f"e.g. {changed[0]}): the whole LM was left trainable. Backbone B keeps the LM frozen; only the "
                          "bridge and the blocks learn (see exercise 3). Reload the LM (lm, tok = load_chapter5_lm()) before "
                          "training again: the changed one stays changed")
    if model.num_image_features != 17:
        raise CheckFailed(f"your model reads {model.num_image_features} features per image; the check gives the frozen "
                          "mini-CLIP's 17 (its class token and 16 patches), as in chapter 5")
    features, objects = train_captioner_eval_data()
    blocks = list(model.blocks)
    was_training = [m.training for m in (model, *blocks)]
    texts: list[str] = []
    try:
        model.eval()
        for start in range(0, len(features), 100):
            chunk = features[start:start + 100]
            texts += call(model.generate, [CAPTION_PROMPT] * len(chunk), image_features=chunk, max_new_tokens=10)
    finally:
        model.train(was_training[0])
        for m, mode in zip(blocks, was_training[1:]):
            m.train(mode)
    metrics = caption_metrics(texts, objects)
    wrong = [(t, i) for i, t in enumerate(texts) if t != _caption(objects[i])][:2]
    examples = "; ".join(f"said {t!r} for {_caption(objects[i])!r}" for t, i in wrong)
    gates = ", ".join(f"{g['attn']:.2f}/{g['mlp']:.2f}" for g in _gate_values(blocks))
    detail = (f"held-out exact captions {metrics['exact']:.1%} on {len(texts)} new images (shape {metrics['shape']:.0%}, "
              f"colour {metrics['color']:.0%}, size {metrics['size']:.0%}, position {metrics['position']:.0%}"
              + (f"; tanh gates attn/mlp per block: {gates}" if gates else "") + ")")
    if metrics["exact"] < TRAIN_B_THRESHOLD:
        raise CheckFailed(f"{detail}: below the {TRAIN_B_THRESHOLD:.0%} bar" + (f" (e.g. {examples})" if examples else "") + ".")
    return f"{detail}: above the {TRAIN_B_THRESHOLD:.0%} bar. The frozen LM reads the image through your blocks."


def _gate_values(blocks: list[nn.Module]) -> list[dict[str, float]]:
    out = []
    for block in blocks:
        a, m = getattr(block, "attn_gate", None), getattr(block, "mlp_gate", None)
        if isinstance(a, torch.Tensor) and isinstance(m, torch.Tensor) and a.numel() == 1 and m.numel() == 1:
            out.append({"attn": float(a.detach().tanh()), "mlp": float(m.detach().tanh())})
    return out


# --------------------------------------------------------------------------------------------------
# ch06.media_mask_at (stretch): the media mask at any query positions (generation with a KV cache)
# --------------------------------------------------------------------------------------------------
# (query positions of each row, marker positions of each row (padded), valid)
_AT_CASES = [
    ([[0, 1, 2, 3, 4, 5]], [[1, 4]], [[True, True]]),  # a whole prompt
    ([[7], [9], [3]], [[2, 5], [0, 0], [4, 6]], [[True, True], [True, False], [True, True]]),  # one new token per row
    ([[3, 4, 5, 6], [0, 1, 2, 3]], [[1, 4, 5], [2, 0, 0]], [[True, True, True], [True, False, False]]),
]


def media_mask_at_reference(query_positions: torch.Tensor, marker_positions: torch.Tensor, valid: torch.Tensor,
                            attend: str = "last") -> torch.Tensor:
    """(B, T, M) bool: image m visible to the token at query_positions (the library's ``visible_media``)."""
    from mmllm_course.backbones.cross_attention import visible_media

    return visible_media(query_positions, marker_positions, valid, attend)


def _at_mistakes(q: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor, attend: str) -> dict[str, torch.Tensor]:
    ref = media_mask_at_reference
    everything = torch.ones_like(valid)
    other = "all" if attend == "last" else "last"
    return {
        "the padding columns (valid False) treated as images: a row with fewer images has no image there, whatever "
        "its position says": ref(q, pos, everything, attend),
        "the marker's own position excluded (marker < query): a token at the marker's position already reads its image":
            ref(q - 1, pos, valid, attend),
        "every valid image visible whatever the positions: a token reads only images whose marker is at or BEFORE it":
            ref(torch.full_like(q, 10**6), pos, valid, attend),
        f'attend="{other}" computed instead of attend="{attend}"': ref(q, pos, valid, other),
    }


@exercise(
    "ch06.media_mask_at",
    "Stretch: the media mask at any query positions (generated tokens)",
    hint="after = (marker_positions[:, None, :] <= query_positions[:, :, None]) & valid[:, None, :]; for 'last' keep "
    "only column count - 1, with count = after.sum(-1, keepdim=True).",
)
def _check_media_mask_at(fn) -> str:
    _one_thread()
    seen: set[str] = set()
    names: set[str] = set()
    for q_rows, pos_rows, valid_rows in _AT_CASES:
        q, pos, valid = torch.tensor(q_rows), torch.tensor(pos_rows), torch.tensor(valid_rows)
        for attend in ("last", "all"):
            what = (f"media_mask_at(query_positions {q_rows}, marker_positions {pos_rows}, valid {valid_rows}, "
                    f"attend={attend!r})")
            expected = media_mask_at_reference(q, pos, valid, attend)
            mistakes = _at_mistakes(q, pos, valid, attend)
            names |= set(mistakes)
            record_distinct_mistakes(expected, mistakes, seen)
            got = call(fn, q.clone(), pos.clone(), valid.clone(), attend)
            if isinstance(got, torch.Tensor) and got.shape == expected.shape and got.dtype != torch.bool:
                raise CheckFailed(f"{what} returned dtype {got.dtype}; expected a bool mask (True = may read)")
            expect_tensor_or_diagnose(got, expected, what, mistakes)
    if seen != names:
        raise RuntimeError(f"the media_mask_at cases never tell these apart: {names - seen}")
    return ("your mask holds at any position: a generated token reads the image(s) its prompt's last token reads, "
            "which is how the library's hooks keep the mask during generation with a KV cache.")


# --------------------------------------------------------------------------------------------------
# Questions (only hashes of the answers live here)
# --------------------------------------------------------------------------------------------------
question(
    "ch06.q1",
    "Why the gates start at zero",
    {
        "a": "A zero gate keeps the block's weights from receiving any gradient, so the new blocks cannot overfit the first batches.",
        "b": "tanh(0) = 0 makes every new block the identity, so the untrained model is exactly the frozen LM and keeps its text ability.",
        "c": "The gates are the learning rate of each block: starting at zero is a warmup that the optimiser raises over the first steps.",
        "d": "A zero gate hides the image from the first decoder layer, so the LM learns the text first and the image after.",
    },
    [answer_hash("b")],
    explanation="x + tanh(0) * branch = x: before training, every block returns its input and the logits are the "
    "bare LM's (the chapter checks torch.equal). Training opens each gate as far as reading the image helps; no random "
    "branch disturbs the frozen LM at step 0 (at step 0 only the gates get a gradient).",
    hint="Write x + tanh(a) * branch for a = 0, and compare the model's logits with the bare LM's.",
)

question(
    "ch06.q2",
    "What backbone B changes in the LM's context length",
    {
        "a": "Each image adds its K bridge tokens to the LM's sequence, as in A, but B reads them a second time in the cross-attention.",
        "b": "Nothing: A and B both put K tokens per image in the sequence; B only changes which layers read them.",
        "c": "The sequence holds text and one marker per image; the K bridge tokens are keys and values of the cross-attention, not positions.",
        "d": "B drops the text before the first image from the sequence, because those tokens cannot read any image.",
    },
    [answer_hash("c")],
    explanation="In B the image is one <image> marker in the LM's sequence (the chapter's table counts the LM tokens per "
    "example); its K media tokens are read by the blocks' cross-attention. With many images or hundreds of tokens "
    "per image that is the saving: self-attention grows with the square of the sequence, cross-attention linearly in S.",
    hint="Tokenize a prompt for A and for B and count the positions; where do the K bridge tokens go in B?",
)

question(
    "ch06.q3",
    "Where the media mask comes from",
    {
        "a": "From the <image> markers of the interleaved sequence: a token reads the image whose marker is the last at or before it (Flamingo).",
        "b": "From the LM's causal mask: each text token attends to the image tokens in the positions before it, as in backbone A.",
        "c": "It is learned: each token's attention weights over the images decide which image it reads, with no mask at all.",
        "d": "From the padding mask: the images of the batch are padded to the same number, and the mask hides the padded ones.",
    },
    [answer_hash("a")],
    explanation="Flamingo (section 2.3) records where each image sits in a web document and lets each text token "
    "cross-attend only to the most recent image before it; the images are not in the LM's sequence, so its causal mask "
    "cannot say that. Llama 3.2 Vision's processor builds the same spans from its <|image|> tokens.",
    hint="The images are not positions of the LM's sequence in B; what in the sequence says where each image belongs?",
)

question(
    "ch06.q4",
    "Why backbone B can train every block from the first step although each gate starts at zero",
    {
        "a": "The gates are not used in training, only at inference, so the blocks learn as if there were no gate.",
        "b": "The frozen LM passes its gradients through the gates unchanged, so every branch weight learns from step 0 on.",
        "c": "It cannot: a zero gate blocks every gradient for ever, which is why Llama 3.2 Vision initialises its gates at one.",
        "d": "The gate itself gets a gradient (branch output times tanh'(0) = 1); once it leaves zero, the branch weights get gradients too.",
    },
    [answer_hash("d")],
    explanation="d/da of x + tanh(a) * f(x) is tanh'(a) f(x) = f(x) at a = 0, while the branch weights get tanh(a) "
    "times their gradient, 0 at step 0. The chapter prints this: at step 0 only the gates have a non-zero gradient; the "
    "gates then open and the blocks learn (the gate trace).",
    hint="Differentiate x + tanh(a) f(x; W) with respect to a and to W at a = 0.",
)
