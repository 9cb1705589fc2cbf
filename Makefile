# The two set-up commands of the README: `make demo` (the main job) and `make test`.
# Both create or reuse .venv/ and install what they need (pip, and apt-get for WordNet and chromium).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed-stamp
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo airflow test test-fast lint bench system-packages

$(STAMP): pyproject.toml setup.py metaclip_tasks/_codes.h metaclip_tasks/ingest/_watscan.c metaclip_tasks/ingest/_inflate.c metaclip_tasks/curation/_match.c metaclip_tasks/ingest/_uids.c
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[airflow,download,train,dev]'
	touch $(STAMP)

# Debian packages, one apt-get install of those missing: wordnet-base (the WordNet 3.0 database
# files, the metadata's first source), chromium (the browser the UI tests drive, tests/ui/test_ui.py),
# docker-compose (tests/deploy/test_docker.py checks the compose file), gcc, libssl-dev and libdeflate-dev
# (the C extensions pip builds: setup.py), redis-server and postgresql (the Celery broker and the metadata DB
# of the cluster topology that tests/deploy/test_topology.py runs). Installed before the venv, which compiles them.
system-packages:
	@missing="$$(test -f /usr/share/wordnet/data.noun || echo wordnet-base) $$(command -v chromium >/dev/null || echo chromium) $$(command -v docker-compose >/dev/null || echo docker-compose) $$(command -v gcc >/dev/null || echo gcc) $$(test -f /usr/include/openssl/evp.h || echo libssl-dev) $$(test -f /usr/include/libdeflate.h || echo libdeflate-dev) $$(command -v redis-server >/dev/null || echo redis-server) $$(ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || echo postgresql)"; \
	if [ -n "$$(echo $$missing)" ]; then $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing; fi

# The main job: the curation demo DAG run through Airflow (SQLite, LocalExecutor, local Dask, .state/).
demo: system-packages $(STAMP)
	$(VENV)/bin/python -m metaclip_tasks.dev.local_airflow demo

# A local Airflow on the same embedded defaults: the API server and UI on http://localhost:8080 (log
# in as admin, the password is in .state/airflow/admin-password.json), then the scheduler,
# dag-processor and triggerer, logs in .state/logs/. Ctrl-C or SIGTERM stops every process it
# started. AIRFLOW_ARGS: e.g. "--port 8081 --state-dir /tmp/airflow".
AIRFLOW_ARGS ?=
airflow: system-packages $(STAMP)
	$(VENV)/bin/python -m metaclip_tasks.dev.local_airflow standalone $(AIRFLOW_ARGS)

test: system-packages $(STAMP)
	$(VENV)/bin/python -m pytest

# The quick tier (a few minutes on 2 cores): every test but those marked airflow, ui, cluster or slow
# (pyproject.toml's markers). `make test` is the whole suite, what CI runs.
test-fast: system-packages $(STAMP)
	$(VENV)/bin/python -m pytest -m "not (airflow or ui or cluster or slow)"

# The habits CI checks before the tests: lint, formatting (ruff, pyproject.toml's settings) and the
# library's types (mypy). The C extensions are built with -Wall -Wextra -Werror (setup.py).
lint: system-packages $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: system-packages $(STAMP)
	$(VENV)/bin/python -m benchmarks.matching
	$(VENV)/bin/python -m benchmarks.balancing
	$(VENV)/bin/python -m benchmarks.match_snapshot
	$(VENV)/bin/python -m benchmarks.concurrent_clusters
	$(VENV)/bin/python -m benchmarks.ingest
	$(VENV)/bin/python -m benchmarks.language_id
	$(VENV)/bin/python -m benchmarks.curation_view
