# One command sets everything up and runs the demo; one sets up and runs the tests.
# Both build a virtual environment in .venv (ignored by git) and install into it.
# Another Python: `make test PYTHON=python3.12 VENV=.venv-3.12` (CI runs 3.11, whose torch
# lies on this machine's disk; for 3.12 and 3.13 pip downloads the pinned torch, ~3 GB)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch / torchvision are pinned and installed first, so nothing else can drag in another build.
TORCH  := torch==2.14.1 torchvision==0.29.1
EXTRAS ?= dev,features,clip,finetune,survset,bench,ray,tune
# a venv is rebuilt when the project, this file or the extras asked for change
STAMP  := $(VENV)/.installed-$(shell (cat pyproject.toml Makefile; echo $(EXTRAS)) | cksum | cut -d' ' -f1)

.PHONY: setup demo test smoke lint bench clean

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

# pandas 3 (what a plain `pip install modalsurv` gets; the bench extra's lifelines keeps the
# venv on pandas 2): the file-reading, CLI and report tests run again with it overlaid
PANDAS3       := $(VENV)/pandas3
PANDAS3_TESTS := tests/io tests/data tests/challenge tests/reliability tests/report \
                 tests/test_cli.py tests/train/test_cv_groups.py

$(PANDAS3)/.installed: $(STAMP)
	rm -rf $(PANDAS3)
	$(BIN)/pip install --quiet --no-deps --target $(PANDAS3) "pandas>=3,<4"
	touch $@

test: $(STAMP) lint $(PANDAS3)/.installed
	$(BIN)/python -m pytest -q
	PYTHONPATH=$(PANDAS3) $(BIN)/python -c "import pandas as pd; assert pd.__version__ >= '3', pd.__version__; print('pandas', pd.__version__)"
	PYTHONPATH=$(PANDAS3) $(BIN)/python -m pytest -q -p no:cacheprovider $(PANDAS3_TESTS)

# The spine's tests alone, for a venv with fewer extras (CI: the newest Python, when the
# machine has one): make smoke PYTHON=python3.13 VENV=.venv-3.13 EXTRAS=dev,features
SMOKE_TESTS := tests/test_core_install.py tests/test_cli.py tests/challenge tests/io

smoke: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider $(SMOKE_TESTS)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_metrics.py
	$(BIN)/python benchmarks/bench_losses.py
	$(BIN)/python benchmarks/bench_store.py
	$(BIN)/python benchmarks/bench_training.py
	$(BIN)/python benchmarks/bench_extract.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
