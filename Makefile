# Set-up, example and test targets; README.md and .ci/run call these.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install example test lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e ".[all,test]"
	touch $(STAMP)

example: install
	$(PY) examples/train_water/run.py

test: install
	$(VENV)/bin/ruff check dpa cli tests bench examples
	$(VENV)/bin/ruff format --check dpa cli tests bench examples
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -n 2 -q tests

lint: install
	$(VENV)/bin/ruff check --fix dpa cli tests bench examples
	$(VENV)/bin/ruff format dpa cli tests bench examples

bench: install
	$(PY) bench/bench_water.py --model dpa1
	$(PY) bench/bench_water.py --model dpa2 --backends torch,jax
	$(PY) bench/bench_water.py --model dpa3 --backends torch,jax

clean:
	rm -rf $(VENV) build *.egg-info
