# The two commands a newcomer needs: `make run` and `make test`.
# Everything they depend on is installed here, nothing by hand.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DATA ?= data
LISTEN ?= 127.0.0.1:6443

.PHONY: run test lint typecheck unit integration bench clean system

$(STAMP): pyproject.toml
	scripts/install-system-packages.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

system:
	scripts/install-system-packages.sh

run: $(STAMP)
	DATA=$(DATA) LISTEN=$(LISTEN) scripts/run.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# Unit tests need no root and start nothing; the few contract and stats
# tests under tests/unit that run a real containerd are marked integration.
unit: $(STAMP)
	$(BIN)/pytest -q -m "not integration" tests/unit

integration: $(STAMP)
	$(BIN)/pytest -q tests/integration
	$(BIN)/pytest -q -m integration tests/unit

test: $(STAMP) lint typecheck
	$(BIN)/pytest -q -p no:cacheprovider tests

bench: $(STAMP)
	$(BIN)/python bench/api_latency.py

clean:
	rm -rf $(VENV) build src/*.egg-info
