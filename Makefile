# Wallet API server. `make run` and `make test` work on a fresh machine with Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# What `make run` needs (the runtime and the embedded PostgreSQL), and the test tools on top of it, installed apart:
# a first `make run` skips playwright, schemathesis and the rest.
RUNTIME_STAMP := $(VENV)/.installed-runtime
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
# The embedded database, the JWT secret and server.pid live here (the server reads VAR_DIR too).
VAR_DIR ?= var

.DEFAULT_GOAL := help
.PHONY: help setup run stop test migrate lint format bench postman fuzz cluster-packages cluster cluster-stop cluster-test clean distclean

help: ## list these targets
	@awk -F':.*## ' '/^[a-z][a-z-]*:.*## /{printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(RUNTIME_STAMP): requirements.txt requirements-embedded.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-embedded.txt
	touch $(RUNTIME_STAMP)

$(STAMP): $(RUNTIME_STAMP) requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

# newman (make postman) and axe-core (the web wallet's accessibility test), pinned by package-lock.json;
# node_modules/ is not committed.
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

setup: $(STAMP) ## install everything into .venv: the runtime and the test tools (CI)

run: $(RUNTIME_STAMP) ## serve on PORT (8000); embedded PostgreSQL under VAR_DIR (var/) unless DATABASE_URL is set
	@mkdir -p $(VAR_DIR)
	@if [ -f $(VAR_DIR)/server.pid ] && kill -0 $$(cat $(VAR_DIR)/server.pid) 2>/dev/null; then \
		echo "make run: already running (pid $$(cat $(VAR_DIR)/server.pid)); make stop first" >&2; exit 1; fi
	@# The shell outlives a Ctrl-C (the server handles it) and removes the pid file once the server has exited.
	trap 'rm -f $(VAR_DIR)/server.pid' EXIT; trap '' INT; $(PY) server.py & echo $$! > $(VAR_DIR)/server.pid; wait $$!

stop: ## stop what `make run` started, and an embedded PostgreSQL that a killed server left running
	@if [ -f $(VAR_DIR)/server.pid ]; then pid=$$(cat $(VAR_DIR)/server.pid); \
		kill -TERM $$pid 2>/dev/null && timeout 30 sh -c "while kill -0 $$pid 2>/dev/null; do sleep 0.2; done"; \
		rm -f $(VAR_DIR)/server.pid; fi
	@if [ -x $(PY) ]; then $(PY) server.py stop-embedded; \
	elif [ -f $(VAR_DIR)/pgdata/postmaster.pid ]; then pid=$$(head -n 1 $(VAR_DIR)/pgdata/postmaster.pid); \
		if [ "$$(cat /proc/$$pid/comm 2>/dev/null)" = postgres ]; then kill -INT $$pid && \
			timeout 30 sh -c "while kill -0 $$pid 2>/dev/null; do sleep 0.2; done" && \
			echo "stopped the embedded PostgreSQL (pid $$pid)"; fi; fi

# Parallel test workers (pytest-xdist): more than the cores pay, as tests mostly wait on servers and the database.
# TEST_WORKERS=0 runs the suite in one process. Tests go to the workers 8 at a time (--maxschedchunk): in bigger first
# batches the slow tests, sorted first (tests/conftest.py), all went to one worker, which then ended the run alone.
TEST_WORKERS ?= 4
# The workers and the hundreds of interpreters a run starts keep their compiled code (and pytest its rewritten test
# modules) in __pycache__ even where the shell sets PYTHONDONTWRITEBYTECODE: without it each worker spent 10 s of CPU
# compiling before its first test (make clean removes them).
test: setup ## the whole test suite against real PostgreSQL and Redis (embedded ones when unset), on TEST_WORKERS
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -n $(TEST_WORKERS) --dist load --maxschedchunk 8

migrate: $(RUNTIME_STAMP) ## apply database migrations
	$(PY) server.py migrate

lint: setup ## ruff check, ruff format --check, and the layers' import contracts (pyproject.toml)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

format: setup ## ruff format and ruff check --fix
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean: ## remove .venv, node_modules and caches; keeps VAR_DIR (the embedded database and the JWT secret)
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: ## clean, and delete VAR_DIR (the embedded database, the JWT secret): asks first, or CONFIRM=yes
	@if [ "$(CONFIRM)" != yes ]; then \
		printf 'Delete %s: the embedded database and the JWT secret (every token stops working)? Type yes: ' \
			"$(VAR_DIR)"; read answer; [ "$$answer" = yes ] || { echo "kept $(VAR_DIR)"; exit 1; }; fi
	@if [ -x $(PY) ]; then $(MAKE) --no-print-directory stop; fi
	rm -rf $(VAR_DIR)
	$(MAKE) --no-print-directory clean

postman: setup $(NODE_STAMP) ## run the Postman collection with newman against a fresh server and database
	$(PY) -m scripts.with_server scripts/postman.sh

fuzz: setup ## schemathesis against /openapi.json of a fresh server, as a user with funded wallets (FUZZ_SECONDS)
	$(PY) -m scripts.with_server $(PY) scripts/fuzz.py

# AGAINST=<git rev> also benches that revision's server in the same session; BENCH_ARGS passes options to bench.run.
bench: setup ## load-test the server (1 and 2 processes) on a fresh database beside pgbench ceilings; prints a table
	@command -v wrk >/dev/null && [ -x /usr/sbin/pgbouncer ] || { apt-get update -qq && apt-get install -y -qq wrk pgbouncer; }
	$(PY) -m bench.run $(if $(AGAINST),--against $(AGAINST)) $(BENCH_ARGS)

# The cluster of deploy/cluster/ on this machine (docs/operations.md#the-cluster): Debian's packages, installed when
# missing with their services kept from starting (a policy-rc.d answering 101 while apt runs, and no main cluster for
# a PostgreSQL installed here): the machine's own PostgreSQL on 5432 and Redis on 6379 are never touched.
CLUSTER_PACKAGES := patroni python3-etcd etcd-server haproxy pgbouncer nginx postgresql-15 redis-server
cluster-packages: ## install the cluster's Debian packages when missing, starting none of their services
	@missing=$$(for p in $(CLUSTER_PACKAGES); do dpkg -s $$p 2>/dev/null | grep -q '^Status: install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "installing" $$missing; \
		policy=; if [ ! -e /usr/sbin/policy-rc.d ]; then policy=/usr/sbin/policy-rc.d; \
			printf '#!/bin/sh\nexit 101\n' > $$policy; chmod +x $$policy; fi; \
		mkdir -p /etc/postgresql-common/createcluster.d; \
		echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/wallet-cluster.conf; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; status=$$?; \
		rm -f /etc/postgresql-common/createcluster.d/wallet-cluster.conf $$policy; exit $$status; fi

cluster: setup cluster-packages ## etcd, 3 PostgreSQL under Patroni, HAProxy, PgBouncer, 2 app hosts, nginx (var/cluster/)
	$(PY) -m scripts.cluster start

cluster-stop: ## stop every process `make cluster` started (by the PIDs in var/cluster/), leaving no port behind
	@if [ -x $(PY) ]; then $(PY) -m scripts.cluster stop; fi

cluster-test: setup cluster-packages ## make cluster, the cluster bank test through it (faults one after another), make cluster-stop
	$(PY) -m scripts.cluster start
	$(PY) -m pytest -n 0 -m cluster tests/test_cluster_bank.py -p no:cacheprovider -s; status=$$?; \
		$(PY) -m scripts.cluster stop || status=1; exit $$status
