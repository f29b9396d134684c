# `make test` builds its own virtualenv (.venv) from scratch and runs the CPU suite.
PY ?= python3
VENV ?= .venv
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: test venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, then everything else under the same constraint: pip never replaces it.
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q --durations=12 tests

clean:
	rm -rf $(VENV)
