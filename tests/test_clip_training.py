"""Fast tests of the CLIP training and evaluation helpers (tiny models, a few steps; seconds in total)."""

import pytest
import torch

from mmllm_course.data import color_shape_classes, generate_shapes, shapes_tokenizer
from mmllm_course.encoders.clip import CLIP, CLIPConfig
from mmllm_course.encoders.clip_training import (
    encode_images,
    encode_texts,
    text_to_image_recall,
    tokenize_captions,
    train_clip,
    unique_caption_indices,
    zero_shot_accuracy,
)
from mmllm_course.encoders.text import TextTransformerConfig
from mmllm_course.encoders.vit import ViT, ViTConfig


@pytest.fixture(scope="module")
def tok():
    return shapes_tokenizer()


def _tiny_clip(vocab_size: int, seed: int = 0) -> CLIP:
    torch.manual_seed(seed)
    vision = ViTConfig(dim=32, depth=1, num_heads=2, mlp_dim=64, pre_norm=True, final_norm="pooled", pooling="mean")
    text = TextTransformerConfig(vocab_size=vocab_size, context_length=12, dim=32, depth=1, num_heads=2, mlp_dim=64)
    return CLIP(CLIPConfig(vision=vision, text=text, embed_dim=16))


def test_tokenize_captions_pads_and_ends_each_row_with_eos(tok):
    texts = ["a red circle", "a small blue star in the top left"]
    ids, mask = tokenize_captions(tok, texts, context_length=12)
    plain = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert ids.shape == mask.shape == (2, max(len(p) for p in plain) + 1)  # padded to the longest, not to 12
    for row, m, p in zip(ids, mask, plain):
        n = len(p)
        assert row[:n].tolist() == p
        assert row[n].item() == tok.eos_token_id
        assert (row[n + 1 :] == tok.pad_token_id).all()
        assert m.tolist() == [1] * (n + 1) + [0] * (len(row) - n - 1)


def test_tokenize_captions_rejects_overlong_and_empty(tok):
    with pytest.raises(ValueError, match="context_length=4"):
        tokenize_captions(tok, ["a small red circle in the top left"], context_length=4)
    with pytest.raises(ValueError, match="empty"):
        tokenize_captions(tok, [], context_length=8)
    with pytest.raises(ValueError, match="single string"):
        tokenize_captions(tok, "a red circle", context_length=8)


def test_train_clip_lowers_the_loss_and_is_reproducible(tok):
    data = generate_shapes(512, seed=3)
    ids, mask = tokenize_captions(tok, data.captions, 16)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        vision = ViTConfig(pre_norm=True, final_norm="pooled", pooling="mean", pixel_mean=(0.5,) * 3, pixel_std=(0.25,) * 3)
        model = CLIP(CLIPConfig(vision=vision, text=TextTransformerConfig(vocab_size=len(tok), context_length=16)))
        before = model(data.images[:32], ids[:32], mask[:32], paired=True)
        hist = train_clip(model, data.images, ids, mask, steps=40, batch_size=128, lr=2e-3, warmup_steps=10, progress=False)
        runs.append(hist.loss)
        assert not model.training  # left in eval mode
    assert runs[0] == runs[1]  # same seed, same losses
    first, last = sum(runs[0][:5]) / 5, sum(runs[0][-5:]) / 5
    assert last < first - 0.2, f"loss did not drop: {first:.3f} -> {last:.3f}"
    assert len(hist.lr) == 40 and max(hist.lr) <= 2e-3 + 1e-12
    assert before.shape == (32, 32)  # forward of the untrained model on a paired batch


def test_distinct_caption_batches():
    from mmllm_course.encoders.clip_training import _distinct_caption_sampler

    ids = torch.tensor([[5, 1], [6, 1], [5, 1], [7, 1], [6, 1], [5, 1]])  # 3 distinct captions
    sample = _distinct_caption_sampler(ids, torch.Generator().manual_seed(0))
    seen = set()
    for _ in range(50):
        idx = sample(3)
        assert len(idx) == 3 and sample.groups == 3
        assert len({tuple(ids[i].tolist()) for i in idx}) == 3  # never the same caption twice
        seen.update(idx.tolist())
    assert seen == set(range(6))  # every pair gets its turn


def test_train_clip_validates_its_inputs(tok):
    data = generate_shapes(8, seed=0)
    ids, mask = tokenize_captions(tok, data.captions, 12)
    model = _tiny_clip(len(tok))
    with pytest.raises(ValueError, match="paired"):
        train_clip(model, data.images, ids[:5], mask[:5], steps=1, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        train_clip(model, data.images, ids, mask, steps=1, batch_size=16, progress=False)
    with pytest.raises(ValueError, match="at least 2"):
        train_clip(model, data.images, ids, mask, steps=1, batch_size=1, progress=False)
    twice = torch.cat([data.images, data.images]), torch.cat([ids, ids])  # 16 pairs, 8 distinct captions
    with pytest.raises(ValueError, match="only 8 distinct captions"):
        train_clip(model, *twice, steps=1, batch_size=9, progress=False)
    hist = train_clip(model, data.images, ids, mask, steps=3, batch_size=2, warmup_steps=2, lr=1e-3, progress=False)
    assert hist.lr[0] == pytest.approx(0.5e-3)  # the rate step 0 used: half-way through a 2-step warmup


class _Oracle(CLIP):
    """A 'CLIP' whose embeddings are one-hot colours: images by their mean RGB, texts by the colour word."""

    COLORS = ("red", "green", "blue", "yellow")

    def __init__(self, tok):
        super().__init__(CLIPConfig(text=TextTransformerConfig(vocab_size=len(tok), context_length=12)))
        self.tok = tok
        self.word_ids = {tok(" " + c, add_special_tokens=False)["input_ids"][0]: i for i, c in enumerate(self.COLORS)}

    def encode_image(self, images, normalize=True):
        rgb = images.flatten(2).mean(-1)  # (B, 3): the images here are plain colour fields
        protos = torch.tensor([[0.85, 0.12, 0.12], [0.15, 0.7, 0.2], [0.15, 0.25, 0.85], [0.9, 0.85, 0.15]])
        score = -((rgb[:, None] - protos[None]) ** 2).sum(-1)
        return torch.nn.functional.one_hot(score.argmax(1), 4).float()

    def encode_text(self, input_ids, attention_mask=None, normalize=True):
        out = torch.zeros(len(input_ids), 4)
        for r, row in enumerate(input_ids.tolist()):
            for t in row:
                if t in self.word_ids:
                    out[r, self.word_ids[t]] = 1.0
        return out


def test_zero_shot_accuracy_counts_matches(tok):
    # Plain colour images make the oracle exact: accuracy 1 with the right names, 0 with shifted ones.
    images = torch.stack([torch.tensor(c).view(3, 1, 1).expand(3, 32, 32) for c in
                          [[0.85, 0.12, 0.12], [0.15, 0.7, 0.2], [0.15, 0.25, 0.85], [0.9, 0.85, 0.15]] * 2])
    labels = torch.tensor([0, 1, 2, 3] * 2)
    oracle = _Oracle(tok)
    names = ["red", "green", "blue", "yellow"]
    assert zero_shot_accuracy(oracle, images, labels, tok, names, templates=("a {} shape",)) == 1.0
    assert zero_shot_accuracy(oracle, images, labels, tok, names[1:] + names[:1]) == 0.0
    assert zero_shot_accuracy(oracle, images, labels, tok, names, templates=("a {}", "a {} thing")) == 1.0
    assert zero_shot_accuracy(oracle, images, labels, tok, names, templates=("a {}", "a {} thing"), ensemble="max") == 1.0
    assert zero_shot_accuracy(oracle, images, labels, tok, names[1:] + names[:1], ensemble="max") == 0.0
    with pytest.raises(ValueError, match="ensemble"):
        zero_shot_accuracy(oracle, images, labels, tok, names, ensemble="median")


def test_zero_shot_ensembles_agree_on_one_prompt_and_compute_what_they_say(tok):
    data = generate_shapes(200, seed=4)
    model = _tiny_clip(len(tok), seed=1)
    labels, names = data.color_shape_labels(), color_shape_classes()
    one = [zero_shot_accuracy(model, data.images, labels, tok, names, templates=("a {}",), ensemble=e) for e in ("mean", "max")]
    assert one[0] == one[1]  # one prompt per class: nothing to combine
    many = ("a small {} in the top left", "a large {} in the bottom right", "a {}")
    img = encode_images(model, data.images)
    txt = encode_texts(model, tok, [t.format(n) for n in names for t in many]).view(len(names), len(many), -1)
    by_max = (torch.einsum("ne,kpe->nkp", img, txt).amax(-1).argmax(-1) == labels).float().mean().item()
    by_mean = (img @ torch.nn.functional.normalize(txt.mean(1), dim=-1).T).argmax(-1).eq(labels).float().mean().item()
    assert zero_shot_accuracy(model, data.images, labels, tok, names, templates=many, ensemble="max") == pytest.approx(by_max)
    assert zero_shot_accuracy(model, data.images, labels, tok, names, templates=many) == pytest.approx(by_mean)


def test_encoders_give_unit_vectors_and_retrieval_needs_distinct_captions(tok):
    data = generate_shapes(40, seed=1)
    model = _tiny_clip(len(tok))
    keep = unique_caption_indices(data.captions)
    captions = [data.captions[i] for i in keep]
    assert len(set(captions)) == len(captions) == len(keep)
    assert [data.captions.index(c) for c in captions] == keep.tolist()
    img, txt = encode_images(model, data.images[keep], batch_size=7), encode_texts(model, tok, captions, batch_size=5)
    assert torch.allclose(img.norm(dim=-1), torch.ones(len(keep)), atol=1e-5)
    assert torch.allclose(txt.norm(dim=-1), torch.ones(len(keep)), atol=1e-5)
    with pytest.raises(ValueError, match="distinct"):
        text_to_image_recall(model, data.images[:2], [captions[0], captions[0]], tok)


def test_text_to_image_recall_with_an_oracle(tok):
    # The oracle matches colours exactly, so 4 plain-colour images and their colour words retrieve perfectly,
    # and a shifted caption list retrieves nothing at rank 1.
    colours = [[0.85, 0.12, 0.12], [0.15, 0.7, 0.2], [0.15, 0.25, 0.85], [0.9, 0.85, 0.15]]
    images = torch.stack([torch.tensor(c).view(3, 1, 1).expand(3, 32, 32) for c in colours])
    oracle = _Oracle(tok)
    names = ["a red shape", "a green shape", "a blue shape", "a yellow shape"]
    assert text_to_image_recall(oracle, images, names, tok, ks=(1,))[1] == 1.0
    assert text_to_image_recall(oracle, images, names[1:] + names[:1], tok, ks=(1,))[1] == 0.0


def test_pooled_attention_maps_follow_the_pooling():
    from mmllm_course.viz.attention import pooled_attention_maps

    images = torch.rand(3, 3, 32, 32)
    for pooling in ("cls", "mean"):
        vit = ViT(ViTConfig(pooling=pooling)).train()
        maps = pooled_attention_maps(vit, images)
        assert maps.shape == (2, 3, 4, 4, 4) and vit.training  # (L, B, H, 4, 4); training mode restored
        weights = vit.eval()(images, output_attentions=True).attentions
        rows = [w[:, :, 0, 1:] if pooling == "cls" else w[:, :, 1:, 1:].mean(dim=2) for w in weights]
        torch.testing.assert_close(maps, torch.stack(rows).reshape(2, 3, 4, 4, 4))


# --- chapter 2's recipe and the benchmark's seeds mode (plumbing only: a few steps, not the accuracy) ---

def _tiny_recipe():
    from mmllm_course.recipes import CLIPRecipe

    return CLIPRecipe(train_size=320, held_out_size=200, dim=16, num_heads=2, embed_dim=16, steps=3, batch_size=32, warmup_steps=1)


def test_chapter2_recipe_is_what_the_notebook_writes_out(tok):
    # The bench trains through train_chapter2_clip; the notebook spells the same run out by hand.
    from mmllm_course.recipes import train_chapter2_clip

    recipe = _tiny_recipe()
    run = train_chapter2_clip(seed=0, recipe=recipe, tokenizer=tok)
    train = generate_shapes(recipe.train_size, seed=0)
    assert run.train.captions == train.captions and torch.equal(run.train.images, train.images)
    assert run.held_out.captions == generate_shapes(recipe.held_out_size, seed=1).captions
    ids, mask = tokenize_captions(tok, train.captions, recipe.context_length)
    torch.manual_seed(0)
    model = CLIP(recipe.clip_config(tok))
    hist = train_clip(model, train.images, ids, mask, seed=0, progress=False, **recipe.train_kwargs())
    assert hist.loss == run.history.loss
    assert len(hist.loss) == recipe.steps
    recipe.check(model.config, tok, steps=recipe.steps, batch_size=32, lr=2e-3, warmup_steps=1)  # weight_decay: the default
    with pytest.raises(ValueError, match=r"steps=4 \(recipe: 3\)"):
        recipe.check(model.config, tok, steps=4, batch_size=32, warmup_steps=1)
    with pytest.raises(ValueError, match="config"):
        recipe.check(CLIP(CLIPConfig()).config, tok, steps=3, batch_size=32, warmup_steps=1)
    with pytest.raises(ValueError, match="unknown"):
        recipe.check(model.config, tok, step=3)
    other = train_chapter2_clip(seed=1, recipe=recipe, tokenizer=tok)
    assert other.train.captions != run.train.captions and other.history.loss != run.history.loss
    assert not set(map(tuple, other.held_out.images[:20].flatten(1).tolist())) & set(map(tuple, other.train.images.flatten(1).tolist()))
    with pytest.raises(ValueError, match="seed"):
        train_chapter2_clip(seed=-1, recipe=recipe, tokenizer=tok)
    with pytest.raises(TypeError, match="CLIPRecipe"):
        train_chapter2_clip(seed=0, recipe={"steps": 3}, tokenizer=tok)


def test_evaluate_and_failures_cover_every_bar_of_the_notebook(tok):
    from mmllm_course.recipes import CHAPTER2_BARS, chapter2_failures, evaluate_chapter2_clip, train_chapter2_clip

    metrics = evaluate_chapter2_clip(train_chapter2_clip(seed=0, recipe=_tiny_recipe(), tokenizer=tok))
    for name in ("zero_shot", "zero_shot_max", "zero_shot_one_prompt", "all_captions", "recall@1", "recall@5", "attention_on_shape", "attention_uniform"):
        assert 0.0 <= metrics[name] <= 1.0, name
    assert metrics["train_seconds"] > 0
    perfect = dict(metrics, **{name: 1.0 for name in CHAPTER2_BARS}, attention_on_shape=0.9, attention_uniform=0.25)
    assert chapter2_failures(perfect) == []
    low = dict(perfect, zero_shot_max=0.949, attention_on_shape=0.3)
    assert [f.split()[0] for f in chapter2_failures(low)] == ["zero_shot_max", "attention_on_shape"]
    assert chapter2_failures(dict(perfect, **{"recall@5": 0.98}))[0].startswith("recall@5 98.0%")


def test_bench_seeds_mode_prints_each_seed_the_worst_and_the_mean(tok, capsys, monkeypatch):
    from mmllm_course import bench, recipes

    out = bench.bench_clip_seeds([0, 1], recipe=_tiny_recipe())
    rows = out["rows"]
    assert [r["seed"] for r in rows] == [0, 1]
    assert out["worst"]["zero_shot"] == min(r["zero_shot"] for r in rows)
    assert out["worst"]["seconds"] == max(r["seconds"] for r in rows)
    assert out["mean"]["recall@1"] == pytest.approx((rows[0]["recall@1"] + rows[1]["recall@1"]) / 2)
    assert set(out["failed"]) == {0, 1}  # 3 steps reach no bar
    printed = capsys.readouterr().out
    assert "2 seeds: 3 steps, batch 32" in printed and "worst" in printed and "mean" in printed and "FAILS" in printed
    assert "2 of 2 seeds fail a bar" in printed and "points over 95%" in printed
    with pytest.raises(ValueError, match="empty"):
        bench.bench_clip_seeds([], recipe=_tiny_recipe())

    # The command line: --seeds N runs seeds 0..N-1 of the notebook's recipe (here swapped for the tiny one),
    # and exits 1 because a seed misses a bar.
    monkeypatch.setattr(recipes, "CHAPTER2_CLIP", _tiny_recipe())
    assert bench.main(["--seeds", "1", "--only", "chapter2"]) == 1
    printed = capsys.readouterr().out
    assert "1 seeds: 3 steps" in printed and "modules" not in printed
    with pytest.raises(SystemExit):
        bench.main(["--seeds", "0"])


def test_bench_seeds_mode_runs_every_registered_chapter_result(capsys, monkeypatch):
    from mmllm_course import bench

    runs = {
        "chapter7": bench.SeedRun("toy: passes", lambda seed: {"accuracy": 0.9 + seed / 100, "seconds": 1.0}, lambda m: []),
        "chapter9": bench.SeedRun("toy: seed 1 fails", lambda seed: {"accuracy": 0.99 - seed},
                                  lambda m: [] if m["accuracy"] > 0.5 else ["accuracy too low"]),
    }
    monkeypatch.setattr(bench, "SEED_RUNS", runs)
    out = bench.bench_seed_runs([0, 1])
    assert out["chapter7"]["failed"] == {} and out["chapter9"]["failed"] == {1: ["accuracy too low"]}
    printed = capsys.readouterr().out
    assert "worst: accuracy 90.0%" in printed and "1 of 2 seeds fail a bar" in printed
    assert bench.main(["--seeds", "2", "--only", "chapter7"]) == 0
    assert bench.main(["--seeds", "2"]) == 1
    with pytest.raises(SystemExit):
        bench.main(["--seeds", "2", "--only", "chapter99"])
