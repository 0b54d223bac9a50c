# The quick start: `make demo` and `make test` on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck unit bench bench-pg clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: install
	$(BIN)/python scripts/demo.py

lint: install
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

typecheck: install
	$(BIN)/mypy

unit: install
	bash scripts/install-test-tools.sh
	$(BIN)/pytest -q -n 2

test: lint typecheck unit

bench: install
	bash bench/install-peers.sh
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# PostgreSQL against pgBackRest; needs root (the server runs as the postgres user).
bench-pg: install
	bash scripts/install-test-tools.sh
	bash bench/install-peers.sh
	$(BIN)/python bench/postgres.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .mypy_cache .pytest_cache .ruff_cache
