# %% [markdown]
# # 00 · The course map: what a multimodal LLM is made of
#
# **By the end of this notebook you will** know how the course works (chapters, exercises, the
# grader, Colab), and you will have the one picture every later chapter hangs on: the five parts of
# a multimodal large language model (MLLM).
#
# Every idea in this course is real, runnable code in the `mmllm_course` library. The notebooks
# explain an idea, then import it from the library; the exercises ask you to write it yourself and
# check your version against the library's.
#
# ## What you need before you start
#
# - **Python**: functions, classes, list comprehensions; reading a traceback.
# - **PyTorch basics**: tensors and their shapes, indexing and broadcasting, `matmul`, an
#   `nn.Module` with `nn.Linear` layers, and a training loop (loss, `backward()`, optimiser step).
#   The official "Learn the Basics" tutorial at pytorch.org covers all of it.
# - **Maths**: vectors and matrices (dot product, matrix product), softmax, cross-entropy, and what
#   gradient descent does. No calculus beyond that: autograd computes the gradients.
#
# You do **not** need to know transformers, attention or any multimodal model: the course builds
# them from these basics. New terms are in **bold** where they are introduced, and the course
# [glossary](../GLOSSARY.md) defines every one of them in a sentence or two.

# %% [markdown]
# ## How to use the course
#
# | where | what you do |
# |---|---|
# | `notebooks/NN_topic.ipynb` | read and run a chapter, top to bottom (about a minute on a laptop CPU) |
# | `exercises/NN_topic.ipynb` | fill in every `raise NotImplementedError` and every `...` answer |
# | `solutions/NN_topic.ipynb` | the same notebook, solved: look only after you tried |
#
# **On your machine**: `make lab` sets everything up the first time and opens JupyterLab.
# **In Colab**: use the badge at the top of any notebook; its first code cell installs the package.
# Nothing is downloaded while you learn: every dataset is generated, every tokenizer is trained, on
# your CPU. A GPU is used when there is one.

# %%
import matplotlib.pyplot as plt
import torch

import mmllm_course
from mmllm_course import get_device, seed_everything

seed_everything(0)
print("mmllm_course", mmllm_course.__version__, "| torch", torch.__version__, "| device:", get_device())

# %% [markdown]
# ## Exercises grade themselves
#
# Each exercise ends with a call like `check("ch01.patchify", patchify)`. The checker runs your
# function next to the library's reference on several random inputs and prints one of four verdicts:
#
# - **pass**: right on every input;
# - **todo**: not attempted yet (`raise NotImplementedError` is still there);
# - **fail**: it ran, but the answer is wrong; the message says what was expected and what came back;
# - **error**: your code raised an exception or ran too long.
#
# It never stops *Run All*. Here is the grader on a checked question from chapter 1, first unanswered, then
# with an answer that is not one of the choices. (`strict=False` keeps this demo quiet in CI, which
# otherwise makes every check that does not pass raise.)

# %%
from mmllm_course.grading import check, list_exercises

check("ch01.q1", ..., strict=False)
result = check("ch01.q1", "z", strict=False)
print("status:", result.status, "| message:", result.message)

# %% [markdown]
# Every exercise and question of the course, with its chapter:

# %%
for info in list_exercises():
    print(f"ch{info.chapter:02d}  {info.id:<28} {info.kind:<9} {info.title}")

# %% [markdown]
# From a shell you can grade a whole notebook at once, without opening it:
#
# ```bash
# python -m mmllm_course.grade exercises/01_tokens_and_patches.ipynb
# ```
#
# It prints a table per exercise and a score (`--json results.json` saves it for a machine).

# %% [markdown]
# ## The five-part map
#
# A multimodal LLM is a text LLM with attachments. The course follows the five-part map of the
# survey "MM-LLMs: Recent Advances in MultiModal Large Language Models"
# ([Zhang et al. 2024](https://arxiv.org/abs/2401.13601)): every system in this course, from LLaVA to
# NExT-GPT, is some choice of these five parts:
#
# 1. a **modality encoder** turns an image, a sound or a 3-D shape into feature vectors;
# 2. an **input projector** (the "bridge") maps those features into the LLM's token-embedding space;
# 3. the **LLM backbone** reasons over text tokens and modality tokens together. It is often kept
#    **frozen**: its weights are not updated while the new parts (the projectors) are trained, so
#    what it learned from text is kept, and training is cheaper;
# 4. an **output projector** maps the LLM's outputs back out, to a generator's conditioning;
# 5. a **modality generator** (a diffusion model, for example) turns that conditioning into an image,
#    a sound or a 3-D object.
#
# Models that only *understand* other modalities stop at part 3 and answer in text: LLaVA
# ([Liu et al. 2023](https://arxiv.org/abs/2304.08485)), BLIP-2
# ([Li et al. 2023](https://arxiv.org/abs/2301.12597)), Flamingo
# ([Alayrac et al. 2022](https://arxiv.org/abs/2204.14198)). Models that also *generate* them use all
# five: NExT-GPT ([Wu et al. 2023](https://arxiv.org/abs/2309.05519)).

# %%
from mmllm_course.viz.course_map import draw_course_map

fig, ax = plt.subplots(figsize=(13, 3.6))
draw_course_map(ax)
plt.show()

# %% [markdown]
# Text takes a shortcut: a tokenizer turns it into ids, and the LLM's own embedding table turns the
# ids into vectors, so it needs no encoder or projector. Chapter 1 starts there.
#
# ## Two ways to feed the backbone
#
# - **A. Unified embedding decoder**: the projected modality tokens have the same width as text
#   embeddings and are simply spliced into the text sequence; the LLM itself is unchanged (LLaVA;
#   MiniGPT-4, [Zhu et al. 2023](https://arxiv.org/abs/2304.10592)).
# - **B. Cross-modality attention**: text tokens *attend to* the modality features through extra
#   cross-attention layers inserted in the LLM (Flamingo; Llama 3.2 Vision, whose design is described
#   in [the Llama 3 paper](https://arxiv.org/abs/2407.21783)). In Flamingo each inserted layer is
#   **gated at zero**: its output is multiplied by `tanh(g)`, with a learned number `g` that starts
#   at 0. At the start of training the new layers therefore add nothing, the model computes exactly
#   what the unchanged LLM computed, and the gate opens only as far as training finds useful.
#
# On the output side, an LLM can emit **continuous signals** (the hidden states at special
# **signal tokens** such as `[IMG0]`, which steer a generator, as in NExT-GPT) or **discrete tokens**.
# For the latter, an image tokenizer learns a **codebook**, a fixed table of vectors, and
# describes an image as the list of the codebook entries (their ids) that best match its pieces; the
# LLM then predicts those ids like words, and the tokenizer's decoder turns them back into pixels
# (VideoPoet, [Kondratyuk et al. 2023](https://arxiv.org/abs/2312.14125), generates video this way).

# %% [markdown]
# ## The chapter plan
#
# | # | chapter | part of the map |
# |---|---|---|
# | 0 | The course map (this notebook) | all |
# | 1 | Tokens and patches: text and images become vectors | 1 |
# | 2 | Attention, the Vision Transformer and CLIP | 1 |
# | 3 | Bridges I: linear and MLP projectors | 2 |
# | 4 | Bridges II: Q-Former and Perceiver Resampler | 2 |
# | 5 | Backbone A: the unified embedding decoder | 3 |
# | 6 | Backbone B: cross-modality attention | 3 |
# | 7 | Training stages: alignment pre-training and instruction tuning | 2, 3 |
# | 8 | Beyond vision: audio and 3-D point clouds, one shared space | 1 |
# | 9 | Output side I: signal tokens, output projector, diffusion | 4, 5 |
# | 10 | Output side II: discrete visual tokens | 4, 5 |
# | 11 | Capstone: audio in, 3-D object out | all |
#
# The README lists the chapters that exist so far, with their Colab links.
#
# ## How every chapter is built
#
# Each chapter states what you will be able to do, links the papers it teaches from, explains with
# small runnable cells, checks our module against the reference implementation in `transformers` or
# `diffusers` on identical weights (a **parity cell** that prints the largest difference), and ends
# with a recap. Its exercise notebook has three tiers: **core** functions, a whole module you
# **build**, something you **train** and the checker measures, plus an optional **stretch**. Every
# number a notebook asserts holds on other random seeds too, not only on the one you run.
#
# ## Recap
#
# - A multimodal LLM = modality encoder → input projector → LLM backbone (→ output projector →
#   modality generator), after the MM-LLM survey.
# - Two ways to feed the backbone: splice projected tokens into the text (A), or cross-attend to
#   them from gated layers inside the LLM (B).
# - Two ways out: continuous signals at signal tokens, or discrete codebook tokens.
# - `check(...)` grades every exercise: pass, todo, fail or error, with a message that helps.
#
# ## What comes next
#
# Chapter 1 builds part 1's first step for both kinds of input: text becomes tokens and then
# vectors, an image becomes patches and then vectors. After that, everything in a multimodal LLM
# is a sequence of vectors.
