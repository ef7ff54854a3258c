# straico-gateway: `make demo` runs the gateway on the simulator, `make test` checks everything.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck unit soak bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,fast]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python -m server.demo

lint: install
	$(BIN)/ruff check engine adapters server tests
	$(BIN)/ruff format --check engine adapters server tests

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -q -m 'not soak'

test: lint typecheck unit

soak: install
	$(BIN)/pytest -q -m soak

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
