# qa_notify: `make run` to try it, `make test` to prove it. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
# Every package pinned, with the hashes of its files; `make lock` writes them from pyproject.toml.
LOCK := requirements/test.lock
BENCH_LOCK := requirements/bench.lock
STAMP := $(VENV)/.installed-test
BENCH_STAMP := $(VENV)/.installed-bench
# The fast tests on the lowest versions pyproject.toml allows, in a venv of their own.
LOWEST := .venv-lowest

.PHONY: install run run-cluster test test-cluster test-faults test-browser test-lowest bench lint format messages \
	typecheck typecheck-baseline lock lock-upgrade clean

# Exactly the locked versions, each file checked against its hash, then the project itself;
# pip check fails when pyproject.toml asks for something the lock does not give.
$(STAMP): $(LOCK) pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m pip check || { echo "pyproject.toml and $(LOCK) disagree: run make lock"; exit 1; }
	touch $(STAMP)

$(BENCH_STAMP): $(STAMP) $(BENCH_LOCK)
	$(PY) -m pip install --quiet --require-hashes -r $(BENCH_LOCK)
	touch $(BENCH_STAMP)

# The translation catalogs (qa_notify/translations/*/LC_MESSAGES/messages.po), compiled.
CATALOGS := $(patsubst %.po,%.mo,$(wildcard qa_notify/translations/*/LC_MESSAGES/messages.po))

%.mo: %.po $(STAMP)
	$(VENV)/bin/pybabel compile --statistics -i $< -o $@

install: $(STAMP) $(CATALOGS)

# After changing wording: extract every marked string, add the new ones to each catalog
# (then translate them; tests/test_i18n.py fails while one is missing or fuzzy).
BABEL_KEYWORDS := -k _l -k lazy_gettext -k lazy_ngettext:1,2
messages: $(STAMP)
	$(VENV)/bin/pybabel extract -F babel.cfg $(BABEL_KEYWORDS) --no-location --sort-output --project qa_notify \
		-o qa_notify/translations/messages.pot .
	$(VENV)/bin/pybabel update -i qa_notify/translations/messages.pot -d qa_notify/translations \
		--no-fuzzy-matching

run: $(STAMP) $(CATALOGS)
	$(PY) manage.py run

# The scaled-out topology on this machine (docs/deployment.md): Valkey cluster, broker,
# nginx if installed, two web processes, two workers.
run-cluster: $(STAMP) $(CATALOGS)
	$(PY) manage.py run-cluster

# TEST_ARGS narrows a run (CI's PostgreSQL pass leaves out what never touches the database).
test: $(STAMP) $(CATALOGS)
	$(PY) -m pytest $(TEST_ARGS)

# The contract suite against an embedded Valkey cluster (3 masters + 3 replicas): everything
# but the fault and browser suites (they run their own single servers) and the tests whose
# subject never meets Redis (the access matrix, log format, the CLI's and console script's
# wiring, metrics files, Prometheus' config), which the single-server run covers.
CLUSTER_SKIP := --ignore=tests/faults --ignore=tests/browser --ignore=tests/test_access.py \
	--ignore=tests/test_logging.py --ignore=tests/test_cli.py --ignore=tests/test_console_script.py \
	--ignore=tests/test_metrics.py --ignore=tests/test_monitoring_config.py
test-cluster: $(STAMP) $(CATALOGS)
	QA_TEST_REDIS=cluster $(PY) -m pytest $(CLUSTER_SKIP)

test-faults: $(STAMP) $(CATALOGS)
	$(PY) -m pytest tests/faults

test-browser: $(STAMP) $(CATALOGS)
	$(PY) -m pytest tests/browser

# Direct dependencies at the lowest versions pyproject.toml allows (theirs at the newest
# that fit), so its minimums are true. The contract suite less the fault and browser
# suites, and less the tests that mostly exercise our own rules, not the libraries: the
# property and fuzz tests, the access matrix, bad input. About 5 minutes on 2 cores.
LOWEST_TESTS := --ignore=tests/faults --ignore=tests/browser --ignore=tests/test_fuzz.py \
	--ignore=tests/test_routing_property.py --ignore=tests/test_access.py --ignore=tests/test_bad_input.py
test-lowest: $(STAMP) $(CATALOGS)
	rm -rf $(LOWEST)
	UV_PYTHON_DOWNLOADS=never $(UV) venv --quiet --python $(PYTHON) $(LOWEST)
	$(UV) pip install --quiet --python $(LOWEST)/bin/python --resolution lowest-direct -e '.[test]'
	$(LOWEST)/bin/python -m pytest -p no:cacheprovider $(LOWEST_TESTS)

bench: $(BENCH_STAMP) $(CATALOGS)
	$(PY) -m bench

# ruff, then the house rules: class and function sizes, no package cycle (.ci/structure.py).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) .ci/structure.py

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# mypy over what [tool.mypy] names; fails on an error that mypy-baseline.txt does not list.
typecheck: $(STAMP)
	$(PY) .ci/typecheck.py

# After fixing type errors (or, knowingly, adding some): write today's errors as the baseline.
typecheck-baseline: $(STAMP)
	$(PY) .ci/typecheck.py --write-baseline

# After changing dependencies in pyproject.toml. Locks for Python 3.11+ on any platform,
# with every file's hash; keeps each pin that is still allowed (lock-upgrade moves all to
# the newest). The bench lock pins what the test lock pins. Needs only the tools of the
# current lock, not the project, so it works while the two disagree.
LOCK_FLAGS = --quiet --universal --python-version 3.11 --generate-hashes --custom-compile-command 'make lock' $(UPGRADE)
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r $(LOCK)
	test -x $(UV) || $(PY) -m pip install --quiet uv  # a lock without uv (the very first)
	$(UV) pip compile $(LOCK_FLAGS) pyproject.toml --extra test -o $(LOCK)
	$(UV) pip compile $(LOCK_FLAGS) pyproject.toml --extra test --extra bench -c $(LOCK) -o $(BENCH_LOCK)

lock-upgrade: UPGRADE := --upgrade
lock-upgrade: lock

clean:
	rm -rf $(VENV) $(LOWEST) instance .pytest_cache .mypy_cache
