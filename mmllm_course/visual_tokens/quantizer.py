"""The quantiser step of a VQ-VAE: nearest code, straight-through gradient, codebook and commitment losses.

Dims: ``N`` vectors, ``D`` code width (``code_dim``), ``K`` codes (``num_codes``); a grid of
vectors is ``(B, D, H, W)``, its indices ``(B, H, W)``.

    z (B, D, H, W) -> (B*H*W, D) -> nearest code k = argmin_k ||z - e_k||^2 -> indices (B, H, W)
                   -> e_k (B, D, H, W) -> straight-through: z + (e_k - z).detach()

The three ideas of van den Oord et al. 2017 ("Neural Discrete Representation Learning",
https://arxiv.org/abs/1711.00937), eq. 3:

* **nearest-code lookup** makes the representation discrete: each vector becomes one integer;
* the argmin has no gradient, so the **straight-through estimator** copies the decoder's gradient
  from ``z_q`` to ``z`` unchanged (the forward value is ``z_q``, the backward is the identity);
* two **losses** move what the gradient cannot reach: the *codebook loss*
  ``||sg[z] - e||^2`` pulls the chosen codes to the encoder outputs, the *commitment loss*
  ``beta * ||z - sg[e]||^2`` keeps the encoder near its codes (sg = stop-gradient, ``detach``).

``diffusers``' ``VectorQuantizer`` (the quantiser of its ``VQModel``, from taming-transformers'
VQGAN) computes the same indices and the same straight-through output. Its ``legacy=True``
default swaps the weights of the two terms (``beta`` on the codebook term, 1 on the commitment
term, a bug kept for old checkpoints); ``legacy=False`` is the paper's loss and equals ours. The
``embedding`` attribute has diffusers' name, so a ``state_dict`` loads both ways.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    to_module_dtype,
)


def nearest_code(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """z (N, D), codebook (K, D) -> indices (N,) of the nearest code in squared Euclidean distance.

    ``||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2`` is computed as one matrix product (N x K), never as
    an (N, K, D) difference, so 8,192 vectors against 512 codes stay cheap. Ties go to the lowest
    index, as ``argmin`` does.
    """
    check_tensor(z, "z", "(N, D)", ndim=2, kind="float")
    check_tensor(codebook, "codebook", "(K, D)", ndim=2, kind="float")
    check_same_float_dtype({"z": z, "codebook": codebook})
    if z.shape[1] != codebook.shape[1]:
        raise ValueError(f"z (N, D) and codebook (K, D) must share D, got z {tuple(z.shape)} and codebook {tuple(codebook.shape)}")
    if codebook.shape[0] == 0:
        raise ValueError(f"codebook must hold at least one code, got shape {tuple(codebook.shape)}")
    if z.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=z.device)
    d = z.pow(2).sum(1, keepdim=True) - 2 * z @ codebook.t() + codebook.pow(2).sum(1)[None]  # (N, K)
    return d.argmin(1)


def straight_through(z: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """``z + (z_q - z).detach()``: the value of ``z_q`` (any shape, same as ``z``) with the gradient of ``z``.

    Without it the encoder gets no gradient from the reconstruction loss: ``argmin`` is flat.
    """
    check_tensor(z, "z", kind="float")
    check_tensor(z_q, "z_q", kind="float")
    check_same_float_dtype({"z": z, "z_q": z_q})
    if z.shape != z_q.shape:
        raise ValueError(f"z and z_q must have the same shape, got z {tuple(z.shape)} and z_q {tuple(z_q.shape)}")
    return z + (z_q - z).detach()


def vq_losses(z: torch.Tensor, z_q: torch.Tensor, beta: float = 0.25) -> tuple[torch.Tensor, torch.Tensor]:
    """``(codebook_loss, commitment_loss)``, two scalars: ``mse(z_q, sg[z])`` and ``beta * mse(z, sg[z_q])``.

    ``z`` is the encoder's output, ``z_q`` the codes it was snapped to (before the straight-through
    step), any shape as long as both match. The codebook term moves only the codes, the commitment
    term only the encoder (VQ-VAE, eq. 3; ``beta`` = 0.25 in the paper).
    """
    check_tensor(z, "z", kind="float")
    check_tensor(z_q, "z_q", kind="float")
    check_same_float_dtype({"z": z, "z_q": z_q})
    beta = check_number(beta, "beta", low=0.0)
    if z.shape != z_q.shape:
        raise ValueError(f"z and z_q must have the same shape, got z {tuple(z.shape)} and z_q {tuple(z_q.shape)}")
    if z.numel() == 0:
        raise ValueError(f"z is empty (shape {tuple(z.shape)}): expected at least one vector")
    codebook_loss = F.mse_loss(z_q, z.detach())
    commitment_loss = beta * F.mse_loss(z, z_q.detach())
    return codebook_loss, commitment_loss


def perplexity_of(indices: torch.Tensor, num_codes: int) -> torch.Tensor:
    """exp(entropy) of the code histogram of ``indices`` (any shape): K when all K codes are used equally, 1 for one code."""
    check_tensor(indices, "indices", kind="int")
    num_codes = check_int(num_codes, "num_codes")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= num_codes):
        raise ValueError(f"indices must lie in [0, {num_codes}) (a codebook of {num_codes} codes), "
                         f"got values in [{int(indices.min())}, {int(indices.max())}]")
    counts = torch.bincount(indices.flatten().long(), minlength=num_codes).float()
    p = counts / counts.sum().clamp_min(1)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())


@dataclass
class QuantizerOutput:
    """What :class:`CodebookQuantizer` returns for a grid ``z`` (B, D, H, W).

    ``z_q`` (B, D, H, W): the codes, straight-through (gradient flows to ``z``); ``indices``
    (B, H, W) long; ``loss`` = ``codebook_loss`` + ``commitment_loss`` (scalars); ``perplexity``
    (scalar): exp(entropy) of the batch's code usage; ``codes_used``: distinct codes in the batch.
    """

    z_q: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor
    perplexity: torch.Tensor
    codes_used: int


class CodebookQuantizer(nn.Module):
    """z (B, D, H, W) -> :class:`QuantizerOutput`: every vector snapped to the nearest of ``num_codes`` codes.

    ``embedding`` is an ``nn.Embedding(num_codes, code_dim)`` initialised uniform in
    ``[-1/K, 1/K]`` as in taming-transformers and ``diffusers``; its ``state_dict`` is the one of
    ``diffusers.models.autoencoders.vae.VectorQuantizer(num_codes, code_dim, beta)``.
    """

    def __init__(self, num_codes: int, code_dim: int, beta: float = 0.25):
        super().__init__()
        self.num_codes = check_int(num_codes, "num_codes")
        self.code_dim = check_int(code_dim, "code_dim")
        self.beta = check_number(beta, "beta", low=0.0)
        self.embedding = nn.Embedding(self.num_codes, self.code_dim)
        self.embedding.weight.data.uniform_(-1.0 / self.num_codes, 1.0 / self.num_codes)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        check_tensor(z, "z", f"(B, {self.code_dim}, H, W)", ndim=4, kind="float")
        if z.shape[1] != self.code_dim:
            raise ValueError(f"z must be (B, {self.code_dim}, H, W) (code_dim={self.code_dim} channels), got {tuple(z.shape)}")
        if z.numel() == 0:
            raise ValueError(f"z is empty (shape {tuple(z.shape)}): expected at least one vector")
        z = to_module_dtype(z, self)
        b, d, h, w = z.shape
        z_last = z.permute(0, 2, 3, 1)  # (B, H, W, D): one vector per grid cell
        indices = nearest_code(z_last.reshape(-1, d), self.embedding.weight).view(b, h, w)
        z_q = self.embedding(indices)  # (B, H, W, D)
        codebook_loss, commitment_loss = vq_losses(z_last, z_q, self.beta)
        z_q = straight_through(z_last, z_q).permute(0, 3, 1, 2).contiguous()  # (B, D, H, W)
        return QuantizerOutput(
            z_q=z_q, indices=indices, loss=codebook_loss + commitment_loss, codebook_loss=codebook_loss,
            commitment_loss=commitment_loss, perplexity=perplexity_of(indices, self.num_codes),
            codes_used=int(torch.unique(indices).numel()),
        )

    def extra_repr(self) -> str:
        return f"num_codes={self.num_codes}, code_dim={self.code_dim}, beta={self.beta}"


def codes_to_vectors(quantizer: CodebookQuantizer, indices: torch.Tensor) -> torch.Tensor:
    """indices (B, H, W) of codes -> their vectors (B, D, H, W): the way back from tokens to the decoder's input."""
    if not isinstance(quantizer, CodebookQuantizer):
        raise InputTypeError(f"quantizer must be a CodebookQuantizer, got {describe(quantizer)}")
    check_tensor(indices, "indices", "(B, H, W)", ndim=3, kind="int")
    k = quantizer.num_codes
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= k):
        raise ValueError(f"indices must lie in [0, {k}) (a codebook of {k} codes), got values in [{int(indices.min())}, {int(indices.max())}]")
    return quantizer.embedding(indices.long()).permute(0, 3, 1, 2).contiguous()


def restart_dead_codes(quantizer: CodebookQuantizer, z: torch.Tensor, counts: torch.Tensor, generator: torch.Generator | None = None,
                       threshold: float = 1.0) -> int:
    """Move every code used fewer than ``threshold`` times to a random encoder output; returns how many moved.

    ``z`` (N, D): recent encoder outputs; ``counts`` (K,): how often each code was picked since the
    last restart. A code no vector picks gets no gradient from the codebook loss and stays dead
    forever; re-seeding it where the data is (as Jukebox and SoundStream do) brings it back.
    """
    if not isinstance(quantizer, CodebookQuantizer):
        raise InputTypeError(f"quantizer must be a CodebookQuantizer, got {describe(quantizer)}")
    check_tensor(z, "z", f"(N, {quantizer.code_dim})", ndim=2, kind="float")
    check_tensor(counts, "counts", f"({quantizer.num_codes},)", ndim=1)
    if z.shape[1] != quantizer.code_dim or z.shape[0] == 0:
        raise ValueError(f"z must be (N, {quantizer.code_dim}) with N >= 1, got {tuple(z.shape)}")
    if counts.shape[0] != quantizer.num_codes:
        raise ValueError(f"counts must be ({quantizer.num_codes},) (one count per code), got {tuple(counts.shape)}")
    threshold = check_number(threshold, "threshold", low=0.0)
    dead = (counts < threshold).nonzero().flatten()
    if len(dead):
        pick = torch.randint(0, z.shape[0], (len(dead),), generator=generator, device=z.device)
        with torch.no_grad():
            quantizer.embedding.weight[dead] = z[pick].detach().to(quantizer.embedding.weight.dtype)
    return int(len(dead))
