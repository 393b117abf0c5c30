# Every set-up step lives here: a fresh clone needs only python3 and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The data: ./data/mnist if present, else the team's shared copy; override
# with HMNIST_DATA=DIR.
HMNIST_DATA ?= $(firstword $(wildcard data/mnist ../shared/data/mnist) data/mnist)
export HMNIST_DATA

.PHONY: install test lint unit train clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,plot]'
	touch $@

lint: install
	$(BIN)/ruff check hmnist tests bench
	$(BIN)/ruff format --check hmnist tests bench

unit: install
	$(BIN)/pytest -q tests

## test: lint, then the unit and end-to-end tests (reads $HMNIST_DATA)
test: lint unit

## train: the book's chapter 1 run, 30 epochs of [784,30,10], quadratic, eta 3
train: install
	$(BIN)/hmnist train --kernel numba --sizes 784,30,10 --epochs 30 \
		--batch-size 10 --eta 3.0 --cost quadratic

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .benchmarks
