# One-line entry points. `make run` and `make test` create .venv on first use.
PY ?= python3
VENV ?= .venv
CONFIG ?= configs/phase2.py
ARGS ?=
PYTEST_ARGS ?=

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(VENV)/bin/python launch/run.py --config=$(CONFIG) $(ARGS)

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

test-quick: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

.PHONY: install run test test-quick
