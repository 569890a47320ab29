# Two commands do everything: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench bench-quick system-deps docs clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
		|| { echo "Python 3.11 or newer is needed (found: $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@# The clustering kernels compiled once now, into numba's cache (seconds), not at the first update.
	$(BIN)/python -c 'from aggregator.cluster import compile_kernels; compile_kernels()'
	touch $(STAMP)

## make run: install, poll the bundled demo feeds, serve http://127.0.0.1:8000 until Ctrl-C
run: $(STAMP)
	$(BIN)/aggregator run

## make test: install everything the tests need, then lint, type-check and run every test
test: $(STAMP) system-deps lint typecheck pytest

system-deps:
	bash scripts/system-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup

## make bench: the benchmark suite (benchmarks/README.md)
bench: $(STAMP) system-deps
	$(BIN)/python -m benchmarks

bench-quick: $(STAMP) system-deps
	$(BIN)/python -m benchmarks --quick

docs: $(STAMP)
	$(BIN)/aggregator settings --markdown > docs/settings.md

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache .hypothesis
