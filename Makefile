# kbindex: every target installs what it needs first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Nothing may download a model at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export ANONYMIZED_TELEMETRY := False

.PHONY: help install demo test lint bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## Create .venv: torch 2.13.0 (CPU) first, then kbindex with its test extras

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first: this pin takes the local CPU build; an unpinned torch pulls GBs of CUDA packages
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

demo: install ## Index data/sample-kb into data/index and run two example queries
	$(BIN)/kbindex index data/sample-kb
	$(BIN)/kbindex query "my desktop chat app will not open for users with roaming profiles" -k 3
	$(BIN)/kbindex query "do the random starting vectors survive once the model is trained?" -k 3

test: install ## Run the test suite
	$(BIN)/python -m pytest -q

lint: install ## Check style with ruff
	$(BIN)/ruff check kbindex tests benchmarks

bench: install ## Run the benchmarks; results go to stdout (record them in docs/benchmarks.md)
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	$(BIN)/python benchmarks/run.py

clean: ## Remove the virtualenv, caches and the default local index
	rm -rf $(VENV) data/index .pytest_cache .ruff_cache .bench *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
