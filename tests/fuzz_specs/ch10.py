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
    from mmllm_course.visual_tokens import (
        TokenizerOutput,
        TokenizerTrainConfig,
        VQTokenizer,
        VQTokenizerConfig,
        object_weights,
        tokenizer_metrics,
        train_tokenizer,
        finetune_decoder,
        ImageLMConfig,
        ImageLMTrainConfig,
        ImageTokenLM,
        image_token,
        request_for,
        train_image_lm,
        evaluate_image_lm,
        load_chapter10,
    )

    Spec, Call, _rand, _fs = fuzz.Spec, fuzz.Call, fuzz._rand, fuzz._fs

    def _judge():
        from mmllm_course.generators import JudgeConfig, ShapesJudge

        torch.manual_seed(0)
        return ShapesJudge(JudgeConfig(channels=8, hidden=16)).eval()

    def quantizer() -> CodebookQuantizer:
        torch.manual_seed(0)
        return CodebookQuantizer(8, 4)

    tiny = dict(channels=(8,), patch_size=2, code_dim=4, num_codes=16)

    def tok(**kw) -> VQTokenizer:
        torch.manual_seed(0)
        return VQTokenizer(VQTokenizerConfig(**{**tiny, **kw})).eval()

    def codes() -> torch.Tensor:
        return torch.randint(0, 16, (2, 8, 8), generator=torch.Generator().manual_seed(0))

    lm_tiny = dict(num_codes=16, grid_size=8, dim=32, depth=1, num_heads=2, num_kv_heads=1, mlp_dim=64, context_length=80)

    import functools

    @functools.lru_cache(maxsize=1)
    def lm() -> ImageTokenLM:
        return ImageTokenLM(ImageLMConfig(**lm_tiny), seed=0).eval()

    reqs = ["draw a small red circle in the top left", "draw a large blue star in the bottom right"]

    return {
        "ImageLMConfig": Spec(
            lambda: [Call(ImageLMConfig, kwargs=lm_tiny)],
            lambda: [("context too short for the grid", lambda: ImageLMConfig(grid_size=8, context_length=40)),
                     ("dim not divisible by heads", lambda: ImageLMConfig(dim=30, num_heads=4))]),
        "ImageLMTrainConfig": Spec(
            lambda: [Call(ImageLMTrainConfig, kwargs=dict(steps=3, batch_size=4, lr=1e-3, weight_decay=0.0, warmup=1),
                          zero_ok=_fs("steps", "weight_decay"))],
            lambda: [("lr 0", lambda: ImageLMTrainConfig(lr=0.0))]),
        "ImageTokenLM": Spec(
            lambda: [Call(ImageTokenLM, (ImageLMConfig(**lm_tiny),), dict(seed=0), zero_ok=_fs("seed")),
                     Call(lm().sequences, (reqs, codes())),
                     Call(lm().loss, (reqs, codes())),
                     Call(lm().generate, (reqs,), dict(temperature=1.0, top_k=4, seed=0, batch_size=1), zero_ok=_fs("seed", "temperature"))],
            lambda: [("ids past the codebook", lambda: lm().loss(reqs, torch.full((2, 8, 8), 16))),
                     ("a grid of another size", lambda: lm().loss(reqs, torch.zeros(2, 4, 4, dtype=torch.long))),
                     ("one grid for two requests", lambda: lm().loss(reqs, codes()[:1])),
                     ("a single str", lambda: lm().generate("draw a small red circle in the top left")),
                     ("no requests", lambda: lm().generate([])),
                     ("a request too long", lambda: lm().generate([" ".join(["red"] * 30)]))]),
        "image_token": Spec(lambda: [Call(image_token, (3,), zero_ok=_fs("k"))]),
        "request_for": Spec(lambda: [Call(request_for, ("a small red circle in the top left",))],
                            lambda: [("a list", lambda: request_for(["a small red circle in the top left"]))]),
        "train_image_lm": Spec(
            lambda: [Call(train_image_lm, (lm(), reqs, codes(), ImageLMTrainConfig(steps=1, batch_size=2, warmup=1)), dict(seed=0),
                          zero_ok=_fs("seed"))],
            lambda: [("codes of another grid", lambda: train_image_lm(lm(), reqs, torch.zeros(2, 4, 4, dtype=torch.long))),
                     ("fewer grids than requests", lambda: train_image_lm(lm(), reqs, codes()[:1]))]),
        "evaluate_image_lm": Spec(
            lambda: [Call(evaluate_image_lm, (tok(), lm(), _judge()), dict(n=4, temperature=1.0, top_k=4, seed=0, requests_seed=1),
                          zero_ok=_fs("seed", "requests_seed", "temperature"), run_good=True)],
            lambda: [("a tokenizer of another grid", lambda: evaluate_image_lm(tok(patch_size=4), lm(), _judge(), n=2)),
                     ("no judge", lambda: evaluate_image_lm(tok(), lm(), None, n=2))]),
        "load_chapter10": Spec(
            lambda: [Call(load_chapter10, (), run_good=False)],
            lambda: [("a missing file", lambda: load_chapter10("/no/such/folder/chapter10.safetensors")),
                     ("a path of 5", lambda: load_chapter10(5))],
            allowed=(FileNotFoundError,)),
        "finetune_decoder": Spec(
            lambda: [Call(finetune_decoder, (tok(), _rand(8, 3, 32, 32)), dict(steps=2, batch_size=4, lr=1e-3, object_weight=2.0, seed=0),
                          zero_ok=_fs("steps", "seed"))],
            lambda: [("images of another size", lambda: finetune_decoder(tok(), _rand(8, 3, 16, 16), steps=1)),
                     ("weight below 1", lambda: finetune_decoder(tok(), _rand(8, 3, 32, 32), steps=1, object_weight=0.5))]),
        "VQTokenizerConfig": Spec(
            lambda: [Call(VQTokenizerConfig, kwargs=dict(image_size=32, channels=(8, 8), patch_size=2, code_dim=4, num_codes=16, beta=0.25,
                                                         quantize=True), zero_ok=_fs("beta"))],
            lambda: [("image not divisible", lambda: VQTokenizerConfig(image_size=32, patch_size=3)),
                     ("no stages", lambda: VQTokenizerConfig(channels=())),
                     ("a width of 0", lambda: VQTokenizerConfig(channels=(0, 8))),
                     ("quantize 1", lambda: VQTokenizerConfig(quantize=1))]),
        "VQTokenizer": Spec(
            lambda: [Call(VQTokenizer, (VQTokenizerConfig(**tiny),)),
                     Call(tok(), (_rand(2, 3, 32, 32),)),
                     Call(tok().encode, (_rand(2, 3, 32, 32),)),
                     Call(tok().decode, (codes(),)),
                     Call(tok().reconstruct, (_rand(3, 3, 32, 32),), dict(batch_size=2))],
            lambda: [("images of another size", lambda: tok().encode(_rand(2, 3, 16, 16))),
                     ("grey images", lambda: tok().encode(_rand(2, 1, 32, 32))),
                     ("ids past the codebook", lambda: tok().decode(torch.full((1, 8, 8), 16))),
                     ("negative ids", lambda: tok().decode(torch.full((1, 8, 8), -1))),
                     ("a grid of another size", lambda: tok().decode(torch.zeros(1, 4, 4, dtype=torch.long))),
                     ("tokens from a continuous autoencoder", lambda: tok(quantize=False).encode(_rand(1, 3, 32, 32))),
                     ("decode without a codebook", lambda: tok(quantize=False).decode(codes()))]),
        "TokenizerOutput": Spec(lambda: [Call(lambda: tok()(_rand(1, 3, 32, 32)).indices)], mutate=False),
        "TokenizerTrainConfig": Spec(
            lambda: [Call(TokenizerTrainConfig, kwargs=dict(steps=3, batch_size=4, lr=1e-3, restart_every=2, restart_until=0.5,
                                                            object_weight=2.0, cosine=True),
                          zero_ok=_fs("steps", "restart_every", "restart_until"))],
            lambda: [("object weight below 1", lambda: TokenizerTrainConfig(object_weight=0.5)),
                     ("restart_until above 1", lambda: TokenizerTrainConfig(restart_until=1.5)),
                     ("cosine 1", lambda: TokenizerTrainConfig(cosine=1))]),
        "train_tokenizer": Spec(
            lambda: [Call(train_tokenizer, (tok(), _rand(8, 3, 32, 32), TokenizerTrainConfig(steps=2, batch_size=4, restart_every=1)),
                          dict(seed=0), zero_ok=_fs("seed"))],
            lambda: [("images of another size", lambda: train_tokenizer(tok(), _rand(8, 3, 16, 16))),
                     ("a config of another kind", lambda: train_tokenizer(tok(), _rand(8, 3, 32, 32), VQTokenizerConfig()))]),
        "tokenizer_metrics": Spec(
            lambda: [Call(tokenizer_metrics, (tok(), _rand(4, 3, 32, 32))), Call(tokenizer_metrics, (tok(quantize=False), _rand(4, 3, 32, 32)))],
            lambda: [("images of another size", lambda: tokenizer_metrics(tok(), _rand(4, 3, 16, 16))),
                     ("not a tokenizer", lambda: tokenizer_metrics(torch.nn.Linear(2, 2), _rand(4, 3, 32, 32)))]),
        "object_weights": Spec(
            lambda: [Call(object_weights, (_rand(2, 3, 32, 32), 5.0))],
            lambda: [("weight below 1", lambda: object_weights(_rand(2, 3, 32, 32), 0.5)),
                     ("grey images", lambda: object_weights(_rand(2, 1, 32, 32), 5.0))]),
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
