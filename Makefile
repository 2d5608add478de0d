# The two commands a new user needs: `make run` (the service on embedded defaults) and `make test`.
# Both install everything they need into .venv first (idempotent; re-runs are quick).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup run test lint typecheck imports pytest test-model-versions bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is pinned to the CPU build that pip finds on disk here; operators with GPUs install their own build.
$(VENV)/.installed: pyproject.toml $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[ml,dev]'
	touch $@

setup: $(VENV)/.installed
	$(BIN)/itsm-triage model fetch

run: setup
	$(BIN)/itsm-triage run --host $(HOST) --port $(PORT)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed
	$(BIN)/mypy service workers models

imports: $(VENV)/.installed
	$(BIN)/lint-imports

pytest: setup
	$(BIN)/pytest $(PYTEST_ARGS)

# The tiny-model tests again at the lowest transformers / peft releases pyproject.toml declares (installed beside the
# venv, first on PYTHONPATH), so the declared ranges are the tested ones.
LOWEST ?= .lowest-versions
test-model-versions: setup
	rm -rf $(LOWEST)
	$(BIN)/pip install -q --no-deps --target $(LOWEST) $$($(BIN)/python .ci/lowest_versions.py)
	PYTHONPATH=$(LOWEST) $(BIN)/python -c "import transformers, peft; print('lowest: transformers', transformers.__version__, 'peft', peft.__version__)"
	PYTHONPATH=$(LOWEST) $(BIN)/pytest -q -p no:cacheprovider tests/models/test_tiny_llama.py

test: lint typecheck imports pytest test-model-versions

clean:
	rm -rf $(VENV) var $(LOWEST)
