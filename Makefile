# The two commands a newcomer runs: `make demo` and `make test`. Both create .venv on first use
# and reuse it afterwards; constraints.txt pins the tested set (torch 2.13.0 is the CPU build
# available offline on our machines).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/keel demo --output runs/penguins-model

test: lint
	$(BIN)/python -m pytest -n 2 -q

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

# Peers (TensorFlow/Keras, skorch, LightGBM) go into their own environment, never keel's.
BENCH := .venv-bench
$(BENCH)/.installed: pyproject.toml constraints.txt bench/requirements.txt
	$(PYTHON) -m venv $(BENCH)
	$(BENCH)/bin/python -m pip install --disable-pip-version-check -q -c constraints.txt -e . -r bench/requirements.txt
	touch $@

bench: $(VENV)/.installed $(BENCH)/.installed
	$(BIN)/python bench/seed_case.py
	$(BENCH)/bin/python bench/peers.py
	$(BENCH)/bin/python bench/accuracy.py

clean:
	rm -rf $(VENV) $(BENCH) runs bench/.cache
