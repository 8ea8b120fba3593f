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

.PHONY: help venv browser demo test test-unit test-emulator lint format typecheck emulator bench lock clean

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
	$(BIN)/python -m local.demo $(if $(DICOM_DIR),--dicom-dir "$(DICOM_DIR)")

# The browser test (tests/e2e/test_demo.py) opens the demo's contact page in Debian's headless Chromium,
# driven by its ChromeDriver through selenium: installed here when missing (apt-get; sudo unless root).
CHROMIUM ?= /usr/bin/chromium
CHROMEDRIVER ?= /usr/bin/chromedriver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser:  ## Install Chromium and ChromeDriver (Debian packages) for the browser test
	@if [ -x "$(CHROMIUM)" ] && [ -x "$(CHROMEDRIVER)" ]; then :; else \
	  echo "Installing chromium and chromium-driver (apt-get)"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null; }; \
	fi
	@"$(CHROMIUM)" --version && "$(CHROMEDRIVER)" --version

test: $(STAMP) browser  ## Lint, type-check and run every test
	$(MAKE) --no-print-directory lint typecheck
	$(MAKE) --no-print-directory template
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
	rm -rf $(TOOLS_VENV) .aws-sam
	rm -rf .local

print-python:
	@echo $(PYTHON)

# ---------------------------------------------------------------- the SAM template
# cfn-lint and aws-sam-cli live in their own virtual environment, installed from their own lock:
# aws-sam-cli pins boto3, botocore and more to ranges that conflict with requirements/dev.lock.

TOOLS_VENV := .venv-tools
TOOLS_BIN := $(TOOLS_VENV)/bin
TOOLS_STAMP := $(TOOLS_VENV)/.installed
TOOLS_LOCK := requirements/tools.lock
SAM := SAM_CLI_TELEMETRY=0 $(TOOLS_BIN)/sam
# What the Lambda runtime provides besides the standard library (/var/runtime: boto3 and its
# dependencies), at the versions of the tools' lock; the import check puts it last on the path.
LAMBDA_RUNTIME_DIR := $(TOOLS_VENV)/lambda-runtime
LAMBDA_RUNTIME_PACKAGES := boto3|botocore|jmespath|python-dateutil|s3transfer|six|urllib3

# The functions' runtime, python3.12 exactly: `sam build` runs pip with the python3.12 it finds on
# PATH, and the import check imports the built functions with it.  Found on PATH or under pyenv.
LAMBDA_PYTHON ?= $(shell \
	for candidate in python3.12 \
	    $$(ls -d $$(pyenv root 2>/dev/null || echo $$HOME/.pyenv)/versions/3.12*/bin/python3.12 2>/dev/null); do \
	  if command -v $$candidate >/dev/null 2>&1 && \
	     $$candidate -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then \
	    $$candidate -c 'import sys; print(sys.executable)'; break; \
	  fi; \
	done)

.PHONY: template tools lock-tools

$(TOOLS_STAMP): $(TOOLS_LOCK)
	@test -n "$(PYTHON)" || { echo "Python >= 3.11 not found (3.12+ preferred); set PYTHON=..." >&2; exit 1; }
	@echo "Creating $(TOOLS_VENV) with $(PYTHON) ($$($(PYTHON) --version))"
	@test -x $(TOOLS_BIN)/python || $(PYTHON) -m venv $(TOOLS_VENV)
	@echo '*' > $(TOOLS_VENV)/.gitignore
	$(TOOLS_BIN)/python -m pip install --quiet --upgrade pip
	$(TOOLS_BIN)/python -m pip install --quiet -r $(TOOLS_LOCK)
	grep -iE '^($(LAMBDA_RUNTIME_PACKAGES))==' $(TOOLS_LOCK) > $(TOOLS_VENV)/lambda-runtime.txt
	$(TOOLS_BIN)/python -m pip install --quiet --no-deps --upgrade --target $(LAMBDA_RUNTIME_DIR) \
	    -r $(TOOLS_VENV)/lambda-runtime.txt
	@touch $@

tools: $(TOOLS_STAMP)  ## Install cfn-lint and aws-sam-cli into .venv-tools from requirements/tools.lock

# SAM does not tell a makefile build (both layers) its architecture: layers/*/Makefile build for
# LAYER_ARCH, which `make template` sets to the template's default Architecture.  The import
# check sets the host's for its host build, and runs the layer's own test there.
TEMPLATE_ARCHITECTURE = $(shell sed -n '/^  Architecture:/,/^  [A-Za-z]/s/^ *Default: *//p' template.yaml)

template: $(TOOLS_STAMP)  ## cfn-lint, sam validate --lint, sam build, and every built function imports on python3.12
	@test -n "$(LAMBDA_PYTHON)" || { echo "python3.12 (the Lambda runtime) not found; set LAMBDA_PYTHON=..." >&2; exit 1; }
	@test -n "$(TEMPLATE_ARCHITECTURE)" || { echo "no default Architecture in template.yaml" >&2; exit 1; }
	$(TOOLS_BIN)/cfn-lint template.yaml
	$(SAM) validate --lint --region us-east-1
	PATH="$(dir $(LAMBDA_PYTHON)):$$PATH" LAYER_ARCH=$(TEMPLATE_ARCHITECTURE) $(SAM) build --cached --parallel
	PATH="$(dir $(LAMBDA_PYTHON)):$$PATH" SAM_CLI_TELEMETRY=0 $(TOOLS_BIN)/python tools/check_lambda_imports.py \
	    --python $(LAMBDA_PYTHON) --runtime-dir $(LAMBDA_RUNTIME_DIR) --env-vars events/env.json \
	    --sam $(TOOLS_BIN)/sam --layer-test ImagingLayer=layers/imaging/selftest.py

lock-tools: $(TOOLS_STAMP)  ## Re-resolve requirements/tools.in into requirements/tools.lock
	$(TOOLS_BIN)/python -m pip install --quiet --upgrade -r requirements/tools.in
	$(TOOLS_BIN)/python -m pip freeze --exclude-editable > $(TOOLS_LOCK)

# ---------------------------------------------------------------- the stack offline (local/)
# `make demo` runs local/demo.py (the whole pipeline); `make demo DICOM_DIR=path` uploads your own folder.

LOCAL_PORT ?= 4566

.PHONY: local demo-emulator

local: $(STAMP)  ## Run template.yaml offline on 127.0.0.1:$(LOCAL_PORT) until Ctrl-C (outputs in .local/)
	$(BIN)/python -m local --port $(LOCAL_PORT) --data-dir .local

demo-emulator: $(STAMP)  ## The HealthImaging emulator alone, end to end on bundled sample DICOM
	$(BIN)/python -m local.emulator_demo
