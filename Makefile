# Two commands for a new user: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: run test check lint format typecheck layers bench bench-peers clean install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the project's metadata changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres]'
	touch $(STAMP)

install: $(STAMP)

## Start Offload (API, MCP, dashboard, embedded worker) on the embedded SQLite database.
run: $(STAMP)
	$(BIN)/offload serve

## Run the whole test suite (unit, contract, integration, end-to-end).
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q tests

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

layers: $(STAMP)
	$(BIN)/lint-imports

## ruff (lint + format check) + mypy (strict) + import-linter + tests.
check: lint typecheck layers test

## Throughput and latency benchmark (prints a table).
bench: $(STAMP)
	$(BIN)/offload bench

## The same beside PgQueuer and Procrastinate on one PostgreSQL, alternated (see the script).
bench-peers: $(STAMP)
	$(BIN)/python bench/side_by_side.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
