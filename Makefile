# Quick start: `make demo` (install + train MARC end to end on MovieLens-1M),
# `make test` (install + run the tests). CI runs `make test` through .ci/run.
PYTHON ?= python3
VENV ?= .venv
# Where MovieLens-1M lives; `marc-keras data download` fetches it into a cache.
ML1M ?= $(abspath ../shared/data/ml-1m-half)
RUN_DIR ?= runs/demo
# The whole suite, slow tests included (CI too): 601 fast tests took 702 s and
# the 5 slow ones 225 s here, niced beside a benchmark on 2 AVX2 cores.
# `make test-fast` leaves the slow ones out.
PYTEST_ARGS ?=

BIN := $(VENV)/bin

.PHONY: install demo test test-fast bench lint

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

test-fast: PYTEST_ARGS = -m "not slow"
test-fast: test

bench: install
	MARC_KERAS_ML1M_DIR=$(ML1M) $(BIN)/python benchmarks/train_step.py

lint: install
	$(BIN)/ruff check marc_keras cli export tests benchmarks
	$(BIN)/ruff format --check marc_keras cli export tests benchmarks
