# Thin wrappers over the `parksense` command. `make demo` and `make test` work from a fresh
# Debian/Ubuntu machine: system packages, virtualenv, then the command itself.
.NOTPARALLEL:
.DEFAULT_GOAL := help

VENV := .venv
PYTHON := $(VENV)/bin/python
PARKSENSE := $(VENV)/bin/parksense
# Touched after each install: pip runs again only when pyproject.toml is newer.
STAMP := $(VENV)/.installed
# deploy/install-system.sh uses sudo itself when not run as root.
INSTALL_SYSTEM := bash deploy/install-system.sh
INSTALL_FLAGS :=

.PHONY: help system venv test lint up down demo bench bench-peers status

help:
	@echo "make demo    everything: system packages, virtualenv, stack, simulator; prints the dashboard URL"
	@echo "make test    format check, lint, type check and the test suite"
	@echo "make up      start the local stack (whatever part is not running)"
	@echo "make down    stop the local stack"
	@echo "make status  show what runs"
	@echo "make bench   run the load benchmark"
	@echo "make bench-peers  issue 10's load against parksense and a tuned mq-bridge, with the ratio"
	@echo "make lint    format check, lint and type check only"
	@echo "make venv    install system packages and the virtualenv"

system:
	$(INSTALL_SYSTEM) $(INSTALL_FLAGS)

$(PYTHON):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(PYTHON)
	$(PYTHON) -m pip install --quiet -e '.[dev]'
	touch $@

venv: system $(STAMP)

# The browser tests drive the dashboard in the system's Chromium.
test: INSTALL_FLAGS := --browser
test: venv
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PYTHON) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

up: venv
	$(PARKSENSE) up

down: $(STAMP)
	$(PARKSENSE) down

status: $(STAMP)
	$(PARKSENSE) status

demo: venv
	$(PARKSENSE) demo

bench: venv
	$(PARKSENSE) bench $(BENCH_ARGS)

bench-peers: venv
	$(PARKSENSE) bench-peers $(BENCH_ARGS)
