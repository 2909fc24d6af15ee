# The only ways to install, check, test and benchmark Portway (architecture.md "Habits").
# Each target creates the virtualenv it needs in .venv; nothing is installed system-wide.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: up test check lint typecheck unit bench clean

up: $(VENV)/.runtime        ## run Portway on its embedded defaults (foreground)
	$(BIN)/portway up $(ARGS)

test: $(VENV)/.test check   ## the whole suite: lint, types, unit, end-to-end
	$(BIN)/python -m pytest -n 2 --durations=10 $(ARGS)

check: lint typecheck

lint: $(VENV)/.test
	$(BIN)/ruff check src tests bench

typecheck: $(VENV)/.test
	$(BIN)/mypy

bench: $(VENV)/.test        ## control-plane latency figures (see bench/)
	$(BIN)/python bench/api.py $(ARGS)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.test: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.runtime

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
