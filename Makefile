# Two commands on a fresh machine: `make run ARGS="..."` and `make test` (`make test-fast`: the
# tests not marked slow, about 4 minutes on 2 cores). Each creates .venv with the pinned versions
# in constraints.txt when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: run test test-fast dashboard clean-venv

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

run: $(VENV)/.installed
	$(PY) -m optqual train $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest $(ARGS)

test-fast: $(VENV)/.installed
	$(PY) -m pytest -m "not slow" $(ARGS)

dashboard: $(VENV)/.installed
	$(PY) -m optqual dashboard $(ARGS)

clean-venv:
	rm -rf $(VENV)
