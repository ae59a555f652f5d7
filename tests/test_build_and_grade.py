"""The notebook builder (single source, no drift) and the grader CLI on the real notebooks."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from mmllm_course.grading import list_exercises

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
    with pytest.raises(ValueError, match="name = answer"):
        build_notebooks.strip_solutions("    return x * 2  # SOLUTION")  # would leak the solution
    with pytest.raises(ValueError, match="alone"):
        build_notebooks.strip_solutions("# BEGIN SOLUTION: patchify\nx = 1\n# END SOLUTION")


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


def test_notebook_metadata_is_what_jupyterlab_writes_for_ipykernel():
    """JupyterLab marks a notebook modified on open when the kernel's spec or language info differs
    from the file's metadata; the builder writes what ipykernel reports (the Python version aside,
    which is the learner's own)."""
    from ipykernel.ipkernel import IPythonKernel
    from ipykernel.kernelspec import get_kernel_dict

    spec = get_kernel_dict()
    expected_info = dict(IPythonKernel.language_info)
    for path in _notebooks("notebooks") + _notebooks("exercises") + _notebooks("solutions"):
        nb = nbformat.read(path, as_version=4)
        assert (nb.nbformat, nb.nbformat_minor) == (4, 5), path
        assert nb.metadata["kernelspec"] == {"display_name": spec["display_name"], "language": spec["language"], "name": "python3"}, path
        info = dict(nb.metadata["language_info"])
        assert info.pop("version") == build_notebooks.PYTHON_VERSION, path
        assert {k: v for k, v in expected_info.items() if k != "version"} == info, path
        assert all(cell.id and cell.metadata == {} for cell in nb.cells), path
    assert build_notebooks.PYTHON_VERSION.count(".") == 2


def test_relative_links_in_notebooks_point_to_files():
    """A relative link (the glossary, another notebook) must resolve from the notebook's folder, as
    GitHub and JupyterLab resolve it; chapter 0 links the glossary."""
    import re

    links_seen = 0
    for path in _notebooks("notebooks") + _notebooks("exercises") + _notebooks("solutions"):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type != "markdown":
                continue
            for target in re.findall(r"\]\(([^)\s]+)\)", cell.source):
                if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                    continue  # a web address or an anchor
                links_seen += 1
                assert (path.parent / target.split("#")[0]).resolve().exists(), f"{path.name} links to missing {target}"
    first = nbformat.read(ROOT / "notebooks" / "00_course_map.ipynb", as_version=4)
    assert "](../GLOSSARY.md)" in "".join(c.source for c in first.cells), "chapter 0 must link the glossary"
    assert links_seen


def _solution_lines(source: Path) -> set[str]:
    """The non-trivial lines inside BEGIN/END SOLUTION regions of an exercise source."""
    lines, inside = set(), False
    for line in source.read_text().splitlines():
        if line.strip() == build_notebooks.BEGIN:
            inside = True
        elif line.strip() == build_notebooks.END:
            inside = False
        elif inside and len(line.strip()) > 12 and not line.strip().startswith(("#", "return", "out =")):
            lines.add(line.strip())
    return lines


def test_exercise_notebooks_hide_the_solutions():
    for path in _notebooks("exercises"):
        sol = nbformat.read(ROOT / "solutions" / path.name, as_version=4)
        ex = nbformat.read(path, as_version=4)
        assert len(sol.cells) == len(ex.cells)
        assert "raise NotImplementedError" in path.read_text()
        assert [c.id for c in sol.cells] == [c.id for c in ex.cells]
        exercise_code = "\n".join(c.source for c in ex.cells if c.cell_type == "code")
        solution_code = "\n".join(c.source for c in sol.cells if c.cell_type == "code")
        secret = _solution_lines(ROOT / "sources" / "exercises" / path.name.replace(".ipynb", ".py"))
        assert secret, path
        for line in secret:
            assert line in solution_code, line
            assert line not in exercise_code, f"{path.name} leaks solution line {line!r}"


def _grade(*args):
    return subprocess.run([sys.executable, "-m", "mmllm_course.grade", *args], cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_grader_cli_solutions_pass(tmp_path):
    out = tmp_path / "results.json"
    proc = _grade(*map(str, _notebooks("solutions")), "--expect", "pass", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = [r for nb in json.loads(out.read_text()) for r in nb["results"]]
    assert results and all(r["status"] == "pass" for r in results)
    # Every registered exercise of those chapters was graded, none skipped.
    chapters = {int(p.name[:2]) for p in _notebooks("solutions")}
    expected = {info.id for info in list_exercises() if info.chapter in chapters}
    assert {r["id"] for r in results} == expected
    assert "score:" in proc.stdout


def test_grader_cli_exercises_are_todo():
    paths = list(map(str, _notebooks("exercises")))
    proc = _grade(*paths, "--expect", "todo")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # ...and the exit code means something: they are not "pass".
    assert _grade(paths[0], "--expect", "pass").returncode == 1


def test_grader_cli_reports_a_deleted_check(tmp_path):
    path = _notebooks("solutions")[0]
    nb = nbformat.read(path, as_version=4)
    victim = next(c for c in nb.cells if c.cell_type == "code" and "check(" in c.source)
    nb.cells.remove(victim)
    doctored = tmp_path / path.name
    nbformat.write(nb, doctored)
    proc = _grade(str(doctored), "--expect", "pass")
    assert proc.returncode == 1 and "not checked in this notebook" in proc.stdout


def test_grader_cli_rejects_missing_file():
    proc = _grade("no/such/notebook.ipynb")
    assert proc.returncode == 2 and "no such notebook" in proc.stderr


def test_question_choices_in_notebooks_match_the_checks():
    # The exercise notebook shows the choices as prose, the check module holds them: they must agree.
    from mmllm_course.grading import core

    def squash(text):
        return " ".join(text.replace("#", " ").split())

    core._load_checks()
    questions = [e for e in core._REGISTRY.values() if e.kind == "question"]
    assert questions
    for q in questions:
        paths = sorted((ROOT / "exercises").glob(f"{q.chapter:02d}_*.ipynb"))
        assert paths, f"no exercise notebook for {q.id}"
        nb = nbformat.read(paths[0], as_version=4)
        prose = squash(" ".join(c.source for c in nb.cells if c.cell_type == "markdown"))
        for letter, text in q.choices.items():
            assert squash(f"{letter}) {text}") in prose, f"{q.id} choice {letter} differs between {paths[0].name} and the check"
