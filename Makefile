# One-line entry points. `make run` and `make test` create .venv on first use.
PY ?= python3
VENV ?= .venv
CONFIG ?= configs/phase2.py
ARGS ?=
PYTEST_ARGS ?=
DEMO_WORKDIR ?= runs/demo

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(VENV)/bin/python launch/run.py --config=$(CONFIG) $(ARGS)

# The tiny pipeline, every stage in order, resumable; report in $(DEMO_WORKDIR)/report.md.
demo: $(VENV)/.installed
	$(VENV)/bin/python -m granite_jax.demo --workdir $(DEMO_WORKDIR) $(ARGS)

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

test-quick: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

.PHONY: install run demo test test-quick
