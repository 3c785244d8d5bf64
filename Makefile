# Wallet API server. `make run` and `make test` work on a fresh machine with Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: setup run stop test migrate lint format bench postman fuzz clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

# newman (make postman), pinned by package-lock.json; node_modules/ is not committed.
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

setup: $(STAMP) ## install into .venv

run: setup ## serve on PORT (8000); embedded PostgreSQL under var/ unless DATABASE_URL is set
	@mkdir -p var
	$(PY) server.py & echo $$! > var/server.pid; wait $$!

stop: ## stop what `make run` started (the embedded PostgreSQL stops with it)
	@if [ -f var/server.pid ]; then kill -TERM $$(cat var/server.pid) 2>/dev/null || true; rm -f var/server.pid; fi

test: setup ## the whole test suite against real PostgreSQL and Redis (embedded ones when unset)
	$(PY) -m pytest

migrate: setup
	$(PY) server.py migrate

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) var .pytest_cache node_modules

postman: setup $(NODE_STAMP) ## run the Postman collection with newman against a fresh server and database
	$(PY) -m scripts.with_server scripts/postman.sh

fuzz: setup ## schemathesis against /openapi.json of a fresh server, as a user with funded wallets (FUZZ_SECONDS)
	$(PY) -m scripts.with_server $(PY) scripts/fuzz.py

bench: setup ## load-test the server (1 and 2 processes) against a fresh database beside pgbench; prints one table
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(PY) -m bench.run
