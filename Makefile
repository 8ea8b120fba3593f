# The interface for people and CI.  Every target installs what it needs into .venv from the pinned
# lock file (requirements/dev.lock), so `make demo` and `make test` work on a fresh clone.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements/dev.lock

# Python 3.12+ preferred (the Lambda runtime is python3.12); found on PATH or under pyenv, else any
# python3 >= 3.11.  Override with `make PYTHON=/path/to/python3.12 ...`.
PYTHON ?= $(shell \
	for candidate in python3.12 python3.13 \
	    $$(ls -d $$(pyenv root 2>/dev/null || echo $$HOME/.pyenv)/versions/3.1[23]*/bin/python3 2>/dev/null) \
	    python3; do \
	  if command -v $$candidate >/dev/null 2>&1 && \
	     $$candidate -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
	    command -v $$candidate; break; \
	  fi; \
	done)

EMULATOR_PORT ?= 4567
PYTEST_WORKERS ?= 2

.PHONY: help venv demo test test-unit test-emulator lint format typecheck emulator bench lock clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): $(LOCK)
	@test -n "$(PYTHON)" || { echo "Python >= 3.11 not found (3.12+ preferred); set PYTHON=..." >&2; exit 1; }
	@echo "Creating $(VENV) with $(PYTHON) ($$($(PYTHON) --version))"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r $(LOCK)
	@touch $@

venv: $(STAMP)  ## Create the virtual environment from the lock file

demo: $(STAMP)  ## Run the end-to-end scenario on bundled sample DICOM (local, offline)
	$(BIN)/python -m local.demo

test: $(STAMP)  ## Lint, type-check and run every test
	$(MAKE) --no-print-directory lint typecheck
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile

test-unit: $(STAMP)  ## Only the unit tests (no servers)
	$(BIN)/python -m pytest -m unit

test-emulator: $(STAMP)  ## Only the emulator conformance tests (boto3 and the AWS CLI)
	$(BIN)/python -m pytest tests/emulator

lint: $(STAMP)  ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)  ## Apply ruff's formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)  ## mypy (strict) on the emulator
	$(BIN)/mypy

emulator: $(STAMP)  ## Run the HealthImaging emulator on 127.0.0.1:$(EMULATOR_PORT)
	$(BIN)/python -m emulator --host 127.0.0.1 --port $(EMULATOR_PORT) --data-dir .emulator

bench: $(STAMP)  ## Benchmarks: ratios measured side by side in one run
	$(BIN)/python -m bench

lock: $(STAMP)  ## Re-resolve requirements/dev.in into the pinned lock file
	$(BIN)/python -m pip install --quiet --upgrade -r requirements/dev.in
	$(BIN)/python -m pip freeze --exclude-editable > $(LOCK)

clean:  ## Remove the virtual environment, caches and local state
	rm -rf $(VENV) .emulator demo-output .pytest_cache .mypy_cache .ruff_cache

print-python:
	@echo $(PYTHON)
