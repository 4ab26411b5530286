# Two commands for a new user: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint vectors bench interop clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest
	$(BIN)/caseway vectors check examples/vectors
	$(MAKE) --no-print-directory lint

# mypy cannot follow setuptools' package-dir mapping (protocol/ -> caseway.protocol), so it
# checks a tree of symlinks laid out as the installed package.
MYPY_TREE := build/mypy-tree

lint: $(STAMP)
	$(BIN)/ruff check protocol keys node tests benchmarks examples
	rm -rf $(MYPY_TREE) && mkdir -p $(MYPY_TREE)/caseway
	for d in protocol keys node schemas; do ln -s $(CURDIR)/$$d $(MYPY_TREE)/caseway/$$d; done
	cd $(MYPY_TREE) && MYPYPATH=. $(CURDIR)/$(BIN)/mypy --strict --explicit-package-bases \
		-p caseway.protocol -p caseway.keys -p caseway.schemas -p caseway.node

vectors: $(STAMP)
	$(BIN)/python examples/vectors/generate.py

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python benchmarks/envelope.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

interop:
	cd examples/interop/js && npm ci --no-audit --no-fund && node check.js ../../vectors
