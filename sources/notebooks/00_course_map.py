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
# A multimodal LLM is a text LLM with attachments. Following the MM-LLM survey, every system in
# this course, from LLaVA to NExT-GPT, is some choice of these five parts:
#
# 1. a **modality encoder** turns an image, a sound or a 3-D shape into feature vectors;
# 2. an **input projector** (the "bridge") maps those features into the LLM's token-embedding space;
# 3. the **LLM backbone**, usually frozen, reasons over text tokens and modality tokens together;
# 4. an **output projector** maps the LLM's outputs back out, to a generator's conditioning;
# 5. a **modality generator** (a diffusion model, for example) turns that conditioning into an image,
#    a sound or a 3-D object.
#
# Models that only *understand* other modalities (LLaVA, BLIP-2, Flamingo) stop at part 3 and answer
# in text. Models that also *generate* them (NExT-GPT) use all five.

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
#   embeddings and are simply spliced into the text sequence; the LLM itself is unchanged (LLaVA,
#   MiniGPT-4).
# - **B. Cross-modality attention**: text tokens *attend to* the modality features through extra
#   cross-attention layers inserted in the LLM, gated to start at zero so training begins from the
#   unchanged LLM (Flamingo, Llama 3.2 Vision).
#
# On the output side, an LLM can emit **continuous signals** (the hidden states at special signal
# tokens such as `[IMG0]`, which steer a generator, as in NExT-GPT) or **discrete tokens** (entries
# of a visual codebook, predicted like words, as in VideoPoet).

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
# ## What comes next
#
# Chapter 1 builds part 1's first step for both kinds of input: text becomes tokens and then
# vectors, an image becomes patches and then vectors. After that, everything in a multimodal LLM
# is a sequence of vectors.
