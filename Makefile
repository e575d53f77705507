# The two commands of the README: `make demo` (set up + run the main job) and `make test` (set up + run the tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system-deps demo test test-all bench
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch==2.13.0 is pinned in pyproject.toml: it resolves to the CPU build, not a multi-GB CUDA one.
	$(BIN)/pip install -q -e ".[test,stacks]"
	# MovieLens-100k carrier: the recbole wheel ships ml-100k; we read its files, never import it.
	$(BIN)/pip install -q --no-deps recbole==1.2.1
	touch $(STAMP)

# redis-server: the online token store's server (iat.tokens.online; tests start it on a free loopback port).
system-deps:
	@command -v redis-server >/dev/null 2>&1 || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q redis-server; }

setup: $(STAMP) system-deps

demo: setup
	$(BIN)/iat demo --config configs/demo.yaml

test: setup
	$(BIN)/python -m pytest -m "not slow" -q

test-all: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/bench_data.py
