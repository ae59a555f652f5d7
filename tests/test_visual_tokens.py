"""Chapter 10's quantiser: parity with diffusers' VectorQuantizer, the straight-through gradient, the losses, bad input."""

from __future__ import annotations

import pytest
import torch

from mmllm_course.visual_tokens import (
    CodebookQuantizer,
    codes_to_vectors,
    nearest_code,
    perplexity_of,
    restart_dead_codes,
    straight_through,
    vq_losses,
)


def _diffusers_vq(num_codes: int, code_dim: int, beta: float, legacy: bool):
    from diffusers.models.autoencoders.vae import VectorQuantizer

    return VectorQuantizer(num_codes, code_dim, beta=beta, legacy=legacy)


def _pair(legacy: bool = False, num_codes: int = 32, code_dim: int = 6, beta: float = 0.25):
    torch.manual_seed(0)
    ours = CodebookQuantizer(num_codes, code_dim, beta)
    ours.embedding.weight.data.normal_()  # spread codes, so that nearest codes are well separated
    ref = _diffusers_vq(num_codes, code_dim, beta, legacy)
    ref.load_state_dict(ours.state_dict())  # same parameter name: the state_dict loads as it is
    z = torch.randn(3, code_dim, 5, 4, requires_grad=True)
    return ours, ref, z


def test_parity_with_diffusers_indices_output_loss():
    ours, ref, z = _pair(legacy=False)
    out = ours(z)
    z_q, loss, (_, _, idx) = ref(z)
    assert torch.equal(out.indices.flatten(), idx.flatten())
    assert torch.allclose(out.z_q, z_q, atol=1e-6)
    assert torch.allclose(out.loss, loss, atol=1e-6)
    # the straight-through gradient: d(sum z_q)/dz = 1 everywhere, in both
    g_ours, = torch.autograd.grad(out.z_q.sum(), z)
    g_ref, = torch.autograd.grad(z_q.sum(), z)
    assert torch.equal(g_ours, torch.ones_like(z)) and torch.equal(g_ref, g_ours)


def test_state_dict_loads_both_ways():
    ref = _diffusers_vq(16, 4, 0.25, legacy=False)
    ours = CodebookQuantizer(16, 4)
    ours.load_state_dict(ref.state_dict())
    assert torch.equal(ours.embedding.weight, ref.embedding.weight)


def test_diffusers_legacy_puts_beta_on_the_codebook_term():
    ours, ref, z = _pair(legacy=True, beta=0.25)
    out = ours(z)
    _, legacy_loss, _ = ref(z)
    # legacy=True: 1 x commitment mse + beta x codebook mse; ours (the paper): codebook + beta x commitment
    mse = out.codebook_loss  # both mse terms have the same value in the forward pass
    assert torch.allclose(out.commitment_loss, 0.25 * mse)
    assert torch.allclose(legacy_loss, mse + 0.25 * mse)  # same value ...
    # ... but not the same gradients: the codebook gets beta x less, the encoder 4x more
    g_codes_ours, g_z_ours = torch.autograd.grad(out.loss, [ours.embedding.weight, z])
    g_codes_ref, g_z_ref = torch.autograd.grad(legacy_loss, [ref.embedding.weight, z])
    assert torch.allclose(g_codes_ref, 0.25 * g_codes_ours, atol=1e-7)
    assert torch.allclose(g_z_ref, 4 * g_z_ours, atol=1e-7)
    assert not torch.allclose(g_z_ref, g_z_ours)


def test_nearest_code_is_the_argmin_of_squared_distances():
    g = torch.Generator().manual_seed(1)
    z, codebook = torch.randn(50, 3, generator=g), torch.randn(7, 3, generator=g)
    expected = ((z[:, None] - codebook[None]) ** 2).sum(-1).argmin(1)
    assert torch.equal(nearest_code(z, codebook), expected)
    # ties go to the lowest index
    assert nearest_code(torch.zeros(1, 2), torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])).item() == 0


def test_losses_move_the_right_side():
    z = torch.randn(4, 3, requires_grad=True)
    e = torch.randn(4, 3, requires_grad=True)
    codebook_loss, commitment_loss = vq_losses(z, e, beta=0.5)
    assert torch.allclose(commitment_loss, 0.5 * codebook_loss)
    gz, ge = torch.autograd.grad(codebook_loss, [z, e], allow_unused=True)
    assert gz is None and ge is not None  # codebook term: only the codes move
    gz, ge = torch.autograd.grad(commitment_loss, [z, e], allow_unused=True)
    assert gz is not None and ge is None  # commitment term: only the encoder moves


def test_straight_through_value_and_gradient():
    z = torch.randn(2, 5, requires_grad=True)
    z_q = torch.randn(2, 5)
    out = straight_through(z, z_q)
    assert torch.equal(out, z + (z_q - z))  # value of z_q (up to rounding of z + (z_q - z))
    assert torch.allclose(out, z_q)
    (out * torch.arange(5.0)).sum().backward()
    assert torch.equal(z.grad, torch.arange(5.0).expand(2, 5))


def test_quantizer_output_fields_and_codes_to_vectors():
    q = CodebookQuantizer(8, 4)
    q.embedding.weight.data = torch.eye(8, 4) * 3
    z = q.embedding.weight[torch.tensor([[0, 1], [2, 2]])].permute(2, 0, 1)[None].detach()  # (1, 4, 2, 2) exactly on codes
    out = q(z)
    assert out.indices.tolist() == [[[0, 1], [2, 2]]]
    assert out.codes_used == 3 and float(out.loss.detach()) == 0.0
    assert torch.allclose(out.perplexity, torch.tensor(2 ** 1.5))  # p = (1/4, 1/4, 1/2)
    assert torch.equal(codes_to_vectors(q, out.indices), z)
    assert float(perplexity_of(torch.arange(8), 8)) == pytest.approx(8.0)


def test_restart_moves_only_dead_codes():
    torch.manual_seed(0)
    q = CodebookQuantizer(6, 2)
    before = q.embedding.weight.detach().clone()
    z = torch.randn(20, 2) + 10
    moved = restart_dead_codes(q, z, torch.tensor([3, 0, 5, 0, 0, 1]))
    assert moved == 3
    after = q.embedding.weight.detach()
    assert torch.equal(after[[0, 2, 5]], before[[0, 2, 5]])
    assert (after[[1, 3, 4]] > 5).all()  # now where the data is


def test_bad_input_names_the_sizes():
    q = CodebookQuantizer(8, 4)
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\).*\(2, 3, 5, 5\)"):
        q(torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match=r"\[0, 8\).*\[0, 8\]"):
        codes_to_vectors(q, torch.tensor([[[0, 8]]]))
    with pytest.raises(ValueError, match="share D"):
        nearest_code(torch.randn(3, 4), torch.randn(5, 3))
    with pytest.raises(ValueError, match="same shape"):
        vq_losses(torch.randn(3, 4), torch.randn(3, 5))
