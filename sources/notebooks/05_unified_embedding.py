# %% [markdown]
# # 05 · Backbone A: the unified embedding decoder
#
# **By the end of this notebook you will be able to**
#
# - say what a causal language model is and load the course's tiny "pretrained" one, a real
#   `transformers` `LlamaForCausalLM`;
# - expand an `<image>` placeholder into K image tokens, splice the bridge's outputs into the LM's
#   input embeddings, and build the labels and the attention mask for training and for generation;
# - check the splice against `transformers`' `LlavaForConditionalGeneration` on identical weights;
# - train a bridge between a frozen image encoder and a frozen LM (stage 1) until the model captions
#   held-out images;
# - explain, with a measurement, why the LM's pretraining decides whether that can work at all;
# - compare the five bridges of chapters 3-4 as captioners on the same frozen encoder and LM;
# - wrap a real pretrained LM (SmolLM2, GPT-2; online) with the same code.
#
# The notebook runs longer than the others because it holds the five-bridge comparison (Part 6):
# about two minutes of one CPU core (measured: 119 s of CPU time for the whole notebook, on a
# 2-core machine shared with other work; Part 6 is about half of it).
#
# This is part 3 of the five-part map, the **LLM backbone**, in its first form: the image becomes a
# few extra tokens *inside* the LM's input sequence, and the unchanged LM reads them with its own
# self-attention. Chapter 6 builds the other form (cross-attention).
#
# **Papers this chapter teaches from**: LLaVA, [Liu et al. 2023](https://arxiv.org/abs/2304.08485),
# and LLaVA-1.5, [Liu et al. 2023](https://arxiv.org/abs/2310.03744); BLIP-2's frozen-LM recipe,
# [Li et al. 2023](https://arxiv.org/abs/2301.12597); LLaMA,
# [Touvron et al. 2023](https://arxiv.org/abs/2302.13971). Terms in **bold** are in the course
# [glossary](../GLOSSARY.md).

# %%
import matplotlib.pyplot as plt
import torch

from mmllm_course import seed_everything
from mmllm_course.language import CAPTION_PROMPT, CorpusConfig, make_text_corpus
from mmllm_course.pretrained import load_chapter5_lm
from mmllm_course.training import caption_metrics, count_parameters, load_trainable, save_trainable
from mmllm_course.training.recipes import (
    CHAPTER5,
    CHAPTER5_BARS,
    build_captioner,
    chapter5_failures,
    evaluate_captioner,
    train_chapter5_captioner,
)

_ = seed_everything(0)
torch.set_printoptions(precision=3, sci_mode=False)

# %% [markdown]
# ## Part 1: the "pretrained LLM"
#
# A causal LM reads tokens $x_1, \dots, x_t$ and predicts the next one: its output at position $t$
# is a distribution $p(x_{t+1} \mid x_{\le t})$ over the vocabulary, and it is trained with the
# cross entropy of the true next token. Generating text is repeating that: take the most likely
# token (greedy decoding), append it, predict again.
#
# The course's LLM is a real `transformers` `LlamaForCausalLM` (RoPE positions, RMSNorm, SwiGLU
# MLPs, grouped-query attention), only tiny: width 64, 2 layers. It was pretrained once on text of
# the shapes world by `python -m mmllm_course.pretrained chapter5_lm` (about two minutes) and ships
# with the package. The same code runs with a real checkpoint such as SmolLM2.

# %%
lm, tok = load_chapter5_lm()
print(type(lm).__name__, f"{count_parameters(lm):,} parameters, width {lm.config.hidden_size}, "
      f"{lm.config.num_hidden_layers} layers, vocabulary {len(tok)}, context {lm.config.max_position_embeddings}")
print("frozen:", not any(p.requires_grad for p in lm.parameters()))
print("<image> is token", tok.convert_tokens_to_ids("<image>"))

# %% [markdown]
# What did it read in pretraining? Captions, each after a **context** of random filler tokens in
# which the caption's key words (size, colour, shape, position) sit at random places. To write the
# caption, the LM must find those words: it learns to *read its context*, the habit a real LLM
# picks up from trillions of tokens. Only the caption takes loss (labels -100 elsewhere).

# %%
example = make_text_corpus(1, seed=7, config=CorpusConfig(), tokenizer=tok)
ids = example.input_ids[0][example.attention_mask[0].bool()]
print(repr(tok.decode(ids)))
print("loss on:", repr(tok.decode(example.labels[0][example.labels[0] != -100])))
print("held-out accuracy of the pretrained LM:", lm.pretrained_metrics)
assert lm.pretrained_metrics["context_reading_exact"] >= 0.99

# %% [markdown]
# ## Part 2: splicing an image into the LM's input
#
# LLaVA's idea: turn the image into K vectors of the LM's width $D$ and put them where the prompt
# says `<image>`. The pieces, with chapter 2's mini-CLIP as the encoder and a chapter-4 Q-Former as
# the bridge (K = 8 learned queries):
#
# $$\text{images}\ (B, 3, 32, 32) \xrightarrow{\text{encoder}} (B, N{=}17, 64)
# \xrightarrow{\text{bridge}} (B, K{=}8, D{=}64) .$$
#
# The tokenizer expands each `<image>` to K copies of its id; the LM's embedding table turns the
# ids into vectors $(B, T, D)$, and the K image vectors **replace** the rows at those positions.
# Nothing inside the LM changes.

# %%
model = build_captioner(lm, tok, seed=0)
K = model.num_image_tokens
batch = model.tokenize([CHAPTER5.prompt, "<image>What colour is the shape?"],
                       [" a small red circle in the top left", " red"])
print("K =", K, "| input_ids", tuple(batch["input_ids"].shape))
print(tok.convert_ids_to_tokens(batch["input_ids"][0]))
print("labels:", batch["labels"][0].tolist())

# %% [markdown]
# Row 0: a bos token, K = 8 `<image>` ids, the prompt, the caption and eos. The labels are -100
# (no loss) on the bos, the image tokens, the prompt and the padding: the image tokens are inputs,
# there is nothing to predict there, and the prompt is given. Row 1 is shorter, so it is padded on
# the right with mask 0, fine for training.
#
# For **generation** the padding goes on the left: every row must end with a real token, because
# the next token is appended after the last column. Position ids then count real tokens only, so a
# padded row gives the same result as the row alone.

# %%
gen = model.tokenize([CHAPTER5.prompt, "<image>?"], padding_side="left")
print("mask     ", gen["attention_mask"][1].tolist())
print("positions", model.position_ids(gen["attention_mask"])[1].tolist())

# %% [markdown]
# ### A parity check against LLaVA
#
# `transformers`' `LlavaForConditionalGeneration` does the same splice (`masked_scatter` of the
# projected image features into the input embeddings). We build a tiny random LLaVA, convert its
# vision tower, projector and language model into our pieces (weights mapped from its live
# `state_dict()`), and compare the logits for a batch of prompts of different lengths, one of them
# with two images. LLaVA reads the second-to-last layer of its vision tower without the class token:
# `feature_layer=-2, drop_class_token=True`.

# %%
import transformers  # noqa: E402

from mmllm_course.backbones import UnifiedEmbeddingMLLM  # noqa: E402
from mmllm_course.bridges import mlp_bridge_from_transformers  # noqa: E402
from mmllm_course.encoders import clip_vision_from_transformers  # noqa: E402

_ = torch.manual_seed(0)
t = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
llava = transformers.LlavaForConditionalGeneration(transformers.LlavaConfig(
    vision_config=dict(model_type="clip_vision_model", image_size=32, patch_size=8, **t),
    text_config=dict(model_type="llama", vocab_size=len(tok), hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128),
    image_token_index=tok.convert_tokens_to_ids("<image>"))).eval()
sd = llava.state_dict()
llava_lm = transformers.LlamaForCausalLM(llava.config.text_config).eval()
_ = llava_lm.load_state_dict({**{"model." + k.removeprefix("model.language_model."): v for k, v in sd.items()
                                 if k.startswith("model.language_model.")}, "lm_head.weight": sd["lm_head.weight"]})
ours = UnifiedEmbeddingMLLM(clip_vision_from_transformers(llava.model.vision_tower), mlp_bridge_from_transformers(llava),
                            llava_lm, tok, feature_layer=-2, drop_class_token=True).eval()
prompts = ["<image>Describe the image.", "<image>What colour is the circle?", "<image> and <image> Describe the image."]
b = ours.tokenize(prompts, padding_side="left")
pixels = torch.rand(4, 3, 32, 32)
with torch.no_grad():
    mine = ours(**b, images=pixels).logits
    ref = llava(**b, position_ids=ours.position_ids(b["attention_mask"]), pixel_values=pixels).logits
diff = (mine - ref).abs().max().item()
print(f"max |ours - LlavaForConditionalGeneration| = {diff:.2e} over logits {tuple(mine.shape)}")
assert diff < 1e-5

# %% [markdown]
# ## Part 3: stage 1, alignment pre-training
#
# Now the real model: chapter 2's trained mini-CLIP (frozen), a new Q-Former bridge (trained), the
# pretrained LM (frozen). Only the bridge learns, on image-caption pairs, with the loss on the
# caption tokens. Both big parts stay frozen because they already know their jobs: the encoder sees
# shapes, the LM writes captions from what it reads. The bridge must learn to *write vectors the LM
# can read*. Because the encoder is frozen, its features are computed once for all 10,000 training
# images; each step runs the bridge and the LM. `train_chapter5_captioner` is the recipe the
# benchmark also runs on other seeds.

# %%
run = train_chapter5_captioner(seed=0)
print(f"{len(run.history.loss)} steps in {run.history.seconds:.0f} s; trainable parameters: "
      f"{count_parameters(run.model, trainable_only=True):,} of {count_parameters(run.model):,}")

fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(run.history.loss)
ax.set_yscale("log")
ax.set_title("Stage 1: caption loss (encoder and LM frozen)")
ax.set_xlabel("step")
ax.set_ylabel("cross entropy per caption token")
plt.show()

# %% [markdown]
# Held-out images, never trained on: the model generates a caption for each (greedy, left-padded
# batches through the LM's own `generate(inputs_embeds=...)`), and we score exact captions and each
# attribute on its own.

# %%
metrics = evaluate_captioner(run)
print({k: f"{v:.1%}" for k, v in metrics.items()})
print("bars:", {k: f"{v:.0%}" for k, v in CHAPTER5_BARS.items()})
assert not chapter5_failures(metrics), chapter5_failures(metrics)

# %% [markdown]
# The bars (`CHAPTER5_BARS`) are lower than this run's numbers on purpose: they must hold on other
# seeds (other images, initial weights and batch order), and on another machine's arithmetic. Over
# seeds 0-4 (`python -m mmllm_course.bench --seeds 5 --only chapter5`) the worst exact-caption score
# was 96.0% and shape ranged over 96.0-98.6%, colour, size and position at least 99.8%.
#
# Shape is the weakest attribute. Which captions go wrong? The next cell counts the wrong ones by the
# true size of the shape.

# %%
wrong = [i for i, (p, c) in enumerate(zip(run.predictions, run.held_out.captions)) if p != c]
small = sum(int(run.held_out.objects[i, 0, 2]) == 0 for i in wrong)
print(f"{len(wrong)} wrong captions of {len(run.predictions)}; {small} of them describe a small shape")
for i in wrong[:4]:
    print(f"  said {run.predictions[i]!r}, truth {run.held_out.captions[i]!r}")

# %% [markdown]
# The mistakes are shape names, and mostly on small shapes, which cover only a few pixels of one
# 8x8 patch of chapter 2's encoder. The frozen encoder decides what the bridge can pass on: a bridge
# cannot hand the LM a detail the encoder did not see. (Try it: fit a linear shape probe on the
# encoder's features and compare its accuracy with the shape accuracy above.)

# %% [markdown]
# The first six held-out images with the captions the model wrote, and two of the wrong ones (red,
# with the true words below):

# %%
shown = list(range(6)) + [i for i in wrong if i >= 6][:2]
fig, axes = plt.subplots(2, 4, figsize=(10, 6.5))
for ax, i in zip(axes.flat, shown):
    ax.imshow(run.held_out.images[i].permute(1, 2, 0).clamp(0, 1))
    said, truth = run.predictions[i], run.held_out.captions[i]
    differ = [t for w, t in zip(said.split(), truth.split()) if w != t]  # the true words where the caption is wrong
    title = said.replace(" in the ", "\nin the ") + ("" if said == truth else f"\n(truth: {' '.join(differ) or truth})")
    ax.set_title(title, fontsize=8, color="black" if said == truth else "red")
    ax.axis("off")
for ax in list(axes.flat)[len(shown):]:
    ax.axis("off")
fig.suptitle("Generated captions for held-out images (red: wrong)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Part 4: the pitfall, measured
#
# Same encoder, same bridge, same data and steps, but an LM pretrained on **isolated captions**
# only: no context before them. That LM learned which captions exist, never to look back at earlier
# tokens. Put image tokens in front of it, and nothing in its frozen weights reads them: the bridge
# has no way in. A short run (100 steps) of each shows it.

# %%
import dataclasses  # noqa: E402

short = dataclasses.replace(CHAPTER5, steps=100, train_size=2000, held_out_size=100)
pitfall = {}
for isolated in (False, True):
    lm_i, tok_i = load_chapter5_lm(isolated=isolated)
    short_run = train_chapter5_captioner(seed=1, recipe=short, lm=lm_i, tokenizer=tok_i, progress=False)
    pitfall["isolated captions" if isolated else "context reading"] = evaluate_captioner(short_run)["exact"]
print({k: f"{v:.0%}" for k, v in pitfall.items()})
assert pitfall["context reading"] >= 0.7 and pitfall["isolated captions"] <= 0.1, pitfall

# %% [markdown]
# A frozen LM can only be taught through its inputs what it already knows how to read. Real LLMs read
# their context because their pretraining text is full of it; the tiny one needed the same habit
# put in on purpose.
#
# ## Part 5: saving the trained part
#
# Stage 1 trained only the bridge, so only the bridge is saved (the rest ships with the package).

# %%
import os  # noqa: E402
import tempfile  # noqa: E402

path = os.path.join(tempfile.mkdtemp(), "stage1_bridge.safetensors")
names = save_trainable(run.model, path)
fresh = build_captioner(lm, tok, seed=1)
_ = load_trainable(fresh, path)
again = fresh.generate([CHAPTER5.prompt] * 8, image_features=run.held_out_features[:8])
print(f"{len(names)} tensors, {os.path.getsize(path) / 1e3:.0f} kB;", "same captions after reload:", again == run.predictions[:8])
assert again == run.predictions[:8]
assert caption_metrics(again, run.held_out.objects[:8, 0])["exact"] >= 0.5

# %% [markdown]
# ## Part 6: which bridge? The five of chapters 3-4 as captioners
#
# Chapter 4's table counted what each bridge costs (trainable parameters, K, FLOPs, the LM's time)
# and left open what each is worth. Here every bridge is the stage-1 captioner between the same
# frozen mini-CLIP and the same frozen LM, with the same training images, seed, batch size and
# number of steps: 200 steps, a quarter of the run above, scored on 200 held-out images (one image
# is half a point), to keep the notebook short. The encoder's features are computed once and shared;
# token merging reads the 16 patch tokens without the class token (pixel shuffle needs a square
# grid), the others all 17. This section takes about half of the notebook's time.

# %%
from mmllm_course.training.recipes import (  # noqa: E402
    CHAPTER5_BRIDGE_BARS,
    CHAPTER5_COMPARISON,
    bridge_comparison_failures,
    bridge_comparison_summary,
    compare_bridges,
)

rows = compare_bridges(seed=0, lm=lm, tokenizer=tok, progress=True)
print(f"{CHAPTER5_COMPARISON.steps} steps each, {CHAPTER5_COMPARISON.held_out_size} held-out images\n")
print(f"{'bridge':<12}{'K':>4}{'trainable':>11}{'ms/step':>9}{'exact':>8}{'shape':>8}{'colour':>8}{'size':>8}{'position':>10}")
for r in rows:
    print(f"{r['bridge']:<12}{r['K']:>4}{r['trainable']:>11,}{r['ms_per_step']:>9.0f}{r['exact']:>8.1%}{r['shape']:>8.1%}"
          f"{r['color']:>8.1%}{r['size']:>8.1%}{r['position']:>10.1%}")

fig, ax = plt.subplots(figsize=(8, 3.8))
bars = ax.bar([r["bridge"] for r in rows], [100 * r["exact"] for r in rows], color="tab:blue")
for bar, r in zip(bars, rows):
    ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 1,
            f"{r['exact']:.1%}\nK={r['K']}\n{r['trainable'] / 1e3:.0f}k params", ha="center", fontsize=8)
ax.set_ylim(0, 130)
ax.set_ylabel("held-out exact captions (%)")
ax.set_xlabel("bridge (K = image tokens per image; trainable parameters)")
ax.set_title(f"Five bridges as stage-1 captioners, {CHAPTER5_COMPARISON.steps} steps each (same frozen encoder and LM)")
plt.show()

# %% [markdown]
# What the table shows on this seed: the two query bridges caption best, with fewer image tokens
# than the per-patch bridges (K = 8 against 17) and the most trainable parameters; the MLP comes
# next; the linear bridge and token merging (a pixel shuffle, then one linear map) trail far behind.
# Fewer tokens did not cost quality here, and the two bridges that are a single linear map of the
# features are the weakest, as in chapter 3, where a linear bridge could not separate 160 captions
# in a target space that an MLP could. Equal steps are not equal time: the ms/step column is each
# step's price on this machine at its current load. And 200 steps is a short budget: these are what
# each bridge learns in it, not its ceiling (the Q-Former reaches the numbers of Part 3 after 800).
#
# The cell below asserts margins, not the numbers themselves: the weaker query bridge at least 30
# points over the linear bridge and over token merging and 2 points over the MLP, the MLP at least 15
# over the linear bridge. They held on each of 5 seeds (data, initial weights, batch order: the
# benchmark's `run_chapter5_bridges(seed)`, seeds 0-4), where the smallest margins were 46, 47, 8 and
# 28 points, and the exact captions ranged over linear 34.5-46.5%, MLP 74.5-88.0%, Q-Former
# 94.0-97.5%, resampler 92.5-96.0%, token merging 39.0-47.5%. The query bridges' lead over the MLP is
# the thinnest of these margins.

# %%
summary = bridge_comparison_summary(rows)
print("margins (points):", {k: f"{100 * v:+.1f} (bar {100 * CHAPTER5_BRIDGE_BARS[k]:+.0f})" for k, v in summary.items()
                            if k in CHAPTER5_BRIDGE_BARS})
assert not bridge_comparison_failures(summary), bridge_comparison_failures(summary)

# %% [markdown]
# ## Part 7: the same code on a real LM (online, off by default)
#
# Nothing above is specific to the tiny LM: `UnifiedEmbeddingMLLM` takes any `transformers` causal
# LM whose tokenizer holds `<image>` as one token, such as SmolLM2-135M
# ([Allal et al. 2025](https://arxiv.org/abs/2502.02737)), a LLaMA-architecture model, or GPT-2. A real checkpoint's tokenizer has no such token,
# so `load_real_lm` adds it as a special token and grows the embedding table to the new vocabulary
# (`resize_token_embeddings(..., mean_resizing=False)`; the new row is never read as an input,
# since the bridge's tokens are written over every `<image>` position). Then `build_captioner` makes
# a bridge whose output width is the real LM's (576 for SmolLM2-135M, 768 for GPT-2), and the same
# stage 1 trains it through the frozen real LM. The cell needs internet to download the LM once, so
# it is off by default and skipped in tests; it was not run where this notebook was written (no
# network there), so we state no result for it: run it and see. `tests/test_real_lm_wrapping.py`
# runs this very cell with a tiny random LM in place of the download.

# %%
# NBVAL_SKIP
USE_REAL_LM = False  # set True when you are online: downloads HuggingFaceTB/SmolLM2-135M (about 270 MB) once
REAL_LM_NAME = "HuggingFaceTB/SmolLM2-135M"  # or "gpt2"
REAL_STEPS = 100  # stage-1 steps through the real LM (batches of 16); much slower per step than the tiny LM on a CPU
from mmllm_course.language.lm import lm_width  # noqa: E402
from mmllm_course.training.recipes import load_real_lm  # noqa: E402

real_lm = None
if USE_REAL_LM:
    try:
        real_lm, real_tok = load_real_lm(REAL_LM_NAME)
    except OSError as err:  # offline
        print(f"Skipped: this cell needs internet to download {REAL_LM_NAME!r} once. ({type(err).__name__}: {str(err)[:160]})")
else:
    print(f"Skipped: set USE_REAL_LM = True to run stage 1 through {REAL_LM_NAME!r} (needs internet once).")
if real_lm is not None:
    print(f"{type(real_lm).__name__}: {count_parameters(real_lm) / 1e6:.0f}M parameters, width {lm_width(real_lm)}, "
          f"vocabulary {len(real_tok)}, <image> is token {real_tok.convert_tokens_to_ids('<image>')}")
    real_recipe = dataclasses.replace(CHAPTER5, bridge="mlp", steps=REAL_STEPS, batch_size=16, train_size=2000, held_out_size=32,
                                      cpu_threads=None)  # every CPU thread for a real LM
    real_run = train_chapter5_captioner(seed=0, recipe=real_recipe, lm=real_lm, tokenizer=real_tok)
    real_metrics = evaluate_captioner(real_run, batch_size=16)
    print(f"{real_recipe.steps} steps of an MLP bridge ({count_parameters(real_run.model, trainable_only=True):,} trainable "
          f"parameters) through the frozen {REAL_LM_NAME}:", {k: f"{v:.0%}" for k, v in real_metrics.items()})
    for said, truth in list(zip(real_run.predictions, real_run.held_out.captions))[:4]:
        print(f"  said {said!r}, truth {truth!r}")

# %% [markdown]
# ## Where this shows up in real models
#
# - **LLaVA** ([Liu et al. 2023](https://arxiv.org/abs/2304.08485)): CLIP ViT-L/14 features, one
#   linear projection, written into Vicuna's input sequence at the image's place. Its stage 1
#   ("feature alignment") is this chapter's: encoder and LLM frozen, only the projection trained, on
#   image-caption pairs (595K filtered from CC3M); stage 2 fine-tunes projection and LLM on
#   instruction data (chapter 7).
# - **LLaVA-1.5** ([Liu et al. 2023](https://arxiv.org/abs/2310.03744)): a two-layer MLP projector
#   (chapter 3's) on the second-to-last layer of a CLIP ViT-L/14 at 336 pixels: 576 image tokens per
#   image, `feature_layer=-2, drop_class_token=True` in the parity check above.
# - **BLIP-2** ([Li et al. 2023](https://arxiv.org/abs/2301.12597)): a Q-Former's 32 query outputs,
#   linearly projected, put in front of the text of a frozen OPT or Flan-T5: the same splice with a
#   query bridge, and the LLM is never trained. **MiniGPT-4**
#   ([Zhu et al. 2023](https://arxiv.org/abs/2304.10592)) reuses BLIP-2's frozen ViT and Q-Former and
#   trains one linear layer into a frozen Vicuna.
# - **Idefics2** and **SmolVLM** (chapter 4): resampler or pixel-shuffle tokens in the LM's input
#   sequence, the unified layout with other bridges.
#
# ## Recap
#
# - The unified embedding decoder writes K image vectors into the LM's input sequence at an
#   `<image>` placeholder; the LM itself is unchanged and reads them with self-attention. Our splice
#   gives LLaVA's logits to within float rounding.
# - Training rows: image tokens, prompt and padding get label -100; right padding for training,
#   left padding (with positions that count real tokens) for generation.
# - Stage 1 trains only the bridge; encoder and LM stay frozen. Here it captions held-out images,
#   with the numbers above.
# - It works only because the LM learned to read its context in pretraining: an LM pretrained on
#   isolated captions gets almost no caption right with the same bridge and data (measured above).
# - With equal steps, the five bridges of chapters 3-4 are not equal captioners: the table of Part 6
#   gives held-out exact captions next to K and the trainable parameters, the quality column
#   chapter 4's cost table left open.
# - The same classes run on a real checkpoint (SmolLM2, GPT-2) once its tokenizer holds `<image>`
#   and its embedding table has grown to match (Part 7, online).
#
# **Exercises:** `exercises/05_unified_embedding.ipynb`: expanding the placeholder, a padded batch
# with its mask and labels, the splice, greedy decoding by hand; a `MyUnifiedEmbeddingMLLM` of your
# own loaded with the library's weights; a stage-1 bridge trained with your own loop and measured on
# held-out captions; top-k sampling as a stretch; and checked questions.
