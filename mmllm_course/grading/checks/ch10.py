"""Checks for chapter 10, the output side with discrete tokens: a VQ tokenizer and its codebook.

Tiers, as in every chapter:

- **core** functions: the nearest-code lookup (any code at the smallest squared Euclidean distance
  passes, so a cdist, an expanded-norms and a loop version all do), the straight-through estimator
  (its VALUE must be ``z_q`` and its GRADIENT must reach ``z`` unchanged and never ``z_q``), the two
  VQ-VAE losses (values and which of ``z`` / ``z_q`` each one moves), and an image turned into a
  token sequence in raster order and back through a fixed encoder, codebook and decoder the check
  builds with its own seed; each next to the library's :mod:`mmllm_course.visual_tokens.quantizer`;
- **build**: the learner's ``VectorQuantizer(num_codes, code_dim, beta)`` gets the library's
  :class:`~mmllm_course.visual_tokens.CodebookQuantizer` weights loaded into it (the ``state_dict``
  of ``diffusers``' ``VectorQuantizer`` too) and must give its indices, straight-through output, loss
  and the gradients of both with respect to the input and the codebook;
- **train**: the learner's trained tokenizer is measured, never trained here, on held-out images the
  check draws with its own seed: reconstruction error (PSNR) from the tokens alone, what the shipped
  chapter-9 judge reads on the reconstructions (colour graded, shape reported), and how many codes it uses.
  The solution's recipe (:func:`train_tokenizer_solution`: 8x8 grid of 16-d vectors, 128 codes, 1,000 steps of
  64, Adam 2e-3, the shape's pixels weighted 5x, codebook started from encoder outputs, dead codes restarted
  every 100 steps for the first 80%) measured on seeds 0-4 (2026-12-03, 1 thread on the shared 2-core machine
  at load 7-11, 195-350 s each): PSNR 24.01, 23.51, 23.92, 24.17, 23.14 dB (bar 22: worst 1.1 dB above; the mean
  image scores 19.35 dB), judge colour 100% on every seed (bar 90%), codes used 127-128 of 128 (bar 16), judge
  shape 44.9, 30.5, 52.0, 52.7, 21.9% (chance 20%: too spread for a bar, so it is printed, not graded).
  Without the shape weighting seed 4 lost the colours (47%, PSNR 21.1 dB); 600 steps with 64 codes gave
  21.8 dB on seed 0;
- a **stretch**: the EMA codebook update (VQ-VAE's appendix, Sonnet's ``VectorQuantizerEMA``).

Every case is sized so that each named mistake gives a result different from the right answer (guards
raise ``RuntimeError`` when a case stops telling them apart). Questions store only answer hashes.
"""

from __future__ import annotations

import inspect
import math
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmllm_course.grading.checks.ch02 import _type_name
from mmllm_course.grading.compare import expect_tensor, same_values
from mmllm_course.grading.core import CheckFailed, answer_hash, call, exercise, question
from mmllm_course.grading.modules import build_learner_module, load_reference_weights
from mmllm_course.visual_tokens.quantizer import CodebookQuantizer
from mmllm_course.visual_tokens.quantizer import nearest_code as _ref_nearest_code
from mmllm_course.visual_tokens.quantizer import straight_through as _ref_straight_through
from mmllm_course.visual_tokens.quantizer import vq_losses as _ref_vq_losses


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sq_distances(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(N, D), (K, D) -> (N, K) squared Euclidean distances, in float64 (the check's own yardstick)."""
    return ((z.double()[:, None, :] - codebook.double()[None, :, :]) ** 2).sum(-1)


def _is_nearest(got: torch.Tensor, z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(N,) bool: is code ``got[n]`` at the smallest distance from z[n] (ties and float rounding allowed)?"""
    d = _sq_distances(z, codebook)  # (N, K)
    best = d.min(dim=1).values
    mine = d.gather(1, got.long()[:, None]).squeeze(1)
    return mine <= best + 1e-6 * best.abs().clamp_min(1.0)


def _first_named(got: Any, expected: torch.Tensor, mistakes: dict[str, torch.Tensor], atol: float = 1e-5,
                 rtol: float = 1e-4) -> str | None:
    """The explanation of the first mistake whose output ``got`` equals (and the right answer does not)."""
    for explanation, wrong in mistakes.items():
        if wrong.shape == expected.shape and same_values(wrong, expected, atol, rtol):
            continue  # this case cannot show that mistake
        if same_values(got, wrong, atol, rtol):
            return explanation
    return None


def _check_indices(got: Any, what: str, shape: tuple[int, ...], num_codes: int) -> torch.Tensor:
    """``got`` must be an integer tensor of ``shape`` with values in [0, num_codes): returned as long on the CPU."""
    if got is None:
        raise CheckFailed(f"{what} returned None: did you forget `return`?")
    if isinstance(got, tuple):
        raise CheckFailed(f"{what} returned a tuple of {len(got)}; return only the indices {shape} (torch.long)")
    if not isinstance(got, torch.Tensor):
        raise CheckFailed(f"{what} returned {_type_name(got)}; expected a tensor of code indices {shape} (torch.long)")
    if got.is_floating_point() or got.dtype == torch.bool or got.is_complex():
        raise CheckFailed(f"{what} returned dtype {got.dtype}; expected integer indices (torch.long, as argmin gives): "
                          "a token is the NUMBER of a code, not its vector or its distance")
    if tuple(got.shape) != shape:
        raise CheckFailed(f"{what} returned shape {tuple(got.shape)}; expected {shape}")
    got = got.detach().cpu().long()
    if got.numel() and (int(got.min()) < 0 or int(got.max()) >= num_codes):
        raise CheckFailed(f"{what} returned indices from {int(got.min())} to {int(got.max())}; a codebook of {num_codes} "
                          f"codes has indices 0 .. {num_codes - 1}")
    return got


# --------------------------------------------------------------------------------------------------
# ch10.nearest_code
# --------------------------------------------------------------------------------------------------
# (N vectors, K codes, D, dtype); N == K once, so that a lookup over the wrong axis has the right shape.
_NEAREST_CASES = [
    (6, 4, 3, torch.float32),
    (20, 8, 5, torch.float64),
    (12, 12, 4, torch.float32),
    (50, 16, 8, torch.float64),
    (1, 5, 2, torch.float32),
    (200, 64, 16, torch.float32),
]


def _nearest_inputs(n: int, k: int, d: int, dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes of very different lengths (so a dot product picks other codes than a distance), z near random codes."""
    g = _gen(seed)
    codebook = torch.randn(k, d, generator=g) * torch.empty(k, 1).uniform_(0.3, 3.0, generator=g)
    picks = torch.randint(0, k, (n,), generator=g)
    z = codebook[picks] + 0.6 * torch.randn(n, d, generator=g)
    return z.to(dtype), codebook.to(dtype)


def _nearest_mistakes(z: torch.Tensor, codebook: torch.Tensor) -> dict[str, torch.Tensor]:
    d2 = _sq_distances(z, codebook)  # (N, K)
    zz, cc = z.double(), codebook.double()
    cos = F.normalize(zz, dim=1) @ F.normalize(cc, dim=1).T
    out = {
        "the FARTHEST code (argmax of the distances): the nearest code is the argmin": d2.argmax(dim=1),
        "the code with the largest dot product z . e (argmax of z @ codebook.T): with codes of different lengths that is "
        "not the nearest one; ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2 keeps the ||e||^2 term": (zz @ cc.T).argmax(dim=1),
        "the code with the largest cosine similarity: VQ-VAE's lookup uses the Euclidean distance, and the codes' "
        "lengths matter": cos.argmax(dim=1),
        "the nearest code by Manhattan (L1) distance; the lookup uses the squared Euclidean distance":
            (zz[:, None] - cc[None]).abs().sum(-1).argmin(dim=1),
    }
    if z.shape[0] == codebook.shape[0]:
        out["the nearest VECTOR for each code (the argmin over the vectors' axis, dim=0): take, for each vector, the "
            "argmin over the CODES axis (dim=1 of the (N, K) distances)"] = d2.argmin(dim=0)
    return out


@exercise(
    "ch10.nearest_code",
    "Nearest-code lookup",
    hint="the (N, K) squared distances ||z_n - e_k||^2 (torch.cdist, or ||z||^2 - 2 z @ codebook.T + ||e||^2), then "
    "argmin over the codes axis (dim=1): one integer per vector.",
)
def _check_nearest_code(fn) -> str:
    shown: set[str] = set()  # guard: every named mistake must give a wrong index on at least one case
    for i, (n, k, d, dtype) in enumerate(_NEAREST_CASES):
        z, codebook = _nearest_inputs(n, k, d, dtype, seed=10_000 + i)
        shown |= {e for e, wrong in _nearest_mistakes(z, codebook).items() if not bool(_is_nearest(wrong, z, codebook).all())}
    missing = set(_nearest_mistakes(*_nearest_inputs(12, 12, 4, torch.float32, 0))) - shown
    if missing:
        raise RuntimeError(f"nearest_code: no case can show {sorted(missing)}")
    for i, (n, k, d, dtype) in enumerate(_NEAREST_CASES):
        z, codebook = _nearest_inputs(n, k, d, dtype, seed=10_000 + i)
        what = f"nearest_code(z {tuple(z.shape)}, codebook {tuple(codebook.shape)}, {dtype})"
        expected = _ref_nearest_code(z, codebook)
        mistakes = _nearest_mistakes(z, codebook)
        got = call(fn, z.clone(), codebook.clone())
        if isinstance(got, torch.Tensor):
            if tuple(got.shape) == (n, d) and got.is_floating_point() and d != 1:
                raise CheckFailed(f"{what} returned shape {tuple(got.shape)}, the codes' VECTORS; return their INDICES "
                                  f"({n},) (integers, from argmin): a token is the number of a code")
            if tuple(got.shape) == (k,) and n != k:
                raise CheckFailed(f"{what} returned shape ({k},), one index per CODE: the argmin ran over the vectors' "
                                  f"axis (dim=0); take it over the codes axis (dim=1) to get one index per vector, ({n},)")
            if tuple(got.shape) in ((n, 1), (1, n)) and n != 1:
                raise CheckFailed(f"{what} returned shape {tuple(got.shape)}; expected ({n},): no keepdim, one index per "
                                  "vector")
        got = _check_indices(got, what, (n,), k)
        ok = _is_nearest(got, z, codebook)
        if bool(ok.all()):
            continue
        for explanation, wrong in mistakes.items():
            if bool(_is_nearest(wrong, z, codebook).all()):
                continue
            if torch.equal(got, wrong):
                raise CheckFailed(f"{what} returned {got[:8].tolist()}{' ...' if n > 8 else ''}; the nearest codes are "
                                  f"{expected[:8].tolist()}{' ...' if n > 8 else ''}. Your indices are {explanation}.")
        row = int((~ok).nonzero()[0])
        dist = _sq_distances(z[row : row + 1], codebook)[0]
        raise CheckFailed(f"{what}: vector {row} gets code {int(got[row])} at squared distance {float(dist[got[row]]):.4g}, "
                          f"but code {int(expected[row])} is nearer ({float(dist[expected[row]]):.4g})")
    return ("your lookup returns, for every vector, the code at the smallest squared Euclidean distance: the "
            "library's nearest_code (and diffusers' VectorQuantizer's argmin over torch.cdist).")


# --------------------------------------------------------------------------------------------------
# ch10.straight_through
# --------------------------------------------------------------------------------------------------
_STE_CASES = [((6, 4), torch.float32), ((2, 3, 4, 5), torch.float64), ((7,), torch.float32), ((3, 8, 2, 2), torch.float32)]


def _grad_or_zero(g: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if g is None else g.detach()


@exercise(
    "ch10.straight_through",
    "The straight-through estimator",
    hint="z + (z_q - z).detach(): the forward value is z_q; backward, the detached difference has no gradient, so the "
    "gradient of the output goes to z unchanged and nothing flows into z_q.",
)
def _check_straight_through(fn) -> str:
    for i, (shape, dtype) in enumerate(_STE_CASES):
        g = _gen(10_100 + i)
        z = torch.randn(shape, generator=g).to(dtype).requires_grad_(True)
        z_q = (torch.randn(shape, generator=g) * 1.5).to(dtype).requires_grad_(True)
        what = f"straight_through(z {tuple(shape)}, z_q {tuple(shape)}, {dtype})"
        got = call(fn, z, z_q)
        if got is None:
            raise CheckFailed(f"{what} returned None: did you forget `return`?")
        if not isinstance(got, torch.Tensor):
            raise CheckFailed(f"{what} returned {_type_name(got)}; expected one tensor of z's shape {tuple(shape)}")
        if same_values(got, z.detach()) and not same_values(z.detach(), z_q.detach()):
            if got.requires_grad and got.grad_fn is not None:
                g_zq = torch.autograd.grad(got.sum(), [z_q], allow_unused=True, retain_graph=True)[0]
                if g_zq is not None and bool(g_zq.abs().max() > 0):
                    raise CheckFailed(f"{what} returned the values of z with the gradient of z_q: the stop-gradient sits on "
                                      "the wrong side (z_q + (z - z_q).detach()), the reverse of the estimator. The decoder "
                                      "must see the codes and the encoder get the gradient: z + (z_q - z).detach()")
            raise CheckFailed(f"{what} returned the values of z, the encoder's output; the forward value of the estimator "
                              "is z_q (the decoder must see the codes): z + (z_q - z).detach()")
        expect_tensor(got, z_q.detach(), f"{what}: the forward value")
        if not got.requires_grad:
            raise CheckFailed(f"{what}: the value is z_q but it has no gradient at all (everything detached, or computed "
                              "under torch.no_grad()): the encoder would learn nothing from the reconstruction loss. "
                              "Keep z in the graph: z + (z_q - z).detach()")
        upstream = torch.randn(shape, generator=g).to(dtype)  # the gradient the decoder sends back
        try:
            grads = call(torch.autograd.grad, (got * upstream).sum(), [z, z_q], allow_unused=True)
        except Exception:  # noqa: BLE001 - a learner's custom autograd may fail: say so plainly
            raise CheckFailed(f"{what}: backpropagating through your output failed") from None
        g_z, g_zq = _grad_or_zero(grads[0], z), _grad_or_zero(grads[1], z_q)
        to_z, to_zq = same_values(g_z, upstream), same_values(g_zq, upstream)
        none_z, none_zq = same_values(g_z, torch.zeros_like(upstream)), same_values(g_zq, torch.zeros_like(upstream))
        if to_z and none_zq:
            continue
        if got is z_q or (none_z and to_zq and got.grad_fn is None):
            raise CheckFailed(f"{what}: you returned z_q itself, so the gradient goes to z_q (the codebook) and none to z: "
                              "the encoder before the argmin would never learn. Return z + (z_q - z).detach()")
        if none_z and to_zq:
            raise CheckFailed(f"{what}: the value is right, but the gradient goes to z_q and none reaches z: the "
                              "stop-gradient sits on the wrong side (z_q + (z - z_q).detach(), or no detach at all, "
                              "z + z_q - z, where the two z cancel). Detach the difference: z + (z_q - z).detach()")
        if to_z and to_zq:
            raise CheckFailed(f"{what}: the gradient reaches z, as it should, but ALSO z_q: the codebook would be moved by "
                              "the reconstruction loss as well (z + z_q - z.detach()). Detach the whole difference, "
                              "z + (z_q - z).detach(): the codes learn from their own loss only")
        if not to_z:
            scale = (g_z.double() * upstream.double()).sum() / (upstream.double() ** 2).sum()
            raise CheckFailed(f"{what}: the value is right, but the gradient reaching z is not the output's gradient "
                              f"copied unchanged (it is about {float(scale):.3g} times it): the backward of the estimator "
                              "is the identity, z + (z_q - z).detach()")
        raise CheckFailed(f"{what}: the gradient reaches z, but some also flows into z_q: detach (z_q - z) as a whole")
    return ("your estimator passes the codes forward and the decoder's gradient back to the encoder unchanged, and "
            "never into the codebook: z + (z_q - z).detach().")


# --------------------------------------------------------------------------------------------------
# ch10.vq_losses
# --------------------------------------------------------------------------------------------------
_VQ_LOSS_CASES = [((8, 4), torch.float32, 0.25), ((2, 3, 4, 4), torch.float64, 0.25), ((5, 16), torch.float32, 0.1),
                  ((3, 6, 2, 3), torch.float64, 0.6)]


def _pair(got: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if got is None:
        raise CheckFailed(f"{what} returned None: did you forget `return`?")
    if isinstance(got, torch.Tensor):
        raise CheckFailed(f"{what} returned one tensor of shape {tuple(got.shape)}; return the TWO losses as a tuple, "
                          "(codebook_loss, commitment_loss), each a 0-d tensor (the quantiser adds them)")
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise CheckFailed(f"{what} returned {_type_name(got)}; expected a tuple (codebook_loss, commitment_loss)")
    for name, loss in zip(("codebook_loss", "commitment_loss"), got):
        if not isinstance(loss, torch.Tensor):
            raise CheckFailed(f"{what}: {name} is {_type_name(loss)}; expected a 0-d torch.Tensor (so .backward() works)")
        if loss.numel() != 1:
            raise CheckFailed(f"{what}: {name} has shape {tuple(loss.shape)}; expected a single number (the mean over "
                              "every element)")
        if loss.dim() != 0:
            raise CheckFailed(f"{what}: {name} has shape {tuple(loss.shape)}; expected a 0-d tensor, shape ()")
    return got[0], got[1]


def _loss_grads(loss: torch.Tensor, z: torch.Tensor, z_q: torch.Tensor, what: str, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not loss.requires_grad:
        raise CheckFailed(f"{what}: {name} has no gradient at all (both sides detached, .item(), or torch.no_grad()): it "
                          f"would train nothing")
    try:
        g = call(torch.autograd.grad, loss, [z, z_q], allow_unused=True, retain_graph=True)
    except Exception:  # noqa: BLE001
        raise CheckFailed(f"{what}: backpropagating through your {name} failed") from None
    return _grad_or_zero(g[0], z), _grad_or_zero(g[1], z_q)


@exercise(
    "ch10.vq_losses",
    "The VQ-VAE losses: codebook and commitment",
    hint="codebook_loss = mse(z_q, z.detach()) moves only the codes; commitment_loss = beta * mse(z, z_q.detach()) moves "
    "only the encoder (F.mse_loss averages over every element). beta weighs the COMMITMENT term.",
)
def _check_vq_losses(fn) -> str:
    for i, (shape, dtype, beta) in enumerate(_VQ_LOSS_CASES):
        g = _gen(10_200 + i)
        z0 = torch.randn(shape, generator=g).to(dtype)
        zq0 = (z0 + 0.7 * torch.randn(shape, generator=g)).to(dtype)
        what = f"vq_losses(z {tuple(shape)}, z_q {tuple(shape)}, beta={beta:g}, {dtype})"
        z, z_q = z0.clone().requires_grad_(True), zq0.clone().requires_grad_(True)
        got = call(fn, z, z_q, beta)
        cb, cm = _pair(got, what)
        for name, loss in (("codebook_loss", cb), ("commitment_loss", cm)):
            if loss.dtype != dtype:
                raise CheckFailed(f"{what}: {name} has dtype {loss.dtype}; expected {dtype} (the dtype of the inputs)")
        mse = F.mse_loss(zq0, z0).item()
        d = shape[-1] if len(shape) == 2 else shape[1]
        right = (mse, beta * mse)
        value = (cb.item(), cm.item())
        close = lambda a, b: abs(a - b) <= 1e-5 + 1e-4 * abs(b)  # noqa: E731
        if not (close(value[0], right[0]) and close(value[1], right[1])):
            g_first = _loss_grads(cb, z, z_q, what, "codebook_loss") if cb.requires_grad else None
            named = {
                "beta on the CODEBOOK term and 1 on the commitment term (diffusers' VectorQuantizer with legacy=True keeps "
                "that bug for old checkpoints): the codebook loss is mse(z_q, sg[z]), the commitment loss beta * "
                "mse(z, sg[z_q])": (beta * mse, mse),
                "both terms without beta: the commitment loss is beta * mse(z, z_q.detach())": (mse, mse),
                "beta on both terms: only the commitment loss carries beta": (beta * mse, beta * mse),
                "the squared errors SUMMED over every element: both losses are means (F.mse_loss)":
                    (mse * z0.numel(), beta * mse * z0.numel()),
                "the squared distances summed over the code dimension and averaged over the vectors; the losses average "
                "over every element (F.mse_loss), as the library and diffusers do": (mse * d, beta * mse * d),
                "the root of the mean squared error: both losses are mean squared errors, no square root":
                    (math.sqrt(mse), beta * math.sqrt(mse)),
            }
            for explanation, (a, b) in named.items():
                if close(value[0], a) and close(value[1], b):
                    if a == beta * mse and b == mse and g_first is not None and same_values(g_first[1], torch.zeros_like(z_q)):
                        raise CheckFailed(f"{what} returned ({value[0]:.5g}, {value[1]:.5g}); expected ({right[0]:.5g}, "
                                          f"{right[1]:.5g}). The two losses come in the other order: return "
                                          "(codebook_loss, commitment_loss)")
                    raise CheckFailed(f"{what} returned ({value[0]:.5g}, {value[1]:.5g}); expected ({right[0]:.5g}, "
                                      f"{right[1]:.5g}). That is {explanation}.")
            raise CheckFailed(f"{what} returned ({value[0]:.5g}, {value[1]:.5g}); expected (mse(z_q, z), beta * mse(z, z_q)) "
                              f"= ({right[0]:.5g}, {right[1]:.5g})")
        # Which side each loss moves.
        ref_z, ref_zq = z0.clone().requires_grad_(True), zq0.clone().requires_grad_(True)
        ref_cb, ref_cm = _ref_vq_losses(ref_z, ref_zq, beta)
        e_cb = torch.autograd.grad(ref_cb, [ref_zq])[0]  # the codebook loss moves z_q only
        e_cm = torch.autograd.grad(ref_cm, [ref_z])[0]  # the commitment loss moves z only
        zero_z, zero_zq = torch.zeros_like(z0), torch.zeros_like(zq0)
        for name, loss, side, other, expected_grad in (("codebook_loss", cb, "z_q", "z", e_cb),
                                                       ("commitment_loss", cm, "z", "z_q", e_cm)):
            gz, gzq = _loss_grads(loss, z, z_q, what, name)
            g_side, g_other = (gzq, gz) if side == "z_q" else (gz, gzq)
            tol = 1e-5 * max(1.0, float(expected_grad.abs().max()))
            side_ok, other_zero = same_values(g_side, expected_grad, atol=tol), same_values(g_other, zero_z, atol=tol)
            if side_ok and other_zero:
                continue
            moves = "the codes" if side == "z_q" else "the encoder"
            if not other_zero and side_ok:
                raise CheckFailed(f"{what}: the values are right, but {name} also sends a gradient to {other}: it should "
                                  f"move {moves} only, so {other} goes in detached ({other}.detach(), sg[{other}] in "
                                  "the paper)")
            if not other_zero and same_values(g_side, zero_zq if side == "z_q" else zero_z, atol=tol):
                raise CheckFailed(f"{what}: the values are right, but {name} sends its gradient to {other} and none to "
                                  f"{side}: the stop-gradient is on the wrong side. {name} moves {moves}: detach "
                                  f"{other}, not {side}")
            if same_values(g_side, zero_z, atol=tol):
                raise CheckFailed(f"{what}: the values are right, but no gradient of {name} reaches {side}: it should "
                                  f"move {moves} (detach {other} only)")
            raise CheckFailed(f"{what}: the values are right, but the gradient of {name} with respect to {side} is not "
                              f"the library's: {name} should move {moves} only")
    return ("your losses equal VQ-VAE's (eq. 3): the codebook loss moves only the codes, the commitment loss, weighted "
            "by beta, only the encoder; the values and both stop-gradients match the library's vq_losses.")


# --------------------------------------------------------------------------------------------------
# ch10.image_to_tokens and ch10.tokens_to_image: an image as a token sequence, in raster order
# --------------------------------------------------------------------------------------------------
# (B, image H, image W, code dim D, K codes); the fixed encoder divides H and W by 4. One grid is not square.
_TOKEN_CASES = [(2, 16, 16, 4, 12), (3, 32, 32, 8, 32), (2, 16, 32, 6, 16), (1, 24, 16, 5, 10)]


class _FixedEncoder(nn.Module):
    """images (B, 3, H, W) -> (B, D, H/4, W/4): a strided convolution and a second one, seeded (the check's encoder)."""

    def __init__(self, dim: int, seed: int):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.patch = nn.Conv2d(3, 16, kernel_size=4, stride=4)
            self.mix = nn.Conv2d(16, dim, kernel_size=3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.mix(F.gelu(self.patch(images)))


class _FixedDecoder(nn.Module):
    """z (B, D, h, w) -> images (B, 3, 4h, 4w): a 3x3 convolution, then a 4x transposed convolution, seeded."""

    def __init__(self, dim: int, seed: int):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.mix = nn.Conv2d(dim, 16, kernel_size=3, padding=1)
            self.up = nn.ConvTranspose2d(16, 3, kernel_size=4, stride=4)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.up(F.gelu(self.mix(z))))


@lru_cache(maxsize=8)
def _token_case(i: int) -> tuple[torch.Tensor, nn.Module, nn.Module, torch.Tensor]:
    """(images, encoder, decoder, codebook) of case ``i``: codes taken from the encoder's own outputs, plus noise."""
    from mmllm_course.data import ShapesWorldConfig, generate_shapes

    b, h, w, d, k = _TOKEN_CASES[i]
    side = max(h, w)
    images = generate_shapes(b, seed=10_300 + i, config=ShapesWorldConfig(image_size=max(side, 16))).images[:, :, :h, :w]
    encoder, decoder = _FixedEncoder(d, 10_310 + i).eval(), _FixedDecoder(d, 10_320 + i).eval()
    with torch.no_grad():
        z = encoder(images).permute(0, 2, 3, 1).reshape(-1, d)  # (B*h*w, D)
    g = _gen(10_330 + i)
    codebook = z[torch.randint(0, z.shape[0], (k,), generator=g)] + 0.05 * torch.randn(k, d, generator=g)
    encoder.requires_grad_(False)
    decoder.requires_grad_(False)
    return images.contiguous(), encoder, decoder, codebook


def image_to_tokens_reference(images: torch.Tensor, encoder: nn.Module, codebook: torch.Tensor) -> torch.Tensor:
    """images (B, 3, H, W) -> tokens (B, h*w): the encoder's grid, the nearest code per cell, row by row (raster order)."""
    z = encoder(images)  # (B, D, h, w)
    b, d, h, w = z.shape
    return _ref_nearest_code(z.permute(0, 2, 3, 1).reshape(-1, d), codebook).view(b, h * w)


def tokens_to_image_reference(tokens: torch.Tensor, decoder: nn.Module, codebook: torch.Tensor,
                              grid: tuple[int, int]) -> torch.Tensor:
    """tokens (B, h*w) in raster order -> the codes on their (h, w) grid (B, D, h, w) -> the decoder's images."""
    h, w = grid
    vectors = codebook[tokens]  # (B, h*w, D)
    return decoder(vectors.view(tokens.shape[0], h, w, -1).permute(0, 3, 1, 2))


def _tokens_mistakes(images: torch.Tensor, encoder: nn.Module, codebook: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        z = encoder(images)
    b, d, h, w = z.shape
    grid = _ref_nearest_code(z.permute(0, 2, 3, 1).reshape(-1, d), codebook).view(b, h, w)
    d2 = torch.cdist(z.permute(0, 2, 3, 1).reshape(-1, d), codebook)
    return {
        "the tokens in COLUMN-major order (down each column first): raster order reads the grid row by row, left to "
        "right, as text is read: indices (B, h, w) flattened to (B, h*w)": grid.transpose(1, 2).reshape(b, -1),
        "the codes of vectors that mix channels and positions: (B, D, h, w) flattened straight to (-1, D) takes D "
        "consecutive numbers of ONE channel; move the channels last first, z.permute(0, 2, 3, 1), then reshape":
            _ref_nearest_code(z.reshape(-1, d), codebook).view(b, -1),
        "the farthest code for every cell (argmax); the token is the nearest code (argmin)": d2.argmax(1).view(b, -1),
        "the cells of the whole batch interleaved (the batch axis moved after the grid axes before flattening): each "
        "image's tokens are its own h*w cells": grid.permute(1, 2, 0).reshape(-1).view(b, -1),
    }


@exercise(
    "ch10.image_to_tokens",
    "An image as a token sequence (raster order)",
    hint="z = encoder(images) (B, D, h, w); move D last, z.permute(0, 2, 3, 1) (B, h, w, D), flatten to (B*h*w, D), "
    "nearest code of each row, then view as (B, h*w): row by row, left to right.",
)
def _check_image_to_tokens(fn) -> str:
    for i in range(len(_TOKEN_CASES)):
        images, encoder, _, codebook = _token_case(i)
        b, k = images.shape[0], codebook.shape[0]
        with torch.no_grad():
            expected = image_to_tokens_reference(images, encoder, codebook)
            z = encoder(images)
        h, w = z.shape[2:]
        what = (f"image_to_tokens(images {tuple(images.shape)}, encoder -> (B, {z.shape[1]}, {h}, {w}), codebook "
                f"{tuple(codebook.shape)})")
        mistakes = _tokens_mistakes(images, encoder, codebook)
        with torch.no_grad():
            got = call(fn, images.clone(), encoder, codebook.clone())
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (b, h, w) and h * w > 1:
            raise CheckFailed(f"{what} returned shape {tuple(got.shape)}, the token GRID; a language model reads a "
                              f"sequence: flatten it to (B, h*w) = {(b, h * w)}, row by row")
        got = _check_indices(got, what, (b, h * w), k)
        cells = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        if bool(_is_nearest(got.reshape(-1), cells, codebook).all()):
            continue
        explanation = _first_named(got, expected, mistakes, atol=0, rtol=0)
        if explanation:
            raise CheckFailed(f"{what}: image 0 starts {got[0, :8].tolist()}, expected {expected[0, :8].tolist()}. Your "
                              f"tokens are {explanation}.")
        pos = int((got != expected).reshape(-1).nonzero()[0])
        raise CheckFailed(f"{what}: the tokens first differ at image {pos // (h * w)}, position {pos % (h * w)} (row "
                          f"{(pos % (h * w)) // w}, column {pos % w} of the {h}x{w} grid): got {int(got.reshape(-1)[pos])}, "
                          f"expected {int(expected.reshape(-1)[pos])}")
    return ("your tokens are the nearest codes of the encoder's grid cells, read row by row: the sequence an LM writes "
            "(h*w tokens per image).")


def _decode_mistakes(tokens: torch.Tensor, decoder: nn.Module, codebook: torch.Tensor, grid: tuple[int, int]) -> dict[str, torch.Tensor]:
    h, w = grid
    b = tokens.shape[0]
    vectors = codebook[tokens]  # (B, h*w, D)
    out = {
        "the tokens laid out COLUMN by column: raster order fills the grid row by row, vectors.view(B, h, w, D)":
            decoder(vectors.view(b, w, h, -1).permute(0, 3, 2, 1)),
        "the (B, h*w, D) vectors viewed straight as (B, D, h, w), which scrambles channels and positions: view them as "
        "(B, h, w, D), then permute(0, 3, 1, 2)": decoder(vectors.reshape(b, -1, h, w)),
    }
    if h != w:
        out["the grid read as (w, h): the tokens fill h rows of w"] = decoder(vectors.view(b, w, h, -1).permute(0, 3, 1, 2))
    return out


@exercise(
    "ch10.tokens_to_image",
    "A token sequence back to an image",
    hint="codebook[tokens] (B, h*w, D), view as (B, h, w, D) (row by row), permute(0, 3, 1, 2) to (B, D, h, w), decoder.",
)
def _check_tokens_to_image(fn) -> str:
    for i in range(len(_TOKEN_CASES)):
        images, encoder, decoder, codebook = _token_case(i)
        with torch.no_grad():
            z = encoder(images)
            h, w = z.shape[2:]
            g = _gen(10_340 + i)
            tokens = torch.randint(0, codebook.shape[0], (images.shape[0], h * w), generator=g)  # any tokens an LM writes
            expected = tokens_to_image_reference(tokens, decoder, codebook, (h, w))
            mistakes = _decode_mistakes(tokens, decoder, codebook, (h, w))
        what = f"tokens_to_image(tokens {tuple(tokens.shape)}, decoder, codebook {tuple(codebook.shape)}, grid=({h}, {w}))"
        with torch.no_grad():
            got = call(fn, tokens.clone(), decoder, codebook.clone(), (int(h), int(w)))
        if isinstance(got, torch.Tensor) and got.dim() == 4 and tuple(got.shape[1:]) == (codebook.shape[1], h, w):
            raise CheckFailed(f"{what} returned shape {tuple(got.shape)}, the code vectors on their grid; run the decoder "
                              f"on them to get the images {tuple(expected.shape)}")
        try:
            expect_tensor(got, expected, what)
        except CheckFailed as exc:
            explanation = _first_named(got, expected, mistakes)
            if explanation:
                raise CheckFailed(f"{exc}. Your output equals {explanation}.") from None
            raise
    return "your images are the decoder's output for the codes put back on their grid, row by row."


# --------------------------------------------------------------------------------------------------
# Build tier: the quantiser as a module
# --------------------------------------------------------------------------------------------------
_QUANTIZER_CASES = [(16, 4, 0.25, (2, 4, 3, 5), 10_400), (64, 8, 0.25, (3, 8, 4, 4), 10_401), (10, 6, 0.5, (1, 6, 2, 7), 10_402)]


def _unpack_quantizer_output(out: Any, what: str) -> tuple[Any, Any, Any]:
    """``(z_q, loss, indices)`` from a tuple, or from an object with those attributes (the library's QuantizerOutput)."""
    if out is None:
        raise CheckFailed(f"{what} returned None: did you forget `return`?")
    if all(hasattr(out, name) for name in ("z_q", "loss", "indices")):
        return out.z_q, out.loss, out.indices
    if isinstance(out, torch.Tensor):
        raise CheckFailed(f"{what} returned one tensor of shape {tuple(out.shape)}; return the tuple (z_q, loss, indices)")
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        raise CheckFailed(f"{what} returned {_type_name(out)}"
                          + (f" of {len(out)}" if isinstance(out, (tuple, list)) else "")
                          + "; expected the tuple (z_q, loss, indices)")
    return out[0], out[1], out[2]


def _library_quantizer(num_codes: int, code_dim: int, beta: float, seed: int) -> CodebookQuantizer:
    """The library's quantiser with codes spread at the data's scale (so every mistake shows)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ref = CodebookQuantizer(num_codes, code_dim, beta)
    with torch.no_grad():
        g = _gen(seed + 7)
        ref.embedding.weight.copy_(torch.randn(num_codes, code_dim, generator=g)
                                   * torch.empty(num_codes, 1).uniform_(0.5, 2.0, generator=g))
    return ref


def _quantizer_value_mistakes(ref: CodebookQuantizer, z: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Indices (B, H, W) and losses of the usual mistakes, on the same weights and input."""
    b, d, h, w = z.shape
    weight = ref.embedding.weight.detach()
    z_last = z.permute(0, 2, 3, 1).reshape(-1, d)
    mixed = z.reshape(-1, d)  # channels and positions mixed
    d2 = torch.cdist(z_last, weight)
    indices = {
        "the codes of vectors that mix channels and positions: z (B, D, H, W) reshaped straight to (-1, D); move the "
        "channels last first, z.permute(0, 2, 3, 1), then reshape": _ref_nearest_code(mixed, weight).view(b, h, w),
        "the farthest code (argmax); the nearest code is the argmin": d2.argmax(1).view(b, h, w),
        "the code with the largest dot product: keep ||e||^2 in the distance": (z_last @ weight.T).argmax(1).view(b, h, w),
    }
    z_q = weight[d2.argmin(1)]
    mse = F.mse_loss(z_q, z_last).item()
    losses = {
        "the codebook loss alone: add the commitment loss, beta * mse(z, z_q.detach())": mse,
        "the commitment loss alone: add the codebook loss, mse(z_q, z.detach())": ref.beta * mse,
        "both terms without beta: mse(z_q, sg[z]) + beta * mse(z, sg[z_q])": 2 * mse,
    }
    return indices, losses


@exercise(
    "ch10.quantizer",
    "Build the quantiser as a module (loads diffusers-compatible weights)",
    hint="self.embedding = nn.Embedding(num_codes, code_dim); forward: z (B, D, H, W) -> permute to (B, H, W, D), nearest "
    "code per vector, z_q = self.embedding(indices), loss = mse(z_q, sg[z]) + beta * mse(z, sg[z_q]), then the "
    "straight-through z + (z_q - z).detach() permuted back to (B, D, H, W); return (z_q, loss, indices (B, H, W)).",
    timeout=30.0,
)
def _check_quantizer(cls) -> str:
    for k, d, beta, shape, seed in _QUANTIZER_CASES:
        what = f"VectorQuantizer({k}, {d}, beta={beta:g})"
        mine = build_learner_module(cls, what, k, d, beta)
        ref = _library_quantizer(k, d, beta, seed)
        load_reference_weights(mine, ref, what)
        b, _, h, w = shape
        g = _gen(seed + 50)
        z0 = torch.randn(shape, generator=g) * 1.2
        case = f"{what} on z {tuple(shape)}"
        was_training = mine.training
        try:
            mine.eval()
            z = z0.clone().requires_grad_(True)
            out = call(mine, z)
            z_q, loss, indices = _unpack_quantizer_output(out, case)
            ref_z = z0.clone().requires_grad_(True)
            ref_out = ref(ref_z)
            # 1. indices
            if isinstance(indices, torch.Tensor) and tuple(indices.shape) == (b * h * w,):
                raise CheckFailed(f"{case}: indices have shape {tuple(indices.shape)}, one flat row; return them on the "
                                  f"grid, (B, H, W) = {(b, h, w)} (view(b, h, w)), as the library and diffusers "
                                  "(sane_index_shape=True) do")
            got_idx = _check_indices(indices, f"{case}: indices", (b, h, w), k)
            cells = z0.permute(0, 2, 3, 1).reshape(-1, d)
            if not bool(_is_nearest(got_idx.reshape(-1), cells, ref.embedding.weight.detach()).all()):
                index_mistakes, _ = _quantizer_value_mistakes(ref, z0)
                explanation = _first_named(got_idx, ref_out.indices, index_mistakes, atol=0, rtol=0)
                raise CheckFailed(f"{case}: your indices are not the nearest codes (got {got_idx.reshape(-1)[:8].tolist()}"
                                  f", expected {ref_out.indices.reshape(-1)[:8].tolist()})"
                                  + (f". Your indices are {explanation}." if explanation else ""))
            # 2. z_q (the straight-through output) and the loss
            expect_tensor(z_q, ref_out.z_q.detach(), f"{case}: z_q")
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise CheckFailed(f"{case}: loss is {_type_name(loss)}"
                                  + (f" of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else "")
                                  + "; expected a 0-d tensor, codebook_loss + commitment_loss")
            if abs(loss.item() - ref_out.loss.item()) > 1e-5 + 1e-4 * abs(ref_out.loss.item()):
                _, loss_mistakes = _quantizer_value_mistakes(ref, z0)
                named = next((e for e, v in loss_mistakes.items() if abs(loss.item() - v) <= 1e-5 + 1e-4 * abs(v)), None)
                raise CheckFailed(f"{case}: loss is {loss.item():.6g}, expected {ref_out.loss.item():.6g}"
                                  + (f". That is {named}." if named else ""))
            # 3. the gradient paths: z_q's gradient goes to z unchanged and not to the codebook; the loss moves both.
            upstream = torch.randn(shape, generator=g)
            weight, ref_weight = dict(mine.named_parameters())["embedding.weight"], ref.embedding.weight
            if not z_q.requires_grad:
                raise CheckFailed(f"{case}: z_q has no gradient at all: return the straight-through z + (z_q - z).detach(), "
                                  "so the decoder's gradient reaches the encoder")
            gz, gw = call(torch.autograd.grad, (z_q * upstream).sum(), [z, weight], allow_unused=True, retain_graph=True)
            gz, gw = _grad_or_zero(gz, z), _grad_or_zero(gw, weight)
            if same_values(gz, torch.zeros_like(gz)):
                raise CheckFailed(f"{case}: z_q's gradient does not reach the input z (it goes "
                                  + ("to the codebook instead" if gw.abs().max() > 0 else "nowhere")
                                  + "): z_q is returned without the straight-through trick. Return z + (z_q - z).detach()")
            if not same_values(gz, upstream):
                raise CheckFailed(f"{case}: z_q's gradient reaches z, but not unchanged: the straight-through estimator's "
                                  "backward is the identity, z + (z_q - z).detach()")
            if not same_values(gw, torch.zeros_like(gw)):
                raise CheckFailed(f"{case}: z_q's gradient also reaches the codebook (embedding.weight): the codes must "
                                  "learn from the codebook loss only; detach the whole difference (z_q - z)")
            if not loss.requires_grad:
                raise CheckFailed(f"{case}: the loss has no gradient: it must move the codes and the encoder")
            lz, lw = call(torch.autograd.grad, loss, [z, weight], allow_unused=True)
            rz, rw = torch.autograd.grad(ref_out.loss, [ref_z, ref_weight])
            lz, lw = _grad_or_zero(lz, z), _grad_or_zero(lw, weight)
            tol_z, tol_w = (1e-5 * max(1.0, float(r.abs().max())) for r in (rz, rw))
            if (ref.beta != 1.0 and same_values(lz, rz / ref.beta, atol=tol_z) and same_values(lw, rw * ref.beta, atol=tol_w)):
                raise CheckFailed(f"{case}: the loss's value is right (the same total), but beta weighs the CODEBOOK's "
                                  "gradient and the encoder's has weight 1: beta on the codebook term, diffusers' legacy=True "
                                  "default (a bug it keeps for old checkpoints), or, the same gradients, the two "
                                  "stop-gradients swapped. The paper's loss, and diffusers' legacy=False: mse(z_q, sg[z]) + "
                                  "beta * mse(z, sg[z_q])")
            for name, mine_g, ref_g, moves in (("the input z", lz, rz, "the commitment term, beta * mse(z, sg[z_q])"),
                                               ("the codebook (embedding.weight)", lw, rw, "the codebook term, mse(z_q, sg[z])")):
                tol = 1e-5 * max(1.0, float(ref_g.abs().max()))
                if not same_values(mine_g, ref_g, atol=tol):
                    raise CheckFailed(f"{case}: the loss's value is right but its gradient with respect to {name} is not "
                                      f"the library's (max abs difference {float((mine_g - ref_g).abs().max()):.3g}): "
                                      f"{name} is moved by {moves} only; check which side each term detaches")
        finally:
            mine.train(was_training)
    return ("with the library's weights loaded (diffusers' VectorQuantizer's state_dict), your quantiser gives the same "
            "indices, straight-through codes, loss and gradient paths.")


# --------------------------------------------------------------------------------------------------
# Train tier: the learner's trained tokenizer, measured on held-out images
# --------------------------------------------------------------------------------------------------
TRAIN_TOKENIZER_EVAL_SEED = 100_010
TRAIN_TOKENIZER_EVAL_SIZE = 256
TRAIN_TOKENIZER_MAX_TOKENS = 64  # tokens per image at most: a compact tokenizer (an 8x8 grid for 32x32 images)
TRAIN_TOKENIZER_MAX_CODES = 1024
TRAIN_TOKENIZER_PSNR = 22.0  # dB on held-out images, from the tokens alone (set from the 5-seed run, see the docstring)
TRAIN_TOKENIZER_JUDGE_COLOR = 0.90  # the chapter-9 judge reads the colour on this fraction of the reconstructions
TRAIN_TOKENIZER_MIN_CODES = 16  # distinct codes used on the held-out images
TRAIN_TOKENIZER_STEPS = 1000  # the solution's training steps


@lru_cache(maxsize=1)
def train_tokenizer_eval_data():
    """The check's held-out images: a :class:`~mmllm_course.data.ShapesBatch` of 256 one-shape 32x32 images."""
    from mmllm_course.data import generate_shapes

    return generate_shapes(TRAIN_TOKENIZER_EVAL_SIZE, seed=TRAIN_TOKENIZER_EVAL_SEED)


def _tokenizer_codes(model: Any) -> int:
    quantizer = getattr(model, "quantizer", None)
    embedding = getattr(quantizer, "embedding", None)
    if isinstance(embedding, nn.Embedding):
        return int(embedding.num_embeddings)
    num = getattr(model, "num_codes", None)
    if isinstance(num, int) and num > 0:
        return num
    raise CheckFailed("your tokenizer has no `quantizer.embedding` (an nn.Embedding, your VectorQuantizer's) nor a "
                      "`num_codes`: the check needs the codebook's size to measure its usage")


def tokenizer_metrics(model: Any, images: torch.Tensor | None = None, batch: int = 128) -> dict[str, float]:
    """What ``ch10.train_tokenizer`` measures: ``decode(encode(images))`` against the images, and code usage.

    Returns ``{"mse", "psnr" (dB, images in [0, 1]), "codes_used", "num_codes", "tokens_per_image", "judge_color_shape",
    "judge_shape", "judge_color"}``. Raises :class:`CheckFailed` when the tokenizer's interface is wrong.
    """
    from mmllm_course.generators.judge import judge_images
    from mmllm_course.generators.pretrain import load_judge

    shapes = train_tokenizer_eval_data()
    images = shapes.images if images is None else images
    if not callable(getattr(model, "encode", None)) or not callable(getattr(model, "decode", None)):
        raise CheckFailed(f"expected your trained tokenizer, an object with encode(images) and decode(tokens) methods, "
                          f"got {_type_name(model)}")
    k = _tokenizer_codes(model)
    is_module = isinstance(model, nn.Module)
    was_training = model.training if is_module else None
    device = next((p.device for p in model.parameters()), torch.device("cpu")) if is_module else torch.device("cpu")
    recons, all_tokens = [], []
    try:
        if is_module:
            model.eval()
        with torch.no_grad():
            for start in range(0, images.shape[0], batch):
                x = images[start : start + batch]
                tokens = call(model.encode, x.clone().to(device))
                what = f"your encode(images {tuple(x.shape)})"
                if tokens is None:
                    raise CheckFailed(f"{what} returned None: did you forget `return`?")
                if not isinstance(tokens, torch.Tensor):
                    raise CheckFailed(f"{what} returned {_type_name(tokens)}; expected the token grid (B, h, w), integers")
                if tokens.is_floating_point() or tokens.dtype == torch.bool or tokens.is_complex():
                    raise CheckFailed(f"{what} returned dtype {tokens.dtype}: a tokenizer's output is discrete, integer "
                                      "code indices (torch.long); the decoder must work from them alone")
                if tokens.dim() < 2 or tokens.shape[0] != x.shape[0]:
                    raise CheckFailed(f"{what} returned shape {tuple(tokens.shape)}; expected the token grid (B, h, w) "
                                      f"with B = {x.shape[0]}")
                per_image = tokens[0].numel()
                if per_image > TRAIN_TOKENIZER_MAX_TOKENS:
                    raise CheckFailed(f"{what} gives {per_image} tokens per image; a compact tokenizer here gives at most "
                                      f"{TRAIN_TOKENIZER_MAX_TOKENS} (an 8x8 grid): downsample more in the encoder")
                if int(tokens.min()) < 0 or int(tokens.max()) >= k:
                    raise CheckFailed(f"{what} returned tokens from {int(tokens.min())} to {int(tokens.max())}; your "
                                      f"codebook has {k} codes (0 .. {k - 1})")
                out = call(model.decode, tokens.clone())
                name = f"your decode(tokens {tuple(tokens.shape)})"
                if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(x.shape):
                    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else _type_name(out)
                    raise CheckFailed(f"{name} returned {shape}; expected images {tuple(x.shape)}")
                if not out.is_floating_point() or not torch.isfinite(out).all():
                    raise CheckFailed(f"{name} returned non-finite or non-float values (dtype {out.dtype})")
                recons.append(out.detach().cpu().float().clamp(0.0, 1.0))
                all_tokens.append(tokens.detach().cpu().long().reshape(x.shape[0], -1))
    finally:
        if is_module:
            model.train(was_training)
    recon, tokens = torch.cat(recons), torch.cat(all_tokens)
    mse = F.mse_loss(recon, images.float()).item()
    judged = judge_images(load_judge(), recon, shapes)
    return {
        "mse": mse, "psnr": 10.0 * math.log10(1.0 / max(mse, 1e-12)), "codes_used": float(tokens.unique().numel()),
        "num_codes": float(k), "tokens_per_image": float(tokens.shape[1]), "judge_color_shape": judged["color_shape"],
        "judge_shape": judged["shape"], "judge_color": judged["color"],
    }


def train_tokenizer_failures(metrics: dict[str, float]) -> list[str]:
    """The bars of ``ch10.train_tokenizer`` that ``metrics`` (from :func:`tokenizer_metrics`) misses; empty if none."""
    out = []
    if metrics["psnr"] < TRAIN_TOKENIZER_PSNR:
        out.append(f"PSNR {metrics['psnr']:.2f} dB < {TRAIN_TOKENIZER_PSNR:g} dB")
    if metrics["judge_color"] < TRAIN_TOKENIZER_JUDGE_COLOR:
        out.append(f"judge colour {metrics['judge_color']:.1%} < {TRAIN_TOKENIZER_JUDGE_COLOR:.0%}")
    if metrics["codes_used"] < TRAIN_TOKENIZER_MIN_CODES:
        out.append(f"codes used {metrics['codes_used']:.0f} < {TRAIN_TOKENIZER_MIN_CODES}")
    return out


@exercise(
    "ch10.train_tokenizer",
    "Train a VQ tokenizer: held-out reconstruction from its tokens, and codebook usage",
    hint="train longer, start the codebook from encoder outputs, and restart the codes no vector picks (dead codes) every "
    "few hundred steps; a codebook of 128-512 codes on an 8x8 grid keeps a shape's edges.",
    timeout=60.0,  # loads the shipped judge, encodes and decodes 256 images
)
def _check_train_tokenizer(model) -> str:
    if isinstance(model, type):
        raise CheckFailed(f"got the class {model.__name__}; pass your TRAINED tokenizer (the object), not its class")
    if model is not None and not callable(getattr(model, "encode", None)) and callable(model):
        try:
            params = inspect.signature(model).parameters.values()
        except (TypeError, ValueError):
            params = []
        required = [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if required:
            raise CheckFailed(f"got a function that needs arguments ({', '.join(required)}); pass your TRAINED tokenizer "
                              "(the object with encode and decode), e.g. check('ch10.train_tokenizer', my_tokenizer)")
        model = call(model)  # a function with no arguments that returns the tokenizer
    if model is None:
        raise CheckFailed("got None instead of a trained tokenizer: did a function forget `return`?")
    m = tokenizer_metrics(model)
    detail = (f"on {TRAIN_TOKENIZER_EVAL_SIZE} new images, from {m['tokens_per_image']:.0f} tokens each (codebook of "
              f"{m['num_codes']:.0f}: {m['tokens_per_image'] * math.log2(max(m['num_codes'], 2)):.0f} bits per image): "
              f"PSNR {m['psnr']:.2f} dB (MSE {m['mse']:.5f}); the chapter-9 judge reads colour and shape on "
              f"{m['judge_color_shape']:.0%} of the reconstructions (shape {m['judge_shape']:.0%}, colour "
              f"{m['judge_color']:.0%}); {m['codes_used']:.0f} of {m['num_codes']:.0f} codes used")
    misses = train_tokenizer_failures(m)
    if misses:
        why = []
        if m["codes_used"] < TRAIN_TOKENIZER_MIN_CODES:
            why.append("most codes are dead (no vector picks them, so they never move): initialise the codebook from "
                       "encoder outputs and restart unused codes during training")
        if m["judge_color"] < TRAIN_TOKENIZER_JUDGE_COLOR:
            why.append("the colours are lost: the grey background is most of every image, so weight the shape's pixels "
                       "more in the squared error")
        raise CheckFailed(f"{detail}. Below the bar: {'; '.join(misses)}" + (f". {'; '.join(why).capitalize()}." if why else "."))
    return (f"{detail}. Above every bar (PSNR {TRAIN_TOKENIZER_PSNR:g} dB, judge colour {TRAIN_TOKENIZER_JUDGE_COLOR:.0%}, "
            f"{TRAIN_TOKENIZER_MIN_CODES} codes used; the shape is reported, not graded: chance is 20%): your image is now a "
            "short sequence of integers that decodes back. The shape's edges are what a short training of 64 tokens of "
            "7 bits loses first: the chapter's trade-off.")


def _train_tokenizer_solution_modules(num_codes: int = 128, code_dim: int = 16) -> nn.Module:
    """The solution notebook's tokenizer, with the library's quantiser in place of the learner's (for the seed runs)."""

    class Tokenizer(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(nn.Conv2d(3, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
                                         nn.Conv2d(64, code_dim, 1))  # (B, 3, 32, 32) -> (B, D, 8, 8)
            self.quantizer = CodebookQuantizer(num_codes, code_dim, beta=0.25)
            self.decoder = nn.Sequential(nn.Conv2d(code_dim, 64, 3, 1, 1), nn.ReLU(), nn.ConvTranspose2d(64, 32, 4, 2, 1),
                                         nn.ReLU(), nn.ConvTranspose2d(32, 3, 4, 2, 1))

        def forward(self, images):
            out = self.quantizer(self.encoder(images))
            return self.decoder(out.z_q), out.loss, out.indices

        def encode(self, images):
            return self.quantizer(self.encoder(images)).indices

        def decode(self, tokens):
            return self.decoder(self.quantizer.embedding(tokens).permute(0, 3, 1, 2))

    return Tokenizer()


def train_tokenizer_solution(seed: int = 0, steps: int = TRAIN_TOKENIZER_STEPS, train_size: int = 4000) -> nn.Module:
    """The solution notebook's training (exercise 8) with the library's quantiser: the trained tokenizer, eval mode.

    Seed ``seed`` sets the weights, the training images (``generate_shapes(train_size, seed=seed)``) and the batch
    order. Batches of 64, Adam at a constant 2e-3, the squared error weighted 5x on the shape's pixels (the grey
    background is most of an image: unweighted, seed 4 lost the colours, 47%), the codebook started from encoder
    outputs at step 0, and every
    code no vector of the last batch picked moved onto a random encoder output every 100 steps for the first 80% of
    the steps (a restart at the very end leaves the decoder codes it never learned: seed 4 then lost the colour).
    """
    from mmllm_course.data import generate_shapes

    images = generate_shapes(train_size, seed=seed).images
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _train_tokenizer_solution_modules()
    k, d = model.quantizer.num_codes, model.quantizer.code_dim
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = _gen(seed)
    model.train()
    for step in range(steps):
        x = images[torch.randint(len(images), (64,), generator=g)]
        if step == 0:
            with torch.no_grad():
                z = model.encoder(x).permute(0, 2, 3, 1).reshape(-1, d)
                model.quantizer.embedding.weight.copy_(z[torch.randperm(len(z), generator=g)[:k]])
        recon, vq_loss, indices = model(x)
        background = x.flatten(2).median(dim=2).values[..., None, None]  # (B, 3, 1, 1): the grey of each image
        weight = 1.0 + 4.0 * ((x - background).abs().amax(1, keepdim=True) > 0.1)  # the shape's pixels count 5x
        loss = (weight * (recon - x) ** 2).mean() + vq_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 99 and step < 0.8 * steps:  # no restart near the end: the decoder must learn the moved codes
            with torch.no_grad():
                dead = (torch.bincount(indices.flatten(), minlength=k) == 0).nonzero().flatten()
                z = model.encoder(x).permute(0, 2, 3, 1).reshape(-1, d)
                model.quantizer.embedding.weight[dead] = z[torch.randint(len(z), (len(dead),), generator=g)]
    return model.eval()


def train_tokenizer_seed_run(seed: int) -> dict[str, float]:
    """What ``ch10.train_tokenizer`` measures for :func:`train_tokenizer_solution` (seed ``seed``).

    For the benchmark's seed runs (``python -m mmllm_course.bench --seeds 5 --only chapter10_exercise``): every bar of
    the check must hold on the worst seed. One CPU thread.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        metrics = tokenizer_metrics(train_tokenizer_solution(seed))
    finally:
        torch.set_num_threads(threads)
    # Counts as ints: the benchmark's "worst" line summarises floats only (fractions as higher-is-better, others as
    # lower-is-better, so read PSNR's worst in the per-seed lines).
    return {**metrics, **{k: int(metrics[k]) for k in ("codes_used", "num_codes", "tokens_per_image")}}


# --------------------------------------------------------------------------------------------------
# ch10.ema_update (stretch): the codebook as exponential moving averages of its encoder outputs
# --------------------------------------------------------------------------------------------------


def ema_update_reference(z: torch.Tensor, indices: torch.Tensor, counts: torch.Tensor, sums: torch.Tensor, decay: float = 0.99,
                         eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One EMA codebook step: z (N, D), indices (N,), counts (K,), sums (K, D) -> (codebook (K, D), counts, sums).

    VQ-VAE's appendix A.1 (van den Oord et al. 2017) as Sonnet's ``VectorQuantizerEMA`` computes it: each code's
    count and sum of assigned vectors decay by ``decay`` and take ``1 - decay`` of this batch's; the counts get
    Laplace smoothing (``(n_k + eps) / (n + K eps) * n``) so that a code nobody picks is not divided by zero; the code
    is its sum over its smoothed count.
    """
    k = counts.shape[0]
    onehot = F.one_hot(indices.long(), k).to(z.dtype)  # (N, K)
    counts = decay * counts + (1 - decay) * onehot.sum(0)
    sums = decay * sums + (1 - decay) * onehot.T @ z
    n = counts.sum()
    smoothed = (counts + eps) / (n + k * eps) * n
    return sums / smoothed[:, None], counts, sums


def _ema_mistakes(z, indices, counts, sums, decay, eps) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    k = counts.shape[0]
    onehot = F.one_hot(indices.long(), k).to(z.dtype)
    batch_counts, batch_sums = onehot.sum(0), onehot.T @ z
    right_counts = decay * counts + (1 - decay) * batch_counts
    right_sums = decay * sums + (1 - decay) * batch_sums
    n = right_counts.sum()
    smoothed = (right_counts + eps) / (n + k * eps) * n
    swapped_counts = (1 - decay) * counts + decay * batch_counts
    swapped_sums = (1 - decay) * sums + decay * batch_sums
    sn = swapped_counts.sum()
    return {
        "the decay on the wrong side (decay * this batch + (1 - decay) * the running average): the running average keeps "
        "decay (0.99) of itself": (swapped_sums / ((swapped_counts + eps) / (sn + k * eps) * sn)[:, None],
                                   swapped_counts, swapped_sums),
        "the codes divided by their counts + eps without the rescaling: Laplace smoothing is (n_k + eps) / (n + K eps) * n":
            (right_sums / (right_counts + eps)[:, None], right_counts, right_sums),
        "this batch's mean vector per code (no moving average): the codebook follows the EMA of the sums over the EMA "
        "of the counts": (batch_sums / ((batch_counts + eps) / (batch_counts.sum() + k * eps) * batch_counts.sum())[:, None],
                          right_counts, right_sums),
    }


_EMA_CASES = [(12, 4, 3, torch.float32, 0.99, 1e-5), (40, 8, 5, torch.float64, 0.9, 1e-5), (30, 6, 4, torch.float64, 0.5, 1e-3)]


@exercise(
    "ch10.ema_update",
    "Stretch: the EMA codebook update",
    hint="counts = decay * counts + (1 - decay) * one_hot(indices).sum(0); sums = decay * sums + (1 - decay) * "
    "one_hot.T @ z; smoothed = (counts + eps) / (n + K * eps) * n with n = counts.sum(); codebook = sums / smoothed.",
)
def _check_ema_update(fn) -> str:
    for i, (n, k, d, dtype, decay, eps) in enumerate(_EMA_CASES):
        g = _gen(10_500 + i)
        z = torch.randn(n, d, generator=g).to(dtype)
        indices = torch.randint(0, k - 1, (n,), generator=g)  # code K-1 is never picked in this batch
        counts = torch.rand(k, generator=g).to(dtype) * 5
        counts[-1] = 0.0  # a code dead in the running average too: its count stays 0 (a division by zero without smoothing)
        sums = (torch.randn(k, d, generator=g) * counts[:, None].float()).to(dtype)
        what = (f"ema_update(z {tuple(z.shape)}, indices ({n},), counts ({k},), sums {tuple(sums.shape)}, decay={decay:g}, "
                f"eps={eps:g}, {dtype})")
        expected = ema_update_reference(z, indices, counts, sums, decay, eps)
        mistakes = _ema_mistakes(z, indices, counts, sums, decay, eps)
        got = call(fn, z.clone(), indices.clone(), counts.clone(), sums.clone(), decay, eps)
        if got is None:
            raise CheckFailed(f"{what} returned None: did you forget `return`?")
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            raise CheckFailed(f"{what} returned {_type_name(got)}; expected the tuple (codebook, counts, sums)")
        for name, mine, right, j in zip(("codebook", "counts", "sums"), got, expected, range(3)):
            if isinstance(mine, torch.Tensor) and mine.shape == right.shape and not torch.isfinite(mine).all():
                raise CheckFailed(f"{what}: your {name} holds NaN or inf: a code with a count of 0 was divided by zero; "
                                  "Laplace smoothing, (n_k + eps) / (n + K eps) * n, keeps every count above 0")
            try:
                expect_tensor(mine, right, f"{what}: {name}")
            except CheckFailed as exc:
                for explanation, wrong in mistakes.items():
                    if not same_values(wrong[j], right) and same_values(mine, wrong[j]):
                        raise CheckFailed(f"{exc}. Your {name} is {explanation}.") from None
                raise
    return ("your update equals VQ-VAE's EMA codebook (Sonnet's VectorQuantizerEMA): running counts and sums, Laplace-"
            "smoothed counts, each code the mean of the vectors it was given.")


# --------------------------------------------------------------------------------------------------
# Questions (only hashes of the answers live here)
# --------------------------------------------------------------------------------------------------
question(
    "ch10.q1",
    "What breaks without the straight-through estimator",
    {
        "a": "Nothing: autograd differentiates through argmin like any other operation, only more slowly.",
        "b": "The codebook stops learning, since the codebook loss needs the straight-through gradient.",
        "c": "The encoder gets no gradient from the reconstruction loss, since argmin is piecewise constant (its "
        "gradient is zero or undefined): only the commitment loss moves it, and it never learns what the decoder needs.",
        "d": "The decoder gets no gradient, so the reconstructions stay random.",
    },
    [answer_hash("c")],
    explanation="The lookup picks an integer; a small change of z changes nothing until another code becomes nearer, so "
    "the path from the reconstruction loss back to the encoder is flat. The straight-through estimator pretends the "
    "quantiser was the identity on the way back (z + (z_q - z).detach()). The decoder and the codebook learn either "
    "way: the decoder sees z_q, the codes have their own loss.",
    hint="Which part of the model sits BEFORE the argmin, and what is the derivative of a step function?",
)

question(
    "ch10.q2",
    "Why a bigger codebook is not free",
    {
        "a": "It is free: more codes always reconstruct better and cost nothing else.",
        "b": "More codes mean more bits per token (log2 K) and a bigger softmax for the LM that writes the tokens, each "
        "code sees fewer vectors so more codes die (never picked, never trained), and the LM must learn a sparser, "
        "harder distribution.",
        "c": "A bigger codebook makes the encoder's output grid larger, so there are more tokens per image.",
        "d": "The codebook loss grows with K, so training diverges beyond a few hundred codes.",
    },
    [answer_hash("b")],
    explanation="The number of tokens comes from the grid, not from K; what K changes is the information per token "
    "(log2 K bits), the LM's output layer (K more logits) and the statistics each code gets: with more codes, more go "
    "unused (dead codes) unless restarted or trained with EMA, and the LM sees each code less often.",
    hint="Count the bits of one token, the size of the LM's output layer, and how many vectors each code is given.",
)

question(
    "ch10.q3",
    "Compact, lossless, discrete: which two does each method pick",
    {
        "a": "Raw pixels as tokens (iGPT): compact and discrete; continuous latents (chapter 9's autoencoder): lossless "
        "and discrete; a VQ tokenizer: compact and lossless.",
        "b": "Raw pixels as tokens (iGPT): lossless and discrete, but not compact (3,072 tokens for 32x32x3); continuous "
        "latents (chapter 9's autoencoder): compact and nearly lossless, but not discrete; a VQ tokenizer: compact and "
        "discrete, but lossy.",
        "c": "A VQ tokenizer has all three once its codebook is large enough, which is why Chameleon uses one.",
        "d": "All three methods are discrete; they differ only in how compact they are.",
    },
    [answer_hash("b")],
    explanation="Seed 004's trade-off, as the chapter measures it: pixels keep everything and are integers, but far "
    "too many; a continuous latent is short and reconstructs well, but an LM cannot take a softmax over it; a VQ "
    "tokenizer is short and discrete, and pays in reconstruction error (the figure of error against bits per image).",
    hint="For each method, ask: how many numbers per image, can the LM predict them with a softmax over a vocabulary, "
    "and does the image come back exactly?",
)
