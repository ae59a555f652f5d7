"""The shapes world: determinism, labels that agree with the pixels, captions, QA, datasets, errors; sample photos."""

import re

import pytest
import torch
from torch.utils.data import DataLoader

from mmllm_course.data import (
    ANSWERS,
    COLOR_RGB,
    COLORS,
    POSITIONS,
    SAMPLE_IMAGES,
    SHAPES,
    SIZES,
    ShapesBatch,
    ShapesDataset,
    ShapesWorldConfig,
    all_caption_classes,
    caption_class_index,
    caption_for,
    collate_shapes,
    color_shape_classes,
    color_shape_index,
    generate_shapes,
    load_sample_image,
    questions_for,
)


@pytest.fixture(scope="module")
def one():
    return generate_shapes(400, seed=0)


@pytest.fixture(scope="module")
def two():
    return generate_shapes(300, seed=1, config=ShapesWorldConfig(num_shapes=2))


def _ink(images: torch.Tensor) -> torch.Tensor:
    """(n, H, W) bool: pixels that are clearly coloured, found from the pixels alone (grey has R = G = B)."""
    return (images.amax(dim=1) - images.amin(dim=1)) > 0.35


def _quadrant_of(ys: torch.Tensor, xs: torch.Tensor, size: int) -> int:
    row, col = int(ys.float().mean() >= size / 2), int(xs.float().mean() >= size / 2)
    return 2 * row + col


def _nearest_color(rgb: torch.Tensor) -> int:
    table = torch.tensor([COLOR_RGB[c] for c in COLORS])
    return int((table - rgb).norm(dim=1).argmin())


# ------------------------------------------------------------------------------------------- basics


def test_batch_shapes_and_ranges(one):
    n = len(one)
    assert n == 400
    assert one.images.shape == (n, 3, 32, 32) and one.images.dtype == torch.float32
    assert 0.0 <= one.images.min() and one.images.max() <= 1.0
    for name, names in [("shape", SHAPES), ("color", COLORS), ("size", SIZES), ("position", POSITIONS)]:
        labels = getattr(one, name)
        assert labels.shape == (n,) and labels.dtype == torch.int64
        assert set(labels.tolist()) == set(range(len(names)))  # every value is sampled in 400 draws
    assert one.objects.shape == (n, 1, 4)
    assert torch.equal(one.objects[:, 0], torch.stack([one.shape, one.color, one.size, one.position], 1))
    assert len(one.captions) == n and len(one.qa) == n


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = generate_shapes(50, seed=7), generate_shapes(50, seed=7), generate_shapes(50, seed=8)
    assert torch.equal(a.images, b.images) and torch.equal(a.objects, b.objects) and a.captions == b.captions
    assert a.qa == b.qa
    assert not torch.equal(a.images, c.images)
    assert not torch.equal(a.objects, c.objects)


def test_chunked_rendering_matches_a_single_image_render():
    # Large n is rendered in chunks; labels are drawn up front, so a chunk boundary changes nothing visible.
    big = generate_shapes(2100, seed=3)
    assert big.images.shape[0] == 2100
    ink = _ink(big.images[2040:2100])
    assert ink.flatten(1).any(dim=1).all()  # every image past the first chunk has its shape drawn


# --------------------------------------------------------------------------------- labels vs pixels


def test_labels_agree_with_pixels_one_shape(one):
    ink = _ink(one.images)
    counts = ink.flatten(1).sum(1)
    assert (counts > 10).all()
    for i in range(len(one)):
        ys, xs = torch.nonzero(ink[i], as_tuple=True)
        assert _quadrant_of(ys, xs, 32) == one.position[i], one.captions[i]
        mean_rgb = one.images[i][:, ink[i]].mean(dim=1)
        assert _nearest_color(mean_rgb) == one.color[i], one.captions[i]
        assert (mean_rgb - torch.tensor(COLOR_RGB[COLORS[one.color[i]]])).abs().max() < 0.12
        x0, y0, x1, y1 = one.boxes[i, 0].tolist()
        assert x0 - 1 <= xs.min() and xs.max() <= x1 + 1 and y0 - 1 <= ys.min() and ys.max() <= y1 + 1
    for s in range(len(SHAPES)):
        small = counts[(one.shape == s) & (one.size == 0)]
        large = counts[(one.shape == s) & (one.size == 1)]
        assert small.numel() and large.numel()
        assert large.min() > small.max(), SHAPES[s]  # same kind: large always covers more pixels


def test_labels_agree_with_pixels_two_shapes(two):
    ink = _ink(two.images)
    assert two.objects.shape == (len(two), 2, 4)
    assert (two.objects[:, 0, 3] < two.objects[:, 1, 3]).all()  # different quadrants, in reading order
    for i in range(len(two)):
        used = set()
        for shape, color, size, pos in two.objects[i].tolist():
            r, c = divmod(pos, 2)
            quad_ink = ink[i, r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16]
            assert quad_ink.sum() > 10
            rgb = two.images[i, :, r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16][:, quad_ink].mean(1)
            assert _nearest_color(rgb) == color
            used.add(pos)
        for pos in set(range(4)) - used:  # the empty quadrants hold only grey noise
            r, c = divmod(pos, 2)
            assert not ink[i, r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16].any()


def test_shape_kinds_are_distinguishable_in_pixels():
    # Centred, unjittered, one of each kind: masks of different kinds differ in many pixels.
    cfg = ShapesWorldConfig(position_jitter=0.0, size_jitter=0.0, noise=0.0, color_jitter=0.0, positions=("top left",), colors=("red",))
    masks = {}
    for size in SIZES:
        batch = generate_shapes(200, seed=0, config=ShapesWorldConfig(**{**cfg.__dict__, "sizes": (size,)}))
        ink = _ink(batch.images)
        for s in range(len(SHAPES)):
            masks[(size, s)] = ink[batch.shape == s][0]
            assert all(torch.equal(m, masks[(size, s)]) for m in ink[batch.shape == s])  # no jitter: identical
        for a in range(len(SHAPES)):
            for b in range(a + 1, len(SHAPES)):
                diff = (masks[(size, a)] ^ masks[(size, b)]).sum()
                assert diff >= 8, (size, SHAPES[a], SHAPES[b], int(diff))


def test_other_image_size_and_restricted_config():
    cfg = ShapesWorldConfig(image_size=64, shapes=("star", "cross"), colors=("blue",), positions=("bottom right",))
    batch = generate_shapes(40, seed=2, config=cfg)
    assert batch.images.shape == (40, 3, 64, 64)
    assert set(batch.shape.tolist()) == {SHAPES.index("star"), SHAPES.index("cross")}
    assert set(batch.color.tolist()) == {COLORS.index("blue")}
    assert set(batch.position.tolist()) == {POSITIONS.index("bottom right")}
    ink = _ink(batch.images)
    assert not ink[:, :32].any() and not ink[:, :, :32].any()


# ------------------------------------------------------------------------------------ text and QA


def test_captions_name_the_labels(one, two):
    for i in range(len(one)):
        s, c, z, p = one.objects[i, 0].tolist()
        assert one.captions[i] == f"a {SIZES[z]} {COLORS[c]} {SHAPES[s]} in the {POSITIONS[p]}"
    for i in range(len(two)):
        parts = two.captions[i].split(" and ")
        assert len(parts) == 2
        for part, obj in zip(parts, two.objects[i].tolist()):
            assert part == caption_for(*obj)
    assert caption_for("star", "blue", "large", "bottom right") == caption_for(3, 2, 1, 3)


def _answer_from_labels(question: str, objects: list[list[int]]) -> list[str]:
    """Every answer the scene supports for a question: an independent reading of the templates."""
    names = [(SHAPES[s], COLORS[c], SIZES[z], POSITIONS[p]) for s, c, z, p in objects]
    patterns = [
        (r"What colour is the (\w+)\?", 0, 1),
        (r"What shape is in the (.+)\?", 3, 0),
        (r"How big is the (\w+) shape\?", 1, 2),
        (r"Where is the (\w+)\?", 0, 3),
        (r"What colour is the shape in the (.+)\?", 3, 1),
    ]
    for pattern, key, value in patterns:
        m = re.fullmatch(pattern, question)
        if m:
            return [obj[value] for obj in names if obj[key] == m.group(1)]
    raise AssertionError(f"unexpected question {question!r}")


def test_qa_answers_are_unique_and_right(one, two):
    for batch in (one, two):
        for objects, qa in zip(batch.objects.tolist(), batch.qa):
            assert qa
            for question, answer in qa:
                assert answer in ANSWERS
                assert _answer_from_labels(question, objects) == [answer], (question, objects)
    # One shape: every question type is asked.
    assert len(one.qa[0]) == 5


def test_ambiguous_questions_are_not_asked():
    two_red_circles = [[0, 0, 0, 0], [0, 0, 1, 3]]
    qa = questions_for(two_red_circles)
    questions = [q for q, _ in qa]
    assert "What colour is the circle?" not in questions and "Where is the circle?" not in questions
    assert "How big is the red shape?" not in questions
    assert ("What shape is in the bottom right?", "circle") in qa


def test_class_names_and_indices(one):
    names = color_shape_classes()
    assert len(names) == 20 == len(set(names))
    captions = all_caption_classes()
    assert len(captions) == len(SHAPES) * len(COLORS) * len(SIZES) * len(POSITIONS) == 160 == len(set(captions))
    assert all_caption_classes("a photo of {}")[0] == "a photo of " + captions[0]
    for i in range(len(one)):
        assert captions[one.caption_class_labels()[i]] == one.captions[i]
        cs = names[one.color_shape_labels()[i]]
        assert f"{cs} in the" in one.captions[i]
    assert names[color_shape_index(color=COLORS.index("blue"), shape=SHAPES.index("star"))] == "blue star"
    idx = caption_class_index(shape=3, color=2, size=1, position=3)
    assert captions[idx] == "a large blue star in the bottom right"


# ------------------------------------------------------------------------------- dataset, indexing


def test_indexing_and_slicing(one):
    part = one[10:20]
    assert isinstance(part, ShapesBatch) and len(part) == 10
    assert torch.equal(part.images, one.images[10:20]) and part.captions == one.captions[10:20]
    picked = one[torch.tensor([3, 1])]
    assert picked.captions == [one.captions[3], one.captions[1]] and torch.equal(picked.shape, one.shape[[3, 1]])
    item = one[5]
    assert item["caption"] == one.captions[5] and torch.equal(item["image"], one.images[5])
    assert one[-1]["caption"] == one.captions[-1]
    with pytest.raises(IndexError):
        one[400]


def test_dataset_and_collate_with_dataloader(one):
    ds = ShapesDataset(one)
    assert len(ds) == 400
    loader = DataLoader(ds, batch_size=32, shuffle=False, collate_fn=collate_shapes)
    batch = next(iter(loader))
    assert batch["image"].shape == (32, 3, 32, 32)
    assert batch["shape"].shape == (32,) and torch.equal(batch["color"], one.color[:32])
    assert batch["objects"].shape == (32, 1, 4) and batch["boxes"].shape == (32, 1, 4)
    assert batch["caption"] == one.captions[:32] and batch["qa"] == one.qa[:32]
    ds2 = ShapesDataset(12, seed=0)
    assert torch.equal(ds2[3]["image"], generate_shapes(12, seed=0).images[3])


# ---------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("n", [0, -3, 2.5, "10", True])
def test_bad_n_raises(n):
    with pytest.raises(ValueError, match="n must be"):
        generate_shapes(n)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_size": 8}, "image_size"),
        ({"image_size": 33}, "image_size"),
        ({"num_shapes": 3}, "num_shapes"),
        ({"shapes": ("circle", "hexagon")}, "hexagon"),
        ({"colors": ()}, "colors"),
        ({"positions": ("top left",), "num_shapes": 2}, "positions"),
        ({"noise": -0.1}, "noise"),
        ({"position_jitter": 2.0}, "position_jitter"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ShapesWorldConfig(**kwargs)


def test_other_bad_arguments_raise():
    with pytest.raises(ValueError, match="seed"):
        generate_shapes(4, seed=-1)
    with pytest.raises(ValueError, match="ShapesWorldConfig"):
        generate_shapes(4, config={"image_size": 32})
    with pytest.raises(ValueError, match="shape must be one of"):
        caption_for("hexagon", "red", "small", "top left")
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        caption_for(0, 4, 0, 0)
    with pytest.raises(ValueError, match="ShapesBatch"):
        ShapesDataset("ten")
    with pytest.raises(ValueError, match="empty"):
        collate_shapes([])


# ---------------------------------------------------------------------------------- sample photos


def test_load_sample_image():
    full = load_sample_image("astronaut")
    assert full.shape == (3, 512, 512) and full.dtype == torch.float32
    assert 0.0 <= full.min() and full.max() <= 1.0 and full.max() > 0.9
    small = load_sample_image("coffee", size=32)  # 400x600: centre crop then resize
    assert small.shape == (3, 32, 32) and 0.0 <= small.min() and small.max() <= 1.0
    gray = load_sample_image("camera", size=16)
    assert gray.shape == (3, 16, 16) and torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert load_sample_image("logo").shape[0] == 3  # RGBA -> RGB
    # The crop is centred: resizing a crop of the full image by hand gives the same pixels.
    ref = torch.nn.functional.interpolate(full[None], size=(32, 32), mode="bilinear", antialias=True)[0]
    assert torch.allclose(load_sample_image("astronaut", size=32), ref.clamp(0, 1), atol=1e-6)


def test_sample_image_errors_list_the_choices():
    assert "astronaut" in SAMPLE_IMAGES and "chelsea" in SAMPLE_IMAGES
    with pytest.raises(ValueError, match="expected one of.*astronaut"):
        load_sample_image("lena")
    with pytest.raises(ValueError, match="size"):
        load_sample_image("astronaut", size=0)
