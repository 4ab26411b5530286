# Two commands for a new user: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck vectors bench interop clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/envelope_demo.py

test: $(STAMP)
	$(BIN)/python -m pytest
	$(BIN)/caseway vectors check examples/vectors

lint: $(STAMP)
	$(BIN)/ruff check protocol keys node tests benchmarks examples
	$(BIN)/mypy --strict protocol keys

vectors: $(STAMP)
	$(BIN)/python examples/vectors/generate.py

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python benchmarks/envelope.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
