# numpycnn: the developer entry points. PYTHON may name a virtual environment's python.
PYTHON ?= python3

.PHONY: install install-oracle test lint format bench zoo clean

install:            ## the package, its test and plot extras, editable
	$(PYTHON) -m pip install -e '.[dev]'

install-oracle:     ## PyTorch, CPU build, for the parity tests and the benchmark
	$(PYTHON) -m pip install 'torch==2.13.0'

test:               ## the test suite (the README's test command)
	$(PYTHON) -m pytest -q

lint:               ## ruff: lint and format check
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format:
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .

bench:              ## speed and memory against PyTorch, side by side in one run
	$(PYTHON) bench/bench.py

zoo:                ## train every config in configs/ and write the results table
	$(PYTHON) scripts/zoo.py

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
