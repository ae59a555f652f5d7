"""The chapter's target space (mmllm_course.bridges.alignment): shapes, determinism, learning, bad input."""

from __future__ import annotations

import pytest
import torch

from mmllm_course.bridges import make_bridge
from mmllm_course.bridges.alignment import (
    ALIGNMENT_SCALE,
    CAPTION_ATTRIBUTES,
    CHAPTER3_BARS,
    AlignmentTask,
    BridgeComparisonRecipe,
    bridge_comparison_failures,
    compare_bridges,
    image_features,
    regroup_task,
    alignment_accuracy,
    alignment_logits,
    alignment_loss,
    make_alignment_task,
    random_targets,
    train_bridge,
)
from mmllm_course.encoders.vit import ViT, ViTConfig
from mmllm_course.pretrained import load_chapter2_clip


@pytest.fixture(scope="module")
def encoder():
    return load_chapter2_clip()[0].vision


@pytest.fixture(scope="module")
def task(encoder):
    return make_alignment_task(encoder, train_size=1200, held_out_size=400, out_dim=32, seed=0)


def test_task_shapes_and_targets(task, encoder):
    assert task.train_features.shape == (1200, 1, 64) and task.held_out_features.shape == (400, 1, 64)
    assert task.train_labels.shape == (1200,) and task.held_out_labels.shape == (400,)
    assert task.train_labels.dtype == torch.long and int(task.train_labels.max()) < 160
    assert task.targets.shape == (160, 32) and len(task.classes) == 160
    assert torch.allclose(task.targets.norm(dim=-1), torch.ones(160), atol=1e-5)
    assert (task.in_dim, task.out_dim, task.num_tokens, task.num_classes) == (64, 32, 1, 160)
    assert not task.train_features.requires_grad
    # held-out images are other images than the training ones
    assert not torch.equal(task.train_features[:400], task.held_out_features)
    patches = make_alignment_task(encoder, train_size=50, held_out_size=20, out_dim=16, pooled=False, labels="color_shape")
    assert patches.train_features.shape == (50, 16, 64) and patches.targets.shape == (20, 16)
    assert int(patches.train_labels.max()) < 20 and len(patches.classes) == 20


def test_same_seed_same_task_other_seed_other_task(encoder):
    a = make_alignment_task(encoder, train_size=64, held_out_size=32, seed=3)
    b = make_alignment_task(encoder, train_size=64, held_out_size=32, seed=3)
    c = make_alignment_task(encoder, train_size=64, held_out_size=32, seed=4)
    for name in ("train_features", "train_labels", "held_out_features", "held_out_labels", "targets"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
        assert not torch.equal(getattr(a, name), getattr(c, name)), name
    assert torch.equal(random_targets(160, 64, 3), a.targets)


def test_training_is_deterministic_by_seed(task):
    def run(seed):
        torch.manual_seed(0)
        bridge = make_bridge("mlp", in_dim=64, out_dim=32, hidden_dim=16)
        return train_bridge(bridge, task, steps=20, batch_size=64, seed=seed), bridge

    (l1, b1), (l2, b2), (l3, _) = run(0), run(0), run(1)
    assert l1 == l2 and l1 != l3 and len(l1) == 20
    assert all(torch.equal(p, q) for p, q in zip(b1.parameters(), b2.parameters()))
    assert not b1.training  # left in eval mode


def test_training_restores_the_thread_setting(task):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train_bridge(make_bridge("linear", in_dim=64, out_dim=32), task, steps=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_scoring_is_cosine_of_the_mean_token():
    targets = random_targets(5, 8, seed=0)
    outputs = torch.stack([3 * targets[[2, 2]], targets[[4, 4]] + targets[[4, 4]]])  # (2, 2, 8): lengths do not matter
    logits = alignment_logits(outputs, targets)
    assert logits.shape == (2, 5)
    assert logits.argmax(-1).tolist() == [2, 4]
    assert torch.allclose(logits[0, 2], torch.tensor(ALIGNMENT_SCALE))
    # mean over K, then normalise: two tokens pointing at two targets score both the same
    mixed = alignment_logits(targets[None, [0, 1]], targets)
    assert torch.allclose(mixed[0, 0], mixed[0, 1])
    labels = torch.tensor([2, 4])
    expected = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.allclose(alignment_loss(outputs, labels, targets), expected)


def test_a_linear_bridge_learns_above_chance_in_a_short_run(task):
    torch.manual_seed(0)
    bridge = make_bridge("linear", in_dim=64, out_dim=32)
    before = alignment_accuracy(bridge, task)
    losses = train_bridge(bridge, task, steps=150, batch_size=128, lr=1e-2)
    after = alignment_accuracy(bridge, task)
    assert sum(losses[-10:]) / 10 < losses[0] - 0.5, (losses[0], losses[-10:])
    chance = 1 / task.num_classes
    assert after > 10 * chance and after > before + 0.05, (before, after)
    assert 0.0 <= alignment_accuracy(bridge, task, "train") <= 1.0


def test_an_mlp_beats_a_linear_bridge_of_the_same_size_on_160_random_targets(task):
    torch.manual_seed(0)
    linear = make_bridge("linear", in_dim=64, out_dim=32)
    mlp = make_bridge("mlp", in_dim=64, out_dim=32, hidden_dim=21)  # 2069 parameters vs 2080
    n_lin, n_mlp = (sum(p.numel() for p in m.parameters()) for m in (linear, mlp))
    assert abs(n_lin - n_mlp) / n_lin < 0.05  # the same parameter budget
    for bridge in (linear, mlp):
        train_bridge(bridge, task, steps=400, batch_size=128)
    acc_linear, acc_mlp = alignment_accuracy(linear, task), alignment_accuracy(mlp, task)
    assert acc_mlp > acc_linear + 0.2, (acc_linear, acc_mlp)


def test_any_encoder_with_pooled_and_tokens_works():
    torch.manual_seed(0)
    vit = ViT(ViTConfig(image_size=32, patch_size=8, dim=24, depth=1, num_heads=2, mlp_dim=48))
    t = make_alignment_task(vit, train_size=40, held_out_size=20, out_dim=8, pooled=False)
    assert t.train_features.shape == (40, 16, 24)
    bridge = make_bridge("qformer", in_dim=24, out_dim=8, dim=16, num_queries=4, depth=1, num_heads=2, mlp_dim=32)
    train_bridge(bridge, t, steps=2, batch_size=16)
    assert 0.0 <= alignment_accuracy(bridge, t) <= 1.0


def test_regroup_task_keeps_the_features_and_relabels_by_attribute(task, encoder):
    from mmllm_course.data import all_caption_classes, color_shape_classes, generate_shapes

    cs = regroup_task(task, ("shape", "color"), seed=0)  # order of the names does not matter
    assert cs.train_features is task.train_features and cs.classes == color_shape_classes()
    images = generate_shapes(1200, seed=1000)  # the task's own training images (seed 0)
    assert torch.equal(task.train_labels, images.caption_class_labels())
    assert torch.equal(cs.train_labels, images.color_shape_labels())
    assert cs.targets.shape == (20, 32)
    full = regroup_task(task, CAPTION_ATTRIBUTES, seed=0)
    assert torch.equal(full.train_labels, task.train_labels) and full.classes == all_caption_classes()
    pos = regroup_task(task, ("position",))
    assert pos.classes == ["in the top left", "in the top right", "in the bottom left", "in the bottom right"]
    assert torch.equal(pos.held_out_labels, task.held_out_labels % 4)
    sizes = {a: regroup_task(task, a).num_classes for a in CAPTION_ATTRIBUTES}
    assert sizes == {"size": 2, "color": 4, "shape": 5, "position": 4}
    with pytest.raises(ValueError, match="attribute must be one of"):
        regroup_task(task, ("colour",))
    with pytest.raises(ValueError, match="non-empty"):
        regroup_task(task, ())
    with pytest.raises(ValueError, match="160 caption classes"):
        regroup_task(cs, ("color",))
    with pytest.raises(TypeError, match="attributes must be a tuple"):
        regroup_task(task, 5)


def test_compare_bridges_runs_every_group_and_the_bars_read_its_numbers(task):
    small = BridgeComparisonRecipe(out_dim=32, steps=5, batch_size=32, equal_hidden=8, wide_hidden=16)
    result = compare_bridges(seed=0, recipe=small, task=task)
    groups = ("color_shape", "size_color_shape", "color_shape_position", "caption")
    assert set(result.accuracy) == {f"{g}/{b}" for g in groups for b in ("linear", "mlp")} | {"caption/mlp_wide"}
    assert result.num_classes == {"color_shape": 20, "size_color_shape": 40, "color_shape_position": 80, "caption": 160}
    assert result.parameters == {"linear": 64 * 32 + 32, "mlp": 64 * 8 + 8 + 8 * 32 + 32, "mlp_wide": 64 * 16 + 16 + 16 * 32 + 32}
    assert all(len(v) == 5 for v in result.losses.values())
    assert all(0 <= v <= 1 for v in result.accuracy.values())
    good = {k: 0.5 for k in result.accuracy} | {"caption/linear": 0.42, "caption/mlp": 0.95, "color_shape_position/linear": 0.7,
                                                 "color_shape_position/mlp": 0.95, "color_shape/linear": 0.96, "color_shape/mlp": 0.97}
    assert bridge_comparison_failures(good) == []
    no_gap = dict(good, **{"caption/linear": 0.94})
    assert any("caption (gap_min)" in f for f in bridge_comparison_failures(no_gap))
    assert any("color_shape (gap_max)" in f for f in bridge_comparison_failures(dict(good, **{"color_shape/linear": 0.90})))
    assert set(CHAPTER3_BARS) >= {"caption/gap_min", "color_shape/gap_max"}
    with pytest.raises(ValueError, match="out_dim = 32 differs"):
        compare_bridges(seed=0, task=task)  # the default recipe has out_dim 64


def test_bad_input_is_named(task, encoder):
    with pytest.raises(ValueError, match="labels must be one of"):
        make_alignment_task(encoder, train_size=10, held_out_size=10, labels="captions")
    with pytest.raises(ValueError, match="train_size must be a positive integer"):
        make_alignment_task(encoder, train_size=0)
    with pytest.raises(TypeError, match="pooled must be True or False"):
        make_alignment_task(encoder, train_size=10, held_out_size=10, pooled="yes")
    with pytest.raises(TypeError, match="encoder must be an image encoder"):
        make_alignment_task("clip", train_size=10, held_out_size=10)
    wrong_out = make_bridge("linear", in_dim=64, out_dim=16)
    with pytest.raises(ValueError, match="out_dim = 16 does not fit the task: expected out_dim = 32"):
        train_bridge(wrong_out, task, steps=1)
    wrong_in = make_bridge("linear", in_dim=32, out_dim=32)
    with pytest.raises(ValueError, match="in_dim = 32 does not fit"):
        alignment_accuracy(wrong_in, task)
    good = make_bridge("linear", in_dim=64, out_dim=32)
    with pytest.raises(TypeError, match="task must be an AlignmentTask"):
        train_bridge(good, {"features": task.train_features}, steps=1)
    with pytest.raises(TypeError, match="bridge must be a torch.nn.Module"):
        alignment_accuracy(lambda x: x, task)
    with pytest.raises(ValueError, match="split must be one of"):
        alignment_accuracy(good, task, split="test")
    with pytest.raises(ValueError, match="lr must be a finite number"):
        train_bridge(good, task, steps=1, lr=0.0)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        train_bridge(good, task, steps=0)
    with pytest.raises(ValueError, match="must share D_out"):
        alignment_logits(torch.zeros(2, 1, 8), torch.zeros(3, 9))
    with pytest.raises(ValueError, match="outputs must have 3 dims"):
        alignment_logits(torch.zeros(2, 8), torch.zeros(3, 8))
    with pytest.raises(ValueError, match="labels must be \\(B,\\) with B = 2"):
        alignment_loss(torch.zeros(2, 1, 8), torch.zeros(3, dtype=torch.long), torch.randn(3, 8))
    with pytest.raises(TypeError, match="labels must hold integers"):
        alignment_loss(torch.zeros(2, 1, 8), torch.zeros(2), torch.randn(3, 8))
    with pytest.raises(TypeError, match="images must be a torch.Tensor"):
        image_features(encoder, [[0.0]])
    with pytest.raises(ValueError, match="accuracy lacks"):
        bridge_comparison_failures({"caption/linear": 0.4})
    frozen = make_bridge("linear", in_dim=64, out_dim=32).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train_bridge(frozen, task, steps=1)
    assert isinstance(task, AlignmentTask)
