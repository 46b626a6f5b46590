# Reference pipeline for Xiong et al. 2020 (Pre-LN vs Post-LN) on fairseq. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# PY may point at another interpreter that already has the dependencies (e.g. on a GPU machine):
#   make test PY=python3
PY ?= .venv/bin/python
export PYTHONPATH := $(CURDIR)/plugins:$(CURDIR)/scripts$(if $(PYTHONPATH),:$(PYTHONPATH),)
# The venv is rebuilt when a requirement file changes; skipped when PY is not the venv.
SETUP_STAMP := .venv/.installed
SETUP := $(if $(filter .venv/bin/python,$(PY)),$(SETUP_STAMP),)
PYTEST_ARGS ?=

help:  ## list the targets
	@grep -hE '^[a-zA-Z0-9_.-]+:.*## ' $(MAKEFILE_LIST) | sort | awk 'BEGIN {FS = ":.*## "}; {printf "  %-20s %s\n", $$1, $$2}'

setup: $(SETUP_STAMP)  ## create .venv with torch (CPU 2.13.0 unless TORCH=... TORCH_INDEX=...), fairseq and the rest

$(SETUP_STAMP): requirements/lock.txt requirements/test.txt pyproject.toml scripts/setup_venv.sh
	scripts/setup_venv.sh
	touch $@

test: $(SETUP)  ## run the test suite (sets up .venv first if needed)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(SETUP)  ## tokens/s of our Post-LN and Pre-LN vs fairseq's built-in transformer, same batches, one run
	$(PY) -m normpos.bench_models

.PHONY: help setup test bench
