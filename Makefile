# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FMNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: install data demo test lint docs bench-% reliability clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,onnx,hf,prune,ao,plan]'
	touch $(STAMP)

install: $(STAMP) data

# Fashion-MNIST comes from Debian's dataset-fashion-mnist where apt is available (root or sudo).
data:
	@if [ ! -f $(FMNIST_DIR)/t10k-labels-idx1-ubyte.gz ] && command -v apt-get >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	fi

demo: install
	$(VENV)/bin/torchslim demo --out demo-out --force

test: install
	$(PY) -m pytest -q -ra tests

# The recipe-step reference, generated from the method and step registries (tests check it is current).
docs: install
	$(PY) -c "import torchslim.recipes.steps; from torchslim.recipes.registry import steps_markdown; print(steps_markdown(), end='')" > docs/recipe-steps.md

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/lint-imports

# `make bench-quantization` runs benchmarks/bench_quantization.py -> benchmarks/results/quantization.json
bench-%: install
	$(PY) benchmarks/bench_$(subst -,_,$*).py

# `make reliability`: several hundred bad inputs against the CLI and the API -> benchmarks/results/reliability.json
reliability: install
	$(PY) benchmarks/bench_reliability.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache
