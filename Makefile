# Quick start: `make demo` (install + train MARC end to end on MovieLens-1M),
# `make test` (install + run the tests). CI runs `make test` through .ci/run.
PYTHON ?= python3
VENV ?= .venv
# Where MovieLens-1M lives; `marc-keras data download` fetches it into a cache.
ML1M ?= $(abspath ../shared/data/ml-1m-half)
RUN_DIR ?= runs/demo
# `make test` (CI too) leaves out the tests marked slow (real checkpoint or
# real data, minutes each): CI took 1356 s with them, over its 20-minute
# budget. `make test-slow` runs only those, `make test-all` everything.
PYTEST_ARGS ?= -m "not slow"

BIN := $(VENV)/bin

.PHONY: install demo test test-slow test-all bench lint

install: $(VENV)/.installed

# torch comes first and pinned: a looser spec resolves to a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev,tfrs,ray,peers]"
	touch $@

demo: install
	MARC_KERAS_ML1M_DIR=$(ML1M) $(BIN)/marc-keras fit --config configs/demo.toml --run-dir $(RUN_DIR)
	MARC_KERAS_ML1M_DIR=$(ML1M) $(BIN)/marc-keras evaluate --run-dir $(RUN_DIR)

test: install
	MARC_KERAS_ML1M_DIR=$(ML1M) $(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: PYTEST_ARGS = -m slow
test-slow: test

test-all: PYTEST_ARGS =
test-all: test

bench: install
	MARC_KERAS_ML1M_DIR=$(ML1M) $(BIN)/python benchmarks/train_step.py

lint: install
	$(BIN)/ruff check marc_keras cli export tests benchmarks
	$(BIN)/ruff format --check marc_keras cli export tests benchmarks
