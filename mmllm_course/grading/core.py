"""The exercise checker: a registry of checks and the ``check`` call learners make in notebooks.

A check compares the learner's answer with the library's reference implementation, so fixing the
library fixes the check's expectations too. ``check`` never raises by default (Run All keeps going);
with ``MMLLM_STRICT=1`` anything but a pass raises :class:`GradingError` (what CI uses).

Statuses:
- ``pass``: the answer is right.
- ``todo``: not attempted yet (``raise NotImplementedError`` still there, or an answer left as ``...``).
- ``fail``: an answer came back and it is wrong (wrong values, shape, type, ``None``).
- ``error``: the learner's code raised, ran too long, or the grader itself hit a problem.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

STATUSES = ("pass", "todo", "fail", "error")
DEFAULT_TIMEOUT_S = 10.0
_ICONS = {"pass": "✅", "todo": "📝", "fail": "❌", "error": "💥"}


class GradingError(AssertionError):
    """Raised by ``check`` in strict mode (``MMLLM_STRICT=1``) when a check does not pass."""


class CheckFailed(Exception):
    """Raised inside a checker: the learner's answer is wrong. The message says why."""


class NotDone(Exception):
    """Raised inside a checker: the learner has not attempted the exercise yet."""


class LearnerError(Exception):
    """Raised inside a checker: the learner's code raised an exception."""


class CheckTimeout(BaseException):
    """The check ran past its time limit (almost always: the learner's code is too slow).

    A ``BaseException``, so a learner's ``except Exception`` cannot swallow it.
    """


@dataclass
class Result:
    """What ``check`` returns: ``.status`` is one of ``pass``, ``todo``, ``fail``, ``error``."""

    exercise_id: str
    status: str
    message: str
    seconds: float = 0.0

    def __bool__(self) -> bool:
        return self.status == "pass"

    def __str__(self) -> str:
        return f"{_ICONS.get(self.status, '?')} {self.exercise_id}: {self.status.upper()}  {self.message}"

    def __repr__(self) -> str:  # short, because notebooks echo the returned object after the print
        return f"<Result {self.exercise_id}: {self.status}>"

    def to_dict(self) -> dict:
        return {"id": self.exercise_id, "status": self.status, "message": self.message, "seconds": round(self.seconds, 3)}


@dataclass
class Exercise:
    """One registered exercise or checked question."""

    id: str
    title: str
    kind: str  # "function" or "question"
    checker: Callable[[Any], str | None]
    hint: str = ""
    timeout: float = DEFAULT_TIMEOUT_S
    choices: dict[str, str] = field(default_factory=dict)  # a question's letters -> texts
    chapter: int = field(init=False)

    def __post_init__(self) -> None:
        prefix = self.id.split(".", 1)[0]
        if not (prefix.startswith("ch") and prefix[2:].isdigit() and "." in self.id):
            raise ValueError(f"exercise ids look like 'chNN.name', got {self.id!r}")
        self.chapter = int(prefix[2:])


@dataclass(frozen=True)
class ExerciseInfo:
    id: str
    chapter: int
    title: str
    kind: str


_REGISTRY: dict[str, Exercise] = {}


def exercise(exercise_id: str, title: str, hint: str = "", timeout: float = DEFAULT_TIMEOUT_S):
    """Register ``checker(answer) -> message | None`` as the check for a coding exercise.

    The checker calls the learner's function through :func:`call`, raises :class:`CheckFailed` with a
    helpful message when the answer is wrong, and returns a short success message otherwise.
    """

    def register(checker: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
        if exercise_id in _REGISTRY:
            raise ValueError(f"exercise {exercise_id!r} is registered twice")
        _REGISTRY[exercise_id] = Exercise(exercise_id, title, "function", checker, hint, timeout)
        return checker

    return register


def normalize_answer(answer: Any) -> str:
    """Answers compare case-, space- and punctuation-insensitively: ``" B. "``, ``"(b)"``, ``"b) 197"`` -> ``"b"``."""
    text = " ".join(str(answer).strip().lower().split())
    text = text.strip("()[]").rstrip(".!")
    if len(text) > 1 and text[0].isalpha() and text[1] in ").:":  # "b) 197", "b. 197": the letter counts
        text = text[0]
    return text


def answer_hash(answer: Any) -> str:
    """SHA-256 of the normalised answer; questions store this, not the answer in plain text."""
    return hashlib.sha256(normalize_answer(answer).encode()).hexdigest()


def question(
    question_id: str,
    title: str,
    choices: dict[str, str],
    answer_hashes: Iterable[str],
    explanation: str,
    hint: str = "",
) -> None:
    """Register a checked multiple-choice question.

    ``choices`` maps letters to texts (shown on a wrong answer); ``answer_hashes`` holds
    :func:`answer_hash` of every accepted answer; ``explanation`` is shown once it is right.
    """
    accepted = set(answer_hashes)
    letters = {normalize_answer(k) for k in choices}

    def checker(answer: Any) -> str:
        if not isinstance(answer, str):
            raise CheckFailed(f"expected one of the letters {sorted(choices)} as a string, got {type(answer).__name__}")
        if normalize_answer(answer) not in letters:
            raise CheckFailed(f"{answer!r} is not one of the choices {sorted(choices)}")
        if answer_hash(answer) not in accepted:
            raise CheckFailed(f"{answer!r} is not right. {hint}".strip())
        return explanation

    if question_id in _REGISTRY:
        raise ValueError(f"exercise {question_id!r} is registered twice")
    _REGISTRY[question_id] = Exercise(question_id, title, "question", checker, hint, choices=dict(choices))


def call(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """Call learner code; turn its exceptions into :class:`NotDone` or :class:`LearnerError`."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as exc:
        raise NotDone(str(exc)) from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - any exception in learner code is reported, not raised
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise LearnerError(f"your code raised {type(exc).__name__}: {first_line[:300]}{_learner_line(exc)}") from None


def _learner_line(exc: BaseException) -> str:
    """`` (line N: code)`` for the deepest frame of the learner's own code, not of a library it called."""
    library = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../mmllm_course
    frames = traceback.extract_tb(exc.__traceback__)[1:]  # [0] is call() itself
    own = [f for f in frames if "site-packages" not in f.filename and not os.path.abspath(f.filename).startswith(library)]
    if own and own[-1].line:
        return f" (line {own[-1].lineno}: {own[-1].line})"
    return ""


def list_exercises(chapter: int | None = None) -> list[ExerciseInfo]:
    """Every registered exercise and question, in chapter order: ``ExerciseInfo(id, chapter, title, kind)``."""
    _load_checks()
    items = sorted(_REGISTRY.values(), key=lambda e: (e.chapter, e.kind != "function", e.id))
    return [ExerciseInfo(e.id, e.chapter, e.title, e.kind) for e in items if chapter is None or e.chapter == chapter]


def _load_checks() -> None:
    # Importing the package registers every chapter's checks.
    import mmllm_course.grading.checks  # noqa: F401


class _Deadline:
    """Interrupt the check after ``seconds`` with SIGALRM where possible (the notebook's main thread)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.fired = False
        self.active = (
            seconds > 0 and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
        )

    def _fire(self, signum, frame):  # noqa: ARG002
        self.fired = True
        # Fire again soon in case learner code swallows this one with a bare ``except``.
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        raise CheckTimeout()

    def __enter__(self):
        if self.active:
            self.previous = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc):
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)
        return False


def _run(ex: Exercise, answer: Any) -> tuple[str, str]:
    if answer is None and ex.kind == "question" or answer is Ellipsis:
        return "todo", "no answer yet: replace the `...` with your answer"
    if ex.kind == "function" and not callable(answer):
        return "fail", f"expected a function (or class), got {type(answer).__name__}: {answer!r:.80}"
    deadline = _Deadline(ex.timeout)
    try:
        with deadline:
            message = ex.checker(answer)
        if deadline.fired:  # the timeout fired but something swallowed it
            raise CheckTimeout()
        return "pass", message or "well done"
    except NotDone:
        return "todo", "not done yet: replace `raise NotImplementedError` with your code (yours, or a function it calls, still raises it)"
    except CheckFailed as exc:
        hint = f" Hint: {ex.hint}" if ex.hint and ex.kind == "function" else ""
        return "fail", f"{exc}{hint}"
    except LearnerError as exc:
        return "error", str(exc)
    except CheckTimeout:
        return "error", f"took longer than {ex.timeout:g} s: look for a Python loop over elements, or an endless loop"
    except Exception as exc:  # noqa: BLE001 - the grader never crashes the notebook
        return "error", f"the grader hit an unexpected problem ({type(exc).__name__}: {exc}); please report it"


def check(exercise_id: str, answer: Any, *, quiet: bool = False, strict: bool | None = None) -> Result:
    """Grade ``answer`` (a function, class or an answer string) for ``exercise_id`` and print the verdict.

    Returns a :class:`Result`. Never raises unless strict mode is on and the result is not a pass;
    strict mode is ``strict`` when given, else the ``MMLLM_STRICT`` environment variable (CI sets it).
    """
    _load_checks()
    start = time.perf_counter()
    ex = _REGISTRY.get(exercise_id)
    if ex is None:
        close = difflib.get_close_matches(str(exercise_id), list(_REGISTRY), n=3)
        result = Result(str(exercise_id), "error", f"unknown exercise id; did you mean {close}?" if close else "unknown exercise id")
    else:
        status, message = _run(ex, answer)
        result = Result(exercise_id, status, message, time.perf_counter() - start)
    _report(result)
    if not quiet:
        print(result)
    if strict is None:
        strict = os.environ.get("MMLLM_STRICT", "").lower() in ("1", "true", "yes")
    if strict and result.status != "pass":
        raise GradingError(str(result))
    return result


def _report(result: Result) -> None:
    """Append the result as a JSON line to ``$MMLLM_GRADE_REPORT`` (set by ``python -m mmllm_course.grade``)."""
    path = os.environ.get("MMLLM_GRADE_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(result.to_dict()) + "\n")
