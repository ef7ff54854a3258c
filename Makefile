# straico-gateway: `make demo` runs the gateway on the simulator, `make test` checks everything.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_DIR := tests/e2e/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed

.PHONY: install node-deps system-deps demo test lint typecheck unit soak bench bench-peers clean
PEERS := .bench-peers

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,fast]'
	touch $(STAMP)

install: $(STAMP)

# The JavaScript clients of the compatibility tests (openai, the Vercel AI SDK).
$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	npm ci --prefix $(NODE_DIR) --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

node-deps: $(NODE_STAMP)

# Debian packages: Graphviz renders `straico-gateway trace --diagram --output x.svg`.
system-deps:
	@command -v dot >/dev/null || { apt-get update -qq && apt-get install -y -qq graphviz >/dev/null; }

demo: install
	$(BIN)/python -m server.demo

lint: install
	$(BIN)/ruff check engine adapters server tests bench
	$(BIN)/ruff format --check engine adapters server tests bench

typecheck: install
	$(BIN)/mypy

unit: install node-deps system-deps
	$(BIN)/pytest -q -m 'not soak' -p no:cacheprovider

test: lint typecheck unit

soak: install
	$(BIN)/pytest -q -m soak -p no:cacheprovider

# LiteLLM's proxy for the comparison, and the plotting and profiling tools, each in its own venv.
bench-peers:
	$(PYTHON) -m venv $(PEERS)/litellm
	$(PEERS)/litellm/bin/pip install --quiet --upgrade pip
	$(PEERS)/litellm/bin/pip install --quiet 'litellm[proxy]'
	$(PYTHON) -m venv $(PEERS)/tools
	$(PEERS)/tools/bin/pip install --quiet matplotlib py-spy pyinstrument

bench: install
	$(BIN)/python -m bench.run --rounds 3 --out bench/results/latest.json
	@if [ -x $(PEERS)/tools/bin/python ]; then $(PEERS)/tools/bin/python bench/plots.py bench/results/latest.json bench/results; else echo "plots skipped: run make bench-peers (matplotlib)"; fi

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis $(NODE_DIR)/node_modules
