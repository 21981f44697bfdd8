# prompt-worker: `make run` starts the service, `make test` runs every test.
#
# Only python3 (3.11 or newer) is needed: everything else goes into .venv. Reinstalls
# happen only when pyproject.toml changes (the stamp files under .venv record that).
# Pick another interpreter with `make run PYTHON=/path/to/python3.12`.

SHELL := /bin/sh
.DEFAULT_GOAL := help

VENV      := .venv
VENV_PY   := $(VENV)/bin/python
PIP       := $(VENV_PY) -m pip install -q --disable-pip-version-check
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST:= $(VENV)/.installed-test
PYTHON_CANDIDATES := $(if $(PYTHON),$(PYTHON),python3 python3.13 python3.12 python3.11)

# Recipes that start the service read .env when there is one. Its values override
# variables already set in the shell.
LOAD_ENV := if [ -f .env ]; then set -a; . ./.env; set +a; fi

.PHONY: help run migrate test check lint format types demo bench screenshots clean

help:
	@echo "make run      create .venv, install, migrate the database, start the service"
	@echo "make test     create .venv, install test dependencies, run all tests (PostgreSQL included)"
	@echo "make demo     simulate days of traffic on a fresh SQLite file and show the whole loop"
	@echo "make migrate  bring the database at DATABASE_URL to the latest schema"
	@echo "make check    lint, format check, types (mypy --strict), then make test: what CI runs"
	@echo "make lint     ruff check ."
	@echo "make format   ruff format . (rewrites files)"
	@echo "make types    mypy, strict, on optimizer/, models/ and clients/python/"
	@echo "make bench    run the scripts in benchmarks/"
	@echo "make screenshots  redraw docs/screenshots/*.png with headless Chromium"
	@echo "make clean    remove .venv and caches (keeps the database file)"

run: $(STAMP_RUN)
	@$(LOAD_ENV); \
	$(VENV)/bin/prompt-worker migrate && exec $(VENV)/bin/prompt-worker run

migrate: $(STAMP_RUN)
	@$(LOAD_ENV); exec $(VENV)/bin/prompt-worker migrate

test: $(STAMP_TEST)
	$(VENV)/bin/pytest -q

demo: $(STAMP_RUN)
	@$(LOAD_ENV); exec $(VENV)/bin/prompt-worker demo

# The static checks first (seconds), so a lint or type error stops CI before the 11-minute suite.
check: $(STAMP_TEST)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(MAKE) test

lint: $(STAMP_TEST)
	$(VENV)/bin/ruff check .

format: $(STAMP_TEST)
	$(VENV)/bin/ruff format .

types: $(STAMP_TEST)
	$(VENV)/bin/mypy

# Each benchmark runs as a module (python -m benchmarks.NAME) from the project root:
# run as a plain script, benchmarks/queue.py would shadow the standard library's `queue`.
bench: $(STAMP_TEST)
	@set -e; found=0; \
	for f in benchmarks/*.py; do \
	  [ -f "$$f" ] || continue; \
	  name=$$(basename "$$f" .py); \
	  case "$$name" in _*) continue ;; esac; \
	  found=1; echo "== benchmarks/$$name.py"; \
	  $(VENV_PY) -m "benchmarks.$$name"; \
	done; \
	[ "$$found" = 1 ] || echo "no benchmarks found in benchmarks/"

# The dashboard pictures in docs/: the test CI runs, told to write into the tree; it fails
# (not skips) without Chromium.
screenshots: $(STAMP_TEST)
	UPDATE_SCREENSHOTS=1 REQUIRE_BROWSER=1 $(VENV)/bin/pytest -q tests/browser/test_screenshots.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +

# Install the package (editable, so code edits need no reinstall). The test install is a
# superset of the run install, so it satisfies both stamps.
$(STAMP_RUN): pyproject.toml $(VENV)/pyvenv.cfg
	$(PIP) -e .
	@touch $@

$(STAMP_TEST): pyproject.toml clients/python/pyproject.toml $(VENV)/pyvenv.cfg
	$(PIP) -e '.[test]' -e ./clients/python
	@touch $@ $(STAMP_RUN)

# Fetches get-pip.py to the path in argv[1]; one line on failure, not a traceback.
define GET_PIP_SCRIPT
import sys, urllib.request
url = "https://bootstrap.pypa.io/get-pip.py"
try:
    data = urllib.request.urlopen(url, timeout=60).read()
except OSError as exc:
    sys.exit(f"cannot download {url}: {exc}")
open(sys.argv[1], "wb").write(data)
endef
export GET_PIP := $(GET_PIP_SCRIPT)

# Create the virtual environment with the first interpreter that is 3.11 or newer.
# Debian and Ubuntu ship `venv` without ensurepip unless python3-venv is installed; then
# the venv is made without pip and pip is bootstrapped with the official get-pip.py.
$(VENV)/pyvenv.cfg:
	@py=""; \
	for c in $(PYTHON_CANDIDATES); do \
	  if command -v "$$c" >/dev/null 2>&1 && \
	     "$$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then \
	    py="$$c"; break; \
	  fi; \
	done; \
	if [ -z "$$py" ]; then \
	  echo "error: prompt-worker needs Python 3.11 or newer." >&2; \
	  for c in $(PYTHON_CANDIDATES); do \
	    v=$$("$$c" --version 2>&1) || v="not found"; echo "  $$c: $$v" >&2; \
	  done; \
	  echo "Install Python 3.11+ and run again, or point at one: make $(or $(MAKECMDGOALS),run) PYTHON=/path/to/python3.11" >&2; \
	  exit 1; \
	fi; \
	echo "creating $(VENV) with $$py ($$("$$py" --version 2>&1))"; \
	rm -rf $(VENV); \
	if ! "$$py" -m venv $(VENV) >/dev/null 2>&1; then \
	  echo "$$py -m venv could not install pip (no ensurepip); bootstrapping pip with get-pip.py" >&2; \
	  rm -rf $(VENV); \
	  if ! { "$$py" -m venv --without-pip $(VENV) && \
	         "$$py" -c "$$GET_PIP" $(VENV)/get-pip.py && \
	         $(VENV_PY) $(VENV)/get-pip.py -q --disable-pip-version-check; }; then \
	    rm -rf $(VENV); \
	    echo "error: could not create $(VENV). On Debian/Ubuntu install the venv module:" >&2; \
	    echo "  apt-get install python3-venv" >&2; \
	    exit 1; \
	  fi; \
	  rm -f $(VENV)/get-pip.py; \
	fi
