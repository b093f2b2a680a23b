VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install test test-core test-dists lint bench

#: the integration packages, each tested from its own folder in an environment of its own (scripts/install_alone.sh)
DISTS := integrations/langchain integrations/llama_index/llms integrations/llama_index/readers

install:
	bash scripts/install.sh
	bash scripts/install_alone.sh

# Two workers, each taking whole test files (module-scoped engines stay in one worker; conftest.py sends every
# file that uses the shared server to one worker): most of the suite's time is vLLM engines
# starting, which keeps one core busy, so two workers took 26.5-32.7 min where one took 34-37. More workers would
# each start their own session engines (an engine's three processes hold about 4 GB) on the same 2 cores.
WORKERS ?= 2

test: test-core test-dists

test-core:
	$(PY) -m pytest -n $(WORKERS) --dist loadfile

# Each integration's tests, from its folder, in its own environment: .venv-langchain, .venv-llama-index-llms, ...
test-dists:
	set -e; for dist in $(DISTS); do \
		venv=$(CURDIR)/.venv-$$(echo $${dist#integrations/} | tr '/_' '--'); \
		echo "== $$dist, on $$venv"; \
		(cd $$dist && $$venv/bin/python -m pytest); \
	done

lint:
	$(PY) -m ruff check src integrations testkit tests bench cookbook conftest.py
	$(PY) -m ruff format --check src integrations testkit tests bench cookbook conftest.py
	$(PY) -m mypy

bench:
	$(PY) bench/engine_overhead.py
	$(PY) bench/server_vs_local.py
	$(PY) bench/langchain_batch.py
	$(PY) bench/loader.py
