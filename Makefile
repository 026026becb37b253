# One command sets everything up and runs the demo; one sets up and runs the tests.
# Both build a virtual environment in .venv (ignored by git) and install into it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)
# torch / torchvision are pinned and installed first, so nothing else can drag in another build.
TORCH  := torch==2.14.1 torchvision==0.29.1
EXTRAS := dev,features,clip,finetune,survset,bench,ray,tune

.PHONY: setup demo test lint bench clean

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet $(TORCH) -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/modalsurv demo --out runs/demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_metrics.py
	$(BIN)/python benchmarks/bench_losses.py
	$(BIN)/python benchmarks/bench_store.py
	$(BIN)/python benchmarks/bench_training.py
	$(BIN)/python benchmarks/bench_extract.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
