# storeops: `make run` starts everything, `make test` runs the suite. `make help` lists targets.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STOREOPS := $(VENV)/bin/storeops
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help run test bench venv sysdeps db db-stop migrate serve schema lint clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP) ## create .venv and install storeops with its test tools

sysdeps: ## install missing Debian packages (postgresql-15, pg_cron, pgbouncer, knot)
	scripts/install-system-packages test

db: venv ## start the embedded cluster (creates it on first use)
	scripts/install-system-packages run
	$(STOREOPS) db start

db-stop: venv ## stop the embedded cluster
	$(STOREOPS) db stop

migrate: venv ## apply pending migrations to DATABASE_URL or the embedded cluster
	@if [ -z "$$DATABASE_URL" ]; then $(MAKE) --no-print-directory db; fi
	$(STOREOPS) migrate

run: migrate ## venv, packages, embedded cluster, migrate, then serve (Ctrl-C stops)
	$(STOREOPS) serve

test: venv sysdeps ## run the whole test suite against real servers it starts itself
	$(PY) -m pytest -q

$(VENV)/.bench-installed: $(STAMP) setup.cfg
	$(PY) -m pip install -q -e '.[bench]'
	touch $@

bench: venv $(VENV)/.bench-installed ## benchmarks on their own cluster and runners; writes bench/RESULTS.md (< 10 min)
	scripts/install-system-packages bench
	$(PY) -m bench

schema: venv ## regenerate sql/schema.sql, the whole schema in one file (pg_dump of a fresh migrate)
	$(PY) -m runner.schema_dump > sql/schema.sql.new && mv sql/schema.sql.new sql/schema.sql

lint: venv ## ruff over the runner and tests
	$(VENV)/bin/ruff check runner tests

clean: ## remove the venv and the embedded cluster's data
	-$(STOREOPS) db stop
	rm -rf $(VENV) .pgdata
