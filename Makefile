# The only ways to install, check, test and benchmark Portway (architecture.md "Habits").
# Each target creates the virtualenv it needs in .venv; nothing is installed system-wide.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ARGS   ?=
# The build compiles the gateway's request path (setup.py): an edit to a module
# src/portway/compiled.py lists, or to how it is built, rebuilds it. (Unrebuilt, the stale-build
# guard would run the pure modules: right, but slower, and tests/test_compiled.py fails.)
BUILD  := pyproject.toml setup.py src/portway/compiled.py \
          $(shell $(PYTHON) src/portway/compiled.py)

.PHONY: up test test-pure check lint typecheck unit bench clean

up: $(VENV)/.runtime        ## run Portway on its embedded defaults (foreground)
	$(BIN)/portway up $(ARGS)

test: $(VENV)/.test check   ## the whole suite: lint, types, unit, end-to-end; then test-pure
	$(BIN)/python -m pytest -n 2 --durations=10 $(ARGS)
	$(MAKE) --no-print-directory test-pure

test-pure: $(VENV)/.test    ## the gateway's tests again on its pure-Python modules
	PORTWAY_PURE=1 $(BIN)/python -m pytest -n 2 -q tests/gateway tests/test_compiled.py

check: lint typecheck

lint: $(VENV)/.test
	$(BIN)/ruff check src tests bench setup.py

typecheck: $(VENV)/.test
	$(BIN)/mypy

bench: $(VENV)/.test        ## control-plane latency figures (see bench/)
	$(BIN)/python bench/api.py $(ARGS)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: $(BUILD) | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.test: $(BUILD) | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.runtime

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build src/portway/compiled.json
	find src -name '*.so' -delete
