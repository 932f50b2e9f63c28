# `make help` lists the targets. Every target sets the environment up itself (idempotent).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
# `make train` runs the flagship method (OMUDA on the synthetic data); EXPERIMENT=mic_synthetic etc. picks another.
EXPERIMENT ?= omuda_synthetic

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv with the pinned dependencies (idempotent)

train: install ## train OMUDA on the synthetic data (EXPERIMENT=... picks another); ARGS="..." adds overrides
	$(BIN)/python -m src.train experiment=$(EXPERIMENT) $(ARGS)

test: install ## run the test suite (without the `slow` tests)
	$(BIN)/python -m pytest -q $(ARGS)

test-slow: install ## run every test, the slow ones included
	$(BIN)/python -m pytest -q -m "" $(ARGS)

lint: install ## ruff check + format check
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

format: install ## ruff format + autofix
	$(BIN)/ruff format src tests scripts
	$(BIN)/ruff check --fix src tests scripts

synthetic: install ## generate the synthetic two-domain dataset under DATA_ROOT (default ./data)
	$(BIN)/python -c "import src.utils.config; from src.data.prepare import prepare_synthetic; from src.utils.config import PROJECT_ROOT; import os; prepare_synthetic(os.environ.get('DATA_ROOT', str(PROJECT_ROOT / 'data')) + '/synthetic', num_source=400, num_target=400, num_val=100, height=128, width=256, seed=0)"

eval: install ## evaluate a checkpoint: make eval ARGS="ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt"
	$(BIN)/python -m src.eval $(ARGS)

predict: install ## segment images / a video: make predict ARGS="ckpt_path=... input=DIR_OR_VIDEO output=DIR"
	$(BIN)/python -m src.predict $(ARGS)

export: install ## a checkpoint as ONNX, checked in onnxruntime: make export ARGS="ckpt_path=... input_size=[512,1024]"
	$(BIN)/python -m src.export $(ARGS)

notebooks: install ## run every notebook top to bottom (ARGS="--save DIR" keeps the executed copies)
	$(BIN)/python scripts/notebooks.py run $(ARGS)

notebooks-strip: install ## remove the outputs of the notebooks before committing them
	$(BIN)/python scripts/notebooks.py strip

wandb-sync: install ## upload the offline W&B runs under logs/ (needs `wandb login`)
	find logs -type d -name 'offline-run-*' -print0 | xargs -0 -r $(BIN)/wandb sync

clean: ## remove logs and generated outputs (keeps .venv and data)
	rm -rf logs outputs .pytest_cache

.PHONY: help install train test test-slow lint format synthetic eval predict export notebooks notebooks-strip wandb-sync clean
