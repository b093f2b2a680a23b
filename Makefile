VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test lint bench

install:
	bash scripts/install.sh

test:
	$(PY) -m pytest

lint:
	$(PY) -m ruff check src integrations tests bench cookbook conftest.py
	$(PY) -m ruff format --check src integrations tests bench cookbook conftest.py
	$(PY) -m mypy

bench:
	$(PY) bench/engine_overhead.py
	$(PY) bench/server_vs_local.py
	$(PY) bench/langchain_batch.py
	$(PY) bench/loader.py
