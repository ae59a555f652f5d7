# %% [markdown]
# # 07 · Training stages: alignment, instruction tuning with LoRA, and one loop for many GPUs
#
# **By the end of this notebook you will be able to**
#
# - say what each training stage of a multimodal LLM trains and what it keeps frozen, and count the
#   trainable parameters of each;
# - write instruction data in a **chat template** and put the loss on the assistant's answer only;
# - explain **LoRA** ($W + \frac{\alpha}{r} BA$), count its parameters by hand, add it to a
#   `transformers` LM with `peft`, and save, reload and merge the adapters;
# - instruction-tune (stage 2) the chapter-5 captioner until it answers questions about held-out
#   images, and measure what skipping stage 1, training the whole LM, and forgetting do;
# - run the same training loop on several processes with `accelerate`.
#
# Chapter 5 trained stage 1 (**alignment**): only the bridge learned, on captions. A captioner is not
# an assistant: asked a question, it still describes the image. Stage 2 (**instruction tuning**)
# teaches it to follow the instruction.
#
# **Papers this chapter teaches from**: LLaVA's two stages, [Liu et al. 2023](https://arxiv.org/abs/2304.08485);
# LoRA, [Hu et al. 2021](https://arxiv.org/abs/2106.09685); InstructBLIP,
# [Dai et al. 2023](https://arxiv.org/abs/2305.06500); QLoRA, [Dettmers et al. 2023](https://arxiv.org/abs/2305.14314).
# Terms in **bold** are in the course [glossary](../GLOSSARY.md).

# %%
import copy
import dataclasses
from collections import Counter

import matplotlib.pyplot as plt
import torch

from mmllm_course import seed_everything
from mmllm_course.data import QUESTION_TYPES, generate_shapes, make_instructions
from mmllm_course.language import chat_prompts, chat_tokenizer
from mmllm_course.training import (
    add_lora,
    count_parameters,
    freeze_for_stage,
    load_adapters,
    lora_parameter_count,
    merge_lora,
    save_adapters,
    stage_parameter_counts,
)
from mmllm_course.training.recipes_ch07 import (
    CHAPTER7,
    answer_questions,
    caption_score,
    chapter7_failures,
    compare_stages,
    evaluate_qa,
    train_stage1,
    train_stage2,
)

_ = seed_everything(0)
torch.set_num_threads(1)  # tiny matrices: one thread is faster than two fighting over a busy CPU
torch.set_printoptions(precision=3, sci_mode=False)

# %% [markdown]
# ## Part 1: stage 1, alignment (chapter 5's recipe)
#
# Chapter 2's mini-CLIP (frozen), a Q-Former bridge (trained), chapter 5's pretrained LM (frozen),
# captions as data: chapter 5's stage 1, here with 400 steps. Its captioning score is the number
# to watch when stage 2 changes the model.

# %%
stage1 = train_stage1(seed=0)
caption_before = caption_score(stage1.model, stage1)
print(f"stage 1: {len(stage1.history.loss)} steps in {stage1.history.seconds:.0f} s; "
      f"held-out exact captions {caption_before:.1%}")
assert caption_before >= 0.9

# %%
prompts = chat_prompts(["What colour is the shape in the top left?", "How big is the red shape?"], stage1.model.tokenizer)
print(stage1.model.generate(prompts, image_features=stage1.held_out_features[:2], max_new_tokens=8))
print("truth:", stage1.held_out.captions[:2])

# %% [markdown]
# Asked a question, the stage-1 model does not answer it: it never saw one. Its LM was frozen and
# its bridge only learned to make the LM *describe*.
#
# ## Part 2: instruction data and the chat template
#
# The shapes world asks six kinds of question, each only when it has one right answer in the image.
# An instruction-tuned model sees them through a **chat template**: the tokenizer's rule for writing
# a conversation as one string (`transformers`' `apply_chat_template`), the same at training and at
# inference. Ours is short, because the LM's context is 64 tokens.

# %%
tok = chat_tokenizer()
examples = make_instructions(generate_shapes(3, seed=5), seed=0, questions_per_image=len(QUESTION_TYPES))
for q, a, t in list(zip(examples.questions, examples.answers, examples.types))[:6]:
    print(f"{t:18s} {q:45s} -> {a}")
chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": examples.questions[0]}]},
        {"role": "assistant", "content": examples.answers[0]}]
print(repr(tok.apply_chat_template(chat, tokenize=False)))
print("generation prompt:", repr(chat_prompts([examples.questions[0]], tok)[0]))

# %% [markdown]
# Training rows pair the generation prompt with the answer; only the answer (and eos) takes loss.
# The image part becomes K = 8 image tokens, as in chapter 5.

# %%
row = stage1.model.tokenize(chat_prompts(["Where is the star?"], tok), [" top left"])
ids, labels = row["input_ids"][0], row["labels"][0]
print(tok.convert_ids_to_tokens(ids))
print("loss on:", repr(tok.decode(labels[labels != -100])))

# %% [markdown]
# The recipe trains on the five question types that name what to read off the image. The yes/no
# type ("Is there a red circle?") needs the two words of the question compared with the image; in
# our trials this LM stayed at chance on it (48-51% after 300-600 stage-2 steps), so the recipe
# leaves it out and so does every number below. (Try it: `dataclasses.replace(CHAPTER7, types=QUESTION_TYPES)`.)
#
# ## Part 3: what each stage trains, and LoRA
#
# | stage | encoder | bridge | LM | data |
# |---|---|---|---|---|
# | 1, alignment | frozen | trained | frozen | captions |
# | 2, instruction tuning (LoRA) | frozen | trained | frozen + LoRA adapters trained | questions -> answers |
# | 2, full fine-tuning | frozen | trained | every weight trained | questions -> answers |
#
# **LoRA** leaves each adapted weight $W \in \mathbb{R}^{d_\text{out} \times d_\text{in}}$ frozen and
# learns a low-rank change beside it:
#
# $$ y = W x + \frac{\alpha}{r} B A x, \qquad A \in \mathbb{R}^{r \times d_\text{in}},\; B \in \mathbb{R}^{d_\text{out} \times r} .$$
#
# $B$ starts at zero, so training starts from the unchanged LM; each adapted matrix costs
# $r (d_\text{in} + d_\text{out})$ numbers instead of $d_\text{in} d_\text{out}$. We adapt the four
# attention projections of both layers with $r = 8$, $\alpha = 16$. Count by hand, then with `peft`:

# %%
lm = stage1.model.lm
attn = lm.model.layers[0].self_attn
shapes = {n: tuple(getattr(attn, n).weight.shape) for n in CHAPTER7.targets}
print("adapted weights (d_out, d_in):", shapes)
by_hand = sum(CHAPTER7.rank * (d_in + d_out) for d_out, d_in in shapes.values()) * lm.config.num_hidden_layers
print(f"by hand: {by_hand:,}   lora_parameter_count: {lora_parameter_count(lm, CHAPTER7.rank, CHAPTER7.targets):,}   "
      f"peft: {count_parameters(add_lora(lm, CHAPTER7.rank, CHAPTER7.targets), trainable_only=True):,}")
assert by_hand == lora_parameter_count(lm, CHAPTER7.rank, CHAPTER7.targets)

# %%
table = {}
for stage in ("stage1", "stage2", "full"):
    m = copy.deepcopy(stage1.model)
    if stage == "stage2":
        m.lm = add_lora(m.lm, CHAPTER7.rank, CHAPTER7.targets)
    table[stage] = stage_parameter_counts(freeze_for_stage(m, stage))
print(f"{'stage':8s} {'bridge':>8s} {'LM':>8s} {'LoRA':>6s} {'trainable':>10s} {'of':>8s}")
for stage, c in table.items():
    print(f"{stage:8s} {c['bridge']:8,} {c['lm']:8,} {c['lm_lora']:6,} {c['trainable']:10,} {c['total']:8,}")
assert table["stage1"]["trainable"] == table["stage1"]["bridge"] and table["stage2"]["lm"] == 0
assert table["stage2"]["lm_lora"] == by_hand and table["full"]["lm"] == count_parameters(lm)
print(f"LoRA adds {by_hand / count_parameters(lm):.1%} of the LM's {count_parameters(lm):,} weights "
      f"(its embedding table, shared with the output layer, holds {lm.get_input_embeddings().weight.numel():,} of them)")

# %% [markdown]
# On a 7B LM the same arithmetic ($r = 8$ on the four attention projections of 32 layers of width
# 4096) gives 8.4 million trainable numbers beside 7 billion frozen ones: that is why LoRA (and
# QLoRA, with the frozen weights in 4 bits) lets one GPU instruction-tune a large model.
#
# ## Part 4: stage 2, instruction tuning with LoRA
#
# One question per training image (10,000 images, the five types mixed), the bridge and the LoRA
# adapters trained, everything else frozen: `train_stage2` copies the stage-1 model, adds the
# adapters, sets `freeze_for_stage(model, "stage2")` and runs the course's one training loop.

# %%
run = train_stage2(stage1, "lora", seed=0)
print(f"{len(run.history.loss)} steps in {run.history.seconds:.0f} s "
      f"({1000 * run.history.seconds_per_step:.0f} ms/step); trainable {run.counts['trainable']:,}")
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(run.history.loss)
ax.set_yscale("log")
ax.set_title("Stage 2: answer loss (LoRA + bridge trained)")
ax.set_xlabel("step")
ax.set_ylabel("cross entropy per answer token")
plt.show()

# %% [markdown]
# Held-out images, never trained on, each asked every question type (greedy answers, exact match):

# %%
qa = evaluate_qa(run)
per_type = {k.removeprefix("qa_"): v for k, v in qa.items() if k not in ("qa_all", "qa_worst_type")}
print(f"all {len(run.held_out)} questions: {qa['qa_all']:.1%}   worst type: {qa['qa_worst_type']:.1%}")
fig, ax = plt.subplots(figsize=(7, 3))
ax.bar(list(per_type), [100 * v for v in per_type.values()])
ax.set_ylim(80, 100.5)
ax.set_title("Stage 2 (LoRA): held-out exact answers per question type")
ax.set_ylabel("exact answers (%)")
ax.tick_params(axis="x", labelrotation=20)
plt.show()
assert not chapter7_failures(qa), chapter7_failures(qa)
wrong = [i for i, (a, t) in enumerate(zip(run.answers, run.held_out.answers)) if a != t]
print("wrong answers per type:", dict(Counter(run.held_out.types[i] for i in wrong)))
small = sum(int(stage1.held_out.objects[int(run.held_out.image_index[i]), 0, 2]) == 0 for i in wrong)
print(f"{small} of the {len(wrong)} wrong answers are about a small shape")
for i in wrong[:4]:
    print(f"  {run.held_out.questions[i]!r}: said {run.answers[i]!r}, truth {run.held_out.answers[i]!r}")

# %% [markdown]
# Count where the mistakes fall (the cell above): chapter 5 found that chapter 2's encoder sees the
# shape of a small object least well, and stage 2 cannot add what the frozen encoder did not see.
#
# ## Part 5: what each stage changes, measured
#
# Three stage-2 runs at the same budget (150 steps, the same data, seed and learning rate), scored
# on 200 held-out images: LoRA after stage 1; LoRA with stage 1 **skipped** (a fresh bridge); and
# the **whole LM** trained after stage 1. For each, also the stage-1 task: exact captions with
# chapter 5's prompt, before and after stage 2 (**forgetting**).

# %%
short = dataclasses.replace(CHAPTER7, held_out_images=200)
rows = compare_stages(stage1, seed=0, steps=150, recipe=short)
print(f"{'variant':24s} {'trainable':>9s} {'ms/step':>7s} {'QA all':>7s} {'worst':>6s} {'captions':>9s}")
print(f"{'stage 1 only':24s} {table['stage1']['trainable']:9,} {'':>7s} {'':>7s} {'':>6s} {caption_before:9.1%}")
for r in rows:
    print(f"{r['variant']:24s} {r['trainable']:9,} {r['ms_per_step']:7.0f} {r['qa_all']:7.1%} {r['qa_worst_type']:6.1%} "
          f"{r['caption_after']:9.1%}")
by = {r["variant"]: r for r in rows}

# %%
lora1, skip, full = by["LoRA after stage 1"], by["LoRA, stage 1 skipped"], by["whole LM after stage 1"]
assert lora1["qa_all"] >= skip["qa_all"] + 0.02 and lora1["qa_worst_type"] >= skip["qa_worst_type"] + 0.1, "stage 1 pays off"
assert full["qa_all"] >= skip["qa_all"] + 0.02, "the whole LM after stage 1 also beats skipping stage 1"
assert full["trainable"] - lora1["trainable"] > 90_000, "the whole LM trains its 106,816 weights, LoRA 7,168 adapters"
print(f"whole LM - LoRA: {full['qa_all'] - lora1['qa_all']:+.1%} (not asserted: its sign depends on the CPU, below)")
assert max(r["caption_after"] for r in rows) <= caption_before - 0.5, "stage 2 on questions alone forgets captioning"

# %% [markdown]
# What the table shows. The cell above asserts margins that held on all five seeds we ran
# (seeds 0-4, numbers in `mmllm_course/training/recipes_ch07.py`'s docstring):
#
# - **Stage 1 pays off.** With the same stage-2 budget, the model whose bridge was aligned first
#   answers more questions than the one that starts from a fresh bridge, above all on its worst
#   question type (4-18 points overall, 15-31 on the worst type over the five seeds): stage 1 taught
#   the bridge to write vectors the LM can read, so stage 2 only has to teach the task.
# - **LoRA versus the whole LM.** The trainable column holds the bridge too: the LM's own share is
#   the 7,168 adapter weights of LoRA against all 106,816 weights of the LM. Which of the two
#   answers more at this short budget is **not** a stable result, so the cell does not assert it:
#   on seeds 0-4 on one machine the whole LM won by 4-12 points, but the same seed-0 run on a CPU
#   with AVX-512 kernels (another rounding path, principle 6 of the course) put LoRA 2.3 points
#   ahead, and forcing AVX2 kernels on that CPU made it +5.8. A difference that flips with the
#   rounding order is noise, not a finding. What LoRA reliably buys is fewer numbers to train and
#   to store (a full copy of the LM per task, against kilobytes of adapters, Part 6), and the
#   400-step LoRA run of Part 4 shows its smaller change per step is enough here.
# - **Forgetting.** Trained on questions only, every stage-2 model loses the stage-1 skill (the
#   captions column): asked to describe the image, it no longer writes the caption. Stage-2 recipes
#   such as LLaVA-1.5's mix several kinds of data into the instruction set. Here, replaying captions
#   in a fifth of the stage-2 rows (`dataclasses.replace(CHAPTER7, caption_fraction=0.2)` with
#   `train_stage2`) kept the captions (95.0% after stage 2 against 95.4% before, seed 0, 400 steps)
#   with 98.8% exact answers: try it.
#
# ## Part 6: saving, reloading and merging the adapters
#
# Only the adapters (and the bridge) changed, so only they need saving. Merged into $W$, they cost
# nothing at inference: the merged LM is a plain `LlamaForCausalLM` again.

# %%
import os  # noqa: E402
import tempfile  # noqa: E402

folder = tempfile.mkdtemp()
files = save_adapters(run.model.lm, folder)
size = os.path.getsize(os.path.join(folder, "adapter_model.safetensors"))
print(files, f"adapters: {size / 1e3:.0f} kB")
base_lm = copy.deepcopy(stage1.model.lm)  # the stage-1 model's LM: the shipped chapter-5 weights, untouched
reloaded = load_adapters(base_lm, folder)
merged = merge_lora(copy.deepcopy(reloaded))
batch = run.model.tokenize(chat_prompts(run.held_out.questions[:16], tok), [" " + a for a in run.held_out.answers[:16]])
features = run.held_out_features[run.held_out.image_index[:16]]
trained_lm, logits = run.model.lm, {}
with torch.no_grad():
    for name, l in (("trained", trained_lm), ("reloaded", reloaded), ("merged", merged)):
        run.model.lm = l  # the same bridge and encoder, three versions of the LM
        logits[name] = run.model(**batch, image_features=features).logits
run.model.lm = trained_lm
print("max |reloaded - trained| =", (logits["reloaded"] - logits["trained"]).abs().max().item())
print("max |merged - trained|   =", f"{(logits['merged'] - logits['trained']).abs().max().item():.1e}",
      "| merged is a", type(merged).__name__, "with", count_parameters(merged), "parameters")
assert torch.equal(logits["reloaded"], logits["trained"])
assert (logits["merged"] - logits["trained"]).abs().max() < 1e-4

# %% [markdown]
# ## Part 7: one loop, several processes
#
# Every run in this course goes through one function, `mmllm_course.training.train`. Given an
# `accelerate.Accelerator`, the same loop runs **data-parallel**: each process draws the same global
# batch (one shared seed) and keeps its slice; `accelerator.prepare` wraps the model in
# `DistributedDataParallel`, so `accelerator.backward` averages the gradients over the processes and
# every replica takes the same step; only the main process saves. On a machine with two GPUs:
#
# ```bash
# accelerate launch --multi_gpu --num_processes 2 -m mmllm_course.training.recipes_ch07 --save stage2/
# ```
#
# and on CPUs, the same code: `torchrun --nproc_per_node 2 -m mmllm_course.training.recipes_ch07 --cpu`.
# `tests/test_accelerate_loop.py` runs a short stage 2 under two CPU processes (gloo) and checks that
# the two replicas end bit-identical and equal a one-process run on the same global batch (within
# 1e-4; the captions it trains on all have the same number of tokens, so the mean of the two slices'
# losses is the whole batch's loss). The
# sharding itself is one line; the two slices of a batch are the batch:

# %%
from mmllm_course.training.loop import random_batches  # noqa: E402

data = {"row": torch.arange(10)}
slices = [random_batches(data, 4, torch.Generator().manual_seed(0), shard=(rank, 2))()["row"].tolist() for rank in (0, 1)]
whole = random_batches(data, 4, torch.Generator().manual_seed(0))()["row"].tolist()
print("process 0:", slices[0], "process 1:", slices[1], "one process:", whole)
assert slices[0] + slices[1] == whole

# %% [markdown]
# ## Where this shows up
#
# - **LLaVA** ([Liu et al. 2023](https://arxiv.org/abs/2304.08485)) trains in exactly these two
#   stages: the projector alone on image-caption pairs, then projector and LLM on instruction data.
#   LLaVA-1.5 ([Liu et al. 2023](https://arxiv.org/abs/2310.03744)) mixes academic VQA data into stage 2
#   and offers a LoRA variant of it.
# - **InstructBLIP** ([Dai et al. 2023](https://arxiv.org/abs/2305.06500)) instruction-tunes only the
#   Q-Former, with the LLM frozen, on many tasks written as instruction templates.
# - **LoRA** ([Hu et al. 2021](https://arxiv.org/abs/2106.09685)) and **QLoRA**
#   ([Dettmers et al. 2023](https://arxiv.org/abs/2305.14314)) are how most open multimodal models are
#   fine-tuned on one GPU; `peft` is the library, and merging removes the adapters' cost at inference.
# - Every instruction-tuned checkpoint on the Hugging Face Hub ships a chat template in its tokenizer.
#
# ## Recap
#
# - Stage 1 aligns (bridge only, captions); stage 2 teaches instructions (bridge + LoRA or the whole
#   LM, question-answer data in a chat template, loss on the answer only). Table in Part 3.
# - LoRA: $W + \frac{\alpha}{r} BA$, $B = 0$ at the start, $r(d_\text{in} + d_\text{out})$ per
#   adapted matrix; adapters save in kilobytes and merge into $W$ with the same outputs.
# - Measured here: stage 2 with LoRA answers held-out questions (Part 4); skipping stage 1 costs
#   accuracy at the same budget; training questions only makes the model forget how to caption.
# - One training loop for every stage, run data-parallel by `accelerate` without a change.
#
# **Exercises:** `exercises/07_training_stages.ipynb`: freezing what each stage trains, counting
# LoRA's parameters, a chat-formatted example with labels on the answers only, a LoRA linear layer's
# forward; a `MyLoRALinear` of your own loaded with `peft`'s weights; your own stage 2 (LoRA and the
# bridge) measured on held-out questions; merging the adapters as a stretch; and checked questions.
