# numpycnn: the developer entry points.
#
# Everything runs in a virtual environment: the active one ($VIRTUAL_ENV), else this
# project's .venv, made on first use. So `make train` and `make test` work where the system
# Python refuses `pip install` (PEP 668: Debian, Ubuntu). Installs are remembered by stamp
# files in the environment that depend on setup.cfg and pyproject.toml: a second call
# installs nothing, an edit of either file reinstalls. Override with `make VENV=path ...`.
ifdef VIRTUAL_ENV
VENV ?= $(VIRTUAL_ENV)
else
VENV ?= .venv
endif
PYTHON := $(VENV)/bin/python
NUMPYCNN := $(VENV)/bin/numpycnn
INSTALLED := $(VENV)/.numpycnn-installed
INSTALLED_DEV := $(VENV)/.numpycnn-installed-dev
TORCH := torch==2.13.0

.PHONY: train install install-oracle test lint format bench zoo clean

train: $(INSTALLED)  ## the main job: MNIST, train the default recipe, evaluate it
	$(NUMPYCNN) train --config default
	$(NUMPYCNN) eval default.pkl --quiet
	@echo "The model is default.pkl; its run folder is $$(ls -td runs/default* | head -n 1)."
	@echo "Activate the environment to use numpycnn yourself: . $(VENV)/bin/activate"

install: $(INSTALLED_DEV)  ## numpycnn (editable), its test and plot extras, and PyTorch

install-oracle: $(INSTALLED_DEV)  ## PyTorch, CPU build (part of install)

test: $(INSTALLED_DEV)  ## the test suite (the README's test command)
	$(PYTHON) -m pytest -q

lint: $(INSTALLED_DEV)  ## ruff: lint and format check
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format: $(INSTALLED_DEV)
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .

bench: $(INSTALLED_DEV)  ## speed and memory against PyTorch, side by side in one run
	$(PYTHON) bench/bench.py

zoo: $(INSTALLED)  ## train every config in configs/ and write the results table
	$(PYTHON) scripts/zoo.py

# a new environment; one that failed half-way (no ensurepip: apt install python3-venv) is
# removed, and an existing folder that is not one is left alone
$(PYTHON):
	@if [ -e $(VENV) ]; then echo "$(VENV) exists but has no bin/python: remove it, or choose another with VENV=..." >&2; exit 1; fi
	python3 -m venv $(VENV) || { rm -rf $(VENV); exit 1; }

# numpycnn alone, editable, so that an edit of the code needs no reinstall
$(INSTALLED): setup.cfg pyproject.toml | $(PYTHON)
	$(PYTHON) -m pip install --quiet -e .
	touch $@

# with the dev extras (pytest, ruff, matplotlib, playwright) and the parity tests' oracle
$(INSTALLED_DEV): setup.cfg pyproject.toml | $(PYTHON)
	$(PYTHON) -m pip install --quiet -e '.[dev]' '$(TORCH)'
	touch $@ $(INSTALLED)

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
