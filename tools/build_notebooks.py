"""Build every notebook of the course from its jupytext percent-script source.

    python tools/build_notebooks.py           # write notebooks/, exercises/, solutions/ and README's table
    python tools/build_notebooks.py --check   # exit 1 if anything committed differs from a fresh build

Sources (the only files to edit):
- ``sources/notebooks/NN_topic.py``  -> ``notebooks/NN_topic.ipynb``
- ``sources/exercises/NN_topic.py``  -> ``exercises/NN_topic.ipynb`` and ``solutions/NN_topic.ipynb``

In exercise sources, code between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` becomes
``raise NotImplementedError`` in ``exercises/`` (same indentation); a line ending in ``# SOLUTION``
(a question's answer, ``q1 = "b"  # SOLUTION``) keeps its left-hand side and gets ``...``. The
solution notebook keeps the code and drops the markers.

Every notebook gets a title cell with an Open-in-Colab badge and, as its first code cell, a setup
cell that installs the package only inside Colab. The repository address comes from
``pyproject.toml`` ([project.urls] Repository), the one place it lives. The output is deterministic:
stable cell ids, no outputs, sorted keys, and the notebook metadata JupyterLab itself would write
(see ``KERNELSPEC`` and ``LANGUAGE_INFO``), so a notebook does not open as modified.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import re
import sys
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END, INLINE = "# BEGIN SOLUTION", "# END SOLUTION", "# SOLUTION"
README_START, README_END = "<!-- chapters:start -->", "<!-- chapters:end -->"

# Notebook metadata exactly as JupyterLab 4 writes it once the ipykernel kernel starts: it sets
# ``kernelspec`` from the kernel's spec and ``language_info`` from the kernel's info reply, and marks
# the notebook modified whenever what it sets differs from what the file holds. With these values,
# a notebook opens unmodified (checked in a real browser by tools/browser_smoke.py). The one field
# that depends on the learner's machine is ``language_info.version``, the kernel's Python version:
# a fixed value keeps the build deterministic (the drift check), so on another Python version that
# single field differs and JupyterLab shows the notebook as modified once a kernel starts.
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
PYTHON_VERSION = "3.11.7"  # the project's reference environment (the .venv of `make setup` on its CI image)
LANGUAGE_INFO = {
    "codemirror_mode": {"name": "ipython", "version": 3},
    "file_extension": ".py",
    "mimetype": "text/x-python",
    "name": "python",
    "nbconvert_exporter": "python",
    "pygments_lexer": "ipython3",
    "version": PYTHON_VERSION,
}


def repository_url() -> str:
    # A regex rather than tomllib, which needs Python 3.11.
    m = re.search(r'^Repository\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    if not m:
        raise ValueError("pyproject.toml has no [project.urls] Repository")
    return m.group(1).rstrip("/")


def colab_url(relpath: str) -> str:
    repo = repository_url().removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{repo}/blob/main/{relpath}"


def setup_cell_source() -> str:
    return (
        "# Setup: inside Google Colab this installs the course package; anywhere else it does nothing.\n"
        "try:\n"
        "    import google.colab  # noqa: F401\n"
        "    IN_COLAB = True\n"
        "except ImportError:\n"
        "    IN_COLAB = False\n"
        "if IN_COLAB:\n"
        "    import subprocess, sys\n"
        f'    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "git+{repository_url()}.git"], check=True)'
    )


def _marker_check(line: str) -> None:
    stripped = line.strip()
    if stripped.startswith(("# BEGIN SOLUTION", "# END SOLUTION")) and stripped not in (BEGIN, END):
        raise ValueError(f"a solution marker must stand alone on its line, got {stripped!r}")


def strip_solutions(code: str) -> str:
    """Exercise version of a code cell: solution regions -> ``raise NotImplementedError``."""
    out, inside = [], False
    for line in code.splitlines():
        _marker_check(line)
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ValueError(f"nested {BEGIN!r} in:\n{code}")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}raise NotImplementedError  # your code here")
        elif stripped == END:
            if not inside:
                raise ValueError(f"{END!r} without {BEGIN!r} in:\n{code}")
            inside = False
        elif inside:
            continue
        elif line.rstrip().endswith(INLINE):
            # Only `name = value  # SOLUTION` is allowed: anything else would leak the solution.
            m = re.match(r"^(\s*[A-Za-z_][\w.]*)\s*=[^=]", line)
            if not m:
                raise ValueError(f"an inline '{INLINE}' line must look like `name = answer  {INLINE}`, got {line!r}")
            out.append(f"{m.group(1)} = ...  # your answer")
        else:
            out.append(line)
    if inside:
        raise ValueError(f"{BEGIN!r} without {END!r} in:\n{code}")
    return "\n".join(out)


def keep_solutions(code: str) -> str:
    """Solution version of a code cell: the markers go, the code stays."""
    out = []
    for line in code.splitlines():
        if line.strip() in (BEGIN, END):
            continue
        if line.rstrip().endswith(INLINE):
            line = line.rstrip()[: -len(INLINE)].rstrip()
        out.append(line)
    return "\n".join(out)


def title_of(source: Path) -> str:
    for line in source.read_text().splitlines():
        m = re.match(r"#\s+#\s+(?:\d+\s*·\s*)?(.*)", line)
        if m:
            return m.group(1).strip()
    raise ValueError(f"{source} has no '# # Title' markdown heading")


def build_notebook(source: Path, relpath: str, transform) -> str:
    nb = jupytext.reads(source.read_text(), fmt="py:percent")
    cells = []
    badge = f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(relpath)})"
    cells.append(nbformat.v4.new_markdown_cell(badge))
    cells.append(nbformat.v4.new_code_cell(setup_cell_source()))
    for cell in nb.cells:
        if cell.cell_type == "code":
            cells.append(nbformat.v4.new_code_cell(transform(cell.source)))
        elif cell.cell_type == "markdown":
            cells.append(nbformat.v4.new_markdown_cell(cell.source))
        else:
            cells.append(nbformat.v4.new_raw_cell(cell.source))
    stem = Path(relpath).stem
    for i, cell in enumerate(cells):
        digest = hashlib.sha1(f"{stem}:{i}:{cell.cell_type}".encode()).hexdigest()[:8]
        cell["id"] = f"{stem[:40]}-{i:03d}-{digest}"
        cell["metadata"] = {}
    out = nbformat.v4.new_notebook(cells=cells)
    out.nbformat, out.nbformat_minor = 4, 5  # fixed, so another nbformat version builds the same file
    out.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": json.loads(json.dumps(LANGUAGE_INFO))}
    nbformat.validate(out)
    return nbformat.writes(out, version=4) + "\n"


def chapter_table(built: dict[str, str]) -> str:
    rows = ["| # | chapter | exercises | solutions |", "|---|---|---|---|"]
    chapters = sorted((ROOT / "sources" / "notebooks").glob("[0-9][0-9]_*.py"))
    exercises = {p.name: p for p in (ROOT / "sources" / "exercises").glob("[0-9][0-9]_*.py")}
    for src in chapters:
        nb = f"notebooks/{src.stem}.ipynb"
        num = src.stem[:2]
        ex = next((p for name, p in exercises.items() if name[:2] == num), None)
        ex_cell = sol_cell = "-"
        if ex is not None:
            ex_rel, sol_rel = f"exercises/{ex.stem}.ipynb", f"solutions/{ex.stem}.ipynb"
            ex_cell = f"[{ex.stem}.ipynb]({ex_rel}) [![Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(ex_rel)})"
            sol_cell = f"[{ex.stem}.ipynb]({sol_rel})"
        rows.append(
            f"| {num} | [{title_of(src)}]({nb}) [![Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(nb)}) "
            f"| {ex_cell} | {sol_cell} |"
        )
    return "\n".join(rows)


def build_all() -> dict[Path, str]:
    """Every generated file, path -> content."""
    built: dict[Path, str] = {}
    for src in sorted((ROOT / "sources" / "notebooks").glob("*.py")):
        rel = f"notebooks/{src.stem}.ipynb"
        built[ROOT / rel] = build_notebook(src, rel, lambda code: code)
    for src in sorted((ROOT / "sources" / "exercises").glob("*.py")):
        rel_ex, rel_sol = f"exercises/{src.stem}.ipynb", f"solutions/{src.stem}.ipynb"
        built[ROOT / rel_ex] = build_notebook(src, rel_ex, strip_solutions)
        built[ROOT / rel_sol] = build_notebook(src, rel_sol, keep_solutions)
    readme = (ROOT / "README.md").read_text()
    if README_START in readme and README_END in readme:
        head, rest = readme.split(README_START, 1)
        _, tail = rest.split(README_END, 1)
        built[ROOT / "README.md"] = f"{head}{README_START}\n{chapter_table(built)}\n{README_END}{tail}"
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if committed files differ from a fresh build")
    args = parser.parse_args(argv)
    built = build_all()
    generated_dirs = [ROOT / "notebooks", ROOT / "exercises", ROOT / "solutions"]
    stale = [p for d in generated_dirs for p in sorted(d.glob("*.ipynb")) if p not in built]
    if args.check:
        problems = []
        for path, content in built.items():
            current = path.read_text() if path.exists() else ""
            if current != content:
                diff = "".join(list(difflib.unified_diff(current.splitlines(True), content.splitlines(True), str(path), "fresh build"))[:40])
                problems.append(f"{path.relative_to(ROOT)} differs from a fresh build:\n{diff}")
        problems += [f"{p.relative_to(ROOT)} has no source in sources/" for p in stale]
        if problems:
            print("\n".join(problems))
            print("Run `python tools/build_notebooks.py` and commit the result.")
            return 1
        print(f"{len(built)} generated files match their sources")
        return 0
    for path, content in built.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != content:
            path.write_text(content)
            print(f"wrote {path.relative_to(ROOT)}")
    for p in stale:
        p.unlink()
        print(f"removed {p.relative_to(ROOT)} (no source)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
