# qa_notify: `make run` to try it, `make test` to prove it. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-test
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: install run run-cluster test test-cluster test-faults test-browser bench lint format clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) manage.py run

# The scaled-out topology on this machine (docs/deployment.md): Valkey cluster, broker,
# nginx if installed, two web processes, two workers.
run-cluster: $(STAMP)
	$(PY) manage.py run-cluster

test: $(STAMP)
	$(PY) -m pytest

# The contract suite (everything but the fault and browser suites, which run their own
# single servers) against an embedded Valkey cluster: 3 masters + 3 replicas.
test-cluster: $(STAMP)
	QA_TEST_REDIS=cluster $(PY) -m pytest --ignore=tests/faults --ignore=tests/browser

test-faults: $(STAMP)
	$(PY) -m pytest tests/faults

test-browser: $(STAMP)
	$(PY) -m pytest tests/browser

bench: $(BENCH_STAMP)
	$(PY) -m bench

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) instance .pytest_cache
