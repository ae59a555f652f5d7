"""Instruction data from the shapes world: questions of several types about an image, with one right answer each.

Stage 2 (instruction tuning) trains on these; stage 1 trained on captions. Six question types, each
asked only when its answer is unambiguous in the scene (the five of :func:`questions_for`, plus a
yes/no question that half the time names something absent)::

    color_of_shape     "What colour is the circle?"             -> "red"
    shape_at           "What shape is in the top left?"         -> "circle"
    size_of_color      "How big is the red shape?"              -> "small"
    position_of_shape  "Where is the circle?"                   -> "top left"
    color_at           "What colour is the shape in the top left?" -> "red"
    yes_no             "Is there a red circle?"                 -> "yes" / "no"

A caption never says "yes" or "no", and no caption answers "How big is the red shape?" with a single
word: answering needs the instruction read, not only the image. Dims: ``n`` images, ``Q``
questions in the set; ``image_index`` (Q,) says which image each question is about.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mmllm_course._checks import InputTypeError, check_int, describe
from mmllm_course.data.shapes import COLORS, SHAPES, ShapesBatch, questions_for

QUESTION_TYPES: tuple[str, ...] = ("color_of_shape", "shape_at", "size_of_color", "position_of_shape", "color_at", "yes_no")
# The order in which questions_for lists an object's questions, by the start of each template.
_PREFIXES = (("What colour is the shape in the ", "color_at"), ("What colour is the ", "color_of_shape"),
             ("What shape is in the ", "shape_at"), ("How big is the ", "size_of_color"), ("Where is the ", "position_of_shape"))


def question_type(question: str) -> str:
    """The type (one of :data:`QUESTION_TYPES`) of a question written by :func:`scene_questions`."""
    if not isinstance(question, str):
        raise InputTypeError(f"question must be a str, got {describe(question)}")
    if question.startswith("Is there a "):
        return "yes_no"
    for prefix, name in _PREFIXES:
        if question.startswith(prefix):
            return name
    raise ValueError(f"not a shapes-world question: {question!r}; expected one of the templates of {QUESTION_TYPES}")


def scene_questions(objects: Sequence[Sequence[int]], generator: torch.Generator | None = None) -> dict[str, tuple[str, str]]:
    """Every question type that has one right answer in the scene, ``objects`` (K, 4): type -> (question, answer).

    The yes/no question names a colour and shape present in the scene or (with probability 1/2,
    drawn from ``generator``) a combination absent from it.
    """
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InputTypeError(f"generator must be a torch.Generator or None, got {describe(generator)}")
    qa = questions_for(objects)  # validates the labels
    out: dict[str, tuple[str, str]] = {}
    for q, a in qa:
        out.setdefault(question_type(q), (q, a))
    present = {(int(o[1]), int(o[0])) for o in objects}  # (colour, shape)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    if bool(torch.rand(1, generator=g) < 0.5):
        color, shape = sorted(present)[int(torch.randint(len(present), (1,), generator=g))]
        answer = "yes"
    else:
        absent = [(c, s) for c in range(len(COLORS)) for s in range(len(SHAPES)) if (c, s) not in present]
        # half of the absent ones share the colour or the shape of an object: a "no" needs both words read
        near = [(c, s) for c, s in absent if any(c == pc or s == ps for pc, ps in present)]
        pool = near if near and bool(torch.rand(1, generator=g) < 0.8) else absent
        color, shape = pool[int(torch.randint(len(pool), (1,), generator=g))]
        answer = "no"
    out["yes_no"] = (f"Is there a {COLORS[color]} {SHAPES[shape]}?", answer)
    return {t: out[t] for t in QUESTION_TYPES if t in out}


@dataclass
class InstructionSet:
    """Questions about images: ``questions``, ``answers``, ``types`` (Q lists of str), ``image_index`` (Q,) long."""

    questions: list[str]
    answers: list[str]
    types: list[str]
    image_index: torch.Tensor  # (Q,) which image of the batch each question is about

    def __len__(self) -> int:
        return len(self.questions)

    def of_type(self, name: str) -> list[int]:
        """Positions of the questions of type ``name``."""
        if name not in QUESTION_TYPES:
            raise ValueError(f"unknown question type {name!r}: expected one of {QUESTION_TYPES}")
        return [i for i, t in enumerate(self.types) if t == name]


def make_instructions(shapes: ShapesBatch, seed: int = 0, questions_per_image: int = 1,
                      types: Sequence[str] = QUESTION_TYPES) -> InstructionSet:
    """``questions_per_image`` questions of different types about each image of ``shapes`` (types drawn in ``seed``'s order).

    ``types`` restricts the question types (a subset of :data:`QUESTION_TYPES`); with
    ``questions_per_image = len(types)`` every image gets every type it has an answer for.
    Deterministic in ``seed``.
    """
    if not isinstance(shapes, ShapesBatch):
        raise InputTypeError(f"shapes must be a ShapesBatch (generate_shapes(n)), got {describe(shapes)}")
    seed = check_int(seed, "seed", minimum=0)
    questions_per_image = check_int(questions_per_image, "questions_per_image")
    if isinstance(types, str) or not isinstance(types, Sequence) or not types:
        raise InputTypeError(f"types must be a non-empty sequence of question types from {QUESTION_TYPES}, got {describe(types)}")
    unknown = [t for t in types if t not in QUESTION_TYPES]
    if unknown:
        raise ValueError(f"unknown question types {unknown}: expected names from {QUESTION_TYPES}")
    if questions_per_image > len(types):
        raise ValueError(f"questions_per_image={questions_per_image} is more than the {len(types)} question types asked for")
    g = torch.Generator().manual_seed(seed)
    questions, answers, kinds, index = [], [], [], []
    for i in range(len(shapes)):
        objects = [o for o in shapes.objects[i].tolist() if o[0] >= 0]
        available = [(t, qa) for t, qa in scene_questions(objects, g).items() if t in types]
        for j in torch.randperm(len(available), generator=g)[:questions_per_image].tolist():
            t, (q, a) = available[j]
            questions.append(q)
            answers.append(a)
            kinds.append(t)
            index.append(i)
    return InstructionSet(questions, answers, kinds, torch.tensor(index, dtype=torch.long))


__all__ = ["InstructionSet", "QUESTION_TYPES", "make_instructions", "question_type", "scene_questions"]
