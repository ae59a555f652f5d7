"""Chapter 4's measurements: the bridge comparison table, FLOP counts, the LM curve, the Q-Former run's helpers."""

import pytest
import torch

pytest.importorskip("transformers")

from mmllm_course.bench_bridges import (  # noqa: E402
    CHAPTER4_ACCURACY_BAR,
    CHAPTER4_PEAK_RATIO,
    bridge_comparison_table,
    chapter4_failures,
    count_flops,
    format_bridge_table,
    lm_time_by_tokens,
    one_thread,
    shape_patch_mask,
    tiny_llama,
)
from mmllm_course.bridges import make_bridge  # noqa: E402


@pytest.fixture(scope="module")
def lm():
    return tiny_llama(width=32, layers=1)


@pytest.fixture(scope="module")
def table(lm):
    return bridge_comparison_table(patch_counts=(16, 64), in_dim=8, out_dim=32, text_tokens=4, batch=2, lm=lm,
                                   min_run_time=0.01)


def test_table_has_one_row_per_bridge_and_n_with_the_bridges_own_k(table):
    assert [(r["bridge"], r["N"]) for r in table] == [(b, n) for n in (16, 64)
                                                      for b in ("linear", "mlp", "qformer", "resampler", "token_merge")]
    k = {(r["bridge"], r["N"]): r["K"] for r in table}
    assert k[("linear", 16)] == k[("mlp", 16)] == 16 and k[("linear", 64)] == 64
    assert k[("qformer", 16)] == k[("qformer", 64)] == k[("resampler", 64)] == 8
    assert k[("token_merge", 16)] == 4 and k[("token_merge", 64)] == 16


def test_table_parameters_are_the_bridges_trainable_parameters(table):
    for r in table:
        extra = {"qformer": dict(num_queries=8), "resampler": dict(num_latents=8), "token_merge": dict(ratio=2)}.get(r["bridge"], {})
        bridge = make_bridge(r["bridge"], in_dim=8, out_dim=32, **extra)
        assert r["params"] == sum(p.numel() for p in bridge.parameters())
    assert {r["params"] for r in table if r["bridge"] == "linear"} == {8 * 32 + 32}


def test_flops_match_the_matrix_products_by_hand(table):
    # A linear bridge is one (N, 8) x (8, 32) product per image: 2 * N * 8 * 32 FLOPs.
    for r in (r for r in table if r["bridge"] == "linear"):
        assert r["bridge_mflops"] * 1e6 == pytest.approx(2 * r["N"] * 8 * 32)
    # The LM's cost depends on K only: equal K, equal FLOPs; more K, more FLOPs.
    by_k = {}
    for r in table:
        by_k.setdefault(r["K"], set()).add(round(r["lm_mflops"], 9))
    assert all(len(v) == 1 for v in by_k.values())
    ks = sorted(by_k)
    assert all(min(by_k[a]) < min(by_k[b]) for a, b in zip(ks, ks[1:]))
    # A query bridge's own FLOPs grow with N (it reads every feature); what the LM pays does not.
    q = {r["N"]: r for r in table if r["bridge"] == "qformer"}
    assert q[64]["bridge_mflops"] > q[16]["bridge_mflops"] and q[64]["lm_mflops"] == q[16]["lm_mflops"]


def test_count_flops_of_a_matrix_product():
    a, b = torch.randn(3, 5), torch.randn(5, 7)
    assert count_flops(lambda: a @ b) == 2 * 3 * 5 * 7


def test_times_are_positive_and_the_text_table_lists_every_row(table):
    assert all(r["lm_ms"] > 0 for r in table)
    text = format_bridge_table(table)
    assert len(text.splitlines()) == 2 + len(table) and "qformer" in text and "token_merge" in text


def test_lm_curve_reuses_known_rows_and_sorts_by_k(lm, table):
    curve = lm_time_by_tokens(image_tokens=(2, 32), text_tokens=4, batch=2, width=32, lm=lm, min_run_time=0.01, known=table)
    assert [r["K"] for r in curve] == sorted({2, 32} | {r["K"] for r in table})
    known = {r["K"]: r["lm_ms"] for r in table}
    assert all(r["lm_ms"] == known[r["K"]] for r in curve if r["K"] in known)
    mflops = [r["lm_mflops"] for r in curve]
    assert mflops == sorted(mflops) and len(set(mflops)) == len(mflops)


def test_shape_patch_mask_marks_the_patches_a_box_touches():
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0],  # exactly the top-left patch
                          [4.0, 4.0, 12.0, 12.0],  # the 2x2 patches around pixel (8, 8)
                          [20.0, 9.0, 31.0, 15.0]])  # row 1, columns 2 and 3
    mask = shape_patch_mask(boxes).view(3, 4, 4)
    assert mask[0].nonzero().tolist() == [[0, 0]]
    assert mask[1].nonzero().tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert mask[2].nonzero().tolist() == [[1, 2], [1, 3]]


def test_chapter4_failures_names_each_bar():
    good = {"accuracy": CHAPTER4_ACCURACY_BAR + 0.01, "peak_on_shape": 0.6, "attention_uniform": 0.25, "attention_on_shape": 0.3,
            "query_map_correlation": 0.9}
    assert chapter4_failures(good) == []
    assert "accuracy" in chapter4_failures(dict(good, accuracy=CHAPTER4_ACCURACY_BAR - 0.01))[0]
    flat = dict(good, peak_on_shape=CHAPTER4_PEAK_RATIO * 0.25)
    assert "peak_on_shape" in chapter4_failures(flat)[0]
    assert "query_map_correlation" in chapter4_failures(dict(good, query_map_correlation=0.5))[0]


def test_one_thread_restores_the_thread_count():
    before = torch.get_num_threads()
    with one_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), one_thread():
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before


def test_query_attention_grids_are_each_querys_map_over_the_patch_grid():
    from mmllm_course.viz.bridges import query_attention_grids

    torch.manual_seed(0)
    bridge = make_bridge("qformer", in_dim=8, out_dim=16, num_queries=3, dim=16, num_heads=2)
    features = torch.randn(2, 16, 8)
    grids = query_attention_grids(bridge, features)
    assert grids.shape == (2, 3, 4, 4)
    torch.testing.assert_close(grids.sum(dim=(2, 3)), torch.ones(2, 3))  # each query's weights sum to 1 over the patches
    expected = bridge.cross_attention_maps(features)[-1].mean(dim=1)[1, 2].view(4, 4)
    torch.testing.assert_close(grids[1, 2], expected)
    with pytest.raises(ValueError, match="square grid"):
        query_attention_grids(bridge, torch.randn(2, 15, 8))


def test_evaluate_chapter4_qformer_on_a_small_run():
    from mmllm_course.bench_bridges import CHAPTER4_QFORMER, Chapter4Run, evaluate_chapter4_qformer
    from mmllm_course.bridges.alignment import AlignmentTask, random_targets
    from mmllm_course.data import generate_shapes

    held = generate_shapes(12, seed=3)
    g = torch.Generator().manual_seed(0)
    task = AlignmentTask(train_features=torch.randn(4, 16, 64, generator=g), train_labels=torch.zeros(4, dtype=torch.long),
                         held_out_features=torch.randn(12, 16, 64, generator=g),
                         held_out_labels=held.caption_class_labels().long(), targets=random_targets(160, 64), classes=[])
    torch.manual_seed(0)
    bridge = make_bridge("qformer", **CHAPTER4_QFORMER).eval()
    with torch.no_grad():
        bridge.queries.copy_(bridge.queries[:, :1].expand_as(bridge.queries))  # every query the same
    metrics = evaluate_chapter4_qformer(Chapter4Run(bridge, task, [], 0.0, held, 0), probe=12)
    assert set(metrics) == {"accuracy", "attention_on_shape", "attention_uniform", "peak_on_shape", "query_map_correlation"}
    assert metrics["query_map_correlation"] == pytest.approx(1.0, abs=1e-4)  # identical queries look at the same patches
    assert metrics["attention_uniform"] == pytest.approx(shape_patch_mask(held.boxes[:, 0]).float().mean().item())
    assert 0.0 <= metrics["attention_on_shape"] <= 1.0 and 0.0 <= metrics["peak_on_shape"] <= 1.0
    with torch.no_grad():
        bridge.queries.copy_(torch.randn(bridge.queries.shape, generator=g) * 3)  # distinct queries: distinct maps
    assert evaluate_chapter4_qformer(Chapter4Run(bridge, task, [], 0.0, held, 0), probe=12)["query_map_correlation"] < 0.99
