# Every set-up step lives here: a fresh clone needs only python3 and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The data: ./data/mnist if present, else the team's shared copy; override
# with HMNIST_DATA=DIR.
HMNIST_DATA ?= $(firstword $(wildcard data/mnist ../shared/data/mnist) data/mnist)
export HMNIST_DATA

.PHONY: install test lint unit train clean browser bench results bench-pytest

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,plot,image,peers]'
	touch $@

lint: install
	$(BIN)/ruff check hmnist tests bench
	$(BIN)/ruff format --check hmnist tests bench

unit: install browser
	$(BIN)/pytest -q tests

## browser: headless Chromium and its driver for tests/test_web.py (Debian's
## packages, installed as root when missing; without them that test skips)
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq chromium chromium-driver >/dev/null; } \
		|| echo "browser: apt-get failed; tests/test_web.py will skip"; \
	else \
		echo "browser: no chromium, and apt-get needs root; tests/test_web.py will skip"; \
	fi

## test: lint, then the unit and end-to-end tests (reads $HMNIST_DATA)
test: lint unit

## train: the book's chapter 1 run, 30 epochs of [784,30,10], quadratic, eta 3
train: install
	$(BIN)/hmnist train --kernel numba --sizes 784,30,10 --epochs 30 \
		--batch-size 10 --eta 3.0 --cost quadratic

## bench: the README's main job: the standard matrix (about 10 minutes on two
## quiet cores) and its report, into $(BENCH_OUT). OPENBLAS_CORETYPE and
## OPENBLAS_L2_SIZE are unset so that OpenBLAS tunes itself to this CPU.
## After an interruption, `make bench BENCH_FLAGS=--resume` measures the rest.
BENCH_OUT ?= results/mine/standard.json
bench: install
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BIN)/hmnist bench \
		--preset standard --out $(BENCH_OUT) $(BENCH_FLAGS)
	$(BIN)/hmnist report $(BENCH_OUT)

## results: regenerate results/ from scratch: the standard matrix, the two
## 30-epoch training runs of the accuracy plot, and the report of all three
results: install
	$(MAKE) bench BENCH_OUT=results/standard.json BENCH_FLAGS=
	$(BIN)/hmnist train --kernel numba --sizes 784,30,10 --epochs 30 \
		--batch-size 10 --eta 3.0 --cost quadratic --init standard --seed 0 \
		--json results/train-quadratic.json
	$(BIN)/hmnist train --kernel numba --sizes 784,100,10 --epochs 30 \
		--batch-size 10 --eta 0.5 --cost cross-entropy --init standard --seed 0 \
		--json results/train-cross-entropy.json
	$(BIN)/hmnist report results/standard.json results/train-quadratic.json \
		results/train-cross-entropy.json

## bench-pytest: pytest-benchmark over the same cells (bench/), saved in
## .benchmarks/; `make bench-pytest BENCH_PYTEST_FLAGS=--benchmark-compare`
## sets a run against the last saved one
bench-pytest: install
	$(BIN)/pytest bench --benchmark-autosave $(BENCH_PYTEST_FLAGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .benchmarks
	find hmnist -name "*.nbi" -delete -o -name "*.nbc" -delete
