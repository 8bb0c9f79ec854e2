# photonflow — everyday entry points.
#
#   make demo      create .venv if absent, install, run the SAXS demo into demo-output/
#   make test      create .venv if absent, install, run the whole test suite
#   make lint      ruff: the lint rules and the format of pyproject.toml, checked (CI runs it)
#   make install   create .venv if absent and install photonflow with its test extras
#   make clean     remove demo-output/ and the project-local Prefect home (.prefect/)
#
# Variables: PYTHON (interpreter for the venv, default python3.11), VENV (default .venv),
# PIP_FLAGS (extra pip options, e.g. an index URL for CPU-only torch wheels).

SHELL  := /bin/bash
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP_FLAGS ?=
# Installed once per change of pyproject.toml (delete it, or run 'make install -B', to force).
STAMP  := $(VENV)/.photonflow-installed

# Prefect: a project-local home, so demo and test runs use their own SQLite database and
# profile (the embedded ephemeral API), isolated from ~/.prefect; no telemetry; a generous
# start-up time for the temporary API server on busy CI machines.
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120

.PHONY: install demo test lint clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install $(PIP_FLAGS) -e '.[test]'
	touch $@

demo: install
	$(BIN)/photonflow demo --out demo-output

# Tests never talk to a Prefect server configured in the caller's environment.
test: install
	env -u PREFECT_API_URL -u PREFECT_API_KEY $(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf demo-output .prefect
