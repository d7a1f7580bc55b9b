# Lipia's commands. `make dev` runs the whole product locally; `make test` runs every test.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium

.PHONY: dev test test-fast soak bench install chromium axe wrk clean-data translations

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

## Start the database, the Daraja simulator, the worker and the web app; Ctrl-C stops them all.
## An unset LIPIA_ENV means production, so each target says which world it runs in.
dev: $(STAMP)
	LIPIA_ENV="$${LIPIA_ENV:-development}" PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho -f Procfile.dev start

## Every test: the layers (import-linter), unit (mongomock), integration (real processes), browser (Chromium).
test: $(STAMP) chromium axe
	$(BIN)/lint-imports --no-cache
	LIPIA_ENV=test $(BIN)/python -m pytest

## Unit tests only: seconds, no processes.
test-fast: $(STAMP)
	LIPIA_ENV=test $(BIN)/python -m pytest tests/unit -q

## The money simulation at length: 500 seeds of 300 steps, stopping after SOAK_SECONDS.
SOAK_SECONDS ?= 1800
soak: $(STAMP)
	LIPIA_ENV=test LIPIA_SIM_SEEDS=500 LIPIA_SIM_STEPS=300 LIPIA_SIM_FIRST_SEED=1000 LIPIA_SIM_SECONDS=$(SOAK_SECONDS) \
	  $(BIN)/python -m pytest tests/unit/test_money_simulation.py -q -p no:cacheprovider -o timeout=600

## Throughput and latency of the real stack under bounded load.
## (It runs Lipia as production against the simulator, so it sets MPESA_ENVIRONMENT=sandbox itself.)
bench: $(STAMP) wrk
	$(BIN)/python -m bench

## Debian's Chromium for the browser tests (Playwright drives it; no browser download).
chromium:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "Browser tests need Chromium: run 'sudo apt-get install chromium'"; exit 1; fi; }

## axe-core, the accessibility checker the browser tests run inside each page.
AXE := tests/e2e/.axe/node_modules/axe-core/axe.min.js
axe:
	@test -f $(AXE) || { \
	  command -v npm >/dev/null || { \
	    if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; \
	    else echo "Browser tests need npm: run 'sudo apt-get install npm'"; exit 1; fi; }; \
	  npm install --prefix tests/e2e/.axe --no-audit --no-fund --silent axe-core@4.14.1; }

## wrk, Debian's HTTP load generator, for the benchmarks.
wrk:
	@command -v wrk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; \
	  else echo "Benchmarks need wrk: run 'sudo apt-get install wrk'"; exit 1; fi; }

## Swahili: bring new customer text from the code into the catalog, then compile it. Translate the
## new entries in app/translations/sw/LC_MESSAGES/messages.po, run this again and commit both the
## .po and the .mo (kept in git, so no host needs a build step; a unit test checks they agree).
translations: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg -k _l -k N_ -k t -k plural:1,2 --no-location --sort-output --width=100 --project=Lipia -o $(VENV)/messages.pot .
	$(BIN)/pybabel update -i $(VENV)/messages.pot -d app/translations --width=100 --ignore-obsolete
	$(BIN)/pybabel compile -d app/translations --statistics

## Forget the local development database.
clean-data:
	rm -rf instance/db
