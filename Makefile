# Two commands on a fresh machine: `make run ARGS="..."` and `make test`.
# Both create .venv with the pinned versions in constraints.txt when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: run test dashboard clean-venv

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

run: $(VENV)/.installed
	$(PY) launch.py $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest $(ARGS)

dashboard: $(VENV)/.installed
	TRACKIO_DIR=outputs/trackio $(VENV)/bin/trackio show $(ARGS)

clean-venv:
	rm -rf $(VENV)
