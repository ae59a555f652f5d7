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
import dis
import functools
import hashlib
import json
import os
import random
import re
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import torch

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
    printed: bool = field(default=False, repr=False, compare=False)  # check() already printed it

    def __bool__(self) -> bool:
        return self.status == "pass"

    def _ipython_display_(self) -> None:
        """In a notebook, a check cell shows the verdict once: ``check`` prints it, so the echo adds nothing."""
        if not self.printed:
            print(self)

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


_LETTER_SEPARATORS = ").:,;"


def normalize_answer(answer: Any) -> str:
    """Answers compare case-, space- and punctuation-insensitively.

    ``" B. "``, ``"(b)"``, ``"b) 197"``, ``"b: 197"`` and ``"b, 197"`` all read as ``"b"``: a single
    letter followed by punctuation counts as that letter, whatever follows.
    """
    text = " ".join(str(answer).strip().lower().split())
    text = text.strip("()[]").rstrip(".!")
    if len(text) > 1 and text[0].isalpha() and text[1] in _LETTER_SEPARATORS:
        text = text[0]
    return text


def answer_hash(answer: Any) -> str:
    """SHA-256 of the normalised answer; questions store this, not the answer in plain text."""
    return hashlib.sha256(normalize_answer(answer).encode()).hexdigest()


def a_or_an(name: str) -> str:
    """``"an Identity"``, ``"a list"``: the article a message needs before a type name."""
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def question(
    question_id: str,
    title: str,
    choices: dict[str, str],
    answer_hashes: Iterable[str],
    explanation: str,
    hint: str = "",
) -> None:
    """Register a checked multiple-choice question.

    ``choices`` maps letters to texts; every answer that is not right gets them listed in its
    message, so the learner sees what each letter stands for. ``answer_hashes`` holds
    :func:`answer_hash` of every accepted answer; ``explanation`` is shown once it is right.
    """
    accepted = set(answer_hashes)
    letters = sorted({normalize_answer(k) for k in choices})
    listing = "Choices: " + "; ".join(f"{k}) {v}" for k, v in choices.items())

    def checker(answer: Any) -> str:
        if not isinstance(answer, str):
            raise CheckFailed(
                f"expected the letter of your choice as a string, one of {letters}, got {a_or_an(type(answer).__name__)} "
                f"({answer!r:.60}). {listing}"
            )
        given = normalize_answer(answer)
        if given not in letters:
            # "197" instead of "b": the learner answered with a choice's value or text.
            holders = [k for k, v in choices.items() if given and re.search(rf"(?<![\w.]){re.escape(given)}(?![\w])", v.lower())]
            if holders:
                example = f' ("{holders[0]}" for "{holders[0]}) {choices[holders[0]]}")'
                raise CheckFailed(f"{answer!r} looks like the text of a choice: answer with its letter{example}. {listing}")
            raise CheckFailed(f"{answer!r} is not one of the letters {letters}. {listing}")
        if answer_hash(answer) not in accepted:
            raise CheckFailed(f"{answer!r} is not right. {hint + ' ' if hint else ''}{listing}")
        return explanation

    if question_id in _REGISTRY:
        raise ValueError(f"exercise {question_id!r} is registered twice")
    _REGISTRY[question_id] = Exercise(question_id, title, "question", checker, hint, choices=dict(choices))


# --------------------------------------------------------------------------------------------------
# Calling learner code
# --------------------------------------------------------------------------------------------------


def call(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """Call learner code; turn its exceptions into :class:`NotDone` or :class:`LearnerError`.

    Inside a check, whatever the learner's code changed of the global state the check relies on
    (grad mode, default dtype, default device) is set back to the check's known state afterwards.
    """
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as exc:
        raise NotDone(str(exc)) from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - any exception in learner code is reported, not raised
        raise LearnerError(f"your code raised {_describe_exception(exc)}{_learner_line(exc)}") from None
    finally:
        if _CHECK_DEPTH:
            _set_known_state()


def _describe_exception(exc: BaseException) -> str:
    """``"ValueError: ..."`` with every line of the message (einops puts the useful one last)."""
    name = type(exc).__name__
    if isinstance(exc, SystemExit):
        code = "" if exc.code is None else f" with code {exc.code!r}"
        return (f"SystemExit: it called exit() or sys.exit(){code}, which would stop the whole notebook; "
                "a function should return its result (or raise an exception) instead")
    text = " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())
    if len(text) > 800:
        text = text[:800] + " ..."
    return f"{name}: {text}" if text else name


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


# --------------------------------------------------------------------------------------------------
# A known global state for every check, and the learner's own state given back afterwards
# --------------------------------------------------------------------------------------------------
_CHECK_DEPTH = 0  # > 0 while a check runs
_CHECK_SEED = 0


def _set_known_state() -> None:
    """What every check may rely on: gradients on, float32 by default, tensors made on the CPU."""
    torch.set_grad_enabled(True)
    torch.set_default_dtype(torch.float32)
    if hasattr(torch, "set_default_device") and str(torch.get_default_device()) != "cpu":
        torch.set_default_device(None)
    torch.autograd.set_detect_anomaly(False)


@dataclass
class _SavedState:
    """The global settings a learner's code (or a check) could change, saved so they can be put back."""

    grad: bool
    dtype: torch.dtype
    device: Any
    anomaly: bool
    deterministic: bool
    deterministic_warn_only: bool
    threads: int
    torch_rng: torch.Tensor
    cuda_rng: list | None
    numpy_rng: Any
    python_rng: Any

    @classmethod
    def save(cls) -> "_SavedState":
        return cls(
            grad=torch.is_grad_enabled(),
            dtype=torch.get_default_dtype(),
            device=torch.get_default_device() if hasattr(torch, "get_default_device") else None,
            anomaly=torch.is_anomaly_enabled(),
            deterministic=torch.are_deterministic_algorithms_enabled(),
            deterministic_warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
            threads=torch.get_num_threads(),
            torch_rng=torch.get_rng_state(),
            cuda_rng=torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None,
            numpy_rng=np.random.get_state(),
            python_rng=random.getstate(),
        )

    def restore(self) -> None:
        torch.set_grad_enabled(self.grad)
        torch.set_default_dtype(self.dtype)
        if hasattr(torch, "set_default_device") and str(self.device) != str(torch.get_default_device()):
            torch.set_default_device(None if str(self.device) == "cpu" else self.device)
        torch.autograd.set_detect_anomaly(self.anomaly)
        if (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) != (
            self.deterministic, self.deterministic_warn_only
        ):  # only when changed: the first call imports torch._dynamo (seconds)
            torch.use_deterministic_algorithms(self.deterministic, warn_only=self.deterministic_warn_only)
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        torch.set_rng_state(self.torch_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
        np.random.set_state(self.numpy_rng)
        random.setstate(self.python_rng)


# --------------------------------------------------------------------------------------------------
# Stopping learner code that runs too long or is interrupted, even through a bare `except:`
# --------------------------------------------------------------------------------------------------


class CheckInterrupted(BaseException):
    """The learner pressed Ctrl-C (the stop button) while a check ran."""


@functools.lru_cache(maxsize=4096)
def _exception_table(code) -> tuple:
    """``(start, end, target, first opnames at target)`` per entry of ``code``'s exception table (3.11+)."""
    parse = getattr(dis, "_parse_exception_table", None)
    if parse is None:  # Python 3.10: no table; every instruction counts as outside a try
        return ()
    ops = {inst.offset: inst.opname for inst in dis.get_instructions(code)}
    return tuple((e.start, e.end, e.target, tuple(ops.get(e.target + 2 * i, "") for i in range(3))) for e in parse(code))


@functools.lru_cache(maxsize=65536)
def _can_be_caught(code, offset: int) -> bool:
    """Could an exception raised at ``offset`` be stopped by an ``except``/``finally`` of the same function?

    Follows the table: a clean-up entry (it only restores state and re-raises) or a ``with`` block's
    exit (rarely swallows) passes the exception on to whatever covers *its* code.
    """
    table = _exception_table(code)
    for _ in range(len(table) + 1):
        entry = next((e for e in table if e[0] <= offset < e[1]), None)
        if entry is None:
            return False
        first = entry[3]
        if first[0] in ("COPY", "POP_EXCEPT", "RERAISE") or "WITH_EXCEPT_START" in first:
            offset = entry[2]
            continue
        return True
    return False


_GRADER_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _is_grader_code(code) -> bool:
    """Code of the grading package (this module, the checks): never interrupted mid-way by the stopper."""
    return code.co_filename.startswith(_GRADER_DIR)


class _Stopper:
    """Stop the check after ``seconds`` (SIGALRM) or on Ctrl-C (SIGINT), whatever the learner's code catches.

    The first signal raises :class:`CheckTimeout` (or :class:`CheckInterrupted`) where the code runs.
    A learner's ``try: ... except: pass`` in a loop would swallow it, so the signal also installs a
    trace function on every frame of the stack that watches each instruction and raises the same
    exception again at the first instruction that no ``try`` of its function covers (the loop's jump
    back, say): there no handler of that function can catch it, and the frame unwinds. Raising
    from a trace function turns tracing off, so the timer fires again every ``REFIRE_S`` seconds
    and re-installs it, and the next frame up unwinds the same way. A function that never leaves
    its ``try`` gets the exception anyway after ``PATIENCE`` instructions. Frames of the grading
    package are never traced, and the signal waits for learner code before raising (up to a second),
    so a check's own clean-up (``finally: model.train(was_training)``) runs undisturbed. Needs ``signal.setitimer`` and the
    main thread (Linux, macOS, notebooks); elsewhere checks run without a time limit, as before.
    """

    REFIRE_S = 0.05
    PATIENCE = 20_000  # instructions inside a try before raising there anyway

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.fired: type[BaseException] | None = None
        self.armed = False
        self.active = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
        self._traced: list = []
        self._previous_trace = None
        self._previous_handlers: dict = {}
        self._waited = 0
        self._fires = 0

    def arm(self) -> None:
        if not self.active:
            return
        self.armed = True
        self._previous_trace = sys.gettrace()
        self._previous_handlers = {
            signal.SIGALRM: signal.signal(signal.SIGALRM, self._on_alarm),
            signal.SIGINT: signal.signal(signal.SIGINT, self._on_interrupt),
        }
        if self.seconds > 0:
            signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def _on_alarm(self, signum, frame):  # noqa: ARG002
        self._fire(CheckTimeout, frame)

    def _on_interrupt(self, signum, frame):  # noqa: ARG002
        self._fire(CheckInterrupted, frame)

    def _fire(self, kind: type[BaseException], frame) -> None:
        if not self.armed:
            return
        self.fired = kind if kind is CheckInterrupted else (self.fired or kind)  # Ctrl-C wins over the timer
        signal.setitimer(signal.ITIMER_REAL, self.REFIRE_S)  # again soon: re-install the trace, interrupt blocking calls
        self._fires += 1
        sys.settrace(self._trace_calls)
        here = frame
        while frame is not None:
            if not _is_grader_code(frame.f_code):
                frame.f_trace = self._trace_instructions
                frame.f_trace_opcodes = True
                self._traced.append(frame)
            frame = frame.f_back
        # In the grader's own code (a check's clean-up, say), wait for the next learner instruction,
        # unless the grader itself has not moved on for a second.
        if here is None or not _is_grader_code(here.f_code) or self._fires * self.REFIRE_S > 1.0:
            raise self.fired()

    def _trace_calls(self, frame, event, arg):  # noqa: ARG002 - the global trace: new frames
        if self.armed and not _is_grader_code(frame.f_code):
            frame.f_trace_opcodes = True
            self._traced.append(frame)
            return self._trace_instructions
        return None

    def _trace_instructions(self, frame, event, arg):  # noqa: ARG002 - the local trace of a frame
        if not (self.armed and self.fired is not None and event == "opcode"):
            return None  # None keeps this function as the frame's tracer
        self._waited += 1
        lasti = frame.f_lasti
        if self._waited > self.PATIENCE or not _can_be_caught(frame.f_code, lasti):
            self._waited = 0
            raise self.fired()
        return None

    def disarm(self) -> None:
        """Stop the timer, put back the signal handlers and the trace function."""
        if not self.active:
            return
        self.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}
        if self._traced or self.fired is not None:
            sys.settrace(self._previous_trace)
            for frame in self._traced:
                frame.f_trace = None
                frame.f_trace_opcodes = False
            self._traced = []


def _run(ex: Exercise, answer: Any) -> tuple[str, str]:
    if answer is Ellipsis or (ex.kind == "question" and (answer is None or (isinstance(answer, str) and not answer.strip()))):
        return "todo", "no answer yet: replace the `...` with your answer" if answer is Ellipsis or answer is None else (
            "no answer yet: write the letter of your choice between the quotes")
    if ex.kind == "function" and not callable(answer):
        return "fail", f"expected a function (or class), got {a_or_an(type(answer).__name__)}: {answer!r:.80}"
    global _CHECK_DEPTH
    if _CHECK_DEPTH:
        # One stopper at a time: a check inside a check would take over (and then cancel) the outer time limit.
        return "error", "check() was called while another check was running (from the code being checked): call check in its own cell"
    saved = _SavedState.save()
    stopper = _Stopper(ex.timeout)
    outcome: tuple[str, str] | BaseException
    _CHECK_DEPTH += 1
    try:
        _set_known_state()
        torch.manual_seed(_CHECK_SEED)  # learner code that draws random numbers sees the same ones every time
        np.random.seed(_CHECK_SEED)
        random.seed(_CHECK_SEED)
        stopper.arm()
        outcome = _verdict(ex, answer)
    except BaseException as exc:  # noqa: BLE001 - the timeout, Ctrl-C, or a KeyboardInterrupt the learner raised
        outcome = exc.with_traceback(None)  # keep no learner frames (and their tensors) alive
    finally:
        while True:  # an exception scheduled just before the check ended may land here: clean up again
            try:
                stopper.disarm()
                break
            except (CheckTimeout, CheckInterrupted):
                continue
        _CHECK_DEPTH -= 1
        saved.restore()
    if stopper.fired is CheckInterrupted or isinstance(outcome, (KeyboardInterrupt, CheckInterrupted)):
        raise _Interrupted()
    if stopper.fired is CheckTimeout or isinstance(outcome, CheckTimeout):
        return "error", (
            f"your code took longer than {ex.timeout:g} s and was stopped (it did not finish): look for an endless loop, a Python loop "
            "over elements that a tensor operation could replace, or an `except` that swallows errors and retries"
        )
    if isinstance(outcome, BaseException):
        return "error", f"the grader hit an unexpected problem ({_describe_exception(outcome)}); please report it"
    return outcome


class _Interrupted(Exception):
    """Ctrl-C during a check: :func:`check` reports it, then lets the notebook stop."""


def _verdict(ex: Exercise, answer: Any) -> tuple[str, str]:
    try:
        return "pass", ex.checker(answer) or "well done"
    except NotDone:
        return "todo", "not done yet: replace `raise NotImplementedError` with your code (yours, or a function it calls, still raises it)"
    except CheckFailed as exc:
        hint = f" Hint: {ex.hint}" if ex.hint and ex.kind == "function" else ""
        return "fail", f"{exc}{hint}"
    except LearnerError as exc:
        return "error", str(exc)
    except Exception as exc:  # noqa: BLE001 - the grader never crashes the notebook
        return "error", f"the grader hit an unexpected problem ({type(exc).__name__}: {exc}); please report it"


def check(exercise_id: str, answer: Any, *, quiet: bool = False, strict: bool | None = None) -> Result:
    """Grade ``answer`` (a function, class or an answer string) for ``exercise_id`` and print the verdict.

    Returns a :class:`Result`. Never raises unless strict mode is on and the result is not a pass,
    or the learner pressed Ctrl-C (the verdict is printed, then ``KeyboardInterrupt`` stops the
    cell). Strict mode is ``strict`` when given, else the ``MMLLM_STRICT`` environment variable (CI
    sets it). The check runs under a known global state (gradients on, default dtype float32,
    fixed seeds) and gives the learner's own state back afterwards; learner code that runs past the
    exercise's time limit is stopped, whatever it catches.
    """
    _load_checks()
    start = time.perf_counter()
    ex = _REGISTRY.get(exercise_id)
    interrupted = False
    if ex is None:
        close = difflib.get_close_matches(str(exercise_id), list(_REGISTRY), n=3)
        result = Result(str(exercise_id), "error", f"unknown exercise id; did you mean {close}?" if close else "unknown exercise id")
    else:
        try:
            status, message = _run(ex, answer)
        except _Interrupted:
            interrupted = True
            status, message = "error", "interrupted (Ctrl-C or the stop button) before the check finished"
        result = Result(exercise_id, status, message, time.perf_counter() - start)
    _report(result)
    if not quiet:
        print(result)
        result.printed = True
    if interrupted:
        raise KeyboardInterrupt(f"{exercise_id}: check interrupted")
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
