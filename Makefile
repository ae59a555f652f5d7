# Two commands run the course:  `make lab` (set up if needed, open JupyterLab) and `make test`.
# Setup creates .venv with this machine's python3 and installs torch first: a wheel that pip finds
# locally (--no-index, e.g. a pre-downloaded CPU build; its dependencies then come from PyPI) wins; otherwise, on Linux without an NVIDIA
# driver, the CPU build from PyTorch's CPU index (PyPI's Linux wheel is a multi-GB CUDA build);
# otherwise PyPI. Override with TORCH_SPEC / TORCH_PIP_ARGS.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
ifeq ($(shell uname -s)$(shell command -v nvidia-smi 2>/dev/null),Linux)
TORCH_PIP_ARGS ?= --index-url https://download.pytorch.org/whl/cpu
endif
TORCH_PIP_ARGS ?=
PYTEST_WORKERS ?= 2

.PHONY: setup lab test notebooks bench grade-solutions grade-exercises clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null \
		|| { $(BIN)/python -m pip install -q --no-index --no-deps "$(TORCH_SPEC)" 2>/dev/null \
		     && $(BIN)/python -m pip install -q "$(TORCH_SPEC)"; } \
		|| $(BIN)/python -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[lab,test]"
	touch $@

setup: $(VENV)/.installed

lab: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/00_course_map.ipynb

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
