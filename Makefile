# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv demo test test-fast bench gpu-wheels clean-venv

venv: $(STAMP)

# The venv is rebuilt when requirements.txt or pyproject.toml changes. The repo is installed in it as an
# editable package, so `common` imports from anywhere (repo root, a dataset folder, a notebook).
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# The main job on built-in data: synthetic AgeDB-DIR, vanilla vs ConR, table + plot (about 7 min on 2 cores; README).
demo: $(STAMP)
	$(PY) -m common.tools.demo

test: $(STAMP)
	$(PY) -m pytest

# Skips the slow end-to-end tests (they still run in `make test`).
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/losses.py

# What a GPU machine's own PyTorch install lacks for benchmarks/gpu_check.sh (pure-Python wheels, pinned as in
# requirements.txt), into .whl/ (ignored by git); the script installs them from there without a network.
gpu-wheels: $(STAMP)
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: -d .whl tensorboard_logger==0.1.0 protobuf==3.20.3

clean-venv:
	rm -rf $(VENV)
