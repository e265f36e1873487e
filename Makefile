# Developer entry points. `make test` is the test command (CI runs it through .ci/run).
#
# Installs are reproducible: uv.lock pins every runtime and dev dependency with its hashes, and
# `uv sync --locked` installs exactly that (and refuses a lock that no longer matches
# pyproject.toml: run `make lock` after changing dependencies). uv itself comes from PyPI with
# pip, at the version uv.lock pins.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UV_VERSION := $(shell sed -n '/^name = "uv"$$/{n;s/^version = "\(.*\)"/\1/p;}' uv.lock)
PYTEST_ARGS ?=
# uv installs into .venv (not a venv of its own) and never downloads a Python.
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never

.PHONY: venv install lock up test lint screenshots

venv install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(BIN)/uv: uv.lock | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check 'uv==$(UV_VERSION)'
	touch $@

# Re-install only when the project's dependencies change.
$(STAMP): pyproject.toml uv.lock | $(BIN)/uv
	$(BIN)/uv sync --locked --extra dev
	touch $@

lock: | $(BIN)/uv
	$(BIN)/uv lock

up: $(STAMP)
	$(BIN)/hes up

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Browser tests again, writing their screenshots of the console to docs/console/.
screenshots: $(STAMP)
	HES_TEST_SCREENSHOT_DIR=docs/console $(BIN)/python -m pytest -q tests/browser

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
