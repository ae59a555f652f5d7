# Two commands run the course:  `make lab` (set up if needed, open JupyterLab) and `make test`.
# Setup creates .venv with this machine's python3; torch comes first, pinned to a CPU build where
# one is available (override TORCH_SPEC / TORCH_PIP_ARGS, e.g. the CPU wheel index on Linux).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
PYTEST_WORKERS ?= 2

.PHONY: setup lab test notebooks bench grade-solutions grade-exercises clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[lab,test]"
	touch $@

setup: $(VENV)/.installed

lab: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/jupyter lab notebooks/00_course_map.ipynb

# Unit, parity and grader tests, nbval over notebooks/ and solutions/, the grader CLI over
# solutions/ (expect pass) and exercises/ (expect todo), and the notebook build-drift check.
test: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadscope \
		--nbval-lax --nbval-current-env --nbval-cell-timeout=600 tests notebooks solutions

notebooks: setup
	$(BIN)/python tools/build_notebooks.py

bench: setup
	$(BIN)/python -m mmllm_course.bench

grade-solutions: setup
	$(BIN)/python -m mmllm_course.grade solutions/*.ipynb --expect pass

grade-exercises: setup
	$(BIN)/python -m mmllm_course.grade exercises/*.ipynb --expect todo

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
