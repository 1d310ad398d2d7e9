# Two commands for a new machine:  make run  (the demo)  and  make test  (the test suite).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
export REPORTING_SITE_URL ?= http://127.0.0.1:$(PORT)
# The demo's data source is the project's own API on 127.0.0.1 (see REPORTING_SITE_URL).
export REPORTING_ALLOWED_SOURCE_HOSTS ?= 127.0.0.1,localhost

.PHONY: run test services typecheck test-sqlite test-postgres browser-deps pdf-deps bench chaos lint migrations-check format install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed pdf-deps
install-dev: $(VENV)/.installed-dev pdf-deps

## The PDF attachment's system libraries: WeasyPrint loads pango (with harfbuzz and fontconfig).
## Installed from Debian's packages when missing; where that cannot be done, it says what is missing
## and goes on (reports without a PDF do not need them; one with a PDF fails its run in those words).
PDF_LIBRARIES := pango-1.0 pangoft2-1.0 harfbuzz fontconfig
PDF_PACKAGES := libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core
HAS_PDF_LIBRARIES = $(PYTHON) -c "import ctypes.util, sys; sys.exit(not all(map(ctypes.util.find_library, sys.argv[1:])))" $(PDF_LIBRARIES)
pdf-deps:
	@$(HAS_PDF_LIBRARIES) || { echo "installing pango for the PDF attachment (WeasyPrint): $(PDF_PACKAGES)"; \
	  $(SUDO) apt-get install -y -q $(PDF_PACKAGES) >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null 2>&1 && $(SUDO) apt-get install -y -q $(PDF_PACKAGES) >/dev/null 2>&1; }; }; \
	$(HAS_PDF_LIBRARIES) || echo "MISSING for the PDF attachment: the system library pango (libpango-1.0.so.0, \
	libpangoft2-1.0.so.0, with harfbuzz and fontconfig). Install it: apt-get install $(PDF_PACKAGES) \
	(Debian, Ubuntu), or brew install pango (macOS)." >&2

## make run: install, migrate, load the demo, and start web + worker + beat together.
run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py setup_demo
	PORT=$(PORT) $(BIN)/honcho start -f Procfile.embedded

## make test: the whole suite on SQLite (the embedded default), then again on PostgreSQL
## with the end-to-end tests of the production stack (real gunicorn, workers, beat,
## Redis and RabbitMQ). Needs PostgreSQL, Redis and RabbitMQ on 127.0.0.1: `services` checks
## them first, starts any that is installed but stopped, and stops with what to install when
## one is missing, before any test runs.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/reporting
test: services
	$(MAKE) test-sqlite test-postgres

services:
	@bash .ci/services

## Two test processes (pytest-xdist), each with its own test database. The end-to-end
## tests run after the rest (they start real processes and wait for real cron minutes),
## four at a time: each has its own queues, ports and test database, and most of their time
## is spent waiting for a minute (a fifth of a core on average, measured), not computing.
PARALLEL ?= -n 2
E2E_PARALLEL ?= -n 4
test-sqlite: install-dev browser-deps
	$(BIN)/python -m pytest -m "not e2e" $(PARALLEL) $(PYTEST_ARGS)

## The browser tests run in the SQLite pass (the embedded default); the PostgreSQL pass
## runs everything else, then the end-to-end tests.
test-postgres: install-dev
	DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/python -m pytest -m "not browser and not e2e" $(PARALLEL) $(PYTEST_ARGS)
	DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/python -m pytest -m e2e $(E2E_PARALLEL) $(PYTEST_ARGS)

## Debian's chromium for tests/browser/ (Playwright's own browser download does not work here).
CHROMIUM_PATH ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser-deps:
	@test -x $(CHROMIUM_PATH) || { echo "installing Debian's chromium for the browser tests"; \
	  $(SUDO) apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q chromium >/dev/null; }; }

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## mypy with django-stubs over reporting/ and project/ (configured in pyproject.toml). Without a cache:
## the plugin's cache can keep a setting's old type after project/settings.py changes, and a whole run is ~10 s.
typecheck: install-dev
	$(BIN)/mypy --cache-dir=/dev/null

## Fails when a model change has no migration.
migrations-check: install-dev
	$(BIN)/python manage.py makemigrations --check --dry-run

format: install-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf var/ $(VENV) .mypy_cache/

## make bench: every benchmark under bench/; prints tables and writes bench/RESULTS.md.
## Needs the same services as make test (PostgreSQL, Redis). One: make bench BENCH=pipeline
bench: install-dev
	$(BIN)/python bench/run_all.py $(BENCH)

## make chaos: the real stack through 200+ seeded faults (workers, beat and the broker killed,
## SMTP and the data source failing), then invariants: nothing lost silently, nothing sent
## twice. Prints and writes tests/chaos/RESULTS.md. Replay a schedule: make chaos SEED=1234
chaos: install-dev
	$(BIN)/python -m tests.chaos.run --long $(if $(SEED),--seed $(SEED))
