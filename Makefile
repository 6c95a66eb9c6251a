# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# The test suite builds real torchvision/timm architectures (tests/corpus). PyPI's torchvision does not
# import beside the 2.13.0 CPU wheel, so `make test` moves the venv to this matching pair (a CUDA build
# that runs on the CPU; ~5.5 GB, taken from the machine's wheel cache in under a minute). `make demo`
# stays on the light CPU wheel.
TEST_TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test lint venv install install-dev lab clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==$(TORCH_VERSION)

venv: $(BIN)/python

install: venv
	$(BIN)/pip install -q -e .

install-dev: venv
	$(BIN)/pip install -q $(TEST_TORCH)
	$(BIN)/pip install -q -e ".[dev,all,corpus]"

demo: install
	$(BIN)/gradvet demo
	$(BIN)/gradvet lab --quick -o lab-report

lab: install
	$(BIN)/gradvet lab --quick -o lab-report

test: install-dev
	$(BIN)/python -m pytest -q

lint: install-dev
	$(BIN)/ruff check src tests bench examples
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
