# Quick start:   make train   (install if needed, prepare data, run the default experiment)
#                make test-all (install if needed, run all the tests: what CI runs)
#                make test    (the fast set, -m 'not slow', for the edit-test loop)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Datasets: $SFT_DATA_DIR, else data/ in the checkout. SHARED: a local copy of the datasets
# (this project's machines have it beside the checkout); without it CIFAR-10 is downloaded.
export SFT_DATA_DIR ?= $(CURDIR)/data
SHARED ?= $(CURDIR)/../shared/data
EXPERIMENT ?= sst2_minilm
ARGS ?=

.PHONY: install data train test test-all lint format bench clean-venv

# The stamp is rebuilt when the dependency list or the pins change. The packages are
# byte-compiled on every core (pip compiles one file at a time): CI's install, lint and data
# steps took 4 min 10 s instead of 4 min 45 s on 2 AMD EPYC cores. A few files are not Python
# for this interpreter (torch's py312 test files): pip skips them too.
$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip -c constraints.txt
	$(BIN)/pip install -q --no-compile -c constraints.txt -e '.[vision,text,dev,cluster,export]'
	$(BIN)/python -m compileall -q -j 0 "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" > /dev/null || true
	touch $@

install: $(BIN)/.installed

data: install
	$(BIN)/python -m sft.data.prepare --data-dir "$(SFT_DATA_DIR)" --shared "$(SHARED)"

train: data
	$(BIN)/sft-train experiment=$(EXPERIMENT) $(ARGS)

# Test processes (pytest-xdist): one per CPU this process may use (nproc), at most 4; each file's
# tests stay in one process (--dist loadfile), which builds its tiny models once, and files are
# handed out in the order tests/conftest.py gives them, the longest first (--no-loadscope-reorder). (xdist's own
# `-n auto` counts the host's cores through psutil, beyond a container's.) Each process, and the
# runs it starts, gets its share of the cores as torch threads (OMP_NUM_THREADS): two processes
# of 2 threads on 2 cores wait on each other's OpenMP threads. The whole suite on 2 AMD EPYC
# Zen 3 cores: 20.4 min in one process and 14.5 min in two of 2 threads in one session; 20.4 min
# in two of 2 threads and 14.2-14.9 min in two of 1 thread in a later, slower one; 18.1-18.8 min
# in two of 1 thread with 1,172 tests (2026-12-04; 7.1-7.7 min on a 2-core AMX Xeon).
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 4 ? n : 4 )))
TEST_THREADS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); w=$$(( $(TEST_WORKERS) > 1 ? $(TEST_WORKERS) : 1 )); echo $$(( n / w > 0 ? n / w : 1 )))
PYTEST := OMP_NUM_THREADS=$(TEST_THREADS) $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: data
	$(PYTEST) -m "not slow" $(ARGS)

test-all: data
	$(PYTEST) $(ARGS)

lint: install
	$(BIN)/ruff format --check . && $(BIN)/ruff check .

format: install
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: data
	$(BIN)/python benchmarks/vs_anchors.py --steps 60 --warmup 10
	$(BIN)/python benchmarks/precision_layout.py
	$(BIN)/python benchmarks/norm_folding.py
	$(BIN)/python benchmarks/augmentation.py --threads 0
	$(BIN)/python benchmarks/loop_overhead.py --backbone resnet18 --steps 30 --batch-size 32 --repeats 2
	$(BIN)/python benchmarks/text_pipelines.py --steps 40 --warmup 3
