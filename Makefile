# Two commands for a new user: `make train` (set up, then train on the bundled sample) and
# `make test` (set up, then run the whole suite). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; a plain `pip install torch` would fetch a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: setup train test lint wheel-check clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,export]"
	touch $@

train: setup
	$(BIN)/lstm train --config configs/sample.toml $(ARGS)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check lstmcli tests benchmarks

# Build the wheel, install it into a fresh venv and train + predict outside the checkout.
wheel-check: setup
	PYTHON=$(BIN)/python TORCH="$(TORCH)" bash .ci/wheel-check

clean:
	rm -rf $(VENV) runs .pytest_cache
