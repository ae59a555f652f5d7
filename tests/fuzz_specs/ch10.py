"""Fuzz specs of chapter 10 (discrete visual tokens: the quantiser, the VQ tokenizer, the LM that writes image tokens)."""

from __future__ import annotations

import torch


def specs(fuzz):
    """fuzz is tests/test_api_fuzz.py itself (Spec, Call, _rand, _fs, CONSTANT...)."""
    from mmllm_course.visual_tokens import (
        CodebookQuantizer,
        QuantizerOutput,
        codes_to_vectors,
        nearest_code,
        perplexity_of,
        restart_dead_codes,
        straight_through,
        vq_losses,
    )

    Spec, Call, _rand, _fs = fuzz.Spec, fuzz.Call, fuzz._rand, fuzz._fs

    def quantizer() -> CodebookQuantizer:
        torch.manual_seed(0)
        return CodebookQuantizer(8, 4)

    return {
        "nearest_code": Spec(
            lambda: [Call(nearest_code, (_rand(5, 4), _rand(8, 4)))],
            lambda: [("widths differ", lambda: nearest_code(_rand(5, 4), _rand(8, 3))),
                     ("empty codebook", lambda: nearest_code(_rand(5, 4), _rand(0, 4))),
                     ("a grid instead of rows", lambda: nearest_code(_rand(1, 4, 2, 2), _rand(8, 4)))]),
        "straight_through": Spec(
            lambda: [Call(straight_through, (_rand(2, 4, 3, 3), _rand(2, 4, 3, 3)), rank_free=_fs("z", "z_q"))],
            lambda: [("shapes differ", lambda: straight_through(_rand(2, 4), _rand(2, 5))),
                     ("dtypes differ", lambda: straight_through(_rand(2, 4), _rand(2, 4).double()))]),
        "vq_losses": Spec(
            lambda: [Call(vq_losses, (_rand(6, 4), _rand(6, 4)), dict(beta=0.25), rank_free=_fs("z", "z_q"), zero_ok=_fs("beta"))],
            lambda: [("shapes differ", lambda: vq_losses(_rand(6, 4), _rand(6, 3))),
                     ("negative beta", lambda: vq_losses(_rand(6, 4), _rand(6, 4), beta=-0.1))]),
        "perplexity_of": Spec(
            lambda: [Call(perplexity_of, (torch.tensor([0, 1, 1, 3]), 4), rank_free=_fs("indices"))],
            lambda: [("index past the codebook", lambda: perplexity_of(torch.tensor([0, 4]), 4)),
                     ("negative index", lambda: perplexity_of(torch.tensor([-1, 2]), 4)),
                     ("float indices", lambda: perplexity_of(torch.tensor([0.0, 1.0]), 4))]),
        "CodebookQuantizer": Spec(
            lambda: [Call(CodebookQuantizer, (8, 4), dict(beta=0.25), zero_ok=_fs("beta")),
                     Call(quantizer(), (_rand(2, 4, 3, 3),))],
            lambda: [("wrong channel count", lambda: quantizer()(_rand(2, 3, 3, 3))),
                     ("rows instead of a grid", lambda: quantizer()(_rand(6, 4))),
                     ("negative beta", lambda: CodebookQuantizer(8, 4, beta=-1.0))]),
        "QuantizerOutput": Spec(lambda: [Call(lambda: quantizer()(_rand(1, 4, 2, 2)).indices)], mutate=False),
        "codes_to_vectors": Spec(
            lambda: [Call(codes_to_vectors, (quantizer(), torch.tensor([[[0, 7], [3, 3]]])))],
            lambda: [("id past the codebook", lambda: codes_to_vectors(quantizer(), torch.tensor([[[0, 8]]]))),
                     ("negative id", lambda: codes_to_vectors(quantizer(), torch.tensor([[[-1, 2]]]))),
                     ("float ids", lambda: codes_to_vectors(quantizer(), torch.tensor([[[0.0, 2.0]]]))),
                     ("not a quantizer", lambda: codes_to_vectors(torch.nn.Embedding(8, 4), torch.tensor([[[0, 2]]])))]),
        "restart_dead_codes": Spec(
            lambda: [Call(restart_dead_codes, (quantizer(), _rand(10, 4), torch.tensor([3, 0, 1, 0, 2, 0, 0, 5])),
                          dict(generator=torch.Generator().manual_seed(0), threshold=1.0), zero_ok=_fs("threshold"),
                          fixed=_fs("generator"))],
            lambda: [("counts of another length", lambda: restart_dead_codes(quantizer(), _rand(10, 4), torch.zeros(7))),
                     ("vectors of another width", lambda: restart_dead_codes(quantizer(), _rand(10, 3), torch.zeros(8))),
                     ("no vectors", lambda: restart_dead_codes(quantizer(), _rand(0, 4), torch.zeros(8)))]),
    }
