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

# Batch-job variables (see `make help`).
COLLECTION ?=
Q ?=
K ?= 5
HOST ?= 127.0.0.1
PORT ?= 8765
CONFIG ?=
EVAL_DATA ?= ../shared/data/scifact
KB := $(BIN)/kbindex $(if $(CONFIG),--config $(CONFIG))
COLL := $(if $(COLLECTION),--collection $(COLLECTION))

.PHONY: help install install-browser demo test test-fast lint bench clean index reindex query eval stats verify serve

help: ## List the targets and variables
	@echo "Targets:"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'
	@echo "Variables:"
	@echo "  COLLECTION=name  only this collection (index, reindex, query, stats, verify)"
	@echo "  Q=\"text\"         the query for 'make query'; K=5 hits"
	@echo "  CONFIG=file     config file (default: ./kbindex.toml, see data/kbindex.example.toml)"
	@echo "  TEST_WORKERS=4  test workers for 'make test' and 'make test-fast' (0: one process)"
	@echo "  EVAL_DATA=dir   BEIR-layout data set for 'make eval' (default: ../shared/data/scifact)"
	@echo "  HOST=127.0.0.1 PORT=8765  where 'make serve' listens (another HOST needs KBINDEX_TOKEN)"
	@echo "  Environment: KBINDEX_DB, KBINDEX_COLLECTION, KBINDEX_MODEL, KBINDEX_CHROMA_URL, ..."

index: install ## Index every source the config declares (COLLECTION=name for one)
	$(KB) index $(COLL)

reindex: install ## Rebuild: re-embed the configured collection(s) from scratch, then swap
	$(KB) index --rebuild $(COLL)

query: install ## Search: make query Q="printer offline" [COLLECTION=name] [K=5]
	@test -n "$(Q)" || { echo 'usage: make query Q="your question"'; exit 2; }
	$(KB) query "$(Q)" -k $(K) $(COLL)

eval: install ## Evaluate retrieval on a BEIR data set (EVAL_DATA=dir)
	$(KB) eval $(EVAL_DATA)

stats: install ## Show collections and their sizes
	$(KB) collections

verify: install ## Check that the ledger, the vector store and the keyword index agree
	$(KB) verify $(COLL)

serve: install ## Serve search on http://127.0.0.1:8765/: web page, JSON API (/api), MCP (/mcp)
	$(KB) serve --host $(HOST) --port $(PORT) $(COLL)

install: $(STAMP) ## Create .venv: torch 2.13.0 (CPU) first, then kbindex with its test extras

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first: this pin takes the local CPU build; an unpinned torch pulls GBs of CUDA packages
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test,render]'
	@# Once per machine, so that the first `kbindex index` does not pay for it (kbindex/embedding/modelcache.py).
	@echo "Preparing the default model for this machine once (ONNX export, int8 calibration: about 30 s)"
	$(BIN)/kbindex models prepare || echo "kbindex: not prepared now; the first index run will prepare it"
	touch $@

demo: install ## Index data/sample-kb into data/index and run two example queries
	$(BIN)/kbindex index data/sample-kb
	$(BIN)/kbindex query "my desktop chat app will not open for users with roaming profiles" -k 3
	$(BIN)/kbindex query "do the random starting vectors survive once the model is trained?" -k 3

# Test workers (pytest-xdist): more than the cores pay, because most tests wait on subprocesses,
# servers and timeouts (docs/benchmarks.md, issue 16); TEST_WORKERS=0 runs in one process.
# worksteal: each worker starts with one contiguous part of the suite (a module's tests, and its
# module-scoped fixtures, mostly on one worker) and takes half of a busy worker's rest when idle.
# (loadgroup would pin such modules to one worker, but with pytest 9.2 it groups nothing:
# pytest-dev/pytest-xdist#1386.)
TEST_WORKERS ?= 4
PYTEST := $(BIN)/python -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist worksteal)

test: install ## Run the whole test suite (what CI runs; TEST_WORKERS=4 workers)
	$(PYTEST)

test-fast: install ## The edit loop: every test but those of the real model and the Chroma server
	$(PYTEST) -m "not model and not server"

lint: install ## Check style with ruff
	$(BIN)/ruff check kbindex tests benchmarks

bench: install ## Run the benchmarks; results go to stdout (record them in docs/benchmarks.md)
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	$(BIN)/python benchmarks/run.py

install-browser: ## Install Debian's chromium for --render (as root, with apt-get); no browser download
	@if command -v chromium >/dev/null 2>&1; then echo "chromium is installed: $$(command -v chromium)"; \
	elif [ "$$(id -u)" -ne 0 ]; then echo "install-browser: run as root (apt-get install chromium)"; exit 1; \
	else DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; fi

clean: ## Remove the virtualenv, caches and the default local index
	rm -rf $(VENV) data/index .pytest_cache .ruff_cache .bench *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
