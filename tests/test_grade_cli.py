"""The shell grader's output: whole messages, and quiet kernels."""

import subprocess
import sys

import nbformat

from mmllm_course import grade


def test_table_keeps_the_whole_message(capsys):
    message = "mask (6, 6), " + "word " * 60 + "THE DIAGNOSIS AT THE END"
    grade._print_table({"notebook": "x.ipynb", "seconds": 1.0, "results": [
        {"id": "ch01.patchify", "status": "fail", "message": message, "seconds": 0.1}], "cell_errors": []})
    out = capsys.readouterr().out
    assert "THE DIAGNOSIS AT THE END" in out and "mask (6, 6)," in out


def test_grading_a_notebook_prints_no_kernel_warning(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('from mmllm_course.grading import check\ncheck("ch01.q1", ...)')]
    (tmp_path / "nb").mkdir()
    path = tmp_path / "nb" / "01_tiny.ipynb"  # a folder other than the one grade runs in
    nbformat.write(nb, path)
    done = subprocess.run([sys.executable, "-m", "mmllm_course.grade", str(path)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert "ch01.q1" in done.stdout
    assert "without encryption" not in done.stderr, done.stderr
