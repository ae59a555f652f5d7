"""Binding modalities into one space (chapter 8): the loss, the head, training, retrieval and the recipe's plumbing."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmllm_course.data import SHAPES, SIZES, SOLID_FOR_SHAPE, SOLIDS, make_spoken_descriptions
from mmllm_course.encoders import AudioEncoder, AudioEncoderConfig, PointEncoder, PointEncoderConfig, clip_loss
from mmllm_course.encoders.binding import (
    BOUND_SHAPES,
    CHAPTER8,
    SIZE_SCALE_RANGE,
    BindingHead,
    BoundEncoder,
    caption_embeddings,
    chapter8_failures,
    embed_in_batches,
    emergent_retrieval,
    info_nce,
    make_paired_clouds,
    pooled_features,
    random_rotation,
    run_chapter8,
    shape_size_class,
    spoken_caption_classes,
    spoken_caption_labels,
    train_binding,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------- info_nce


def test_info_nce_is_clips_loss_on_cosines_over_temperature():
    g = _gen()
    q, k = torch.randn(6, 8, generator=g) * 3, torch.randn(6, 8, generator=g)
    logits = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).T / 0.1
    assert torch.allclose(info_nce(q, k, 0.1), clip_loss(logits), atol=1e-6)
    rows = F.cross_entropy(logits, torch.arange(6))
    assert torch.allclose(info_nce(q, k, 0.1, symmetric=False), rows, atol=1e-6)
    # scale-free: only directions count
    assert torch.allclose(info_nce(5 * q, 0.2 * k, 0.1), info_nce(q, k, 0.1), atol=1e-6)


def test_info_nce_groups_remove_false_negatives():
    g = _gen(1)
    q, k = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    groups = torch.tensor([0, 0, 1, 1])
    logits = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).T / 0.5
    same = torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=torch.bool)
    masked = logits.masked_fill(same, float("-inf"))
    expected = (F.cross_entropy(masked, torch.arange(4)) + F.cross_entropy(masked.T, torch.arange(4))) / 2
    assert torch.allclose(info_nce(q, k, 0.5, groups=groups), expected, atol=1e-6)
    # every row in one group: no negatives left, the loss is 0
    assert info_nce(q, k, 0.5, groups=torch.zeros(4, dtype=torch.long)).item() == pytest.approx(0.0, abs=1e-6)
    # a perfect, well-separated pairing has a smaller loss than a shuffled one
    assert info_nce(k, k, 0.1) < info_nce(k.roll(1, 0), k, 0.1)


def test_info_nce_gradients_reach_the_query_only_when_keys_are_frozen():
    q = torch.randn(5, 4, requires_grad=True)
    k = torch.randn(5, 4)
    info_nce(q, k).backward()
    assert q.grad is not None and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: info_nce(torch.randn(4, 8), torch.randn(4, 6)), r"\(4, 8\) and \(4, 6\)"),
        (lambda: info_nce(torch.randn(1, 8), torch.randn(1, 8)), "at least 2 pairs.*B=1"),
        (lambda: info_nce(torch.randn(4, 8), torch.randn(4, 8), 0.0), "temperature"),
        (lambda: info_nce(torch.randn(4, 8), torch.randn(4, 8), groups=torch.zeros(3, dtype=torch.long)), r"\(4,\).*\(3,\)"),
        (lambda: info_nce(torch.randn(4, 8, 2), torch.randn(4, 8, 2)), "dims"),
    ],
)
def test_info_nce_rejects_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_info_nce_rejects_wrong_types():
    with pytest.raises(TypeError):
        info_nce(torch.randn(4, 8), torch.randn(4, 8), groups=torch.zeros(4))  # float groups
    with pytest.raises(TypeError):
        info_nce(torch.randn(4, 8).tolist(), torch.randn(4, 8))


# ---------------------------------------------------------------------------------------------- head, encoder


def test_binding_head_gives_unit_vectors_and_checks_widths():
    for hidden in (None, 32):
        head = BindingHead(16, 8, hidden_dim=hidden)
        out = head(torch.randn(5, 16))
        assert out.shape == (5, 8) and torch.allclose(out.norm(dim=-1), torch.ones(5), atol=1e-5)
    with pytest.raises(ValueError, match="in_dim=16.*\\(5, 12\\)"):
        BindingHead(16, 8)(torch.randn(5, 12))
    with pytest.raises(ValueError):
        BindingHead(0, 8)


def test_bound_encoders_for_audio_and_points():
    audio = BoundEncoder(AudioEncoder(AudioEncoderConfig(n_mels=40, dim=32, depth=1, mlp_dim=64)), BindingHead(32, 64))
    assert audio(torch.randn(3, 40, 100)).shape == (3, 64)
    assert audio.features(torch.randn(3, 40, 100)).shape == (3, 32)
    points = BoundEncoder(PointEncoder(PointEncoderConfig(num_groups=8, group_size=8, dim=32, depth=1)), BindingHead(32, 64, 16))
    assert points(torch.randn(3, 64, 3)).shape == (3, 64)
    with pytest.raises(ValueError, match="P=5"):
        points(torch.randn(1, 5, 3))  # fewer points than groups
    with pytest.raises(TypeError):
        BoundEncoder(lambda x: x, BindingHead(4, 4))
    with pytest.raises(ValueError, match="cannot pool"):
        pooled_features(torch.randn(2, 3, 4, 5))


def test_embed_in_batches_equals_one_pass_and_keeps_the_mode():
    model = BoundEncoder(nn.Linear(6, 6), BindingHead(6, 4)).train()
    x = torch.randn(10, 6)
    out = embed_in_batches(model, x, batch_size=3)
    with torch.no_grad():
        assert torch.allclose(out, model.eval()(x), atol=1e-6)
    model.train()
    embed_in_batches(model, x)
    assert model.training


# ---------------------------------------------------------------------------------------------- training, retrieval


def _toy_modalities(n: int, seed: int):
    """Two "modalities" that see the same 6 classes through different random maps, and an anchor table."""
    g = _gen(seed)
    anchor_table = F.normalize(torch.randn(6, 16, generator=_gen(99)), dim=-1)  # (6, E) class anchors
    labels = torch.randint(0, 6, (n,), generator=g)
    mix_a, mix_b = torch.randn(16, 24, generator=_gen(7)), torch.randn(16, 12, generator=_gen(8))
    a = anchor_table[labels] @ mix_a + 0.3 * torch.randn(n, 24, generator=g)
    b = torch.tanh(anchor_table[labels] @ mix_b) + 0.3 * torch.randn(n, 12, generator=g)
    return a, b, labels, anchor_table


def test_train_binding_aligns_two_modalities_that_never_met():
    a, b, labels, anchors = _toy_modalities(600, 0)
    torch.manual_seed(0)
    bind_a = BoundEncoder(nn.Sequential(nn.Linear(24, 32), nn.GELU()), BindingHead(32, 16))
    bind_b = BoundEncoder(nn.Sequential(nn.Linear(12, 32), nn.GELU()), BindingHead(32, 16))
    # each modality only ever sees the anchor (with a little noise, like CLIP embeddings of varied images)
    targets = anchors[labels] + 0.05 * torch.randn(600, 16, generator=_gen(3))
    history = train_binding(bind_a, a, targets, labels, steps=150, batch_size=64, lr=1e-2, progress=False)
    train_binding(bind_b, b, targets, labels, steps=150, batch_size=64, lr=1e-2, progress=False)
    assert history.loss[-1] < history.loss[0] and len(history.loss) == 150
    ta, tb, tl, _ = _toy_modalities(300, 1)
    result = emergent_retrieval(embed_in_batches(bind_a, ta), embed_in_batches(bind_b, tb), tl, tl)
    assert result.chance == pytest.approx(1 / 6, abs=0.03)
    assert result.top1 >= 4 * result.chance, result


def test_freeze_encoder_trains_only_the_head():
    a, _, labels, anchors = _toy_modalities(200, 0)
    model = BoundEncoder(nn.Linear(24, 32), BindingHead(32, 16))
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head_before = model.head.norm.weight.clone()
    train_binding(model, a, anchors[labels], labels, steps=5, batch_size=32, freeze_encoder=True, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())
    assert not torch.equal(head_before, model.head.norm.weight)
    assert all(p.requires_grad for p in model.parameters())  # unfrozen again afterwards


def test_train_binding_rejects_bad_input():
    model = BoundEncoder(nn.Linear(4, 8), BindingHead(8, 16))
    x, t = torch.randn(10, 4), torch.randn(10, 16)
    with pytest.raises(ValueError, match="10 inputs but 9 targets"):
        train_binding(model, x, t[:9], progress=False)
    with pytest.raises(ValueError, match="width 12.*embed_dim=16"):
        train_binding(model, x, torch.randn(10, 12), progress=False)
    with pytest.raises(ValueError, match="batch_size=32.*10"):
        train_binding(model, x, t, batch_size=32, progress=False)
    with pytest.raises(ValueError, match=r"\(10,\).*\(4,\)"):
        train_binding(model, x, t, groups=torch.zeros(4, dtype=torch.long), batch_size=4, progress=False)
    with pytest.raises(TypeError):
        train_binding(nn.Linear(4, 16), x, t, progress=False)


def test_emergent_retrieval_by_hand_and_its_chance():
    gallery = torch.eye(3)
    queries = torch.tensor([[1.0, 0.1, 0.0], [0.0, 0.2, 1.0], [0.9, 1.0, 0.0], [1.0, 0.0, 0.1]])
    result = emergent_retrieval(queries, gallery, torch.tensor([0, 2, 0, 1]), torch.tensor([0, 1, 2]))
    assert result.top1 == pytest.approx(0.5)  # queries 0 and 1 right, 2 and 3 wrong
    assert result.chance == pytest.approx(1 / 3) and result.times_chance == pytest.approx(1.5)
    with pytest.raises(ValueError, match="no gallery item"):
        emergent_retrieval(queries, gallery, torch.tensor([0, 2, 0, 5]), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="width"):
        emergent_retrieval(queries, torch.eye(4), torch.tensor([0, 2, 0, 1]), torch.tensor([0, 1, 2, 3]))


# ---------------------------------------------------------------------------------------------- data and classes


def test_spoken_caption_labels_index_the_caption_classes():
    batch = make_spoken_descriptions(12, seed=3)
    classes = spoken_caption_classes()
    assert len(classes) == 40 == len(set(classes))
    assert [classes[i] for i in spoken_caption_labels(batch.labels).tolist()] == batch.captions
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        spoken_caption_labels(torch.zeros(4, 2, dtype=torch.long))
    assert shape_size_class(torch.tensor([2]), torch.tensor([1])).item() == 2 * len(SIZES) + 1


def test_paired_clouds_match_their_images_in_shape_and_size():
    pairs = make_paired_clouds(60, seed=4, num_points=64)
    again = make_paired_clouds(60, seed=4, num_points=64)
    assert torch.equal(pairs.points, again.points) and torch.equal(pairs.images, again.images)
    assert pairs.points.shape == (60, 64, 3) and pairs.images.shape == (60, 3, 32, 32)
    assert set(pairs.shape.tolist()) == {SHAPES.index(s) for s in BOUND_SHAPES}
    radius = pairs.points.norm(dim=-1).amax(dim=1)  # overall size (+ a little jitter)
    for z, size in enumerate(SIZES):
        low, high = SIZE_SCALE_RANGE[size]
        r = radius[pairs.size == z]
        assert len(r) and r.min() > low - 0.05 and r.max() < high + 0.05
    assert all(s in SOLID_FOR_SHAPE and SOLID_FOR_SHAPE[s] in SOLIDS for s in BOUND_SHAPES)
    assert torch.equal(pairs.classes, shape_size_class(pairs.shape, pairs.size))


def test_random_rotation_keeps_lengths_and_changes_pose():
    pts = torch.randn(4, 32, 3)
    turned = random_rotation(pts, _gen(0))
    assert torch.allclose(turned.norm(dim=-1), pts.norm(dim=-1), atol=1e-5)
    assert not torch.allclose(turned, pts, atol=1e-3)


def test_caption_embeddings_are_unit_vectors_one_per_caption():
    from mmllm_course.pretrained import load_chapter2_clip

    clip, tok = load_chapter2_clip()
    emb = caption_embeddings(clip, tok, ["small red circle", "large blue square", "small red circle"])
    assert emb.shape == (3, 64) and torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.equal(emb[0], emb[2]) and not torch.allclose(emb[0], emb[1])
    with pytest.raises(TypeError):
        caption_embeddings(clip, tok, "small red circle")


# ---------------------------------------------------------------------------------------------- the recipe


def test_chapter8_recipe_runs_end_to_end_in_a_quick_mode():
    quick = dataclasses.replace(
        CHAPTER8, audio_train_size=64, audio_held_out_size=48, audio_steps=2, audio_batch_size=16, audio_depth=1,
        point_train_size=40, point_held_out_size=20, num_points=64, num_groups=8, group_size=8, point_depth=1,
        classifier_steps=2, classifier_batch_size=8, bind_train_size=40, bind_held_out_size=30, bind_steps=2, bind_batch_size=8,
    )
    metrics = run_chapter8(seed=1, recipe=quick)
    for key in ("audio_recognition", "point_classification", "emergent_audio_to_3d", "emergent_3d_to_audio", "emergent_chance"):
        assert 0.0 <= metrics[key] <= 1.0, (key, metrics[key])
    assert 0.1 < metrics["emergent_chance"] < 0.3  # about 1/6
    assert chapter8_failures(dict(metrics, audio_recognition=0.5, emergent_audio_to_3d=0.0, emergent_3d_to_audio=1.0,
                                  point_classification=1.0, emergent_chance=1 / 6)) == [
        "audio_recognition 50.0% < 95%", "emergent_audio_to_3d 0.0% < 4 x chance = 66.7%"]
    with pytest.raises(TypeError):
        run_chapter8(seed=0, recipe={"audio_steps": 2})
    with pytest.raises(ValueError):
        run_chapter8(seed=-1)
    assert math.isclose(CHAPTER8.temperature, 0.07)
