"""The checker itself: statuses, messages, strict mode, timeouts, and that it never crashes."""

import json
import time

import pytest
import torch

from mmllm_course.grading import core
from mmllm_course.grading.compare import expect_tensor
from mmllm_course.grading.core import GradingError, call, check


@pytest.fixture
def registry(monkeypatch):
    """A private registry holding one exercise (double every element) and one question."""
    reg = {}
    monkeypatch.setattr(core, "_REGISTRY", reg)
    monkeypatch.setattr(core, "_load_checks", lambda: None)
    monkeypatch.delenv("MMLLM_STRICT", raising=False)

    @core.exercise("ch99.double", "Double a tensor", hint="multiply by two", timeout=1.0)
    def _check(fn):
        for n in (1, 5):
            x = torch.randn(n)
            expect_tensor(call(fn, x), 2 * x, f"double(x of shape ({n},))")
        return "doubles"

    core.question("ch99.q1", "A question", {"a": "yes", "b": "no"}, [core.answer_hash("b")], explanation="b is right")
    return reg


def test_statuses(registry):
    assert check("ch99.double", lambda x: x * 2).status == "pass"
    assert check("ch99.double", lambda x: x + x).status == "pass"  # another correct implementation

    def stub(x):
        raise NotImplementedError

    assert check("ch99.double", stub).status == "todo"
    wrong = check("ch99.double", lambda x: x * 3)
    assert wrong.status == "fail" and "values differ" in wrong.message and "multiply by two" in wrong.message
    assert check("ch99.double", lambda x: None).status == "fail"
    assert "returned None" in check("ch99.double", lambda x: None).message
    assert check("ch99.double", lambda x: torch.zeros(3)).status == "fail"
    shape = check("ch99.double", lambda x: (2 * x)[None])
    assert shape.status == "fail" and "shape" in shape.message
    assert check("ch99.double", lambda x: [1.0]).status == "fail"
    assert check("ch99.double", None).status == "fail"


def test_learner_exception_is_reported_as_error(registry):
    def broken(x):
        return x @ torch.ones(7, 3)

    result = check("ch99.double", broken)
    assert result.status == "error" and "RuntimeError" in result.message


def test_timeout_is_an_error(registry):
    def slow(x):
        time.sleep(5)
        return 2 * x

    start = time.perf_counter()
    result = check("ch99.double", slow)
    assert result.status == "error" and "longer than" in result.message
    assert time.perf_counter() - start < 3


def test_grader_bug_never_crashes(registry, monkeypatch):
    def bad_checker(fn):
        raise KeyError("oops")

    registry["ch99.double"].checker = bad_checker
    result = check("ch99.double", lambda x: 2 * x)
    assert result.status == "error" and "grader" in result.message


def test_questions(registry):
    assert check("ch99.q1", "b").status == "pass"
    assert check("ch99.q1", " B. ").status == "pass"
    assert check("ch99.q1", "a").status == "fail"
    assert check("ch99.q1", "z").status == "fail"
    assert check("ch99.q1", 2).status == "fail"
    assert check("ch99.q1", ...).status == "todo"
    assert check("ch99.q1", None).status == "todo"


def test_unknown_id(registry):
    result = check("ch99.dobule", lambda x: x)
    assert result.status == "error" and "ch99.double" in result.message


def test_strict_mode_raises(registry, monkeypatch):
    monkeypatch.setenv("MMLLM_STRICT", "1")
    assert check("ch99.double", lambda x: 2 * x).status == "pass"
    with pytest.raises(GradingError, match="ch99.double"):
        check("ch99.double", lambda x: x)


def test_report_file(registry, monkeypatch, tmp_path):
    report = tmp_path / "r.jsonl"
    monkeypatch.setenv("MMLLM_GRADE_REPORT", str(report))
    check("ch99.double", lambda x: 2 * x, quiet=True)
    check("ch99.q1", "a", quiet=True)
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert [(r["id"], r["status"]) for r in lines] == [("ch99.double", "pass"), ("ch99.q1", "fail")]


def test_printed_verdict(registry, capsys):
    check("ch99.double", lambda x: 2 * x)
    assert "ch99.double: PASS" in capsys.readouterr().out


def test_list_exercises_covers_every_chapter_module():
    infos = core.list_exercises()
    ids = [i.id for i in infos]
    assert len(ids) == len(set(ids)) and ids
    for info in infos:
        assert info.id.startswith(f"ch{info.chapter:02d}.") and info.title and info.kind in ("function", "question")


def test_bad_exercise_id_is_rejected():
    with pytest.raises(ValueError, match="chNN"):
        core.Exercise("patchify", "x", "function", lambda a: None)


def test_timeout_survives_a_learner_except(registry):
    def sneaky(x):
        end = time.perf_counter() + 4
        while time.perf_counter() < end:
            try:
                time.sleep(0.05)
            except Exception:  # noqa: BLE001 - what a learner might write
                pass
        return 2 * x

    start = time.perf_counter()
    result = check("ch99.double", sneaky)
    assert result.status == "error" and "longer than" in result.message
    assert time.perf_counter() - start < 3


def test_sys_exit_in_learner_code_is_an_error(registry):
    def quits(x):
        raise SystemExit(3)

    result = check("ch99.double", quits)
    assert result.status == "error" and "SystemExit" in result.message


def test_error_points_at_the_learners_line(registry):
    def broken(x):
        y = x.reshape(7, -1)  # wrong for 5 elements
        return y

    result = check("ch99.double", broken)
    assert result.status == "error" and "x.reshape(7, -1)" in result.message


def test_result_on_another_device_is_compared_on_cpu(registry):
    # "meta" stands in for a GPU here: the comparison must not crash the grader.
    result = check("ch99.double", lambda x: (2 * x).to("meta"))
    assert result.status in ("fail", "pass") and "grader" not in result.message


@pytest.mark.parametrize("answer", ["b", "B", " b. ", "(b)", "b)", "b) no", "[b]"])
def test_answer_formats(registry, answer):
    assert check("ch99.q1", answer).status == "pass"


# --------------------------------------------------------------------------------------------------
# Learner code that does not stop: every form must be stopped within the timeout plus a little.
# --------------------------------------------------------------------------------------------------


def _swallow_bare(x):
    while True:
        try:
            time.sleep(0.01)
        except:  # noqa: E722 - the point of the test
            pass


def _swallow_nested(x):
    while True:
        try:
            try:
                sum(range(1000))
            except BaseException:
                pass
        except BaseException:
            continue


def _swallow_then_return(x):
    try:
        time.sleep(30)
    except BaseException:
        pass
    return 2 * x  # right answer, but only after the time limit: still an error


def _swallow_in_finally(x):
    n = 0
    while True:
        try:
            n += 1
        finally:
            try:
                n -= 1
            except:  # noqa: E722
                pass


@pytest.mark.parametrize("answer", [_swallow_bare, _swallow_nested, _swallow_then_return, _swallow_in_finally])
def test_timeout_stops_code_that_swallows_every_exception(registry, answer):
    import sys

    trace_before = sys.gettrace()
    start = time.perf_counter()
    result = check("ch99.double", answer)
    assert time.perf_counter() - start < 1.0 + 2.0, "the check must return within its timeout plus 2 s"
    assert result.status == "error" and "longer than" in result.message
    assert sys.gettrace() is trace_before
    # Nothing is left pending: plain Python keeps running undisturbed afterwards.
    total = 0
    for i in range(200_000):
        total += i
    time.sleep(0.3)
    assert total == sum(range(200_000))
    assert check("ch99.double", lambda x: 2 * x).status == "pass"  # and the grader works as before


def test_ctrl_c_during_a_check_is_reported_and_stops_the_cell(registry, capsys):
    import os
    import signal
    import threading

    handler_before = signal.getsignal(signal.SIGINT)
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        check("ch99.double", _swallow_bare)
    timer.join()
    assert time.perf_counter() - start < 0.3 + 2.0
    assert "interrupted" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGINT) is handler_before


# --------------------------------------------------------------------------------------------------
# Global state: a check runs under a known state and gives the learner's state back.
# --------------------------------------------------------------------------------------------------


def test_learner_changes_to_global_state_do_not_leak(registry):
    seen = {}

    def meddling(x):
        torch.set_default_dtype(torch.float64)
        torch.set_grad_enabled(False)
        return 2 * x

    @core.exercise("ch99.state", "Reads the state after learner code ran")
    def _check(fn):
        call(fn, torch.ones(2))
        seen["dtype"], seen["grad"] = torch.get_default_dtype(), torch.is_grad_enabled()
        return "ok"

    assert check("ch99.state", meddling).status == "pass"
    assert seen == {"dtype": torch.float32, "grad": True}, "inside the check, the known state comes back after learner code"
    assert torch.get_default_dtype() == torch.float32 and torch.is_grad_enabled()
    assert check("ch99.double", meddling).status == "pass"
    assert torch.get_default_dtype() == torch.float32 and torch.is_grad_enabled()


def test_check_runs_under_a_known_state_and_restores_the_learners(registry):
    seen = {}

    @core.exercise("ch99.known", "Reads the state a check starts in")
    def _check(fn):
        seen["dtype"], seen["grad"] = torch.get_default_dtype(), torch.is_grad_enabled()
        seen["draw"] = torch.rand(3)
        return "ok"

    torch.manual_seed(123)
    expected_next = torch.rand(4)
    torch.manual_seed(123)
    try:
        torch.set_default_dtype(torch.float64)
        with torch.no_grad():
            assert check("ch99.known", lambda x: x).status == "pass"
            assert not torch.is_grad_enabled()
        assert torch.get_default_dtype() == torch.float64
    finally:
        torch.set_default_dtype(torch.float32)
    assert seen["dtype"] == torch.float32 and seen["grad"] is True
    first = seen["draw"]
    check("ch99.known", lambda x: x)
    assert torch.equal(seen["draw"], first), "checks draw from a fixed seed"
    assert torch.equal(torch.rand(4), expected_next), "the learner's random stream is not consumed by a check"


# --------------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------------


def test_multi_line_errors_keep_every_line(registry):
    from einops import rearrange

    def bad_split(x):
        return rearrange(x, "(a b) -> a b", b=3)  # cannot split 5 into chunks of 3

    result = check("ch99.double", bad_split)
    assert result.status == "error"
    assert "can't divide axis of length 5 in chunks of 3" in result.message or "chunks of 3" in result.message


def test_sys_exit_message_says_what_happened(registry):
    result = check("ch99.double", lambda x: exit())
    assert result.status == "error" and "sys.exit" in result.message and "return" in result.message


def test_type_names_take_the_right_article(registry):
    result = check("ch99.double", lambda x: torch.nn.Identity())
    assert result.status == "fail" and "an Identity" in result.message and "a Identity" not in result.message


def test_result_is_not_echoed_after_its_printed_verdict(registry, capsys):
    result = check("ch99.double", lambda x: 2 * x)
    capsys.readouterr()
    result._ipython_display_()
    assert capsys.readouterr().out == ""
    quiet = check("ch99.double", lambda x: 2 * x, quiet=True)
    quiet._ipython_display_()
    assert "PASS" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# Questions
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def number_question(registry):
    core.question(
        "ch99.q2", "How many tokens?", {"a": "196", "b": "197", "c": "49", "d": "50"}, [core.answer_hash("b")],
        explanation="196 patches and [CLS]",
    )


@pytest.mark.parametrize("answer", ["b, 197", "b: 197", "b) 197", "B; 197"])
def test_letter_then_value_reads_as_the_letter(number_question, answer):
    assert check("ch99.q2", answer).status == "pass"


def test_value_instead_of_letter_is_told_to_use_the_letter(number_question):
    result = check("ch99.q2", "197")
    assert result.status == "fail" and "letter" in result.message and '"b"' in result.message


def test_empty_answer_is_todo(number_question):
    assert check("ch99.q2", "").status == "todo"
    assert check("ch99.q2", "   ").status == "todo"


def test_wrong_answer_lists_the_choices(number_question):
    result = check("ch99.q2", "a")
    assert result.status == "fail" and "a) 196" in result.message and "d) 50" in result.message


def test_a_check_inside_a_check_is_refused_and_the_outer_limit_holds(registry):
    inner = {}

    def nests(x):
        inner["result"] = check("ch99.double", lambda y: 2 * y, quiet=True)
        return _swallow_bare(x)

    start = time.perf_counter()
    result = check("ch99.double", nests)
    assert time.perf_counter() - start < 1.0 + 2.0
    assert result.status == "error" and "longer than" in result.message
    assert inner["result"].status == "error" and "another check" in inner["result"].message


def test_a_checks_own_clean_up_runs_after_a_timeout(registry):
    cleaned = []

    @core.exercise("ch99.cleanup", "Cleans up in a finally", timeout=0.5)
    def _check(fn):
        try:
            call(fn, torch.ones(2))
        finally:
            total = 0
            for i in range(50_000):  # clean-up long enough to meet the re-firing timer
                total += i
            cleaned.append(total)
        return "ok"

    result = check("ch99.cleanup", _swallow_nested)
    assert result.status == "error" and "longer than" in result.message
    assert cleaned == [sum(range(50_000))]
