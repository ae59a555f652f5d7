"""Auto-grading for the exercise notebooks.

In a notebook::

    from mmllm_course.grading import check
    check("ch01.patchify", patchify)      # a coding exercise
    check("ch01.q1", "b")                 # a checked question

From a shell: ``python -m mmllm_course.grade exercises/01_tokens_and_patches.ipynb``.
"""

from mmllm_course.grading.core import (
    STATUSES,
    ExerciseInfo,
    GradingError,
    Result,
    answer_hash,
    check,
    list_exercises,
)

__all__ = ["STATUSES", "ExerciseInfo", "GradingError", "Result", "answer_hash", "check", "list_exercises"]
