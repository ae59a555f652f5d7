"""Every check passes correct answers, fails plausible wrong ones, and reports stubs as todo.

Cases live in ``tests/grading_cases/chNN.py`` (see the README there).
"""

import importlib.util
from pathlib import Path

import pytest
import torch

from mmllm_course.grading import check, list_exercises

CASES_DIR = Path(__file__).parent / "grading_cases"


def _load_cases() -> dict:
    cases = {}
    for path in sorted(CASES_DIR.glob("ch*.py")):
        spec = importlib.util.spec_from_file_location(f"grading_cases_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        cases.update(module.CASES)
    return cases


CASES = _load_cases()
EXERCISES = {info.id: info for info in list_exercises()}


def _stub(*args, **kwargs):
    raise NotImplementedError


def _returns_none(*args, **kwargs):
    return None


def _returns_constant(*args, **kwargs):
    return torch.zeros(2, 3)


def test_every_exercise_has_cases():
    assert set(EXERCISES) == set(CASES), f"no cases for {set(EXERCISES) - set(CASES)}; unknown {set(CASES) - set(EXERCISES)}"


def _params():
    for ex_id, case in sorted(CASES.items()):
        if "answer" in case:
            yield pytest.param(ex_id, case["answer"], "pass", id=f"{ex_id}-answer")
            for wrong in case["wrong"]:
                yield pytest.param(ex_id, wrong, "fail", id=f"{ex_id}-wrong-{wrong}")
            yield pytest.param(ex_id, ..., "todo", id=f"{ex_id}-unanswered")
            continue
        for i, fn in enumerate(case["correct"]):
            yield pytest.param(ex_id, fn, "pass", id=f"{ex_id}-correct{i}")
        for label, fn in case["wrong"].items():
            yield pytest.param(ex_id, fn, "fail", id=f"{ex_id}-wrong-{label}")
        yield pytest.param(ex_id, _stub, "todo", id=f"{ex_id}-stub")
        yield pytest.param(ex_id, _returns_none, "fail", id=f"{ex_id}-none")
        yield pytest.param(ex_id, _returns_constant, "fail", id=f"{ex_id}-constant")


def _global_state():
    return torch.get_default_dtype(), torch.is_grad_enabled(), torch.get_rng_state()


@pytest.mark.parametrize("exercise_id, answer, expected", list(_params()))
def test_check_verdict(exercise_id, answer, expected, monkeypatch):
    monkeypatch.delenv("MMLLM_STRICT", raising=False)
    before = _global_state()
    result = check(exercise_id, answer, quiet=True)
    assert result.status == expected, f"{exercise_id}: expected {expected}, got {result.status}: {result.message}"
    assert result.message
    after = _global_state()
    assert before[:2] == after[:2] and torch.equal(before[2], after[2]), f"{exercise_id} changed the global state"


def _diagnosis_params():
    for ex_id, case in sorted(CASES.items()):
        for label, (answer, words) in case.get("diagnoses", {}).items():
            yield pytest.param(ex_id, answer, words, id=f"{ex_id}-diagnosis-{label}")


@pytest.mark.parametrize("exercise_id, answer, words", list(_diagnosis_params()))
def test_check_names_the_mistake(exercise_id, answer, words, monkeypatch):
    """A mistake the check recognises fails with a message that names it (not another mistake's name)."""
    monkeypatch.delenv("MMLLM_STRICT", raising=False)
    result = check(exercise_id, answer, quiet=True)
    assert result.status == "fail", f"{exercise_id}: expected fail, got {result.status}: {result.message}"
    for word in [words] if isinstance(words, str) else words:
        assert word in result.message, f"{exercise_id}: {word!r} not in {result.message!r}"


def test_function_exercises_have_a_different_correct_version_and_mistakes():
    for ex_id, case in CASES.items():
        if "answer" not in case:
            assert len(case["correct"]) >= 2, f"{ex_id}: give the reference and a differently written correct version"
            assert len(case["wrong"]) >= 2, f"{ex_id}: give at least two realistic mistakes"
