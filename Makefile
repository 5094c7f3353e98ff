# Two commands on a fresh machine: `make run ARGS="..."` and `make test` (`make test-fast`: the
# tests not marked slow, 4-9 minutes on 2 cores). `make docs` builds the documentation site
# into site/ (strict: a broken link or a warning fails it), `make docs-serve` serves it while you
# edit. Each creates .venv with the pinned versions in constraints.txt when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
# mkdocs-material and mkdocs-gen-files print a page-long notice about MkDocs 2 on every build otherwise
export NO_MKDOCS_2_WARNING := 1
export DISABLE_MKDOCS_2_WARNING := true

.PHONY: run test test-fast docs docs-serve dashboard clean-venv

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,docs]"
	touch $@

run: $(VENV)/.installed
	$(PY) -m optqual train $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest $(ARGS)

test-fast: $(VENV)/.installed
	$(PY) -m pytest -m "not slow" $(ARGS)

docs: $(VENV)/.installed
	$(VENV)/bin/mkdocs build --strict

docs-serve: $(VENV)/.installed
	$(VENV)/bin/mkdocs serve

dashboard: $(VENV)/.installed
	$(PY) -m optqual dashboard $(ARGS)

clean-venv:
	rm -rf $(VENV)
