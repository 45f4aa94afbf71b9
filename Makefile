# One command sets up and runs the demo (`make demo`), one runs the tests (`make test`).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build on machines without a GPU. With a GPU, install a CUDA torch into $(VENV) first:
# the check below then leaves it alone.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install demo test test-all serve clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: install
	$(BIN)/qa demo

test: install
	$(BIN)/ruff check qa tests scripts
	$(BIN)/python -m pytest -m "not gpu" $(PYTEST_ARGS)

serve: install
	$(BIN)/qa --config "$${QA_CONFIG:-}" serve

clean:
	rm -rf var/demo .pytest_cache
