# stn-repro: every target sets up .venv itself when it is missing or older than pyproject.toml.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help test test-slow lint bench reproduce-mnist reproduce-addition reproduce-svhn reproduce-cub reproduce-colocalisation reproduce-mnist3d reproduce-rnn-spn clean clean-venv

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  make %-26s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "stn-repro needs Python >= 3.11; found " + sys.version.split()[0] + " (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)

$(RUNTIME_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	@touch $@

$(DEV_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@ $(RUNTIME_STAMP)

test: $(DEV_STAMP) ## Run the test suite (fast tests; slow ones are excluded)
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: $(DEV_STAMP) ## Run only the tests marked slow
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

lint: $(DEV_STAMP) ## Check style with ruff
	$(PY) -m ruff check stn_repro tests scripts
	$(PY) -m ruff format --check stn_repro tests scripts

BENCH_ARGS ?=

bench: $(RUNTIME_STAMP) ## Measure training throughput (framework vs bare loop vs tutorial loop) -> results/bench.md
	$(PY) scripts/bench.py $(BENCH_ARGS)

REPRODUCE_ARGS ?=

reproduce-mnist: $(RUNTIME_STAMP) ## Reproduce Table 1 (distorted MNIST) and the cluttered-MNIST result -> results/
	$(PY) -m stn_repro.reproduce suite=table1,cluttered $(REPRODUCE_ARGS)

reproduce-addition: $(RUNTIME_STAMP) ## Reproduce MNIST addition (appendix A.1, Table 4) -> results/table4.md
	$(PY) -m stn_repro.reproduce suite=addition $(REPRODUCE_ARGS)

reproduce-mnist3d: $(RUNTIME_STAMP) ## Reproduce the 3D transformers on extruded MNIST (appendix A.3) -> results/table_mnist3d.md
	$(PY) -m stn_repro.reproduce suite=mnist3d $(REPRODUCE_ARGS)

reproduce-svhn: $(RUNTIME_STAMP) ## Reproduce Table 2 (SVHN; needs data/svhn/, see data/README.md) -> results/table2.md
	$(PY) -m stn_repro.reproduce suite=svhn $(REPRODUCE_ARGS)

reproduce-cub: $(RUNTIME_STAMP) ## Reproduce Table 3 (CUB; needs data/CUB_200_2011/ and ImageNet weights) -> results/table3.md
	$(PY) -m stn_repro.reproduce suite=cub $(REPRODUCE_ARGS)

reproduce-rnn-spn: $(RUNTIME_STAMP) ## Reproduce the recurrent STN (Sønderby et al., cluttered MNIST sequences) -> results/rnn_spn.md
	$(PY) -m stn_repro.reproduce suite=rnn_spn $(REPRODUCE_ARGS)

reproduce-colocalisation: $(RUNTIME_STAMP) ## Reproduce the co-localisation experiment (appendix A.2) -> results/table_colocalisation.md
	$(PY) -m stn_repro.reproduce suite=colocalisation $(REPRODUCE_ARGS)

clean: ## Remove caches and run outputs (keeps .venv, data/ and results/)
	rm -rf .pytest_cache .ruff_cache outputs multirun lightning_logs wandb build *.egg-info
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +

clean-venv: ## Remove the virtual environment
	rm -rf $(VENV)
