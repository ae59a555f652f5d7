"""The notebook builder (single source, no drift) and the grader CLI on the real notebooks."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import build_notebooks  # noqa: E402


def test_committed_notebooks_match_a_fresh_build(capsys):
    assert build_notebooks.main(["--check"]) == 0, capsys.readouterr().out


def test_strip_and_keep_solutions():
    code = "def f(x):\n    # BEGIN SOLUTION\n    y = x + 1\n    return y\n    # END SOLUTION\nq1 = \"b\"  # SOLUTION"
    assert build_notebooks.strip_solutions(code) == "def f(x):\n    raise NotImplementedError  # your code here\nq1 = ...  # your answer"
    assert build_notebooks.keep_solutions(code) == "def f(x):\n    y = x + 1\n    return y\nq1 = \"b\""
    with pytest.raises(ValueError, match="without"):
        build_notebooks.strip_solutions("# BEGIN SOLUTION\nx = 1")
    with pytest.raises(ValueError, match="without"):
        build_notebooks.strip_solutions("x = 1\n# END SOLUTION")


def _notebooks(folder):
    return sorted((ROOT / folder).glob("*.ipynb"))


def test_generated_notebooks_are_clean_and_colab_ready():
    paths = _notebooks("notebooks") + _notebooks("exercises") + _notebooks("solutions")
    assert paths
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "colab-badge" in nb.cells[0].source, path
        assert "google.colab" in code[0].source and "pip" in code[0].source, path
        assert all(not c.outputs and c.execution_count is None for c in code), f"{path} carries outputs"
        text = path.read_text()
        assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text, path


def test_exercise_notebooks_hide_the_solutions():
    for path in _notebooks("exercises"):
        sol = nbformat.read(ROOT / "solutions" / path.name, as_version=4)
        ex = nbformat.read(path, as_version=4)
        assert len(sol.cells) == len(ex.cells)
        assert "raise NotImplementedError" in path.read_text()
        assert [c.id for c in sol.cells] == [c.id for c in ex.cells]


def _grade(*args):
    return subprocess.run([sys.executable, "-m", "mmllm_course.grade", *args], cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_grader_cli_solutions_pass(tmp_path):
    out = tmp_path / "results.json"
    proc = _grade(*map(str, _notebooks("solutions")), "--expect", "pass", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = [r for nb in json.loads(out.read_text()) for r in nb["results"]]
    assert results and all(r["status"] == "pass" for r in results)
    assert "score:" in proc.stdout


def test_grader_cli_exercises_are_todo():
    paths = list(map(str, _notebooks("exercises")))
    proc = _grade(*paths, "--expect", "todo")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # ...and the exit code means something: they are not "pass".
    assert _grade(paths[0], "--expect", "pass").returncode == 1


def test_grader_cli_rejects_missing_file():
    proc = _grade("no/such/notebook.ipynb")
    assert proc.returncode == 2 and "no such notebook" in proc.stderr
