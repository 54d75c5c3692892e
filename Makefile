# The two commands a newcomer runs: `make demo` and `make test`. Both create .venv on first use
# and reuse it afterwards; constraints.txt pins the tested set (torch 2.13.0 is the CPU build
# available offline on our machines).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: demo test lint bench bench-large tflite-env clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/keel demo --output runs/penguins-model

# tests/integration/test_tflite.py converts through the TFLite environment and fails without it.
test: lint tflite-env
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

# Peers (TensorFlow/Keras, skorch, LightGBM) go into their own environment, never keel's.
BENCH := .venv-bench
$(BENCH)/.installed: pyproject.toml constraints.txt bench/requirements.txt
	$(PYTHON) -m venv $(BENCH)
	$(BENCH)/bin/python -m pip install --disable-pip-version-check -q -c constraints.txt -e '.[export,text]' -r bench/requirements.txt
	touch $@

bench: $(VENV)/.installed $(BENCH)/.installed
	$(BIN)/python bench/seed_case.py
	$(BENCH)/bin/python bench/peers.py
	$(BENCH)/bin/python bench/accuracy.py
	$(BENCH)/bin/python bench/export.py
	$(BENCH)/bin/python bench/multimodal.py
	$(BENCH)/bin/python bench/contention.py --results
	$(BIN)/python bench/compression.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/report.py --write
	$(BIN)/python bench/scale.py --results

# Streaming a 2 GB CSV and Parquet file (generated once into bench/.cache/large-data, ~4 GB of disk,
# about 6 minutes on 2 cores): peak memory and rows/s under data.memory_budget 512MB.
bench-large: $(VENV)/.installed
	$(BIN)/python bench/large_data.py --results

# `keel export --format tflite` converts in its own environment: litert-torch's dependencies hold typing-extensions
# and pydantic below keel's constraints and brings jax (2.4 GB, 86 s to build here), so it never
# shares .venv. keel finds it here (or through KEEL_TFLITE_PYTHON) and runs the converter in it.
TFLITE := .venv-tflite
$(TFLITE)/.installed: pyproject.toml constraints-tflite.txt
	$(PYTHON) -m venv $(TFLITE)
	$(TFLITE)/bin/python -m pip install --disable-pip-version-check -q -c constraints-tflite.txt \
		-e . litert-torch ai-edge-litert
	touch $@

tflite-env: $(TFLITE)/.installed

clean:
	rm -rf $(VENV) $(BENCH) $(TFLITE) runs bench/.cache
