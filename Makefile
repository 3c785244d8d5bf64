# Wallet API server. `make run` and `make test` work on a fresh machine with Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run stop test migrate lint format bench clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

setup: $(STAMP) ## install everything into .venv

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
	rm -rf $(VENV) var .pytest_cache
