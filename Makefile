# make train: set up .venv (if needed) and train the embedded default (MLP on digits).
# make test:  set up .venv with the test, parity and audio extras and run the whole suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: train test lint format clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,parity,audio]'
	touch $(STAMP) $@

train: $(STAMP)
	$(BIN)/python train.py

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -n 2 --durations=15 -q

lint: $(TEST_STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(TEST_STAMP)
	$(BIN)/ruff format .

clean:
	rm -rf runs .pytest_cache
