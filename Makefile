# linssl — two commands on a fresh machine:
#   make run    install, then run the simulator on its default (python -m linssl.simulate --wd 0.05)
#   make test   install with the test extra, then ruff and the test suite
# Torch is installed first: TORCH_SPEC (torch==2.13.0) from pip's index, which on Linux is the CUDA build;
# TORCH_INDEX=https://download.pytorch.org/whl/cpu takes the CPU-only wheel instead. Either works.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PYTEST_ARGS ?=
# tests run in parallel, one process per core (pytest-xdist), at most 4
PYTEST_PARALLEL ?= -n auto --maxprocesses 4
# The suite's matrices are small: one BLAS/OpenMP thread avoids contention on small machines.
TEST_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 MPLBACKEND=Agg

.PHONY: run test test-slow install install-test lint figures check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.torch: | $(BIN)/python
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/python -m linssl.simulate --wd 0.05

lint: install
	$(BIN)/ruff check .

test: install lint
	$(TEST_ENV) $(BIN)/python -m pytest -q -m "not slow" $(PYTEST_PARALLEL) $(PYTEST_ARGS)

# pytest exits 5 when nothing is marked slow: not a failure
test-slow: install
	$(TEST_ENV) $(BIN)/python -m pytest -q -m slow $(PYTEST_PARALLEL) $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && exit 0; exit $$rc

figures: install
	$(BIN)/linssl figures

check: install
	$(BIN)/linssl check

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
