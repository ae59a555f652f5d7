"""Grade exercise notebooks from a shell: run each one offline and print a table per exercise.

    python -m mmllm_course.grade exercises/01_tokens_and_patches.ipynb
    python -m mmllm_course.grade solutions/*.ipynb --expect pass
    python -m mmllm_course.grade exercises/*.ipynb --expect todo --json results.json

Each notebook runs top to bottom in a fresh kernel of this Python (nbclient, errors allowed so every
cell runs); every ``check(...)`` it makes reports its result here. An exercise the notebook mentions
in a ``check("chNN.name", ...)`` call but never reports (a cell before it failed) counts as an error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path

CHECK_CALL = re.compile(r"""check\(\s*["'](ch\d\d\.[\w.]+)["']""")


def _kernel_manager():
    """A kernel manager that starts this very Python, whatever kernelspecs are installed."""
    import ipykernel.kernelspec
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    class CurrentPythonSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):  # noqa: ARG002 - every name means this Python
            return self.kernel_spec_class(resource_dir=ipykernel.kernelspec.RESOURCES, **ipykernel.kernelspec.get_kernel_dict())

    # IPC sockets where the platform has them: a local kernel then needs no TCP port, and ipykernel
    # does not warn on every start that TCP traffic is unencrypted.
    # The socket paths must be absolute: the kernel runs in the notebook's folder, the client here.
    if sys.platform == "win32":
        return KernelManager(kernel_name="python3", kernel_spec_manager=CurrentPythonSpecs())
    sockets = os.path.join(tempfile.mkdtemp(prefix="mmllm-kernel-"), "kernel")
    km = KernelManager(kernel_name="python3", kernel_spec_manager=CurrentPythonSpecs(), transport="ipc", ip=sockets)
    km.socket_dir = os.path.dirname(sockets)  # removed by the caller once the kernel is gone
    return km


def grade_notebook(path: Path, cell_timeout: int = 300) -> dict:
    """Run one notebook; return ``{"notebook", "results": [...], "cell_errors": [...], "seconds"}``."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    mentioned = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            mentioned += [m for m in CHECK_CALL.findall(cell.source) if m not in mentioned]

    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.jsonl"
        saved = dict(os.environ)
        # The kernel inherits this environment: results go to the report, nothing raises, no GUI, no bars.
        os.environ.update(MMLLM_GRADE_REPORT=str(report), MMLLM_STRICT="0", MPLBACKEND="Agg", TQDM_DISABLE="1")
        start = time.perf_counter()
        km = _kernel_manager()
        try:
            client = NotebookClient(
                nb, timeout=cell_timeout, allow_errors=True, km=km, resources={"metadata": {"path": str(path.parent)}}
            )
            client.execute()
        except Exception as exc:  # noqa: BLE001 - a kernel that dies is reported, not raised
            cell_errors = [f"the notebook could not run: {type(exc).__name__}: {exc}"]
        else:
            cell_errors = []
        finally:
            os.environ.clear()
            os.environ.update(saved)
            if getattr(km, "socket_dir", None):
                shutil.rmtree(km.socket_dir, ignore_errors=True)
        seconds = time.perf_counter() - start
        lines = report.read_text().splitlines() if report.exists() else []

    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                cell_errors.append(f"{out.get('ename')}: {out.get('evalue')}".strip())

    latest: dict[str, dict] = {}
    for line in lines:
        r = json.loads(line)
        latest[r["id"]] = r  # a re-check in a later cell wins
    results = list(latest.values())
    for exercise_id in mentioned:
        if exercise_id not in latest:
            results.append({"id": exercise_id, "status": "error", "message": "never checked: a cell before it failed", "seconds": 0})
    # A learner who deletes a hard exercise's check must not score higher: every exercise of the
    # notebook's chapter (from its NN_ file name) counts.
    if path.name[:2].isdigit():
        from mmllm_course.grading import list_exercises

        for info in list_exercises(int(path.name[:2])):
            if info.id not in latest and info.id not in mentioned:
                results.append({"id": info.id, "status": "error", "message": "not checked in this notebook", "seconds": 0})
    return {"notebook": str(path), "results": results, "cell_errors": cell_errors, "seconds": round(seconds, 1)}


def _print_table(graded: dict) -> None:
    """One row per exercise; a message longer than the row wraps below it, never cut (the diagnosis is at its end)."""
    results = graded["results"]
    print(f"\n{graded['notebook']}  ({graded['seconds']} s)")
    width = max([len(r["id"]) for r in results] + [8])
    indent = " " * (2 + width + 2 + 5 + 2)
    columns = max(60, shutil.get_terminal_size((120, 24)).columns - len(indent))
    for r in results:
        lines = textwrap.wrap(r["message"].replace("\n", " "), columns) or [""]
        print(f"  {r['id']:<{width}}  {r['status']:<5}  {lines[0]}")
        for line in lines[1:]:
            print(indent + line)
    for err in graded["cell_errors"]:
        print(f"  cell error: {err}")
    passed = sum(r["status"] == "pass" for r in results)
    print(f"  score: {passed}/{len(results)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmllm_course.grade", description="Grade exercise notebooks offline.")
    parser.add_argument("paths", nargs="+", type=Path, help="notebooks to grade")
    parser.add_argument("--expect", choices=["pass", "todo"], help="exit 1 unless every exercise has this status")
    parser.add_argument("--json", type=Path, help="write all results to this JSON file")
    parser.add_argument("--timeout", type=int, default=300, help="seconds a cell may run (default 300)")
    args = parser.parse_args(argv)

    missing = [str(p) for p in args.paths if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    all_graded = [grade_notebook(p, args.timeout) for p in args.paths]
    for graded in all_graded:
        _print_table(graded)

    everything = [r for g in all_graded for r in g["results"]]
    passed = sum(r["status"] == "pass" for r in everything)
    print(f"\ntotal: {passed}/{len(everything)} passed in {len(all_graded)} notebook(s)")
    if args.json:
        args.json.write_text(json.dumps(all_graded, indent=2))

    if args.expect:
        wrong = [f"{r['id']} is {r['status']}" for r in everything if r["status"] != args.expect]
        # A solutions notebook must also run without errors; an exercises notebook must not crash either.
        wrong += [f"{g['notebook']}: {e}" for g in all_graded for e in g["cell_errors"]]
        wrong += [f"{g['notebook']} checks nothing" for g in all_graded if not g["results"]]
        if wrong:
            print(f"expected every exercise to be {args.expect}, but: " + "; ".join(wrong))
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
