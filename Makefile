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

.PHONY: help system venv test lint up down demo bench bench-peers status proto

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

# pysparkplug is the tests' Sparkplug B edge node (an implementation no one here wrote). It
# declares paho-mqtt<2 but runs on paho 2's compatibility API, so it is installed without
# its own requirements (protobuf, which it also needs, comes with parksense).
PYSPARKPLUG := pysparkplug==0.6.1

$(STAMP): pyproject.toml | $(PYTHON)
	$(PYTHON) -m pip install --quiet -e '.[dev]'
	$(PYTHON) -m pip install --quiet --no-deps '$(PYSPARKPLUG)'
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

# Regenerate the Sparkplug B payload code from schemas/sparkplug_b.proto (protoc from
# grpcio-tools, in a throwaway virtualenv: the generated files are committed).
proto:
	python3 -m venv .state/protoc
	.state/protoc/bin/pip install --quiet 'grpcio-tools>=1.76'
	.state/protoc/bin/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. schemas/sparkplug_b.proto

bench-peers: venv
	$(PARKSENSE) bench-peers $(BENCH_ARGS)
